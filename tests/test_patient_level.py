"""Counting statistics, rules 1.5, the learned case models, confusion correction, lineage hint and saliency."""

import json
import shutil

import numpy as np
import pytest

from leukomorph.aggregate import differential, suggest
from leukomorph.aggregate.case_model import (
    case_features,
    cell_contributions,
    load_case_model,
    save_case_model_params,
)
from leukomorph.aggregate.counting import cells_to_decide, prob_above, threshold_report
from leukomorph.aggregate.differential import wilson_interval
from leukomorph.errors import ModelIntegrityError
from leukomorph.explain import occlusion_map, overlay
from leukomorph.models import DEFAULT_CASE_MODEL
from leukomorph.models.backends.fake import FakeClassifier
from leukomorph.pipeline import case_scores
from leukomorph.records import CellPrediction
from leukomorph.taxonomy import CLASSES


def _cells(counts):
    out = []
    for name, n in counts.items():
        p = [0.0] * len(CLASSES)
        p[CLASSES.index(name)] = 1.0
        out += [CellPrediction(f"{name}{i}.png", tuple(p), CLASSES) for i in range(n)]
    return out


def test_reviewer_findings_enter_the_rules():
    """Rules 1.5: faggot cells flag APL (urgent, with those cells, even on too few cells); Auer rods
    make the lineage myeloid; bilobed nuclei / hypergranular cytoplasm say "APL not excluded";
    without findings nothing changes."""
    preds = _cells({"blast": 40, "lymphocyte": 60})
    plain = suggest(differential(preds), preds)
    assert plain.code == "acute_leukemia_suspected" and plain.details["findings"] == {}
    assert suggest(differential(preds), preds, findings={"auer_rods": []}) == plain  # an empty list is no finding
    s = suggest(differential(preds), preds, findings={"faggot_cell": ["blast3.png", "blast7.png"]})
    assert s.code == "apl_suspected" and s.urgent and s.evidence == ("blast3.png", "blast7.png")
    assert s.details["apl_by_finding"] and "faggot cells" in s.text and "in 2 cells" in s.text
    few = _cells({"blast": 3, "lymphocyte": 5})
    s = suggest(differential(few), few, findings={"faggot_cell": ["blast0.png"]})
    assert s.code == "apl_suspected" and s.urgent  # not "too few cells": the reviewer saw it
    # with an APL score above the threshold: the score's flag, the reviewer's cells first
    score = {"apl_vs_aml": {"probability": 0.9, "ci95": [0.8, 0.95], "model": "m", "evidence_cells": ["blast9.png"]}}
    s = suggest(differential(preds), preds, case_scores=score, findings={"faggot_cell": ["blast3.png"]})
    assert s.code == "apl_suspected" and s.evidence[:2] == ("blast3.png", "blast9.png")
    assert "The reviewer recorded faggot cells in 1 cell." in s.text
    # Auer rods: myeloid lineage, even where the morphology hint was undetermined
    assert plain.details["lineage_hint"]["hint"] == "undetermined"
    s = suggest(differential(preds), preds, findings={"auer_rods": ["blast1.png"]})
    assert s.code == "acute_leukemia_suspected" and s.details["lineage_hint"]["hint"] == "myeloid (Auer rods)"
    assert s.details["lineage_hint"]["evidence_cells"] == ["blast1.png"] and "not a lymphoid one" in s.text
    mono = _cells({"blast": 30, "monocyte": 30, "lymphocyte": 40})
    s = suggest(differential(mono), mono, findings={"auer_rods": ["blast1.png"]})
    hint = s.details["lineage_hint"]
    assert hint["hint"] == "monocytic differentiation" and "Auer rods recorded by the reviewer" in hint["basis"]
    # features of abnormal promyelocytes on a case without an APL flag
    normal = _cells({"segmented_neutrophil": 60, "lymphocyte": 40})
    assert not suggest(differential(normal), normal).details["apl_not_excluded"]
    s = suggest(differential(normal), normal, findings={"bilobed_nucleus": ["a.png"], "hypergranular": ["a.png", "b"]})
    assert s.code == "no_leukemic_pattern" and not s.urgent and s.details["apl_not_excluded"]
    assert "bilobed nuclei in 1 cell and hypergranular cytoplasm in 2 cells" in s.text
    assert s.details["findings"] == {"bilobed_nucleus": 1, "hypergranular": 2}
    s = suggest(differential(normal), normal, findings={"dysplasia": ["a.png"]})
    assert "myelodysplastic" in s.text and not s.details["apl_not_excluded"]


