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


@pytest.fixture
def analysed_store():
    """A function: analyze ``args`` (in the current folder, output ``out``) and import the result into
    a fresh SQLite review store ``tmp_path/store`` with the users given (name -> (password, role));
    returns (database URL, store folder, case id, session factory)."""

    def make(tmp_path: Path, args: list[str], users: dict[str, tuple[str, str]]):
        from typer.testing import CliRunner

        from leukomorph.cli.main import app as cli
        from leukomorph.review.db import make_engine
        from leukomorph.review.store import add_user, import_results

        r = CliRunner().invoke(cli, ["analyze", *args, "--out", "out"])
        assert r.exit_code == 0, r.output
        data = tmp_path / "store"
        data.mkdir()
        url = f"sqlite:///{data / 'review.sqlite'}"
        _, factory = make_engine(url)
        with factory() as s:
            case_id = import_results(s, tmp_path / "out", data).id
            for name, (pw, role) in users.items():
                add_user(s, name, pw, role)
        return url, data, case_id, factory

    return make


@pytest.fixture
def field_case_dir(tmp_path) -> Path:
    """``tmp_path/fields`` holding one PBC smear field (``f1.webp``)."""
    import shutil

    d = tmp_path / "fields"
    d.mkdir()
    shutil.copy(Path(__file__).parent / "fixtures" / "fields" / "field_pbc.webp", d / "f1.webp")
    return d
