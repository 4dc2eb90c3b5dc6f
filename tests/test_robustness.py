"""Conformal sets, stain normalisation, cell-scale zoom, classical nucleus masks, seg_wbc mapping."""

import dataclasses
import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from leukomorph.classify import (
    ConformalCalibration,
    calibrate,
    classify_crops,
    coverage,
    needs_review,
    prediction_sets,
    zoom_crop,
)
from leukomorph.classify.scale import case_zoom
from leukomorph.errors import ConfigError, LabelMappingError
from leukomorph.models.backends.fake import FakeClassifier
from leukomorph.records import CellPrediction, Skipped
from leukomorph.segment import nucleus_mask, nucleus_size_fraction
from leukomorph.stain import LEUKOMORPH_REFERENCE, lab_stats, normalise, reinhard
from leukomorph.taxonomy import WBC5_GROUP, map_label


def _softmax_data(n, k=5, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 2
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=pi) for pi in p])
    return p, y


def test_conformal_coverage_holds_on_exchangeable_data():
    p, y = _softmax_data(6000)
    cal = calibrate(p[:3000], y[:3000], alpha=0.1)
    cov = coverage(p[3000:], y[3000:], cal)
    assert abs(cov["coverage"] - 0.9) < 0.02
    assert 1 < cov["mean_set_size"] < 5
    # tighter alpha -> bigger sets
    assert coverage(p[3000:], y[3000:], calibrate(p[:3000], y[:3000], 0.02))["mean_set_size"] > cov["mean_set_size"]


def test_conformal_sets_never_empty_and_roundtrip():
    cal = ConformalCalibration(alpha=0.1, qhat=0.05, n_calibration=10)
    sets = prediction_sets(np.array([[0.4, 0.35, 0.25], [0.97, 0.02, 0.01]]), cal)
    assert [list(s) for s in sets] == [[0], [0]]
    assert ConformalCalibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ConfigError):
        calibrate(np.eye(3), np.arange(3), alpha=0.1)  # too few cells for 90%
    with pytest.raises(ConfigError):
        ConformalCalibration.from_dict({"method": "aps", "alpha": 0.1, "qhat": 0.5, "n_calibration": 5})


def test_classify_attaches_sets_and_review_flag():
    model = FakeClassifier()
    crops = [np.full((40, 40, 3), v, np.uint8) for v in (10, 100, 200)]
    loose = ConformalCalibration(alpha=0.1, qhat=0.995, n_calibration=100)  # threshold 0.005: every class
    tight = ConformalCalibration(alpha=0.1, qhat=0.5, n_calibration=100)
    for cal, size in ((loose, len(model.classes)), (tight, 1)):
        preds = classify_crops(model, crops, ["a", "b", "c"], conformal=cal)
        assert all(len(p.prediction_set) == size for p in preds)
        assert all(p.prediction_set[0] == p.predicted_class for p in preds)
        assert all(needs_review(p, 0.6) == (size > 1) for p in preds)
    plain = classify_crops(model, crops, ["a", "b", "c"])
    assert all(p.prediction_set == () for p in plain)
    low = dataclasses.replace(plain[0], probabilities=(0.5, 0.5) + (0.0,) * 14)
    assert needs_review(low, 0.6) and not needs_review(plain[0], 0.6)
    assert isinstance(low, CellPrediction)


