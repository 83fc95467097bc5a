"""`python -m fcmlc.cli ...` is the same as the `fcmlc` command."""
from . import entry

entry()
