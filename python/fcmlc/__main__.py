"""`python -m fcmlc ...` is the same as the `fcmlc` command."""
import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line loads: nothing was started
    print("fcmlc: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
