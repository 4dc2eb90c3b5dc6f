"""Training smoke test on synthetic images (needs torch: `make test-train`)."""

import json

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.train
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


def test_train_export_and_reload(tmp_path, monkeypatch):
    from leukomorph.data import load_folder_tree
    from leukomorph.models.backends.onnx import OnnxClassifier
    from leukomorph.models.registry import ModelCard
    from leukomorph.training.card import finalize_model
    from leukomorph.training.train import TrainConfig, train_classifier

    rng = np.random.default_rng(0)
    colours = {"blast": (120, 60, 160), "lymphocyte": (60, 60, 200), "platelet": (220, 200, 210)}
    for cls, col in colours.items():
        for patient in ("P1", "P2", "P3", "P4", "P5"):
            (tmp_path / "data" / cls / patient).mkdir(parents=True)
            for i in range(4):
                arr = np.clip(rng.normal(col, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(tmp_path / "data" / cls / patient / f"{i}.png")
    recs = load_folder_tree(tmp_path / "data")
    monkeypatch.setenv("LEUKOMORPH_DATA", str(tmp_path / "data"))
    cfg = TrainConfig(
        size=32, epochs=2, batch_size=16, test_fraction=0.2, val_fraction=0.2, threads=1, augment="strong"
    )
    summary = train_classifier(recs, cfg, tmp_path / "run")
    assert len(summary["history"]) == 2
    # patients never straddle splits
    split = {s: set(p) for s, p in summary["patients"].items()}
    assert not (split["train"] & split["test"]) and not (split["val"] & split["test"])
    card_path = finalize_model(tmp_path / "run", "tiny", recs, [str(tmp_path / "data")], n_boot=20)
    card = ModelCard.from_file(card_path)
    raw = json.loads(card_path.read_text())
    assert raw["metrics"]["held_out_test"]
    # conformal sets fitted on the validation patients, coverage measured on the test patients
    assert raw["inference"]["conformal"]["fitted_on"]["which"] == "val"
    assert raw["inference"]["conformal"]["fitted_on"]["n_patients"] >= 1
    assert 0 < raw["inference"]["conformal"]["qhat"] <= 1
    assert "coverage" in raw["metrics"]["held_out_test"]["conformal"]["all"]
    # the automatic cell scale's gate comes from the same validation patients
    gate = raw["inference"]["scale"]
    assert gate["fitted_on"]["which"] == "val" and gate["fitted_on"]["n_patients"] >= 1
    assert gate["auto_entropy_gate"] == round(gate["max_patient_mean_entropy"] + gate["margin"], 1)
    m = OnnxClassifier(card, card.weights_path)
    probs = m.predict(np.zeros((3, 32, 32, 3), np.uint8))
    assert probs.shape == (3, 16) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_case_ensemble_cross_validation_scores_every_patient_once_per_repeat():
    from sklearn.metrics import roc_auc_score

    from leukomorph.training.case_ensemble import EnsembleData, cv_folds, member_scores

    rng = np.random.default_rng(0)
    y = np.array([1] * 6 + [0] * 14)
    bags, probs = [], []
    for label in y:  # APL patients: embeddings shifted, and more cells likely to be class 0
        n = int(rng.integers(15, 30))
        bags.append(rng.normal(0.8 * label, 1.0, (n, 8)).astype(np.float32))
        p = rng.dirichlet([3.0 if label else 1.0, 1.0, 1.0], n)
        probs.append(p)
    d = EnsembleData(
        patients=[f"P{i}" for i in range(len(y))],
        y=y,
        rows=[],
        by_patient={},
        bags=bags,
        probs=probs,
        index=None,
        epochs=3,
        members=1,
        bag_min_cells=None,
        c=1.0,
        cell={},
        model=None,
        mil_card=None,
        lr_card=None,
    )
    seen = np.zeros((2, len(y)), int)
    oof = np.zeros((2, len(y)))
    for r, te, members in cv_folds(d, repeats=2):
        seen[r, te] += 1
        s_mil, s_lr = member_scores(members, [d.bags[i] for i in te], [d.probs[i] for i in te], d)
        assert s_mil.shape == s_lr.shape == (len(te),) and ((s_mil >= 0) & (s_mil <= 1)).all()
        oof[r, te] = (s_mil + s_lr) / 2
    assert (seen == 1).all()  # every patient scored once per repeat, always out of fold
    assert roc_auc_score(y, oof.mean(0)) > 0.8


def test_mil_bag_size_augmentation_draws_between_its_minimum_and_the_bag():
    from leukomorph.training.mil import _bag_size

    rng = np.random.default_rng(0)
    assert _bag_size(rng, 500, None, 256) == 256 and _bag_size(rng, 40, None, 256) == 40  # off: as before
    assert _bag_size(rng, 15, 20, 256) == 15  # a bag smaller than the minimum keeps every cell
    k = np.array([_bag_size(rng, 300, 20, 256) for _ in range(2000)])
    assert k.min() >= 20 and k.max() <= 256
    assert abs(np.median(k) - np.sqrt(20 * 256)) < 10  # log-uniform: the median is the geometric mean


def test_mil_torch_and_numpy_agree():
    from leukomorph.aggregate.mil import mil_forward
    from leukomorph.training.mil import GatedAttentionMIL

    torch.manual_seed(0)
    net = GatedAttentionMIL(12).eval()
    bag = np.random.default_rng(0).normal(size=(30, 12)).astype(np.float32)
    with torch.no_grad():
        p_torch = torch.sigmoid(net(torch.from_numpy(bag))).item()
    assert mil_forward(net.params(), bag)[0] == pytest.approx(p_torch, abs=1e-5)


def test_a_white_cell_laid_over_another_overlaps_it_and_changes_nothing_else():
    import cv2

    from leukomorph.training.detect import glass_colour, lay_cell, overlapping_pair

    glass = (235, 215, 215)
    field = np.full((200, 240, 3), glass, np.uint8)
    cv2.circle(field, (120, 100), 30, (150, 120, 200), -1)
    item = {
        "image": field,
        "boxes": np.array([[90, 70, 150, 130], [10, 10, 30, 30]], np.float32),
        "labels": np.array([0, 1]),
        "source": "s",
    }
    donor = {"image": field.copy(), "boxes": item["boxes"].copy(), "labels": item["labels"], "source": "s"}
    assert np.array_equal(glass_colour(field), np.array(glass, np.float32))
    bare = np.full((20, 20, 3), glass, np.uint8)  # bare glass laid anywhere changes nothing
    assert np.array_equal(lay_cell(field, bare, glass_colour(field), 5, 5), field)
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = overlapping_pair(item, [(donor, 0)], rng, (0.2, 0.4))
        assert out is not item and list(out["labels"]) == [0, 1, 0]
        new, own = out["boxes"][-1], item["boxes"][0]
        assert new[2] - new[0] == 60 and new[3] - new[1] == 60
        ix = min(new[2], own[2]) - max(new[0], own[0])
        iy = min(new[3], own[3]) - max(new[1], own[1])
        assert ix > 0 and iy > 0  # the laid cell overlaps the field's own
        outside = np.ones(field.shape[:2], bool)
        outside[int(new[1]) : int(new[3]), int(new[0]) : int(new[2])] = False
        assert np.array_equal(out["image"][outside], field[outside])  # nothing changes outside its box
        x0, y0 = int(new[0]), int(new[1])  # soft: the corners of the laid box keep the field's pixels
        assert np.abs(out["image"][y0, x0].astype(int) - field[y0, x0].astype(int)).max() <= 2
    no_white = {**item, "labels": np.array([1, 1])}  # nothing to lay a cell over: the field as it was
    assert overlapping_pair(no_white, [(donor, 0)], rng) is no_white


def test_detector_trains_exports_and_finalizes_on_synthetic_fields(tmp_path):
    import csv

    import cv2

    from leukomorph.models.registry import load_detector
    from leukomorph.training.detect import DetConfig, finalize_detector, train_detector

    base = tmp_path / "data" / "txl_pbc"
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 6), ("val", 3)):
        (base / "images" / split).mkdir(parents=True)
        (base / "labels" / split).mkdir(parents=True)
        for i in range(n):
            img = np.full((200, 240, 3), (235, 210, 210), np.uint8)
            lines = []
            for _ in range(6):  # red cells
                cx, cy = int(rng.integers(20, 220)), int(rng.integers(20, 180))
                cv2.circle(img, (cx, cy), 14, (215, 150, 160), -1)
                lines.append(f"1 {cx / 240} {cy / 200} {28 / 240} {28 / 200}")
            cx, cy = int(rng.integers(50, 190)), int(rng.integers(50, 150))
            cv2.circle(img, (cx, cy), 30, (150, 120, 200), -1)
            cv2.circle(img, (cx, cy), 18, (80, 30, 130), -1)
            lines.append(f"0 {cx / 240} {cy / 200} {60 / 240} {60 / 200}")
            name = f"{split}{i}"
            Image.fromarray(img).save(base / "images" / split / f"{name}.png")
            (base / "labels" / split / f"{name}.txt").write_text("\n".join(lines))
            rows.append([f"images/{split}/{name}.png", f"labels/{split}/{name}.txt", split, "synthetic", 240, 200])
    with (base / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "labels", "split", "source_dataset", "width", "height"])
        w.writerows(rows)
    run = tmp_path / "run"
    # every training field gets a second white cell laid over its own (the clump augmentation)
    train_detector(run, DetConfig(epochs=2, batch_size=4, threads=1, overlap_paste=1.0), root=tmp_path / "data")
    card = finalize_detector(run, "tiny-det", root=tmp_path / "data")
    raw = json.loads(card.read_text())
    assert raw["task"] == "detection" and raw["input"]["rbc_diameter_px"] > 0
    assert set(raw["inference"]["score_threshold"]) == {"white_blood_cell", "red_blood_cell", "platelet"}
    assert "white_blood_cell" in raw["metrics"]["held_out_val_ap50"]
    det = load_detector(str(card))
    fd = det.detect_field(np.full((200, 240, 3), 230, np.uint8))
    assert fd.scale > 0 and isinstance(fd.detections, list)


