import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from leukomorph.cli.main import app

runner = CliRunner()


def _copy_sample(sample_dir, dst, n=25):
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in sample_dir.glob("*.webp"))[:n]
    for f in files:
        shutil.copy(f, dst / f.name)
    return files


def test_analyze_sample_writes_all_outputs(sample_dir, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["analyze", str(sample_dir), "--out", str(out), "--case", "demo"])
    assert r.exit_code == 0, r.output
    for name in ("cells.csv", "results.json", "report.html", "run.json"):
        assert (out / name).is_file()
    res = json.loads((out / "results.json").read_text())
    assert res["n_classified"] == 31 and res["model"]["sha256"]
    assert res["suggestion"]["code"] == "no_leukemic_pattern"
    assert len(res["input_checksums"]) == 31
    corr = res["differential"]["corrected_for_model_confusion"]  # the bundled card has a confusion matrix
    assert set(corr["percent"]) == set(res["differential"]["classes"])
    assert all(lo <= v <= hi for v, lo, hi in corr["percent"].values())
    html = (out / "report.html").read_text()
    assert "Decision support, not a diagnosis" in html and "data:image/svg+xml;base64" in html
    # how the APL score fared in cross-validation on cases of about this many cells (the card's table)
    assert "On 31 cells</td><td>in patient-level cross-validation on 20 cells per patient" in html
    assert "http://" not in html and "https://" not in html  # self-contained
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert len(rows) == 31 and all(r["status"] == "ok" for r in rows)
    assert {f"p_{c}" for c in ("blast", "smudge")} <= set(rows[0])