def test_adaptive_counting_reaches_a_decision():
    # 25/100 blasts: 95% CI 17.6-34.3% contains 20%
    assert cells_to_decide(25, 100, 20) > 0
    more = cells_to_decide(25, 100, 20)
    lo, _ = wilson_interval(round(0.25 * (100 + more)), 100 + more)
    assert lo > 0.20
    lo_before, _ = wilson_interval(round(0.25 * (99 + more)), 99 + more)
    assert lo_before <= 0.20  # minimal
    assert cells_to_decide(60, 100, 20) == 0 and cells_to_decide(2, 100, 20) == 0
    assert cells_to_decide(20, 100, 20) is None  # exactly at the threshold
    assert prob_above(60, 100, 20) > 0.999 and prob_above(2, 100, 20) < 0.001
    rep = threshold_report(25, 100)
    assert [r["status"] for r in rep] == ["above", "undecided"]


def test_uncertain_outcome_instead_of_a_forced_answer():
    preds = _cells({"blast": 25, "lymphocyte": 75})
    s = suggest(differential(preds), preds)
    assert s.code == "acute_leukemia_uncertain" and not s.urgent and s.evidence
    assert "more white cells" in s.text
    preds = _cells({"blast": 60, "lymphocyte": 40})
    assert suggest(differential(preds), preds).code == "acute_leukemia_suspected"
    preds = _cells({"blast": 3, "lymphocyte": 10})
    assert suggest(differential(preds), preds).code == "too_few_cells"


def test_apl_by_case_score_is_urgent_with_evidence_and_respects_applicability():
    preds = _cells({"blast": 5, "lymphocyte": 95})
    diff = differential(preds)
    score = {"apl_vs_aml": {"probability": 0.8, "ci95": [0.6, 0.9], "model": "m", "evidence_cells": ["blast0.png"]}}
    s = suggest(diff, preds, case_scores=score)
    assert s.code == "apl_suspected" and s.urgent and s.evidence == ("blast0.png",)
    assert not s.details["apl_score_only"] and "Caution" not in s.text  # 5% blasts: count support
    # the score alone on a near-normal differential: still urgent, with its evidence, but it says so
    normal = _cells({"segmented_neutrophil": 60, "lymphocyte": 35, "monocyte": 3, "blast": 2})
    s = suggest(differential(normal), normal, case_scores=score)
    assert s.code == "apl_suspected" and s.urgent and s.evidence and s.details["apl_score_only"]
    assert "score alone" in s.text and "2.0% of white cells" in s.text
    # a score without evidence cells (a model with no attention) on a case with no cell called a
    # promyelocyte still names the cells to review: those most likely to be promyelocytes
    bare = {"apl_vs_aml": {"probability": 0.8, "model": "lr"}}
    probs = list(preds[9].probabilities)
    probs[CLASSES.index("promyelocyte")] = 0.3
    probs[CLASSES.index("lymphocyte")] = 0.7
    preds[9] = CellPrediction(preds[9].source, tuple(probs), preds[9].classes)
    s = suggest(diff, preds, case_scores=bare)
    assert s.code == "apl_suspected" and s.urgent and s.evidence and s.evidence[0] == preds[9].source
    score["apl_vs_aml"]["applicable"] = False
    assert suggest(diff, preds, case_scores=score).code != "apl_suspected"
    score["apl_vs_aml"].update(applicable=True, probability=0.2)
    assert suggest(diff, preds, case_scores=score).code != "apl_suspected"


