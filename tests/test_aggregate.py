import pytest

from leukomorph.aggregate import differential, suggest, wilson_interval
from leukomorph.records import CellPrediction
from leukomorph.taxonomy import CLASSES


def cells(**counts):
    out = []
    for name, n in counts.items():
        p = [0.0] * len(CLASSES)
        p[CLASSES.index(name)] = 0.9
        out += [CellPrediction(f"{name}_{i}.png", tuple(p), CLASSES) for i in range(n)]
    return out


def test_wilson_known_values():
    lo, hi = wilson_interval(20, 100)
    assert lo == pytest.approx(0.1333, abs=1e-3) and hi == pytest.approx(0.2888, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 0.0)
    assert wilson_interval(0, 10)[0] == 0.0


def test_differential_denominator_excludes_non_wbc():
    d = differential(cells(blast=30, lymphocyte=70, platelet=10, smudge=5))
    assert d.total_cells == 115 and d.wbc_denominator == 100
    by = {c.name: c for c in d.counts}
    assert by["blast"].percent == pytest.approx(30) and by["platelet"].percent == pytest.approx(10)
    assert by["blast"].ci_low < 30 < by["blast"].ci_high
    assert d.blast_percent == pytest.approx(30)


@pytest.mark.parametrize(
    "counts, code, urgent",
    [
        (dict(promyelocyte=15, blast=10, lymphocyte=75), "apl_suspected", True),
        (dict(blast=25, promonocyte=5, lymphocyte=70), "acute_leukemia_suspected", False),
        (dict(blast=8, lymphocyte=92), "blasts_increased", False),
        (dict(segmented_neutrophil=60, lymphocyte=40), "no_leukemic_pattern", False),
        (dict(blast=10, platelet=40), "too_few_cells", False),
    ],
)
def test_rules(counts, code, urgent):
    preds = cells(**counts)
    s = suggest(differential(preds), preds)
    assert s.code == code and s.urgent == urgent
    if code in ("apl_suspected", "acute_leukemia_suspected", "blasts_increased"):
        assert s.evidence and all(e.split("_")[0] in ("promyelocyte", "blast", "promonocyte") for e in s.evidence)
    else:
        assert s.evidence == ()
