import numpy as np
import pytest

from leukomorph.evaluation import evaluate_predictions, format_report


def test_metrics_known_values():
    y = ["a"] * 4 + ["b"] * 4
    p = ["a", "a", "a", "b", "b", "b", "b", "b"]
    rep = evaluate_predictions(y, p, ["a", "b", "c"], n_boot=200)
    assert rep.summary["accuracy"] == pytest.approx(7 / 8)
    assert rep.per_class["a"]["recall"] == pytest.approx(0.75)
    assert rep.per_class["b"]["precision"] == pytest.approx(0.8)
    assert rep.summary["macro_f1"] == pytest.approx((6 / 7 + 8 / 9) / 2)
    assert "c" not in rep.per_class  # no support, never predicted
    lo, hi = rep.summary_ci["accuracy"]
    assert lo <= 7 / 8 <= hi
    assert "| a |" in format_report("t", rep)


def test_unknown_prediction_counts_as_error():
    rep = evaluate_predictions(["a", "b"], ["a", "zzz"], ["a", "b"], n_boot=50)
    assert rep.summary["accuracy"] == 0.5
    assert np.array(rep.confusion)[1, 2] == 1


def test_group_bootstrap_wider_for_clustered_errors():
    y = ["a"] * 100
    p = ["a"] * 50 + ["b"] * 50
    groups_cells = [str(i) for i in range(100)]
    groups_patients = ["p0"] * 50 + ["p1"] * 50
    w_cells = np.diff(evaluate_predictions(y, p, ["a", "b"], groups_cells, n_boot=300).summary_ci["accuracy"])
    w_pat = np.diff(evaluate_predictions(y, p, ["a", "b"], groups_patients, n_boot=300).summary_ci["accuracy"])
    assert w_pat > w_cells


def test_differential_agreement_is_bland_altman_over_cases():
    from leukomorph.evaluation.agreement import differential_agreement

    # case A: reference 10 blasts / 20 lymphocytes, model calls 2 of the lymphocytes blasts (+6.7 pp);
    # case B: the model agrees; case C has too few white cells (and smudges do not count)
    ref = ["blast"] * 10 + ["lymphocyte"] * 20 + ["blast"] * 5 + ["lymphocyte"] * 20 + ["smudge"] * 30 + ["blast"] * 3
    pred = ["blast"] * 12 + ["lymphocyte"] * 18 + ["blast"] * 5 + ["lymphocyte"] * 20 + ["smudge"] * 30 + ["blast"] * 3
    cases = ["A"] * 30 + ["B"] * 25 + ["C"] * 33
    a = differential_agreement(cases, ref, pred, min_wbc=20)
    assert a["cases"] == ["A", "B"]
    d = np.array([200 / 30, 0.0])  # model - reference, blasts, percentage points
    blast = a["classes"]["blast"]
    assert blast["bias"] == pytest.approx(d.mean(), abs=0.01)
    sd = d.std(ddof=1)
    assert blast["limits_of_agreement"] == pytest.approx([d.mean() - 1.96 * sd, d.mean() + 1.96 * sd], abs=0.01)
    assert a["classes"]["lymphocyte"]["bias"] == pytest.approx(-d.mean(), abs=0.01)
    assert a["classes"]["blast equivalents"]["bias"] == blast["bias"]
    assert "eosinophil" not in a["classes"]  # absent from both: not listed


def test_evaluate_on_a_laboratorys_own_labelled_cells(sample_dir, tmp_path):
    """`leukomorph evaluate --labels` on a CSV manifest with case ids: per-class metrics, the per-case
    agreement table, and an unreadable image skipped and listed instead of stopping the run."""
    import csv
    import json

    from typer.testing import CliRunner

    from leukomorph.cli.main import app

    prefix = {"BA": "basophil", "BNE": "band_neutrophil", "EO": "eosinophil", "ERB": "erythroblast"}
    prefix |= {"LY": "lymphocyte", "MO": "monocyte", "SNE": "segmented_neutrophil", "PLATELET": "platelet"}
    files = [f for f in sorted(sample_dir.glob("*.webp")) if f.stem.split("_")[0] in prefix]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with (tmp_path / "lab.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient_id"])
        for f in files:
            w.writerow([str(f), prefix[f.stem.split("_")[0]], "case1"])
        w.writerow(["broken.png", "lymphocyte", "case1"])  # relative to the CSV
    r = CliRunner().invoke(
        app, ["evaluate", "--labels", str(tmp_path / "lab.csv"), "--n-boot", "20", "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert rep["which"] == "labels" and rep["skipped"][0]["path"].endswith("broken.png")
    assert rep["sources"]["user"]["taxonomy"]["n"] == len(files)
    agree = rep["differential_agreement"]
    assert agree["min_wbc"] == 20 and agree["cases"] == ["case1"]  # 25 white cells in the sample
    assert agree["classes"]["lymphocyte"]["reference_mean"] == pytest.approx(100 * 7 / 25, abs=0.01)
    assert "per-case differential agreement" in r.output and "(one case)" in r.output  # no limits from one case
    r = CliRunner().invoke(app, ["evaluate", "--labels", str(tmp_path / "lab.csv"), "--split", "x.csv"])
    assert r.exit_code == 2 and "not both" in r.output