def test_an_apl_flag_from_the_score_on_few_cells_says_how_specific_it_is():
    rows = [
        {"cells": 20, "aml_flagged": 0.196},
        {"cells": 50, "aml_flagged": 0.108},
        {"cells": 100, "aml_flagged": 0.067},
        {"cells": None, "aml_flagged": 0.061},
    ]
    score = {
        "apl_vs_aml": {
            "probability": 0.8,
            "ci95": [0.6, 0.9],
            "model": "m",
            "evidence_cells": ["blast0.png"],
            "validation": {"cells_per_case": {"rows": rows}},
        }
    }
    few = _cells({"blast": 10, "promyelocyte": 10, "lymphocyte": 20})  # 40 cells: blast support, few cells
    s = suggest(differential(few), few, case_scores=score)
    assert s.code == "apl_suspected" and s.urgent and s.evidence == ("blast0.png",)
    assert s.details["apl_score_few_cells"] and not s.details["apl_score_only"]
    assert "rests on 40 cells" in s.text and "20% of non-APL AML patients" in s.text and "on 20 of their" in s.text
    assert "against 6% on all of them" in s.text and s.details["rules_version"] == "1.5"
    del score["apl_vs_aml"]["validation"]  # a card without the figures: the caution without them
    s = suggest(differential(few), few, case_scores=score)
    assert s.urgent and "rests on 40 cells" in s.text and "cross-validation" not in s.text
    many = _cells({"blast": 25, "promyelocyte": 25, "lymphocyte": 50})
    s = suggest(differential(many), many, case_scores=score)
    assert s.code == "apl_suspected" and not s.details["apl_score_few_cells"] and "Caution" not in s.text
    # the batch summary (cases.csv) names the cautions of each case's APL flag
    from types import SimpleNamespace

    from leukomorph.report import case_summary

    def row(cells, sug):
        r = SimpleNamespace(differential=differential(cells), suggestion=sug, case_scores=score, predictions=cells)
        return case_summary("c", SimpleNamespace(**vars(r), skipped=[]))["apl_cautions"]

    assert row(many, s) == ""
    assert row(few, suggest(differential(few), few, case_scores=score)) == "score on few cells"
    normal = _cells({"segmented_neutrophil": 20, "lymphocyte": 19, "blast": 1})
    both = suggest(differential(normal), normal, case_scores=score)
    assert row(normal, both) == "score alone (few blasts and promyelocytes); score on few cells"


def test_a_score_whose_interval_reaches_the_threshold_leaves_apl_not_excluded():
    cells = _cells({"blast": 30, "lymphocyte": 70})
    diff = differential(cells)

    def run(p, ci, applicable=True):
        score = {"apl_vs_aml": {"probability": p, "ci95": ci, "applicable": applicable, "model": "m"}}
        return suggest(diff, cells, case_scores=score)

    s = run(0.3, [0.1, 0.62])
    assert s.code == "acute_leukemia_suspected" and not s.urgent and s.details["apl_not_excluded"]
    assert "APL not excluded" in s.text and "(0.10-0.62)" in s.text
    from types import SimpleNamespace

    from leukomorph.report import case_summary

    result = SimpleNamespace(differential=diff, suggestion=s, case_scores={}, predictions=cells, skipped=[])
    assert case_summary("c", result)["apl_cautions"].startswith("no flag, but APL not excluded")
    for s in (run(0.3, [0.1, 0.45]), run(0.3, [0.1, 0.62], applicable=False)):
        assert s.code == "acute_leukemia_suspected" and not s.details["apl_not_excluded"]
        assert "APL not excluded" not in s.text
    assert "apl_not_excluded" not in run(0.7, [0.4, 0.9]).details  # flagged: the flag says it all
    few = _cells({"blast": 3, "lymphocyte": 7})
    open_score = {"apl_vs_aml": {"probability": 0.3, "ci95": [0.1, 0.9]}}
    s = suggest(differential(few), few, case_scores=open_score)
    assert s.code == "too_few_cells" and "APL not excluded" not in s.text


@pytest.fixture
def tiny_case_model(tmp_path):
    k = len(CLASSES)
    coef = np.zeros(2 * k)
    coef[k + CLASSES.index("promyelocyte")] = 2.0  # mean p(promyelocyte) drives the score
    sha = save_case_model_params(tmp_path / "m.npz", np.zeros(2 * k), np.ones(2 * k), coef, 0.0)
    card = {
        "name": "tiny-apl",
        "version": "0",
        "task": "case-classification",
        "target": "apl_vs_aml",
        "positive": "APL",
        "file": "m.npz",
        "sha256": sha,
        "classes": ["AML", "APL"],
        "input": {"features": "log_frac_meanp_v1", "cell_classes": list(CLASSES)},
        "depends_on": {"name": "fake", "sha256": "abc"},
    }
    (tmp_path / "tiny-apl.json").write_text(json.dumps(card))
    return tmp_path / "tiny-apl.json"


