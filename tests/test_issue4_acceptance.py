"""The patient-level acceptance checks, run the way they are measured: `leukomorph analyze --case
<patient folder>` over each of the default cell model's held-out DeepAPL test patients that are APL
(4) and two that are not (needs the shared data; about 15 s).

For each patient: `case_scores.apl_vs_aml.probability` is a probability; an "APL suspected" case
is urgent and names evidence cells that are among its own cells; every class of the differential
has its 95% interval; and the report shows the adaptive-counting figure ("more white cells
needed") for both blast thresholds. Whether the score separates APL from AML is measured by
`benchmarks/patients.py` and the case model's card, not asserted here.
"""

import csv
import json

import pytest
from typer.testing import CliRunner

from leukomorph.cli.main import app
from leukomorph.models import DEFAULT_CLASSIFIER, get_card
from leukomorph.taxonomy import CLASSES


@pytest.mark.data
def test_held_out_patients_analysed_by_case_meet_the_acceptance_checks(shared_data, tmp_path):
    test = set(get_card(DEFAULT_CLASSIFIER).raw["split"]["patients"]["test"])
    dx = {r["patient_id"]: r["diagnosis"] for r in csv.DictReader(open(shared_data / "deepapl" / "patients.csv"))}
    apl = sorted(p for p in test if dx[p] == "APL")
    aml = sorted(p for p in test if dx[p] != "APL")[:2]
    assert len(apl) == 4
    flagged = 0
    for patient in apl + aml:
        out = tmp_path / patient
        r = CliRunner().invoke(
            app, ["analyze", "--case", str(shared_data / "deepapl" / "images" / patient), "--out", str(out)]
        )
        assert r.exit_code == 0, r.output
        res = json.loads((out / "results.json").read_text())
        assert res["case"] == patient and res["n_classified"] > 50
        p = res["case_scores"]["apl_vs_aml"]["probability"]
        assert isinstance(p, float) and 0.0 <= p <= 1.0
        sug = res["suggestion"]
        if sug["code"] == "apl_suspected":
            flagged += dx[patient] == "APL"
            assert sug["urgent"] is True
            cells = {row["path"] for row in csv.DictReader((out / "cells.csv").open())}
            assert sug["evidence_cells"] and set(sug["evidence_cells"]) <= cells
        classes = res["differential"]["classes"]
        assert set(classes) == set(CLASSES)
        assert all(len(c["ci95"]) == 2 and c["ci95"][0] is not None for c in classes.values())
        thresholds = {t["threshold_percent"]: t for t in res["blast_thresholds"]}
        assert set(thresholds) == {10.0, 20.0}
        assert all(t["additional_cells_needed"] is not None for t in thresholds.values())
        assert "More white cells needed" in (out / "report.html").read_text()
    assert flagged >= 1  # the checks above ran on at least one flagged APL case
