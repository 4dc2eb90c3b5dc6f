"""Case-level aggregation: differential count with confidence intervals and the rule-based suggestion."""

from .differential import differential, wilson_interval
from .rules import RULES_VERSION, suggest

__all__ = ["RULES_VERSION", "differential", "suggest", "wilson_interval"]