def _cell(size=120, r_nuc=15, bg=(235, 200, 200)):
    img = np.full((size, size, 3), bg, np.uint8)
    cv2.circle(img, (size // 2, size // 2), int(r_nuc * 1.8), (215, 180, 200), -1)  # cytoplasm
    cv2.circle(img, (size // 2, size // 2), r_nuc, (90, 40, 140), -1)  # purple nucleus
    return img


def test_nucleus_mask_finds_the_central_nucleus():
    img = _cell(r_nuc=20)
    m = nucleus_mask(img)
    truth = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(truth, (60, 60), 20, 1, -1)
    dice = 2 * (m & truth.astype(bool)).sum() / (m.sum() + truth.sum())
    assert dice > 0.9
    assert nucleus_size_fraction(img) == pytest.approx(40 / 120, abs=0.03)
    assert np.isnan(nucleus_size_fraction(np.full((50, 50, 3), 230, np.uint8)))


def test_zoom_crop_and_case_zoom():
    img = _cell(r_nuc=30)  # nucleus fraction 0.5
    z = case_zoom([img, img, img], reference=0.25)
    assert z == pytest.approx(0.5, abs=0.05)
    out = zoom_crop(img, z)
    assert out.shape[0] == pytest.approx(240, abs=2)
    assert nucleus_size_fraction(out) == pytest.approx(0.25, abs=0.03)
    assert tuple(out[0, 0]) == (235, 200, 200)  # padded with the border colour
    assert zoom_crop(img, 2.0).shape == (60, 60, 3)
    assert zoom_crop(img, 1.0) is img
    with pytest.raises(ValueError):
        zoom_crop(img, 0)
    assert case_zoom([np.full((50, 50, 3), 230, np.uint8)]) == 1.0


def test_reinhard_matches_reference_statistics():
    rng = np.random.default_rng(0)
    img = _cell()
    img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    yellow = np.clip(img * np.array([1.0, 1.0, 0.7]), 0, 255).astype(np.uint8)
    out = reinhard(yellow)
    st = lab_stats(out)
    assert st.mean == pytest.approx(LEUKOMORPH_REFERENCE.mean, abs=2.0)
    assert normalise(img, "none") is img
    with pytest.raises(ConfigError):
        normalise(img, "macenko-typo")


def test_seg_wbc_labels_map_to_taxonomy():
    assert map_label("seg_wbc", "neutrophil") == ("segmented_neutrophil", "band_neutrophil")
    assert WBC5_GROUP["band_neutrophil"] == "neutrophil" and "blast" not in WBC5_GROUP
    with pytest.raises(LabelMappingError):
        map_label("seg_wbc", "blast")


def test_conformal_calibrates_on_patients_when_there_are_any():
    from leukomorph.evaluation.calibrate import patient_datasets

    rows = [
        {"dataset": "pbc", "patient_id": ""},
        {"dataset": "deepapl", "patient_id": "Patient_01"},
        {"dataset": "lab", "patient_id": "P7"},
    ]
    assert patient_datasets(rows) == ["deepapl", "lab"]
    assert patient_datasets(rows[:1]) is None


def test_cluster_bootstrap_resamples_whole_groups():
    from leukomorph.evaluation.metrics import bootstrap_ci

    # group "a" always right, group "b" always wrong: a resample of whole groups can only give
    # 0, 1/2 (weighted by size) or 1, never the mixtures a per-cell bootstrap would give
    hit = np.array([1.0] * 10 + [0.0] * 10)
    groups = ["a"] * 10 + ["b"] * 10
    lo, hi = bootstrap_ci(lambda sel: float(hit[sel].mean()), groups, 200)
    assert lo == 0.0 and hi == 1.0
    lo, hi = bootstrap_ci(lambda sel: float(hit[sel].mean()), [str(i) for i in range(20)], 200)
    assert 0.2 < lo < 0.5 < hi < 0.8


def test_tta_temperature_applies_only_to_its_mode():
    from types import SimpleNamespace

    from leukomorph.classify import predict_tta
    from leukomorph.classify.core import sharpen

    p = np.array([[0.6, 0.3, 0.1]])
    assert np.allclose(sharpen(p, 1.0), p)
    assert sharpen(p, 2.0)[0, 0] > 0.6 and np.allclose(sharpen(p, 2.0).sum(), 1)
    assert sharpen(p, 0.5)[0, 0] < 0.6
    model = FakeClassifier()
    batch = np.full((2, 32, 32, 3), 40, np.uint8)
    plain = predict_tta(model, batch, "flip")
    model.card = SimpleNamespace(raw={"inference": {"tta_temperature": {"tta": "flip", "scale": 2.0}}})
    assert np.allclose(predict_tta(model, batch, "flip"), sharpen(plain, 2.0))
    # fitted for the flip average: a single view and another TTA mode stay as the graph gives them
    assert np.allclose(predict_tta(model, batch, "none"), plain)
    assert np.allclose(predict_tta(model, batch, "rot4"), plain)


class _ScaleFake(FakeClassifier):
    """Sure of itself only when the dark disc covers ~10% of the prepared crop; the class is read
    from the blue level at the disc's centre (so a case has several classes at every zoom)."""

    def predict(self, batch):
        n, k = len(batch), len(self.classes)
        dark = (batch.mean(-1) < 128).reshape(n, -1).mean(1)
        conf = np.clip(1 - np.abs(dark - 0.1) * 5, 1 / k, 0.95)
        c = batch.shape[1] // 2
        idx = (batch[:, c, c, 2].astype(int) // 64) % k
        probs = np.repeat(((1 - conf) / (k - 1))[:, None], k, 1)
        probs[np.arange(n), idx] = conf
        return probs.astype(np.float32)


def _disc_crops(tmp_path, n=24, area=0.4):
    paths = []
    r = int(np.sqrt(area * 64 * 64 / np.pi))
    for i in range(n):
        img = np.full((64, 64, 3), 235, np.uint8)
        cv2.circle(img, (32, 32), r, (40, 40, int(i * 255 / (n - 1))), -1)
        p = tmp_path / f"c{i}.png"
        cv2.imwrite(str(p), img[..., ::-1])
        paths.append(str(p))
    return paths


def test_auto_cell_scale_finds_the_zoom_that_makes_cells_familiar(tmp_path):
    from leukomorph.pipeline import AnalyzeConfig, run_case

    paths = _disc_crops(tmp_path)
    base = dict(attributes=None, case_models=(), saliency=False, conformal=False, confusion_correction=False)
    auto = run_case(paths, "c", AnalyzeConfig(**base), model=_ScaleFake())
    info = auto.model["cell_scale"]
    assert info["searched"] and info["mean_entropy"] > info["gate"] and info["zoom"] == 0.5
    assert min(p.confidence for p in auto.predictions) > 0.9
    assert [p.source for p in auto.predictions] == paths  # same cells, same order
    as_given = run_case(paths, "c", AnalyzeConfig(**base, cell_scale="none"), model=_ScaleFake())
    assert as_given.model["cell_scale"]["mode"] == "fixed" and as_given.model["cell_scale"]["zoom"] == 1.0
    assert as_given.model["cell_scale"]["mean_entropy"] > as_given.model["cell_scale"]["gate"]
    assert max(p.confidence for p in as_given.predictions) < 0.2
    fixed = run_case(paths, "c", AnalyzeConfig(**base, cell_scale=0.5), model=_ScaleFake())
    assert min(p.confidence for p in fixed.predictions) > 0.9


def test_auto_cell_scale_leaves_familiar_cases_alone(tmp_path):
    from leukomorph.pipeline import AnalyzeConfig, run_case

    paths = _disc_crops(tmp_path, area=0.1)
    res = run_case(paths, "c", AnalyzeConfig(attributes=None, case_models=(), saliency=False), model=_ScaleFake())
    assert res.model["cell_scale"]["zoom"] == 1.0 and not res.model["cell_scale"]["searched"]


@pytest.mark.parametrize("bad", ["big", 0, -1, 50, "nan"])
def test_bad_cell_scale_is_a_config_error(bad):
    from leukomorph.pipeline import fixed_cell_zoom

    with pytest.raises(ConfigError, match="cell scale"):
        fixed_cell_zoom(bad)
    assert fixed_cell_zoom("auto") is None and fixed_cell_zoom("none") == 1.0 and fixed_cell_zoom("0.5") == 0.5


def test_cell_scale_search_survives_an_input_that_changed_on_disk(tmp_path, monkeypatch):
    import leukomorph.pipeline as pl
    from leukomorph.pipeline import AnalyzeConfig, run_case

    paths = _disc_crops(tmp_path)
    first_read = pl._read

    def read_once(path, seen=set()):  # noqa: B006 - the set remembers what was read
        if path == paths[0] and path in seen:
            return Skipped(path, "file changed")
        seen.add(path)
        return first_read(path)

    monkeypatch.setattr(pl, "_read", read_once)
    base = dict(attributes=None, case_models=(), saliency=False, conformal=False, confusion_correction=False)
    res = run_case(paths, "c", AnalyzeConfig(**base), model=_ScaleFake())
    info = res.model["cell_scale"]
    assert info["zoom"] == 1.0 and not info["searched"] and paths[0] in info["note"]
    assert [p.source for p in res.predictions] == paths  # every cell kept, as classified


def test_entropy_gate_is_written_beside_other_scale_entries(tmp_path):
    from leukomorph.evaluation.calibrate import write_entropy_gate

    card = tmp_path / "m.json"
    card.write_text(
        json.dumps({"name": "m", "inference": {"scale": {"nucleus_fraction": 0.37, "auto_entropy_gate": 9}}})
    )
    write_entropy_gate(card, {"auto_entropy_gate": 1.2, "margin": 0.12})
    assert json.loads(card.read_text())["inference"]["scale"] == {
        "nucleus_fraction": 0.37,
        "auto_entropy_gate": 1.2,
        "margin": 0.12,
    }


def _bg_crops(tmp_path, bg, n=24, area=0.4, name="c"):
    """Dark discs (unsure to _ScaleFake at zoom 1) on a background of colour ``bg`` (RGB)."""
    paths = []
    r = int(np.sqrt(area * 64 * 64 / np.pi))
    for i in range(n):
        img = np.zeros((64, 64, 3), np.uint8)
        img[:] = bg
        cv2.circle(img, (32, 32), r, (40, 40, int(i * 255 / (n - 1))), -1)
        p = tmp_path / f"{name}{i}.png"
        cv2.imwrite(str(p), img[..., ::-1])
        paths.append(str(p))
    return paths


PINK, YELLOW = (236, 222, 226), (245, 240, 150)


def test_background_chroma_sees_the_stain_not_the_magnification(tmp_path):
    from leukomorph.io import read_image
    from leukomorph.stain import background_chroma

    pink = [read_image(p).pixels for p in _bg_crops(tmp_path, PINK, n=6, area=0.1, name="p")]
    yellow = [read_image(p).pixels for p in _bg_crops(tmp_path, YELLOW, n=6, area=0.1, name="y")]
    ref = np.array(background_chroma(pink))
    for z in (2.0, 0.6):  # the same slide at another magnification: the background colour stays
        assert np.hypot(*(np.array(background_chroma([zoom_crop(c, z) for c in pink])) - ref)) < 2
    assert np.hypot(*(np.array(background_chroma(yellow)) - ref)) > 20


def test_case_reinhard_maps_the_pooled_statistics_of_a_case():
    from leukomorph.stain import _lab, case_lab_stats

    rng = np.random.default_rng(0)
    a = (rng.random((40, 40, 3)) * 80 + 120).astype(np.uint8)  # a pale crop ...
    b = (rng.random((40, 40, 3)) * 80 + 40).astype(np.uint8)  # ... and a dark one of the same case
    st = case_lab_stats([a, b])
    out = np.concatenate([_lab(reinhard(x, LEUKOMORPH_REFERENCE, st)).reshape(-1, 3) for x in (a, b)])
    assert np.allclose(out.mean(0), LEUKOMORPH_REFERENCE.mean, atol=2.5)  # the case as a whole (gamut clipping aside)
    own = [_lab(reinhard(x)).reshape(-1, 3).mean(0)[0] for x in (a, b)]  # per crop: both forced to one L*
    pooled = [_lab(reinhard(x, LEUKOMORPH_REFERENCE, st)).reshape(-1, 3).mean(0)[0] for x in (a, b)]
    assert abs(own[0] - own[1]) < 1.5 and pooled[0] - pooled[1] > 10  # the pale crop stays paler


class _FallbackFake(FakeClassifier):
    """Always sure the cell is class 3: tells its predictions apart from the cell model's."""

    def __init__(self, classes=None):
        super().__init__(64, *(() if classes is None else (classes,)))
        self.card = SimpleNamespace(name="fb-model", version="9.9", sha256="f" * 64, card_path="fb.json", raw={})
        self.seen: list[np.ndarray] = []

    def predict(self, batch):
        self.seen.append(batch.copy())
        probs = np.full((len(batch), len(self.classes)), 0.05 / (len(self.classes) - 1), np.float32)
        probs[:, 3] = 0.95
        return probs


def _primary_with_fallback(tmp_path):
    from leukomorph.io import read_image
    from leukomorph.stain import background_chroma

    ref = background_chroma([read_image(p).pixels for p in _bg_crops(tmp_path, PINK, n=4, name="ref")])
    model = _ScaleFake(64)
    model.card = SimpleNamespace(
        name="primary",
        version="1",
        sha256="a" * 64,
        card_path="p.json",
        raw={"inference": {"unfamiliar": {"model": "fb", "background_chroma": list(ref), "colour_gate": 8.0}}},
    )
    return model


def test_unfamiliar_stain_goes_to_the_cards_model_for_it(tmp_path, monkeypatch):
    import leukomorph.pipeline as pl
    from leukomorph.pipeline import AnalyzeConfig, run_case

    fb = _FallbackFake()
    monkeypatch.setattr(pl, "load_classifier", lambda name, threads=None: fb if name == "fb" else None)
    base = dict(attributes=None, case_models=(), saliency=False, conformal=False, confusion_correction=False)
    yellow = _bg_crops(tmp_path, YELLOW, name="y")
    res = run_case(yellow, "c", AnalyzeConfig(**base), model=_primary_with_fallback(tmp_path))
    info = res.model["cell_scale"]
    assert (
        info["unfamiliar_model"]["model"]["name"] == "fb-model" and info["unfamiliar_model"]["stain_shift"]["shifted"]
    )
    assert {p.predicted_class for p in res.predictions} == {fb.classes[3]}
    assert res.model["classified_by"]["name"] == "fb-model" and res.model["name"] == "primary"
    assert res.model["conformal"] is None  # conformal off in this config: nothing reported for either model
    assert [p.source for p in res.predictions] == yellow
    # the case was colour-transferred as a whole: the yellow background no longer reaches the fallback
    bg = fb.seen[0][:, 1, 1].astype(float)
    assert np.abs(bg[:, 0] - bg[:, 2]).mean() < np.abs(np.subtract(YELLOW[0], YELLOW[2]))
    # off: the cell model alone, at the zoom its own search chooses
    off = run_case(yellow, "c", AnalyzeConfig(**base, unfamiliar_model=False), model=_primary_with_fallback(tmp_path))
    assert "unfamiliar_model" not in off.model["cell_scale"] and off.model["cell_scale"]["zoom"] == 0.5


def test_unfamiliar_scale_alone_stays_with_the_cell_model(tmp_path, monkeypatch):
    """Same stain, another magnification: the background colour is the training sites', so no switch."""
    import leukomorph.pipeline as pl
    from leukomorph.pipeline import AnalyzeConfig, run_case

    def no_fallback(name, threads=None):
        raise AssertionError("the model for unfamiliar cases must not be loaded")

    monkeypatch.setattr(pl, "load_classifier", no_fallback)
    base = dict(attributes=None, case_models=(), saliency=False, conformal=False, confusion_correction=False)
    res = run_case(_bg_crops(tmp_path, PINK), "c", AnalyzeConfig(**base), model=_primary_with_fallback(tmp_path))
    info = res.model["cell_scale"]
    assert info["zoom"] == 0.5 and not info["stain_shift"]["shifted"] and "unfamiliar_model" not in info
    assert res.model["classified_by"]["name"] == "primary"


def test_hard_cells_of_the_training_sites_keep_the_case_scores_applicable(tmp_path, monkeypatch):
    """v0.9.4: unsure at every zoom (the search keeps 1) with the training sites' background colour:
    hard cells, not another camera, so the case is not returned as unfamiliar and the scale record
    says why; with the colour unchecked (no model for unfamiliar cases) or another zoom chosen, the
    case stays unfamiliar and its learned scores not applicable."""
    import leukomorph.pipeline as pl
    from leukomorph.classify.scale import ZoomChoice
    from leukomorph.pipeline import AnalyzeConfig, _cell_scale, classify_crops

    keep = {"zoom": 1.0}
    monkeypatch.setattr(
        pl, "search_zoom", lambda model, crops, native, tta=None, gate=1.2: ZoomChoice(keep["zoom"], native, gate, True)
    )
    base = dict(attributes=None, case_models=(), saliency=False, conformal=False, confusion_correction=False)
    paths = _bg_crops(tmp_path, PINK)
    model = _primary_with_fallback(tmp_path)
    kw = dict(batch_size=16, tta="none")
    preds = classify_crops(model, [pl._read(p).pixels for p in paths], paths, **kw)
    _, info, unfamiliar, _ = _cell_scale(model, preds, AnalyzeConfig(**base), None, "c", **kw)
    assert unfamiliar is None and "hard to classify" in info["case_scores_note"] and info["zoom"] == 1.0
    _, info, unfamiliar, _ = _cell_scale(model, preds, AnalyzeConfig(**base, unfamiliar_model=False), None, "c", **kw)
    assert unfamiliar is not None and "case_scores_note" not in info  # colour not checked
    keep["zoom"] = 0.5
    _, info, unfamiliar, _ = _cell_scale(model, preds, AnalyzeConfig(**base), None, "c", **kw)
    assert unfamiliar is not None and "case_scores_note" not in info  # another magnification fits better


def test_model_for_unfamiliar_cases_must_share_the_classes(tmp_path):
    from leukomorph.classify.scale import classify_unfamiliar

    crops = [np.full((32, 32, 3), 200, np.uint8)] * 3
    with pytest.raises(ConfigError, match="other classes"):
        classify_unfamiliar(_FallbackFake(classes=("a", "b", "c", "d")), crops, ["x"] * 3, ("a", "b", "c", "e"))


def test_colour_gate_is_written_under_unfamiliar(tmp_path):
    from leukomorph.evaluation.calibrate import write_unfamiliar

    card = tmp_path / "m.json"
    card.write_text(json.dumps({"name": "m", "inference": {"scale": {"auto_entropy_gate": 1.2}}}))
    write_unfamiliar(card, "other-model", {"background_chroma": [4.4, 16.8], "colour_gate": 11.8})
    inf = json.loads(card.read_text())["inference"]
    assert inf["unfamiliar"] == {"model": "other-model", "background_chroma": [4.4, 16.8], "colour_gate": 11.8}
    assert inf["scale"] == {"auto_entropy_gate": 1.2}
