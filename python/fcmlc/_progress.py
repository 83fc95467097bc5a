"""Progress bars: the one rule for every bar fcmlc draws (on stderr).

On a terminal (or in a Jupyter notebook) bars redraw in place as tqdm draws them, and a bar
*nested* inside another (the samples of one epoch inside the epochs) is drawn below it and
removed when done. When stderr is not a terminal -- a log file, a pipe, a batch job -- in-place
redrawing would leave carriage returns and cursor movements in the log, so each bar is written
as whole lines instead: one when it starts, then at most one every :data:`LOG_INTERVAL`
seconds (a new postfix, such as an epoch's losses, waits for the next line), and its final state
when it closes; nested bars are not drawn at all there.
"""
from __future__ import annotations

import functools
import sys

__all__ = ["LOG_INTERVAL", "progress_bar", "stderr_is_interactive"]

#: Seconds between two lines of one progress bar when stderr is not a terminal.
LOG_INTERVAL = 30.0


class _LogLines:
    """A text stream for tqdm that turns every redraw into one whole line of ``stream``
    (carriage returns and the padding tqdm adds to erase a longer previous display dropped;
    blank redraws, such as the clearing of a closed bar, skipped)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s) -> int:
        text = str(s).replace("\r", "").rstrip()
        if text:
            self.stream.write(text + "\n")
        return len(s)

    def flush(self) -> None:
        getattr(self.stream, "flush", lambda: None)()


@functools.lru_cache(maxsize=None)
def _log_bar_class():
    from tqdm.std import tqdm  # loaded when a bar is made

    class LogBar(tqdm):
        """tqdm whose postfix changes wait for the next timed line instead of forcing one, without
        tqdm's monitor thread (it redraws a bar iterating over an iterable with a stale count)."""

        monitor_interval = 0

        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

        def set_postfix_str(self, s="", refresh=True):
            super().set_postfix_str(s, refresh=False)

    return LogBar


def _in_notebook(tqdm_cls) -> bool:
    # tqdm.auto picks its notebook widget inside a Jupyter kernel (whose stderr is no terminal)
    return any(c.__module__ == "tqdm.notebook" for c in tqdm_cls.__mro__)


def stderr_is_interactive() -> bool:
    """True when progress bars may redraw in place: stderr is a terminal, or a notebook."""
    from tqdm.auto import tqdm

    isatty = getattr(sys.stderr, "isatty", None)
    try:
        tty = bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        tty = False
    return tty or _in_notebook(tqdm)


def progress_bar(iterable=None, *, total=None, desc: str | None = None, unit: str = "it", enabled: bool = True,
                 nested: bool = False, **kwargs):
    """A tqdm bar (also a context manager and, with ``iterable``, an iterator over it) drawn by
    the rule of this module; ``enabled=False``: a silent one. ``nested``: a bar shown inside
    another open bar (removed when done on a terminal, not drawn in a log). Other ``kwargs``
    (``initial``, ``smoothing``, ...) go to tqdm."""
    from tqdm.auto import tqdm  # loaded when a bar is made

    if not enabled:
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True, **kwargs)
    if stderr_is_interactive():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=not nested, **kwargs)
    if nested:
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True, **kwargs)
    return _log_bar_class()(iterable, total=total, desc=desc, unit=unit, file=_LogLines(sys.stderr), disable=False,
                            leave=True, mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, ascii=True,
                            dynamic_ncols=False, **kwargs)
