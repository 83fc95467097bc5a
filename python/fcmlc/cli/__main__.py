"""`python -m fcmlc.cli ...` is the same as the `fcmlc` command."""
import sys

from . import main

sys.exit(main())
