"""Outputs of a case: cells.csv, results.json, report.html (self-contained) and run.json."""

from .writer import OUTPUT_FILES, prepare_output_dir, write_outputs

__all__ = ["OUTPUT_FILES", "prepare_output_dir", "write_outputs"]
