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
    assert 0 < raw["inference"]["conformal"]["qhat"] <= 1
    assert "coverage" in raw["metrics"]["held_out_test"]["conformal"]["all"]
    m = OnnxClassifier(card, card.weights_path)
    probs = m.predict(np.zeros((3, 32, 32, 3), np.uint8))
    assert probs.shape == (3, 16) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_mil_torch_and_numpy_agree():
    from leukomorph.aggregate.mil import mil_forward
    from leukomorph.training.mil import GatedAttentionMIL

    torch.manual_seed(0)
    net = GatedAttentionMIL(12).eval()
    bag = np.random.default_rng(0).normal(size=(30, 12)).astype(np.float32)
    with torch.no_grad():
        p_torch = torch.sigmoid(net(torch.from_numpy(bag))).item()
    assert mil_forward(net.params(), bag)[0] == pytest.approx(p_torch, abs=1e-5)
