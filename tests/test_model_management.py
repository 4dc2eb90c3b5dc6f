"""Installing, activating and rolling back a laboratory's own cell classifier (no torch needed)."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leukomorph.cli.main import app
from leukomorph.errors import ModelError, ModelIntegrityError
from leukomorph.models.registry import (
    DEFAULT_CLASSIFIER,
    active_classifier,
    get_card,
    install_model,
    list_cards,
    training_weights,
)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("LEUKOMORPH_HOME", str(h))
    return h


def _own_model(tmp_path: Path, name: str = "lab-cell") -> Path:
    """A laboratory's model: the bundled default's files under another name (a stand-in for a fine-tuned one)."""
    base = get_card(DEFAULT_CLASSIFIER)
    src = Path(base.card_path).parent
    d = tmp_path / "run"
    d.mkdir(exist_ok=True)
    raw = json.loads(Path(base.card_path).read_text())
    for key in ("file", "split_file"):
        shutil.copyfile(src / raw[key], d / raw[key].replace(DEFAULT_CLASSIFIER, name))
        raw[key] = raw[key].replace(DEFAULT_CLASSIFIER, name)
    raw.pop("training_weights")
    raw["name"] = name
    (d / f"{name}.json").write_text(json.dumps(raw))
    return d / f"{name}.json"


def test_install_activate_analyze_and_roll_back(home, tmp_path, sample_dir):
    assert active_classifier() == DEFAULT_CLASSIFIER
    card = _own_model(tmp_path)
    r = CliRunner().invoke(app, ["models", "--install", str(card), "--activate", "lab-cell"])
    assert r.exit_code == 0, r.output
    assert (home / "models" / "lab-cell.json").is_file() and active_classifier() == "lab-cell"
    listing = CliRunner().invoke(app, ["models"]).output
    assert "lab-cell (active)" in listing and DEFAULT_CLASSIFIER in listing
    # analyze without --model uses the active one, and says so in results.json
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["analyze", str(sample_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "results.json").read_text())["model"]["name"] == "lab-cell"
    # the same name cannot be installed twice, nor a bundled name
    with pytest.raises(ModelError, match="already bundled or installed"):
        install_model(card)
    with pytest.raises(ModelError, match="already bundled or installed"):
        install_model(get_card(DEFAULT_CLASSIFIER).card_path)
    r = CliRunner().invoke(app, ["models", "--rollback"])
    assert r.exit_code == 0 and active_classifier() == DEFAULT_CLASSIFIER
    r = CliRunner().invoke(app, ["models", "--rollback"])
    assert r.exit_code == 5 and "nothing to roll back" in r.output


def test_an_active_model_that_vanished_is_an_error_not_a_fallback(home, tmp_path, sample_dir):
    card = _own_model(tmp_path)
    assert CliRunner().invoke(app, ["models", "--install", str(card), "--activate", "lab-cell"]).exit_code == 0
    (home / "models" / "lab-cell.json").unlink()
    r = CliRunner().invoke(app, ["analyze", str(sample_dir), "--out", str(tmp_path / "o")])
    assert r.exit_code == 5 and "lab-cell" in r.output
    assert not (tmp_path / "o" / "results.json").exists()
    # naming a model still works
    r = CliRunner().invoke(
        app, ["analyze", str(sample_dir), "--out", str(tmp_path / "o2"), "--model", DEFAULT_CLASSIFIER]
    )
    assert r.exit_code == 0, r.output


def test_activating_what_is_not_a_cell_classifier_is_refused(home):
    r = CliRunner().invoke(app, ["models", "--activate", "leukomorph-seg"])
    assert r.exit_code == 5 and "not a cell classifier" in r.output
    r = CliRunner().invoke(app, ["models", "--activate", "no-such-model"])
    assert r.exit_code == 5 and "no model named" in r.output
    assert active_classifier() == DEFAULT_CLASSIFIER


def test_training_weights_are_shipped_and_checked(tmp_path):
    card = get_card(DEFAULT_CLASSIFIER)
    assert training_weights(card).name == "leukomorph-cell.weights.npz"
    d = tmp_path / "z"
    shutil.copytree(Path(card.card_path).parent, d)
    raw = json.loads((d / "leukomorph-cell.json").read_text())
    raw["training_weights"]["sha256"] = "0" * 64
    (d / "leukomorph-cell.json").write_text(json.dumps(raw))
    with pytest.raises(ModelIntegrityError, match="refusing"):
        training_weights(get_card(str(d / "leukomorph-cell.json")))
    with pytest.raises(ModelError, match="ships no training weights"):
        training_weights(get_card("leukomorph-det"))
    assert all(c.name != "lab-cell" for c in list_cards())


def test_finetune_without_torch_says_what_to_install(tmp_path):
    try:
        import torch  # noqa: F401

        pytest.skip("torch is installed: the train tests cover finetune")
    except ImportError:
        pass
    (tmp_path / "m.csv").write_text("path,label,patient_id\n")
    r = CliRunner().invoke(app, ["finetune", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "training needs torch" in r.output
