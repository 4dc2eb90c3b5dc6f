import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "leukomorph" / "sample" / "pbc_healthy"


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture
def shared_data() -> Path:
    root = Path(os.environ.get("LEUKOMORPH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (root / "pbc" / "manifest.csv").is_file():
        pytest.skip("shared data not available")
    return root


@pytest.fixture
def rgb_png(tmp_path):
    def make(name="cell.png", size=(64, 64), colour=(200, 120, 160)):
        arr = np.zeros((size[1], size[0], 3), np.uint8) + np.array(colour, np.uint8)
        p = tmp_path / name
        Image.fromarray(arr).save(p)
        return p

    return make


@pytest.fixture(autouse=True)
def _own_leukomorph_home(tmp_path_factory, monkeypatch):
    """Every test gets an empty LeukoMorph home: no installed or activated model of the machine
    running the tests changes what `analyze` uses."""
    if "LEUKOMORPH_HOME" not in os.environ or not os.environ["LEUKOMORPH_HOME"].startswith(
        str(tmp_path_factory.getbasetemp())
    ):
        monkeypatch.setenv("LEUKOMORPH_HOME", str(tmp_path_factory.mktemp("home")))