def test_simclr_pretraining_initialises_the_classifier(tmp_path):
    from leukomorph.records import LabelledImage
    from leukomorph.training.ssl import SslConfig, nt_xent, pretrain_simclr
    from leukomorph.training.train import TrainConfig, train_classifier

    # the loss is lowest when each cell's two views agree
    z = torch.randn(8, 16)
    assert nt_xent(z, z, 0.2) < nt_xent(z, torch.randn(8, 16), 0.2)
    rng = np.random.default_rng(0)
    recs = []
    for i in range(40):
        arr = np.clip(rng.normal((150, 90, 170), 30, (40, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(tmp_path / f"{i}.png")
        cls = "blast" if i % 2 else "lymphocyte"
        recs.append(LabelledImage(str(tmp_path / f"{i}.png"), (cls,), "user", cls, patient_id=f"P{i % 8}"))
    backbone = pretrain_simclr(recs, tmp_path / "ssl", SslConfig(size=32, epochs=1, batch_size=16, threads=1))
    assert json.loads((tmp_path / "ssl" / "ssl.json").read_text())["images"] == 40
    cfg = TrainConfig(size=32, epochs=1, batch_size=8, threads=1, init=str(backbone))
    assert len(train_classifier(recs, cfg, tmp_path / "run")["history"]) == 1
    bad = tmp_path / "bad.pt"
    torch.save({"stem.0.weight": torch.zeros(1)}, bad)
    from leukomorph.errors import ConfigError

    with pytest.raises(ConfigError, match="not a backbone"):
        train_classifier(recs, TrainConfig(size=32, epochs=1, batch_size=8, threads=1, init=str(bad)), tmp_path / "r2")


@pytest.mark.parametrize("mode", ["standard", "strong", "wide", "colour"])
def test_augment_modes_keep_shape_and_range(mode):
    from leukomorph.training.train import AUGMENT_MODES, augment

    assert mode in AUGMENT_MODES
    x = torch.rand(6, 3, 24, 24)
    out = augment(x.clone(), torch.Generator().manual_seed(0), mode)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.allclose(out, x)


def test_wide_augment_magnifies_up_to_twice():
    """A centred disc grows or shrinks with the zoom: "wide" reaches discs far larger than "strong" can."""
    from leukomorph.training.train import augment

    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    disc = (((yy - 31.5) ** 2 + (xx - 31.5) ** 2) < 10**2).float()
    x = (1 - 0.8 * disc).expand(64, 3, 64, 64).clone()  # dark disc of radius 10 on white

    def radii(mode):
        out = augment(x.clone(), torch.Generator().manual_seed(1), mode)
        dark = (out.mean(1) < 0.5).flatten(1).sum(1).float()  # disc area in pixels
        return (dark / torch.pi).sqrt()

    assert float(radii("strong").max()) < 10 * 1.3 * 1.15
    assert float(radii("wide").max()) > 10 * 1.6


def test_hue_rotation_keeps_luma_and_chroma():
    """The hue rotation turns colours about the grey axis: luma and chroma magnitude stay, hue moves."""
    from leukomorph.training.train import _hue_rotate

    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    x = 0.4 + 0.2 * torch.rand(3, 3, 5, 5)  # mid-range colours: no clipping
    out = _hue_rotate(x, torch.tensor([0.0, 25.0, -90.0]))
    a, b = torch.einsum("ij,bjhw->bihw", yiq, x), torch.einsum("ij,bjhw->bihw", yiq, out)
    assert torch.allclose(out[0], x[0], atol=1e-5)
    assert torch.allclose(a[:, 0], b[:, 0], atol=1e-4)  # luma
    assert torch.allclose(a[:, 1:].norm(dim=1), b[:, 1:].norm(dim=1), atol=1e-4)  # chroma
    ang = torch.atan2(b[1, 2], b[1, 1]) - torch.atan2(a[1, 2], a[1, 1])
    assert torch.allclose(
        torch.remainder(ang + torch.pi, 2 * torch.pi) - torch.pi, torch.full_like(ang, 25 * torch.pi / 180), atol=1e-3
    )


def test_colour_augment_reaches_casts_strong_does_not():
    """On a grey image, "colour" produces channel ratios (yellow/blue casts) far outside "strong"'s range."""
    from leukomorph.training.train import augment

    x = torch.full((256, 3, 16, 16), 0.6)

    def spread(mode):
        out = augment(x.clone(), torch.Generator().manual_seed(2), mode).mean((2, 3))
        return float((out[:, 0] / out[:, 2]).log().abs().max())

    assert spread("colour") > 1.5 * spread("strong")


def _recs(spec):
    from leukomorph.records import LabelledImage

    return [
        LabelledImage(path=f"{ds}{i}", classes=classes, dataset=ds, source_label="x")
        for ds, classes, n in spec
        for i in range(n)
    ]


def test_sampling_weights_per_source_lifts_one_sites_rare_class():
    from leukomorph.taxonomy import CLASSES
    from leukomorph.training.train import sampling_weights

    # site A: 100 eosinophils, 100 lymphocytes; site B: 4 eosinophils, 100 lymphocytes
    recs = _recs([("a", ("eosinophil",), 100), ("a", ("lymphocyte",), 100), ("b", ("eosinophil",), 4)])
    recs += _recs([("b", ("lymphocyte",), 100)])
    masks = np.array([[c in r.classes for c in CLASSES] for r in recs])
    b_eos = np.array([r.dataset == "b" and r.classes == ("eosinophil",) for r in recs])
    pooled = sampling_weights(recs, masks, 0.5, "class")
    per_source = sampling_weights(recs, masks, 0.5, "source")
    assert pooled.sum() == pytest.approx(1) and per_source.sum() == pytest.approx(1)
    # pooled: site B's eosinophils weigh like site A's (104 eosinophils against 200 lymphocytes)
    assert pooled[b_eos][0] == pytest.approx(pooled[0])
    # per source: each of them weighs like one of 4, i.e. sqrt(100 / 4) = 5 times a site-A eosinophil
    assert per_source[b_eos][0] / per_source[0] == pytest.approx(5.0)
    assert per_source[b_eos].sum() > 3 * pooled[b_eos].sum()


def test_sampling_weights_partial_labels_and_bad_mode():
    from leukomorph.errors import ConfigError
    from leukomorph.taxonomy import CLASSES
    from leukomorph.training.train import sampling_weights

    recs = _recs([("a", ("myelocyte",), 9), ("a", ("myelocyte", "metamyelocyte"), 2), ("a", ("metamyelocyte",), 3)])
    masks = np.array([[c in r.classes for c in CLASSES] for r in recs])
    w = sampling_weights(recs, masks, 1.0, "source")
    # frequencies: myelocyte 9 + 2/2 = 10, metamyelocyte 3 + 1 = 4; a partial item gets the mean weight
    assert w[9] / w[0] == pytest.approx((1 / 10 + 1 / 4) / 2 / (1 / 10))
    assert w[11] / w[0] == pytest.approx(10 / 4)
    with pytest.raises(ConfigError, match="balance_by"):
        sampling_weights(recs, masks, 0.5, "patient")


@pytest.mark.parametrize("option", [["--balance-by", "patient"], ["--augment", "extreme"]])
def test_train_classifier_cli_bad_option_is_a_usage_error(tmp_path, option):
    from typer.testing import CliRunner

    from leukomorph.cli.main import EXIT_USAGE, app

    for cls in ("blast", "lymphocyte"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(tmp_path / "data" / cls / "a.png")
    args = ["train-classifier", "--out", str(tmp_path / "run"), "--datasets", str(tmp_path / "data"), *option]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == EXIT_USAGE, r.output
    assert option[1] in r.output and not (tmp_path / "run").exists()


def test_grayscale_export_is_blind_to_hue_at_equal_luminance(tmp_path):
    import onnxruntime as ort

    from leukomorph.training.nets import LUMA, build_net, export_onnx, to_gray

    torch.manual_seed(0)
    net = build_net("lm-resnet-s", 16).eval()
    # two images whose pixels differ in hue but share their BT.601 luminance
    rng = np.random.default_rng(0)
    a = rng.uniform(60, 200, (2, 32, 32, 3))
    shift = np.array([1.0, -0.299 / 0.587, 0.0]) * 40  # R up, G down: luminance unchanged
    b = a + shift
    a, b = np.round(a).astype(np.uint8), np.round(b).astype(np.uint8)
    lum = lambda x: x.astype(float) @ np.array(LUMA)  # noqa: E731
    assert np.abs(lum(a) - lum(b)).max() < 1.0 and np.abs(a.astype(int) - b.astype(int)).max() >= 40
    out = {}
    for gray in (False, True):
        path = tmp_path / f"g{gray}.onnx"
        export_onnx(net, path, 32, (0.8, 0.72, 0.75), (0.15, 0.18, 0.12), 1.0, with_embedding=True, grayscale=gray)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        emb = [sess.run(None, {"image": x})[1] for x in (a, b)]
        out[gray] = np.abs(emb[0] - emb[1]).max() / np.abs(emb[0]).max()
    # the colour model's embedding moves with the hue; the grayscale one only by the uint8 rounding
    assert out[False] > 0.05 and out[True] < out[False] / 20, out
    g = to_gray(torch.rand(2, 3, 8, 8))
    assert g.shape == (2, 3, 8, 8) and torch.equal(g[:, 0], g[:, 2])


def _two_colour_patients(root, seed: int):
    """A class-per-folder tree of 32 px noise crops: blasts violet, lymphocytes blue, 4 patients × 3."""
    from leukomorph.data import load_folder_tree

    rng = np.random.default_rng(seed)
    for cls, col in {"blast": (120, 60, 160), "lymphocyte": (60, 60, 200)}.items():
        for patient in ("P1", "P2", "P3", "P4"):
            (root / cls / patient).mkdir(parents=True)
            for i in range(3):
                arr = np.clip(rng.normal(col, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(root / cls / patient / f"{i}.png")
    return load_folder_tree(root)


def test_distillation_from_a_teacher_trains_and_a_wrong_teacher_is_refused(tmp_path):
    from leukomorph.errors import ConfigError
    from leukomorph.training.nets import build_net
    from leukomorph.training.train import TrainConfig, train_classifier

    recs = _two_colour_patients(tmp_path / "data", seed=1)
    teacher = tmp_path / "teacher.pt"
    torch.save(build_net("lm-resnet-s", 16).state_dict(), teacher)
    cfg = dict(size=32, epochs=1, batch_size=8, test_fraction=0.25, val_fraction=0.25, threads=1)
    summary = train_classifier(recs, TrainConfig(**cfg, distill=str(teacher)), tmp_path / "run")
    assert np.isfinite(summary["history"][0]["loss"]) and summary["config"]["distill"] == str(teacher)
    assert summary["chosen_epoch"] == 1  # without keep_best: the last epoch
    torch.save(build_net("lm-resnet-s", 5).state_dict(), tmp_path / "five.pt")  # other classes
    with pytest.raises(ConfigError, match="16 classes"):
        train_classifier(recs, TrainConfig(**cfg, distill=str(tmp_path / "five.pt")), tmp_path / "run2")


def test_finetune_on_reviewed_cells_compares_with_the_base_and_installs(tmp_path, sample_dir, monkeypatch):
    """Fine-tune the shipped default on reviewed cells of six cases (the bundled sample, no replay):
    a new card says what it came from, ships its own training weights, and can be installed and
    activated; finetune.json compares base and fine-tuned model on the held-out cases."""
    import csv

    from typer.testing import CliRunner

    from leukomorph.cli.main import app
    from leukomorph.models.registry import active_classifier, get_card, training_weights

    monkeypatch.setenv("LEUKOMORPH_HOME", str(tmp_path / "home"))
    import shutil

    labels = {r["file"]: r["pbc_label"] for r in csv.DictReader((sample_dir / "labels.csv").open())}
    (tmp_path / "cells").mkdir()
    with (tmp_path / "reviewed.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient_id"])
        for i, (f, lab) in enumerate(sorted(labels.items())):
            for k in range(4):  # 124 cells: enough to calibrate on the validation cases
                dst = tmp_path / "cells" / f"{k}_{f}"
                shutil.copyfile(sample_dir / f, dst)
                w.writerow([str(dst), lab, f"case{i % 6}"])
    out = tmp_path / "ft"
    r = CliRunner().invoke(
        app,
        [
            "finetune",
            str(tmp_path / "reviewed.csv"),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--replay",
            "none",
            "--name",
            "lab-ft",
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "kept epoch" in r.output
    res = json.loads((out / "finetune.json").read_text())
    ch = res["chosen_epoch"]  # chosen on the laboratory's validation cases; epoch 0 = the base weights
    acc = ch["validation_accuracy"]
    assert set(acc) == {"0", "1"} and ch["epoch"] == min((-a, int(e)) for e, a in acc.items())[1]
    assert res["laboratory"] == {**res["laboratory"], "cells": 4 * len(labels), "cases": 6}
    for key in ("base", "finetuned"):
        assert res["comparison"][key]["laboratory_test_cases"]["n"] > 0
    card = get_card(str(out / "lab-ft.json"))
    assert card.raw["finetuned_from"]["name"] == "leukomorph-cell" and training_weights(card).is_file()
    r = CliRunner().invoke(app, ["models", "--install", str(out / "lab-ft.json"), "--activate", "lab-ft"])
    assert r.exit_code == 0, r.output
    assert active_classifier() == "lab-ft"
    # too few cases: refused before any training
    r = CliRunner().invoke(
        app,
        [
            "finetune",
            str(tmp_path / "reviewed.csv"),
            "--out",
            str(tmp_path / "x"),
            "--replay",
            "none",
            "--base",
            "leukomorph-det",
        ],
    )
    assert r.exit_code == 2 and "ships no training weights" in r.output


def test_source_share_gives_a_data_set_its_fixed_share():
    from leukomorph.errors import ConfigError
    from leukomorph.training.train import share_sources

    w = np.array([1, 1, 1, 1, 2, 2], float) / 8
    ds = ["pbc", "pbc", "deepapl", "deepapl", "user", "user"]
    out = share_sources(w, ds, {"user": 0.5})
    assert out[4:].sum() == pytest.approx(0.5) and out[:4].sum() == pytest.approx(0.5)
    assert out[0] == pytest.approx(out[2])  # the others keep their proportions
    assert share_sources(w, ds, {"absent": 0.9}) == pytest.approx(w)
    with pytest.raises(ConfigError):
        share_sources(w, ds, {"user": 0.7, "pbc": 0.6})


def test_keep_best_exports_the_starting_weights_when_no_epoch_beats_them(tmp_path):
    """keep_best: epoch 0 is the init weights; an epoch that validates no better is not kept."""
    from leukomorph.errors import ConfigError
    from leukomorph.training.nets import build_net
    from leukomorph.training.train import TrainConfig, train_classifier

    recs = _two_colour_patients(tmp_path / "data", seed=2)
    init = tmp_path / "init.pt"
    torch.manual_seed(0)
    torch.save(build_net("lm-resnet-s", 16).state_dict(), init)
    cfg = dict(size=32, epochs=2, batch_size=8, test_fraction=0.25, val_fraction=0.25, threads=1, init=str(init))
    start = torch.load(init)

    def same(run) -> bool:
        kept = torch.load(run / "weights.pt")
        return all(torch.equal(kept[k].float(), start[k].float()) for k in start if "num_batches" not in k)

    with pytest.raises(ConfigError, match="epochs"):
        train_classifier(recs, TrainConfig(**{**cfg, "epochs": 0}), tmp_path / "none")
    # lr 0: the weights do not learn (the random network's validation accuracy stays at 0), so the
    # tie goes to epoch 0 and the starting weights are exported, batch-norm statistics included
    summary = train_classifier(recs, TrainConfig(**cfg, lr=0.0, keep_best=True), tmp_path / "run")
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2] and summary["chosen_epoch"] == 0
    assert same(tmp_path / "run")
    # a learning run keeps its best epoch (the earliest of equals); only epoch 0 is the start
    summary = train_classifier(recs, TrainConfig(**cfg, lr=1e-2, keep_best=True), tmp_path / "run2")
    acc = [h["val_acc_ema"] for h in summary["history"]]
    assert summary["chosen_epoch"] == int(np.argmax(acc))
    assert same(tmp_path / "run2") == (summary["chosen_epoch"] == 0)
