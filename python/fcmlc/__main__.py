"""`python -m fcmlc ...` is the same as the `fcmlc` command.

Ctrl-C (SIGINT) and SIGTERM never raise while the command line loads (an exception in the middle
of an extension module's import can crash the interpreter at exit): they are noted, and the
command does not start (:func:`fcmlc.cli.entry` runs it otherwise).
"""
import os
import signal
import sys

_COMMAND = " ".join(["fcmlc"] + [a for a in sys.argv[1:2] if not a.startswith("-")])
_received = []


def _note(signum, frame):
    _received.append(signum)


for _s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_s, _note)  # until the command installs its own handlers (fcmlc.cli.main)
from .cli import entry  # noqa: E402 - after the handlers above

if _received:
    print(f"{_COMMAND}: interrupted", file=sys.stderr)
    sys.stderr.flush()
    os._exit(128 + _received[0])
entry()
