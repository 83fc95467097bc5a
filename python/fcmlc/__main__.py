"""`python -m fcmlc ...` is the same as the `fcmlc` command."""
import sys

from .cli import main

sys.exit(main())