def test_case_model_scores_checks_hash_and_cell_model(tiny_case_model):
    cm = load_case_model(str(tiny_case_model))
    pro = np.array([_cells({"promyelocyte": 1})[0].probabilities] * 5)
    lym = np.array([_cells({"lymphocyte": 1})[0].probabilities] * 5)
    assert cm.predict(pro) > 0.5 > cm.predict(lym)
    mixed = np.concatenate([pro, lym])
    push = cell_contributions(cm, mixed)
    assert push[:5].min() > push[5:].max()  # promyelocytes raise the score
    assert case_features(mixed).shape == (2 * len(CLASSES),)
    # the case model was fitted on another cell model: reported, not applied
    model = FakeClassifier()
    entry = case_scores([str(tiny_case_model)], model, _cells({"lymphocyte": 3}))["apl_vs_aml"]
    assert entry["probability"] is None and entry["status"].startswith("not computed")
    # tampered parameters are refused
    npz = tiny_case_model.parent / "m.npz"
    npz.write_bytes(npz.read_bytes() + b"x")
    with pytest.raises(ModelIntegrityError):
        load_case_model(str(tiny_case_model))


def test_bundled_case_model_matches_bundled_cell_model():
    from leukomorph.models import get_card

    for name in ("leukomorph-apl", "leukomorph-apl-lr", DEFAULT_CASE_MODEL):
        cm = load_case_model(name)
        assert cm.depends_on["sha256"] == get_card("leukomorph-cell").sha256
        assert np.isfinite(cm.ood_threshold)


def test_case_ensemble_averages_its_members_and_checks_them(tmp_path):
    from leukomorph.aggregate.case_model import EnsembleCaseModel
    from leukomorph.aggregate.mil import mil_forward
    from leukomorph.models import get_card

    ens = load_case_model(DEFAULT_CASE_MODEL)
    assert isinstance(ens, EnsembleCaseModel)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, ens.mil.params["W"].shape[-1])).astype(np.float32)
    probs = rng.dirichlet(np.ones(len(CLASSES)), 40)
    raw, att = ens.raw_score(probs, emb)
    assert raw == pytest.approx(0.5 * (mil_forward(ens.mil.params, emb, calibrated=False)[0] + ens.lr.predict(probs)))
    p, _ = ens.score_and_attention(probs, emb)
    assert 0 < p < 1 and att.shape == (40,) and att.sum() == pytest.approx(1)
    lo, hi = ens.predict_interval(probs, emb, n_boot=20)
    assert 0 <= lo <= hi <= 1
    # a member whose file changed is refused, as any model
    card = get_card(DEFAULT_CASE_MODEL)
    raw_card = json.loads(open(card.card_path).read())
    raw_card["ensemble"]["members"][1]["sha256"] = "0" * 64
    for f in (card.file,):
        shutil.copy(card.weights_path, tmp_path / f)
    (tmp_path / "ens.json").write_text(json.dumps(raw_card))
    with pytest.raises(ModelIntegrityError, match="member"):
        load_case_model(str(tmp_path / "ens.json"))


def test_occlusion_saliency_shape_and_range():
    model = FakeClassifier(size=32)
    crop = np.full((64, 64, 3), 200, np.uint8)
    crop[20:44, 20:44] = (40, 40, 40)
    heat = occlusion_map(model, crop, grid=4)
    assert heat.shape == (32, 32) and 0 <= heat.min() and heat.max() <= 1
    assert overlay(crop, heat).shape == (32, 32, 3)


