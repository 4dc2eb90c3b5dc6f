"""Outputs of a case: cells.csv, results.json, report.html (self-contained) and run.json; and the
batch summary (cases.csv) of ``analyze --per-folder``."""

from .writer import (
    BATCH_COLUMNS,
    BATCH_SUMMARY,
    OUTPUT_FILES,
    case_summary,
    prepare_batch_summary,
    prepare_output_dir,
    write_batch_summary,
    write_outputs,
)

__all__ = [
    "BATCH_COLUMNS",
    "BATCH_SUMMARY",
    "OUTPUT_FILES",
    "case_summary",
    "prepare_batch_summary",
    "prepare_output_dir",
    "write_batch_summary",
    "write_outputs",
]
