"""Metrics with bootstrap confidence intervals, per-source tables and confusion matrices."""

from .metrics import EvalReport, bootstrap_ci, evaluate_predictions, format_report, per_class_metrics

__all__ = ["EvalReport", "bootstrap_ci", "evaluate_predictions", "format_report", "per_class_metrics"]
