"""False alarms on healthy-donor blood (needs the shared data; about 10 s).

Cases of 100 PBC crops from the default cell model's test split (healthy donors, never trained
on) in normal and reactive mixes go through the whole case pipeline with the default models:
none may come out "APL suspected" or "acute leukemia suspected", and no APL score the rules would
use may reach their threshold. `benchmarks/healthy_cases.py` measures more mixes and cases.
"""

import pytest

from leukomorph.aggregate.rules import RuleConfig
from leukomorph.evaluation.healthy import HEALTHY_MIXES, REALISTIC_MIXES, healthy_cases
from leukomorph.evaluation.runner import default_split, read_split
from leukomorph.models import DEFAULT_CLASSIFIER, get_card
from leukomorph.pipeline import AnalyzeConfig, run_case

ALARMS = {"apl_suspected", "acute_leukemia_suspected"}


@pytest.mark.data
def test_no_leukemia_alarm_on_healthy_donor_cases(shared_data):
    rows = [
        r
        for r in read_split(default_split(get_card(DEFAULT_CLASSIFIER)))
        if r["split"] == "test" and r["dataset"] == "pbc"
    ]
    drawn = healthy_cases(rows, {m: HEALTHY_MIXES[m] for m in REALISTIC_MIXES}, n_cases=3, n_cells=100, seed=1)
    config = AnalyzeConfig(saliency=False)
    seen = set()
    for n, (mix, paths) in enumerate(drawn):
        res = run_case([str(shared_data / p) for p in paths], f"healthy{n}", config)
        assert res.differential.wbc_denominator >= 90, mix
        assert res.suggestion.code not in ALARMS, (mix, res.suggestion.code, res.suggestion.text)
        apl = res.case_scores.get("apl_vs_aml") or {}
        if apl.get("applicable"):
            assert apl["probability"] < RuleConfig().apl_score_threshold, (mix, apl["probability"])
        seen.add(mix)
    assert seen == set(REALISTIC_MIXES)


def test_healthy_cases_draws_the_mix_and_refuses_a_short_pool():
    from leukomorph.errors import DataError

    rows = [
        {"path": f"{lab}/{i}.webp", "source_label": f"{lab}/{lab}"} for lab in ("neutrophil", "ig") for i in range(50)
    ]
    drawn = healthy_cases(rows, {"shift": {"neutrophil": 70, "ig": 30}, "as is": None}, n_cases=2, n_cells=40, seed=0)
    assert [m for m, _ in drawn] == ["shift", "shift", "as is", "as is"]
    for mix, paths in drawn:
        assert len(paths) == len(set(paths)) == 40
        if mix == "shift":
            assert sum(p.startswith("ig/") for p in paths) == 12
    with pytest.raises(DataError, match="ig crops wanted"):
        healthy_cases(rows, {"too many": {"ig": 100}}, n_cases=1, n_cells=80)