def test_case_given_a_folder_and_no_paths_analyses_that_folder(sample_dir, tmp_path):
    folder = tmp_path / "Patient_07"
    _copy_sample(sample_dir, folder, n=25)
    r = runner.invoke(app, ["analyze", "--case", str(folder), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["case"] == "Patient_07" and res["n_classified"] == 25
    assert res["case_scores"]["apl_vs_aml"]["probability"] is not None
    r = runner.invoke(app, ["analyze", str(folder), "--case", str(folder), "--out", str(tmp_path / "o3")])
    assert r.exit_code == 0 and json.loads((tmp_path / "o3" / "results.json").read_text())["case"] == "Patient_07"
    for args in ([], ["--case", str(tmp_path / "absent")]):  # no input at all: a usage error, nothing written
        r = runner.invoke(app, ["analyze", *args, "--out", str(tmp_path / "o2")])
        assert r.exit_code == 2 and "no input given" in r.output
        assert ("absent: no such folder" in r.output) == bool(args)
    assert not (tmp_path / "o2").exists()


def test_without_out_results_go_to_a_fresh_folder_named_after_the_case(sample_dir, tmp_path, monkeypatch):
    """`leukomorph analyze --case <patient folder>`, exactly as written: no --out needed, and a second run
    lands beside the first instead of on it."""
    folder = tmp_path / "Patient_07"
    _copy_sample(sample_dir, folder, n=12)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for expected in ("Patient_07", "Patient_07-2"):
        r = runner.invoke(app, ["analyze", "--case", str(folder)])
        assert r.exit_code == 0, r.output
        res = json.loads((work / "leukomorph-results" / expected / "results.json").read_text())
        assert res["case"] == "Patient_07" and f"leukomorph-results/{expected}" in r.output


def test_bad_files_are_reported_and_the_rest_goes_on(sample_dir, tmp_path):
    case = tmp_path / "case"
    _copy_sample(sample_dir, case, n=22)
    (case / "empty.png").write_bytes(b"")
    (case / "text.jpg").write_text("hello")
    good = (case / sorted(p.name for p in case.glob("*.webp"))[0]).read_bytes()
    (case / "trunc.webp").write_bytes(good[: len(good) // 3])
    disc = np.hypot(*np.mgrid[-30:30, -30:30]) < 15  # a dark "nucleus" on a pale background
    Image.fromarray(np.where(disc, 60, 200).astype(np.uint8)).save(case / "gray.png")
    rgba = np.zeros((60, 60, 4), np.uint8)
    rgba[disc] = (90, 40, 140, 255)  # transparent around the cell
    Image.fromarray(rgba).save(case / "alpha.png")
    Image.fromarray(np.where(disc, 9000, 50000).astype(np.uint16)).save(case / "deep16.png")
    Image.fromarray(np.full((60, 60, 3), 200, np.uint8)).save(case / "blank.png")  # shows nothing
    out = tmp_path / "out"
    r = runner.invoke(app, ["analyze", str(case), "--out", str(out)])
    assert r.exit_code == 1, r.output
    rows = {row["path"]: row for row in csv.DictReader((out / "cells.csv").open())}
    assert len(rows) == 29
    assert rows[str(case / "empty.png")]["status"].startswith("error: empty file")
    assert "not a recognised image" in rows[str(case / "text.jpg")]["status"]
    assert rows[str(case / "trunc.webp")]["status"].startswith("error")
    assert rows[str(case / "blank.png")]["status"].startswith("error: no cell visible: a uniform image")
    for ok in ("gray.png", "alpha.png", "deep16.png"):
        assert rows[str(case / ok)]["status"] == "ok"
    assert "grayscale" in rows[str(case / "gray.png")]["notes"] and "alpha" in rows[str(case / "alpha.png")]["notes"]
    assert "16-bit" in rows[str(case / "deep16.png")]["notes"]
    res = json.loads((out / "results.json").read_text())
    assert res["n_skipped"] == 4 and res["n_classified"] == 25


def test_existing_output_not_overwritten(sample_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("mine")
    (out / "keep.txt").write_text("user file")
    r = runner.invoke(app, ["analyze", str(sample_dir), "--out", str(out)])
    assert r.exit_code == 3
    assert (out / "report.html").read_text() == "mine"
    r = runner.invoke(app, ["analyze", str(sample_dir), "--out", str(out), "--overwrite"])
    assert r.exit_code == 0
    assert (out / "report.html").read_text() != "mine" and (out / "keep.txt").read_text() == "user file"


def test_no_readable_input(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    r = runner.invoke(app, ["analyze", str(tmp_path / "x.png"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 4
    assert not (tmp_path / "o" / "results.json").exists()


def test_model_error_exit_code(sample_dir, tmp_path):
    r = runner.invoke(app, ["analyze", str(sample_dir), "--out", str(tmp_path / "o"), "--model", "nope"])
    assert r.exit_code == 5


def test_per_folder_and_symlinks_kept(sample_dir, tmp_path):
    root = tmp_path / "cases"
    files = _copy_sample(sample_dir, root / "A", n=3)
    (root / "B").mkdir()
    (root / "B" / "link.webp").symlink_to(files[0])
    shutil.copy(files[1], root / "loose.webp")
    out = tmp_path / "out"
    r = runner.invoke(app, ["analyze", str(root), "--per-folder", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "in no case sub-folder" in r.output and not (out / "loose").exists()
    rows = list(csv.DictReader((out / "B" / "cells.csv").open()))
    assert rows[0]["path"] == str(root / "B" / "link.webp")
    assert json.loads((out / "A" / "results.json").read_text())["suggestion"]["code"] == "too_few_cells"
    summary = list(csv.DictReader((out / "cases.csv").open()))
    assert [(r["case"], r["status"], r["cells_classified"]) for r in summary] == [("A", "ok", "3"), ("B", "ok", "1")]
    assert summary[0]["suggestion"] == "too_few_cells" and summary[0]["report"] == "A/report.html"
    assert summary[0]["urgent"] == "false" and summary[0]["blast_percent"] != ""


def test_per_folder_batch_summary_lists_failed_cases_and_is_not_overwritten(sample_dir, tmp_path):
    root = tmp_path / "cases"
    _copy_sample(sample_dir, root / "good", n=4)
    (root / "broken").mkdir()
    (root / "broken" / "x.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    r = runner.invoke(app, ["analyze", str(root), "--per-folder", "--out", str(out)])
    assert r.exit_code == 4, r.output  # a case without a readable image; the other case is written
    rows = {row["case"]: row for row in csv.DictReader((out / "cases.csv").open())}
    assert rows["good"]["status"] == "ok" and rows["good"]["cells_classified"] == "4"
    assert rows["broken"]["status"].startswith("error: no cell to classify") and rows["broken"]["report"] == ""
    before = (out / "cases.csv").read_bytes()
    shutil.rmtree(out / "good")  # the case folders are free again; the summary still refuses
    r = runner.invoke(app, ["analyze", str(root), "--per-folder", "--out", str(out)])
    assert r.exit_code == 3 and (out / "cases.csv").read_bytes() == before


def test_per_folder_refuses_two_cases_of_one_name(sample_dir, tmp_path):
    _copy_sample(sample_dir, tmp_path / "r1" / "P1", n=2)
    _copy_sample(sample_dir, tmp_path / "r2" / "P1", n=2)
    r = runner.invoke(
        app, ["analyze", str(tmp_path / "r1"), str(tmp_path / "r2"), "--per-folder", "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "named 'P1'" in r.output


def test_models_command():
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "leukomorph-cell" in r.output


def test_field_sized_image_is_flagged(tmp_path):
    field = np.full((300, 900, 3), 200, np.uint8)
    field[120:180, 420:480] = (90, 40, 140)  # something to see (a uniform image is skipped as blank)
    Image.fromarray(field).save(tmp_path / "field.png")
    out = tmp_path / "o"
    r = runner.invoke(app, ["analyze", str(tmp_path / "field.png"), "--out", str(out)])
    assert r.exit_code == 0
    (row,) = csv.DictReader((out / "cells.csv").open())
    assert "does not look like a single-cell crop" in row["notes"]


def _written_report(tmp_path, counts: dict[str, int], saliency_for: int = 0) -> tuple[str, list[str]]:
    """report.html of a case of one-hot cells (``counts``: class -> cells), written without running
    a model, with a saliency map for the first ``saliency_for`` evidence cells; and the evidence."""
    from leukomorph.aggregate import differential, suggest
    from leukomorph.pipeline import AnalyzeConfig, CaseResult
    from leukomorph.records import CellPrediction
    from leukomorph.report import write_outputs
    from leukomorph.taxonomy import CLASSES

    preds = []
    for name, n in counts.items():
        p = [0.0] * len(CLASSES)
        p[CLASSES.index(name)] = 1.0
        preds += [CellPrediction(f"{name}{i}.png", tuple(p), CLASSES) for i in range(n)]
    diff = differential(preds)
    sug = suggest(diff, preds)
    res = CaseResult(
        "c",
        [],
        preds,
        [],
        diff,
        sug,
        {p.source: np.zeros((8, 8, 3), np.uint8) for p in preds},
        {"name": "x", "version": "", "sha256": "", "card": "", "tta": "none"},
        AnalyzeConfig(),
        {},
        {"leukomorph": "0"},
        saliency={s: np.zeros((8, 8, 3), np.uint8) for s in sug.evidence[:saliency_for]},
    )
    return write_outputs(res, tmp_path / "o")["report.html"].read_text(), list(sug.evidence)


def test_report_with_more_smudges_than_white_cells(tmp_path):
    """Regression: per-100-WBC values above 100 broke the chart's error bars."""
    html, _ = _written_report(tmp_path, {"smudge": 90, "blast": 25})
    assert "acute leukemia suspected" in html and "Many smudge cells" in html


def test_bad_tta_is_a_usage_error(sample_dir, tmp_path):
    r = runner.invoke(app, ["analyze", str(sample_dir), "--out", str(tmp_path / "o"), "--tta", "spin"])
    assert r.exit_code == 2 and "unknown test-time augmentation" in r.output


def test_bad_cell_scale_is_a_usage_error(sample_dir, tmp_path):
    r = runner.invoke(app, ["analyze", str(sample_dir), "--out", str(tmp_path / "o"), "--cell-scale", "huge"])
    assert r.exit_code == 2 and "cell scale" in r.output
    assert not (tmp_path / "o").exists()
    r = runner.invoke(
        app, ["analyze", str(sample_dir), "--out", str(tmp_path / "f"), "--fields", "--cell-scale", "0.5"]
    )
    assert r.exit_code == 2 and "smear fields are scaled by the detector" in r.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--pixel-size", "-1"], "--pixel-size"),
        (["--pixel-size", "0"], "--pixel-size"),
        (["--threads", "-2"], "--threads"),
    ],
)
def test_bad_numeric_options_are_refused_before_any_work(sample_dir, tmp_path, args, named):
    out = tmp_path / "o"
    r = runner.invoke(app, ["analyze", str(sample_dir), "--out", str(out), *args])
    assert r.exit_code == 2 and named in r.output and not out.exists()


def test_reading_commands_refuse_a_missing_store_and_bad_arguments(tmp_path):
    """A mistyped --data-dir must not look like an empty store (nor create one); a bad port or an
    unknown model is a clear error, not a traceback."""
    missing = tmp_path / "no-store"
    r = runner.invoke(app, ["export-labels", "--out", str(tmp_path / "x.csv"), "--data-dir", str(missing)])
    assert r.exit_code == 4 and "no review store" in r.output and not missing.exists()
    r = runner.invoke(app, ["serve", "--data-dir", str(missing)])
    assert r.exit_code == 4 and not missing.exists()
    r = runner.invoke(app, ["serve", "--data-dir", str(missing), "--port", "-5"])
    assert r.exit_code == 2 and "--port" in r.output
    r = runner.invoke(app, ["evaluate", "--model", "no-such-model"])
    assert r.exit_code == 5 and "no model named" in r.output
    out = tmp_path / "det"
    r = runner.invoke(app, ["train-detector", "--out", str(out), "--overlap-paste", "1.5"])
    assert r.exit_code == 2 and "--overlap-paste" in r.output and not out.exists()


def test_a_field_without_white_cells_says_so(tmp_path):
    Image.fromarray(np.full((400, 600, 3), (235, 215, 215), np.uint8)).save(tmp_path / "glass.png")
    r = runner.invoke(app, ["analyze", str(tmp_path / "glass.png"), "--fields", "--out", str(tmp_path / "o")])
    assert r.exit_code == 4 and "no white cell detected in the 1 field(s) read" in r.output


def test_the_same_image_under_two_names_is_counted_once(sample_dir, tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    first = sorted(sample_dir.glob("*.webp"))[0]
    shutil.copyfile(first, case / "a.webp")
    shutil.copyfile(first, case / "b.webp")  # an export run twice, say
    r = runner.invoke(app, ["analyze", str(case), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1, r.output
    rows = {Path(row["path"]).name: row for row in csv.DictReader((tmp_path / "o" / "cells.csv").open())}
    assert rows["a.webp"]["status"] == "ok"
    assert rows["b.webp"]["status"] == f"error: identical to {case / 'a.webp'} (same bytes): counted once"


def test_report_says_which_evidence_cells_have_a_saliency_map(tmp_path):
    html, evidence = _written_report(tmp_path, {"blast": 30, "segmented_neutrophil": 70}, saliency_for=2)
    assert len(evidence) > 2
    assert html.count('alt="saliency of') == 2
    assert "With each of the first 2 cells (the strongest evidence)" in html
    assert "The cells of the classes the rule counted" in html  # not the APL model's attention here
