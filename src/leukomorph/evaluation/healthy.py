"""Cases built from healthy-donor crops, for measuring false alarms of the patient-level suggestion.

PBC (healthy donors) has no patients, so a case is drawn: a fixed number of crops in a fixed
white-cell mix (percent per PBC label). The pathological mixes borrow only the proportions of a
condition (a left shift, a CML-like granulocytosis, eosinophilia); every cell is a healthy
donor's, so every "APL suspected" or "acute leukemia suspected" on such a case is a false alarm.
Used by ``benchmarks/healthy_cases.py`` and a data test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import DataError

__all__ = ["AS_STORED", "HEALTHY_MIXES", "REALISTIC_MIXES", "healthy_cases"]

#: percent of white cells per PBC label (``source_label`` before the "/")
HEALTHY_MIXES: dict[str, dict[str, int]] = {
    "normal": {"neutrophil": 62, "lymphocyte": 28, "monocyte": 6, "eosinophil": 3, "basophil": 1},
    "reactive, IG 8%": {"neutrophil": 60, "lymphocyte": 20, "monocyte": 8, "eosinophil": 3, "basophil": 1, "ig": 8},
    "left shift, IG 20%": {"neutrophil": 55, "lymphocyte": 15, "monocyte": 8, "eosinophil": 2, "ig": 20},
    "CML-like: IG 25%, basophils 8%, eosinophils 5%": {
        "neutrophil": 50,
        "lymphocyte": 8,
        "monocyte": 4,
        "eosinophil": 5,
        "basophil": 8,
        "ig": 25,
    },
    "eosinophilia 30%": {"neutrophil": 45, "lymphocyte": 20, "monocyte": 5, "eosinophil": 30},
    "erythroblasts 20%, IG 10%": {"neutrophil": 45, "lymphocyte": 20, "monocyte": 5, "ig": 10, "erythroblast": 20},
    "IG 20%, erythroblasts 5%, platelets 5%": {
        "neutrophil": 45,
        "lymphocyte": 15,
        "monocyte": 8,
        "eosinophil": 2,
        "ig": 20,
        "erythroblast": 5,
        "platelet": 5,
    },
}
#: the mixes with no false alarm of the shipped models in ``benchmarks/healthy_cases.py`` that a
#: data test holds them to (normal and reactive blood)
REALISTIC_MIXES = ("normal", "reactive, IG 8%", "left shift, IG 20%")
#: the name of the mix that keeps PBC's own class-balanced proportions (no patient looks like it)
AS_STORED = "as stored (PBC's class-balanced proportions)"


def healthy_cases(
    rows: Sequence[Mapping[str, str]],
    mixes: Mapping[str, Mapping[str, int] | None],
    n_cases: int,
    n_cells: int,
    seed: int = 0,
) -> list[tuple[str, list[str]]]:
    """Draw ``n_cases`` cases of ``n_cells`` crop paths per mix from split ``rows`` (``path`` and
    ``source_label``); a mix of None draws from all rows as they come. Returns (mix name, paths)
    per case, mixes in the given order. Crops are drawn without replacement within a case."""
    pools: dict[str, list[str]] = {}
    for r in rows:
        pools.setdefault(r["source_label"].split("/")[0], []).append(r["path"])
    everything = [r["path"] for r in rows]
    rng = np.random.default_rng(seed)
    out = []
    for name, mix in mixes.items():
        for _ in range(n_cases):
            if mix is None:
                picked = list(rng.choice(everything, n_cells, replace=False))
            else:
                picked = []
                for label, pct in mix.items():
                    k = round(n_cells * pct / 100)
                    have = len(pools.get(label, ()))
                    if have < k:
                        raise DataError(f"mix {name!r}: {k} {label} crops wanted, {have} available")
                    picked += list(rng.choice(pools[label], k, replace=False))
            out.append((name, [str(p) for p in picked]))
    return out
