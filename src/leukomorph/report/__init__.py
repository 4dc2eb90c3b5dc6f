"""Outputs of a case: cells.csv, results.json, report.html (self-contained) and run.json; and the
batch summary (cases.csv) of ``analyze --per-folder``. The public names are :mod:`.writer`'s."""

from .writer import *  # noqa: F403
from .writer import __all__  # noqa: F401