def test_analyze_results_have_case_scores_and_counting(sample_dir, tmp_path):
    from typer.testing import CliRunner

    from leukomorph.cli.main import app

    src = tmp_path / "in"
    shutil.copytree(sample_dir, src)
    r = CliRunner().invoke(app, ["analyze", str(src), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    apl = res["case_scores"]["apl_vs_aml"]
    assert 0 <= apl["probability"] <= 1 and apl["model"] == DEFAULT_CASE_MODEL
    # healthy-donor crops: no APL alarm, and a score the rules may use stays far below their
    # threshold. Whether the applicability check marks them is not asserted: the AML cohort has
    # near-normal differentials, so healthy cases sit at its threshold (README, healthy-donor blood)
    assert res["suggestion"]["code"] != "apl_suspected"
    assert "applicable" in apl and (not apl["applicable"] or apl["probability"] < 0.1)
    assert {t["threshold_percent"] for t in res["blast_thresholds"]} == {10.0, 20.0}
    html = (tmp_path / "o" / "report.html").read_text()
    assert "Counting statistics" in html and "Patient-level scores" in html


def _random_mil(rng, d: int, h: int, a: int) -> dict[str, np.ndarray]:
    """Random gated-attention MIL parameters: embedding d, hidden h, attention a."""
    return {
        "W": rng.normal(size=(h, d)),
        "b": rng.normal(size=h),
        "V": rng.normal(size=(a, h)),
        "v": rng.normal(size=a),
        "U": rng.normal(size=(a, h)),
        "u": rng.normal(size=a),
        "w": rng.normal(size=a),
        "c": rng.normal(size=h),
        "c0": np.asarray(rng.normal()),
    }


def test_mil_forward_is_a_permutation_invariant_attention_pool():
    from leukomorph.aggregate.mil import mil_forward

    rng = np.random.default_rng(0)
    d = 8
    params = _random_mil(rng, d, 6, 4)
    bag = rng.normal(size=(20, d))
    p, att = mil_forward(params, bag)
    assert 0 < p < 1 and att.shape == (20,) and att.sum() == pytest.approx(1.0)
    perm = rng.permutation(20)
    p2, att2 = mil_forward(params, bag[perm])
    assert p2 == pytest.approx(p) and np.allclose(att2, att[perm])
    # a bag of copies of one cell scores like that cell alone
    assert mil_forward(params, bag[:1].repeat(5, 0))[0] == pytest.approx(mil_forward(params, bag[:1])[0])


def test_attribute_model_predicts_wbcatt_values_and_checks_hash(tmp_path):
    import hashlib

    from leukomorph.classify.attributes import load_attribute_model
    from leukomorph.report.writer import attribute_text

    d = 4
    params = {"mean": np.zeros(d), "scale": np.ones(d)}
    vocab = {"cell_size": ["big", "small"], "granularity": ["no", "yes"]}
    params["cell_size__w"] = np.array([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]])
    params["cell_size__b"] = np.zeros(2)
    params["granularity__w"] = np.array([[0, 1.0, 0, 0], [0, -1.0, 0, 0]])
    params["granularity__b"] = np.zeros(2)
    with (tmp_path / "a.npz").open("wb") as fh:
        np.savez(fh, **params)
    card = {
        "name": "attr",
        "version": "0",
        "task": "attribute-classification",
        "file": "a.npz",
        "sha256": hashlib.sha256((tmp_path / "a.npz").read_bytes()).hexdigest(),
        "classes": list(vocab),
        "input": {"features": "cell_embedding"},
        "vocabulary": vocab,
        "depends_on": {"name": "x", "sha256": "y"},
    }
    (tmp_path / "attr.json").write_text(json.dumps(card))
    m = load_attribute_model(str(tmp_path / "attr.json"))
    out = m.predict(np.array([[2.0, -2.0, 0, 0], [-2.0, 2.0, 0, 0]]))
    assert [v for v, _ in out["cell_size"]] == ["big", "small"]
    assert [v for v, _ in out["granularity"]] == ["yes", "no"]
    assert "big" in attribute_text({"cell_size": ("big", 0.9), "granularity": ("no", 0.8)})
    (tmp_path / "a.npz").write_bytes(b"tampered")
    with pytest.raises(ModelIntegrityError):
        load_attribute_model(str(tmp_path / "attr.json"))


# -- confusion-corrected differential ------------------------------------------------------------
def test_unfolding_recovers_true_proportions():
    from leukomorph.aggregate.correction import unfold

    rng = np.random.default_rng(0)
    k = 5
    conf = np.diag([200.0, 150, 80, 40, 300]) + rng.integers(0, 15, (k, k))
    m = conf / conf.sum(1, keepdims=True)
    true = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    observed = true @ m  # expected predicted proportions: biased away from the truth
    assert np.abs(observed - true).max() > 0.02
    assert np.abs(unfold(observed * 1e6, m) - true).max() < 1e-3


def test_corrected_differential_identity_and_uncertainty():
    from leukomorph.aggregate.correction import corrected_differential

    counts = np.zeros(len(CLASSES), int)
    counts[CLASSES.index("blast")] = 30
    counts[CLASSES.index("lymphocyte")] = 70
    perfect = np.diag(np.full(len(CLASSES), 100.0))
    r = corrected_differential(counts, perfect, CLASSES)
    assert r.blast_percent == pytest.approx(30.0, abs=1.5)  # the Jeffreys prior pulls ~1 point at 100 cells
    lo, hi = r.blast_ci
    assert lo < 30 < hi and hi - lo > 10  # counting noise of 100 cells remains
    # a model that calls a third of true lymphocytes "blast": 30 observed blasts are mostly lymphocytes
    leaky = perfect.copy()
    li, bi = CLASSES.index("lymphocyte"), CLASSES.index("blast")
    leaky[li, li], leaky[li, bi] = 67.0, 33.0
    r2 = corrected_differential(counts, leaky, CLASSES)
    assert r2.blast_percent < 15
    # few held-out cells of the leaking class: wider interval than with many
    r3 = corrected_differential(counts, np.where(leaky > 0, leaky / 20, 0), CLASSES)
    assert (r3.blast_ci[1] - r3.blast_ci[0]) > (r2.blast_ci[1] - r2.blast_ci[0])
    with pytest.raises(ValueError):
        corrected_differential(counts[:-1], perfect, CLASSES)


def test_corrected_differential_keeps_a_class_the_confusion_can_explain_away():
    """Maximum likelihood puts a rare observed class at exactly 0 with a "0.0 (0.0-0.0)" interval
    when another class's leakage can explain it; the posterior keeps the chance that it is real."""
    from leukomorph.aggregate.correction import corrected_differential, unfold

    si, bi = CLASSES.index("segmented_neutrophil"), CLASSES.index("band_neutrophil")
    counts = np.zeros(len(CLASSES), int)
    counts[si], counts[bi] = 197, 3
    conf = np.diag(np.full(len(CLASSES), 100.0))
    conf[si, si], conf[si, bi] = 90.0, 10.0  # a tenth of true segmented cells are called bands
    m = conf / conf.sum(1, keepdims=True)
    assert unfold(counts, m)[bi] < 1e-3  # the maximum-likelihood solution explains the bands away
    band = corrected_differential(counts, conf, CLASSES).percent["band_neutrophil"]
    assert band[1] <= band[0] <= band[2] and band[2] > 0.5
    none = corrected_differential(np.zeros(len(CLASSES), int), conf, CLASSES)
    assert none.blast_percent == 0 and none.percent["blast"] == (0.0, 0.0, 0.0)


def test_lineage_hint_monocytic_and_granularity():
    from leukomorph.aggregate.rules import lineage_hint

    preds = _cells({"blast": 30, "monocyte": 25, "promonocyte": 5, "lymphocyte": 40})
    sug = suggest(differential(preds), preds)
    lh = sug.details["lineage_hint"]
    assert sug.code == "acute_leukemia_suspected" and sug.details["rules_version"] == "1.5"
    assert lh["hint"] == "monocytic differentiation" and "flow cytometry" in lh["caveat"]
    assert set(lh["evidence_cells"]) <= {p.source for p in preds if p.predicted_class in ("monocyte", "promonocyte")}
    preds = _cells({"blast": 40, "lymphocyte": 60})
    diff = differential(preds)
    assert lineage_hint(diff, preds)["hint"] == "undetermined"  # no attributes: granularity not assessed
    agran = {p.source: {"granularity": ("no", 0.9)} for p in preds}
    assert lineage_hint(diff, preds, attributes=agran)["hint"].startswith("agranular blasts")
    gran = {p.source: {"granularity": ("yes", 0.9)} for p in preds}
    hint = lineage_hint(diff, preds, attributes=gran)
    assert hint["hint"].startswith("myeloid favoured") and hint["statistics"]["granular_blast_share"][2] == 40
    # no hint where nothing leukemic was seen
    healthy = _cells({"segmented_neutrophil": 60, "lymphocyte": 40})
    assert "lineage_hint" not in suggest(differential(healthy), healthy).details


def test_apl_suspected_is_always_urgent_with_evidence():
    """The P3 invariant, over many random cases: no 'APL suspected' without the urgent flag and evidence cells."""
    rng = np.random.default_rng(1)
    seen = {True: 0, False: 0}  # by the learned score / by the promyelocyte count
    for _ in range(300):
        n = rng.multinomial(int(rng.integers(10, 200)), rng.dirichlet(np.full(len(CLASSES), 0.3)))
        counts = dict(zip(CLASSES, n, strict=True))
        preds = _cells({k: int(v) for k, v in counts.items() if v})
        evidence = [p.source for p in preds[:3]]
        scores = (
            {
                "apl_vs_aml": {
                    "probability": float(rng.random()),
                    "applicable": bool(rng.random() < 0.8),
                    "ci95": [0.1, 0.9],
                    "model": "m",
                    "evidence_cells": evidence,
                }
            }
            if rng.random() < 0.7
            else None
        )
        s = suggest(differential(preds), preds, case_scores=scores)
        if s.code == "apl_suspected":
            seen[bool(s.details["apl_vs_aml_used"])] += 1
            assert s.urgent and len(s.evidence) > 0
            assert s.details["lineage_hint"]["hint"].startswith("myeloid, promyelocytic")
    assert seen[True] > 5 and seen[False] > 5  # both paths were exercised


def test_unfamiliar_images_make_case_scores_not_applicable(tiny_case_model):
    from types import SimpleNamespace

    model = FakeClassifier()
    model.card = SimpleNamespace(name="fake", sha256="abc", raw={})
    cells = _cells({"promyelocyte": 30, "lymphocyte": 90})
    ok = case_scores([str(tiny_case_model)], model, cells)["apl_vs_aml"]
    assert ok["probability"] is not None and ok["applicable"]
    why = "the cells look unlike the cell model's training images"
    off = case_scores([str(tiny_case_model)], model, cells, unfamiliar=why)["apl_vs_aml"]
    assert off["probability"] == ok["probability"] and not off["applicable"] and off["applicability_note"] == why
    # the rules then fall back to the promyelocyte count, never to the learned score
    sug = suggest(differential(cells), cells, case_scores={"apl_vs_aml": off})
    assert not sug.details["apl_vs_aml_used"]
    # hard cells of the training sites (v0.9.4): applicable, with the reason noted
    hard = case_scores([str(tiny_case_model)], model, cells, note="hard cells")["apl_vs_aml"]
    assert hard["applicable"] and hard["applicability_note"] == "hard cells"


def test_mil_seed_bag_averages_member_logits():
    from leukomorph.aggregate.mil import PARAM_NAMES, mil_forward

    rng = np.random.default_rng(0)
    d = 6
    m1, m2 = _random_mil(rng, d, 5, 4), _random_mil(rng, d, 5, 4)
    bag = rng.normal(size=(9, d))
    stacked = {n: np.stack([m1[n], m2[n]]) for n in PARAM_NAMES}
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    p1, a1 = mil_forward(m1, bag)
    p2, a2 = mil_forward(m2, bag)
    p, a = mil_forward(stacked, bag)
    assert np.isclose(logit(p), (logit(p1) + logit(p2)) / 2)
    assert np.allclose(a, (a1 + a2) / 2) and np.isclose(a.sum(), 1)
    same = {n: np.stack([m1[n], m1[n]]) for n in PARAM_NAMES}
    assert np.isclose(mil_forward(same, bag)[0], p1)


def test_case_model_on_a_feature_subset_ignores_the_other_classes():
    from leukomorph.aggregate.case_model import CaseModel, feature_index
    from leukomorph.errors import ModelError

    idx = feature_index(CLASSES, ["blast", "promyelocyte"])
    k = len(CLASSES)
    b, p = CLASSES.index("blast"), CLASSES.index("promyelocyte")
    assert list(idx) == [b, p, k + b, k + p] and feature_index(CLASSES, None) is None
    with pytest.raises(ModelError, match="not among the cell classes"):
        feature_index(CLASSES, ["blast", "auer_rod"])
    rng = np.random.default_rng(0)
    m = CaseModel(
        name="t", version="0", target="apl_vs_aml", positive="APL", classes=CLASSES,
        mean=np.zeros(4), scale=np.ones(4), coef=rng.normal(size=4), intercept=0.0,
        depends_on={}, card_path="", ood_location=np.zeros(4), ood_precision=np.eye(4), index=idx,
    )  # fmt: skip
    probs = rng.dirichlet(np.ones(k), size=50)
    other = probs.copy()
    plt, eos = CLASSES.index("platelet"), CLASSES.index("eosinophil")
    other[:, [plt, eos]] = other[:, [eos, plt]]  # move mass between two classes the model does not use
    assert m.predict(other) == pytest.approx(m.predict(probs))
    assert m.distance(other) == pytest.approx(m.distance(probs))
    push = cell_contributions(m, probs)
    assert push.shape == (50,) and np.isfinite(push).all()
    assert [n for n, _ in m.contributions(probs, top=4)] != [] and all(
        n.endswith(("_blast", "_promyelocyte")) for n, _ in m.contributions(probs, top=4)
    )
