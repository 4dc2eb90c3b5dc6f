import csv
import json
import shutil

import numpy as np
import pytest

from leukomorph.classify import classify_crops, prepare_crop
from leukomorph.errors import ModelError, ModelIntegrityError, ModelNotFoundError
from leukomorph.io import read_image
from leukomorph.models import DEFAULT_CLASSIFIER, get_card, list_cards, load_classifier
from leukomorph.taxonomy import CLASSES, PBC_GROUP


def test_default_model_is_registered_with_a_full_card():
    card = get_card(DEFAULT_CLASSIFIER)
    assert card in list_cards()
    assert card.classes == CLASSES
    assert len(card.sha256) == 64
    assert card.raw["metrics"]["held_out_test"]["pbc/pbc8"]["accuracy"] > 0.9
    assert card.weights_path.stat().st_size < 20_000_000


def test_unknown_model_name():
    with pytest.raises(ModelNotFoundError, match="no model named"):
        get_card("no-such-model")


def test_sha_mismatch_refuses_to_load(tmp_path):
    card = get_card(DEFAULT_CLASSIFIER)
    shutil.copy(card.card_path, tmp_path / "c.json")
    data = bytearray(card.weights_path.read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / card.file).write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_classifier(str(tmp_path / "c.json"))
    (tmp_path / card.file).unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        load_classifier(str(tmp_path / "c.json"))


def test_bad_card(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelError, match="not a valid model card"):
        load_classifier(str(tmp_path / "c.json"))


def test_wrong_input_rejected():
    m = load_classifier()
    with pytest.raises(ModelError, match="expected uint8"):
        m.predict(np.zeros((1, 10, 10, 3), np.float32))


def test_prepare_crop_centre_square():
    a = np.zeros((100, 200, 3), np.uint8)
    a[:, 50:150] = 255
    out = prepare_crop(a, 50)
    assert out.shape == (50, 50, 3) and out.min() == 255


def test_bundled_model_classifies_sample_case(sample_dir):
    """Real check of the shipped weights: the sample crops are held-out PBC test images."""
    with open(sample_dir / "labels.csv", newline="") as fh:
        labels = {r["file"]: r["pbc_label"] for r in csv.DictReader(fh)}
    m = load_classifier()
    imgs = [read_image(sample_dir / f) for f in labels]
    preds = classify_crops(m, [i.pixels for i in imgs], list(labels))
    from leukomorph.taxonomy import map_label

    correct = [PBC_GROUP[p.predicted_class] == PBC_GROUP[map_label("pbc", labels[p.source])[0]] for p in preds]
    assert np.mean(correct) >= 0.85
    probs = np.array([p.probabilities for p in preds])
    assert np.allclose(probs.sum(1), 1, atol=1e-4)


def test_tta_views_average_and_reject_unknown():
    from leukomorph.classify import predict_tta
    from leukomorph.errors import ConfigError
    from leukomorph.models.backends.fake import FakeClassifier

    m = FakeClassifier(size=8)
    batch = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    for mode in ("none", "flip", "rot4", "d4"):
        # the fake model depends on the mean colour only, so every view agrees
        assert np.allclose(predict_tta(m, batch, mode), m.predict(batch))
    with pytest.raises(ConfigError):
        predict_tta(m, batch, "spin")


def test_shipped_card_is_strict_json():
    from leukomorph import jsonio

    text = get_card(DEFAULT_CLASSIFIER).weights_path.with_name(f"{DEFAULT_CLASSIFIER}.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON token {c}"))
    assert jsonio.dumps({"a": float("nan"), "b": [float("inf"), 1.5]}, indent=None) == '{"a": null, "b": [null, 1.5]}'


def test_ensemble_card_loads_verified_members(tmp_path):
    import json

    import numpy as np
    import pytest

    from leukomorph.errors import ModelIntegrityError
    from leukomorph.models import get_card, load_classifier
    from leukomorph.models.registry import ensemble_sha256

    base = get_card("leukomorph-cell")
    members = [{"model": "leukomorph-cell", "sha256": base.sha256, "weight": w} for w in (1.0, 3.0)]
    card = {
        "name": "ens",
        "version": "0",
        "task": "cell-classification",
        "file": "",
        "sha256": ensemble_sha256([m["sha256"] for m in members]),
        "classes": list(base.classes),
        "input": dict(base.input),
        "ensemble": {"members": members},
    }
    path = tmp_path / "ens.json"
    path.write_text(json.dumps(card))
    ens = load_classifier(str(path))
    single = load_classifier("leukomorph-cell")
    x = np.random.default_rng(0).integers(0, 255, (2, base.input_size, base.input_size, 3), dtype=np.uint8)
    assert np.allclose(ens.predict(x), single.predict(x), atol=1e-5)
    card["ensemble"]["members"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(card))
    with pytest.raises(ModelIntegrityError):
        load_classifier(str(path))


def test_every_bundled_card_verifies_and_documents_itself():
    from leukomorph.models.registry import verify

    cards = list_cards()
    assert {"leukomorph-det", "leukomorph-all", "leukomorph-seg", DEFAULT_CLASSIFIER} <= {c.name for c in cards}
    for c in cards:
        if not c.is_ensemble:
            assert verify(c).is_file()
        assert c.raw.get("metrics"), c.name
        assert c.raw.get("intended_use"), c.name
