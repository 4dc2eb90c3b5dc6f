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
