"""Strict JSON output: NaN and infinities become null, so every file LeukoMorph writes is valid
JSON for any reader (Python's default would write the non-standard tokens NaN and Infinity)."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps"]


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = 1) -> str:
    return json.dumps(_clean(obj), indent=indent, allow_nan=False)
