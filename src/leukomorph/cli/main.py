"""`leukomorph` command.

Exit codes of ``analyze``:
  0  every input was classified and the outputs were written
  1  outputs were written but some inputs were skipped (listed in cells.csv / results.json / report)
  2  usage error (bad option or argument)
  3  the output folder already holds results (use --overwrite)
  4  no input could be read: nothing was written
  5  model error (missing, corrupt or sha256 mismatch)
  6  an internal error in one case (a bug: please report it); the other cases were still written
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .. import jsonio
from ..errors import ConfigError, ImageReadError, LeukoMorphError, ModelError, OutputExistsError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LeukoMorph: leukemia morphology decision support.")
console = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"leukomorph {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """LeukoMorph: leukemia morphology decision support (decision support, not a diagnosis)."""


EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, EXIT_EXISTS, EXIT_NO_INPUT, EXIT_MODEL, EXIT_INTERNAL = 0, 1, 2, 3, 4, 5, 6


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )


#: where `analyze` writes when no --out is given (relative to the current folder)
DEFAULT_RESULTS = "leukomorph-results"


def _unused(path: Path) -> Path:
    """``path``, or the first of ``path-2``, ``path-3``, ... that does not exist: a default output
    folder never lands on earlier results."""
    k, candidate = 1, path
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.name}-{k}")
    return candidate


def _check_tta_option(tta: str | None) -> None:
    from ..classify import check_tta

    if tta is not None:
        try:
            check_tta(tta)
        except ConfigError as exc:
            console.print(f"[red]error:[/red] --tta: {exc}")
            raise typer.Exit(EXIT_USAGE) from exc


def _cases(paths: list[str], per_folder: bool, case: str | None, slides: bool = False) -> list[tuple[str, list[str]]]:
    from ..io import IMAGE_SUFFIXES, expand_inputs
    from ..io.slides import SLIDE_SUFFIXES

    suffixes = IMAGE_SUFFIXES | SLIDE_SUFFIXES if slides else IMAGE_SUFFIXES
    if not per_folder:
        name = case or (Path(paths[0]).name if len(paths) == 1 and Path(paths[0]).is_dir() else "case")
        return [(name, expand_inputs(paths, suffixes))]
    cases = []
    for p in paths:
        base = Path(p)
        if not base.is_dir():
            raise ConfigError(f"{p}: --per-folder needs folders, each holding one sub-folder per case")
        loose = [f for f in base.iterdir() if f.is_file() and f.suffix.lower() in suffixes]
        if loose:
            console.print(
                f"[yellow]warning:[/yellow] {len(loose)} image(s) directly in {p} are in no case sub-folder: ignored"
            )
        for sub in sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")):
            cases.append((sub.name, expand_inputs([str(base / sub.name)], suffixes)))
    if not cases:
        raise ConfigError("--per-folder: no case sub-folders found")
    seen: set[str] = set()
    for name, _ in cases:  # two folders' same-named cases would write into one output folder
        if name in seen:
            raise ConfigError(f"--per-folder: two case sub-folders are named {name!r}; case names must be unique")
        seen.add(name)
    return cases


@app.command()
def analyze(
    paths: list[str] = typer.Argument(
        None,
        help="Image files, folders or glob patterns of single-cell crops (may be left out when --case names the "
        "case's folder).",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Output folder (one sub-folder per case with --per-folder). Default: leukomorph-results/<case> "
        "(with --per-folder, leukomorph-results/<folder>) in the current folder, as <case>-2, -3, ... when taken.",
    ),
    case: str = typer.Option(
        None,
        "--case",
        help="Case name (default: the folder name, or 'case'). A folder given here names the case after it; "
        "with no PATHS, that folder is the case.",
    ),
    per_folder: bool = typer.Option(False, "--per-folder", help="Each sub-folder of PATH is one case."),
    model: str = typer.Option(
        None,
        "--model",
        help="Model name from `leukomorph models` or path to a model card (default: the active one, "
        "`leukomorph models --activate`; else leukomorph-cell).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace LeukoMorph's output files if present."),
    threads: int = typer.Option(0, "--threads", help="Inference threads (0: onnxruntime default)."),
    tta: str = typer.Option(
        None, "--tta", help="Test-time augmentation: none, flip, rot4, d4 (default: the model card's)."
    ),
    morpho: str = typer.Option(
        None,
        "--morphometrics",
        help="Per-cell segmentation and morphometrics in cells.csv: 'model' (U-Net), 'classical' or 'none' "
        "(default: 'model' with --fields, none for crops).",
    ),
    pixel_size: float = typer.Option(
        None,
        "--pixel-size",
        help="µm per pixel of the images (default: from TIFF/PNG metadata when plausible); areas in µm², "
        "and the field detector's scale.",
    ),
    fields: bool = typer.Option(
        False, "--fields", help="Inputs are smear fields: detect white cells, crop and classify each."
    ),
    detector: str = typer.Option(
        "leukomorph-det", "--detector", help="Field detector: a model name or card path, or 'classical' (baseline)."
    ),
    cell_scale: str = typer.Option(
        "auto",
        "--cell-scale",
        help="Crops: magnification to classify at. 'auto' searches a zoom when the cells look unfamiliar at "
        "their own scale (another camera or objective); 'none' keeps them as given; a number (e.g. 0.5 for "
        "crops at twice the training magnification) zooms every crop.",
    ),
    slides: bool = typer.Option(
        False,
        "--slides",
        help="Inputs are whole-slide images (SVS, NDPI, MRXS, SCN, BIF, pyramidal TIFF: what OpenSlide reads): "
        "the tiles of each slide's smear are read in a random order and analysed as fields until --max-cells "
        "white cells are counted.",
    ),
    max_cells: int = typer.Option(
        500, "--max-cells", help="With --slides: stop once this many white cells are counted (0: the whole smear)."
    ),
    zone_coverage: tuple[float, float] = typer.Option(
        (0.1, 0.9),
        "--zone-coverage",
        help="With --slides: count a tile when this fraction of it is covered by cells (lower, upper); set on "
        "public monolayer fields, not on whole slides: widen or narrow it for your smears.",
    ),
    unfamiliar_model: bool = typer.Option(
        True,
        "--unfamiliar-model/--no-unfamiliar-model",
        help="Crops with --cell-scale auto: a case that looks unfamiliar and whose slide background has another "
        "colour than the training laboratories' goes to the model the cell model's card names for other stains and "
        "cameras (leukomorph-cell: leukomorph-cell-xdomain, after a case-level stain transfer). Off: the cell model "
        "alone, at the zoom its search chooses.",
    ),
) -> None:
    """Classify single-cell crops, count a differential and write cells.csv, results.json, report.html, run.json."""
    from ..models import load_classifier
    from ..models.registry import active_classifier
    from ..pipeline import AnalyzeConfig, check_config, fixed_cell_zoom, run_case
    from ..report import case_summary, prepare_batch_summary, prepare_output_dir, write_batch_summary, write_outputs

    _check_tta_option(tta)
    if not paths:
        if case is None or not Path(case).is_dir():
            given = "" if case is None else f" (--case {case}: no such folder)"
            console.print(
                f"[red]error:[/red] no input given{given}: name image files, folders or glob patterns, "
                "or give --case the case's folder"
            )
            raise typer.Exit(EXIT_USAGE)
        paths = [case]
        console.print(f"--case names a folder and no input was given: analysing {case} as one case")
    if case is not None and Path(case).is_dir():  # a folder given as the case: named after it
        case = Path(case).resolve().name
    if morpho not in (None, "model", "classical", "none"):
        console.print(f"[red]error:[/red] --morphometrics must be 'model', 'classical' or 'none', not {morpho!r}")
        raise typer.Exit(EXIT_USAGE)
    try:
        default_model = model or active_classifier()
    except ModelError as exc:
        console.print(f"[red]model error:[/red] {exc}")
        raise typer.Exit(EXIT_MODEL) from exc
    cfg = AnalyzeConfig(
        model=default_model,
        threads=threads or None,
        tta=tta,
        morphometrics=morpho,
        pixel_size_um=pixel_size,
        fields=fields,
        slides=slides,
        max_white_cells=max_cells,
        zone_coverage=tuple(zone_coverage),
        detector=detector,
        cell_scale=cell_scale,
        unfamiliar_model=unfamiliar_model,
    )
    try:
        cfg = check_config(cfg)
        fixed_cell_zoom(cell_scale, cfg.fields)
        cases = _cases(paths, per_folder, case, slides)
        if out is None:
            stem = Path(paths[0]).resolve().name if per_folder else (cases[0][0] if cases else "case")
            out = _unused(Path(DEFAULT_RESULTS) / stem)
            console.print(f"no --out given: writing to {out}")
        outs = {name: (out / name if per_folder else out) for name, _ in cases}
        for o in outs.values():
            prepare_output_dir(o, overwrite)  # refuse early, before any work
        summary = prepare_batch_summary(out, overwrite) if per_folder else None
        clf = load_classifier(cfg.model, threads=cfg.threads)
    except OutputExistsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_EXISTS) from exc
    except ModelError as exc:
        console.print(f"[red]model error:[/red] {exc}")
        raise typer.Exit(EXIT_MODEL) from exc
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc
    code = EXIT_OK
    rows: list[dict] = []

    def _summarise(row: dict) -> None:  # rewritten after every case: a batch cut short keeps its rows
        if summary is not None:
            rows.append(row)
            write_batch_summary(summary, rows)

    for name, files in cases:
        with _progress() as bar:
            task = bar.add_task(f"{name}", total=len(files))
            # the total comes with each report: with --slides it counts tiles, not the slides given
            result = run_case(
                files, name, cfg, clf, progress=lambda d, t, task=task: bar.update(task, completed=d, total=t)
            )
        for s in result.skipped:
            console.print(f"[yellow]skipped[/yellow] {s.source}: {s.reason}")
        if not result.predictions:
            n_read = sum(i.status == "ok" for i in result.inputs)
            if n_read and cfg.fields:
                why = f"no white cell detected in the {n_read} field(s) read"
                if result.skipped:
                    why += f" ({len(result.skipped)} input(s) unreadable)"
            else:
                why = f"no cell to classify among {len(files)} input(s) (each skipped, with its reason)"
            console.print(f"[red]error:[/red] case {name}: {why}; nothing written")
            code = max(code, EXIT_NO_INPUT)
            _summarise(case_summary(name, status=f"error: {why}"))
            continue
        try:
            written = write_outputs(result, outs[name], overwrite=overwrite, argv=sys.argv)
        except Exception as exc:  # a bug in one case must not cost the other cases of a batch
            logging.getLogger(__name__).exception("case %s failed", name)
            console.print(f"[red]error:[/red] case {name}: writing outputs failed ({exc.__class__.__name__}: {exc})")
            code = max(code, EXIT_INTERNAL)
            _summarise(case_summary(name, status=f"error: writing outputs failed ({exc.__class__.__name__})"))
            continue
        _summarise(case_summary(name, result, str(written["report.html"].relative_to(out))))
        s = result.suggestion
        colour = "red" if s.urgent else "cyan"
        console.print(
            f"[bold]{name}[/bold]: {len(result.predictions)} cells, blasts {result.differential.blast_percent:.1f}% "
            f"→ [{colour}]{s.code}[/{colour}]"
        )
        console.print(f"report: {written['report.html']}")
        if result.skipped:
            code = max(code, EXIT_SKIPPED)
    if summary is not None and rows:
        console.print(f"summary of {len(rows)} case(s): {summary}")
    raise typer.Exit(code)


@app.command()
def segment(
    paths: list[str] = typer.Argument(..., help="Image files, folders or glob patterns of single-cell crops."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for masks/ and morphometrics.csv."),
    method: str = typer.Option("model", help="model (the bundled U-Net) or classical (colour + Otsu thresholds)."),
    model: str = typer.Option("leukomorph-seg", "--model", help="Segmentation model name or card path."),
    pixel_size: float = typer.Option(None, "--pixel-size", help="µm per pixel, for areas in µm²."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace LeukoMorph's output files if present."),
) -> None:
    """Nucleus/cytoplasm masks (8-bit PNG: 0 background, 128 cytoplasm, 255 nucleus) and morphometrics per crop."""
    import csv as _csv
    import hashlib

    import cv2
    import numpy as np

    from ..io import check_pixel_size, expand_inputs, read_image
    from ..models.registry import load_segmenter
    from ..segment import MORPHOMETRIC_COLUMNS, classical_labels, morphometrics

    if method not in ("model", "classical"):
        console.print(f"[red]error:[/red] unknown method {method!r}; choose model or classical")
        raise typer.Exit(EXIT_USAGE)
    try:
        check_pixel_size(pixel_size)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc
    files = expand_inputs(paths)
    if not files:
        console.print("[red]error:[/red] no image files found")
        raise typer.Exit(EXIT_NO_INPUT)
    masks_dir = out / "masks"
    table = out / "morphometrics.csv"
    if (table.exists() or (masks_dir.exists() and any(masks_dir.iterdir()))) and not overwrite:
        console.print(f"[red]error:[/red] {out}: has LeukoMorph segmentation outputs (pass --overwrite)")
        raise typer.Exit(EXIT_EXISTS)
    try:
        seg = load_segmenter(model) if method == "model" else None
    except ModelError as exc:
        console.print(f"[red]model error:[/red] {exc}")
        raise typer.Exit(EXIT_MODEL) from exc
    masks_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    code = EXIT_OK
    rows = []
    with _progress() as bar:
        task = bar.add_task("segment", total=len(files))
        for f in files:
            try:
                img = read_image(f)
            except ImageReadError as exc:
                console.print(f"[yellow]skipped[/yellow] {f}: {exc.reason}")
                rows.append({"path": f, "mask": "", "status": f"error: {exc.reason}"})
                code = EXIT_SKIPPED
                bar.advance(task)
                continue
            labels = seg.segment(img.pixels) if seg is not None else classical_labels(img.pixels)
            stem = Path(f).stem
            name = f"{stem}.png"
            if name in used:  # same file name in two folders: disambiguate by the path's hash
                name = f"{stem}-{hashlib.sha1(f.encode()).hexdigest()[:8]}.png"
            used.add(name)
            grey = np.choose(labels, [0, 128, 255]).astype(np.uint8)
            cv2.imwrite(str(masks_dir / name), grey)
            m = morphometrics(img.pixels, labels, pixel_size)
            rows.append({"path": f, "mask": f"masks/{name}", "status": "ok", **m})
            bar.advance(task)
    with table.open("w", newline="", encoding="utf-8") as fh:
        w = _csv.DictWriter(fh, ["path", "mask", *MORPHOMETRIC_COLUMNS, "status"])
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
    run = {
        "command": sys.argv,
        "method": method,
        "model": None
        if seg is None
        else {"name": seg.card.name, "version": seg.card.version, "sha256": seg.card.sha256},
        "pixel_size_um": pixel_size,
        "inputs": len(files),
    }
    (out / "segment_run.json").write_text(jsonio.dumps(run, indent=2))
    console.print(f"{sum(r['status'] == 'ok' for r in rows)} masks in {masks_dir}; morphometrics: {table}")
    raise typer.Exit(code)


def _review_home(data_dir: Path | None, db_url: str | None = None, must_exist: bool = False) -> Path:
    """The review store folder, created unless ``must_exist`` (commands that only read a store:
    a mistyped --data-dir must not look like an empty store)."""
    from ..models.registry import leukomorph_home

    d = data_dir or leukomorph_home()
    if must_exist and db_url is None and not (d / "review.sqlite").is_file():
        console.print(
            f"[red]error:[/red] no review store in {d}: `leukomorph import` or `leukomorph add-user` creates one "
            "(or give --data-dir / --db-url)"
        )
        raise typer.Exit(EXIT_NO_INPUT)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _review_db(data_dir: Path, db_url: str | None):
    try:
        from ..review.db import make_engine
    except ImportError as exc:
        console.print(f"[red]error:[/red] the review workstation needs: pip install 'leukomorph[serve]' ({exc})")
        raise typer.Exit(EXIT_USAGE) from exc
    return make_engine(db_url or f"sqlite:///{data_dir / 'review.sqlite'}")


@contextmanager
def _review_store(data_dir: Path | None, db_url: str | None, error_exit: int = EXIT_USAGE, must_exist: bool = False):
    """(store folder, database session) of the review store; a LeukoMorphError ends the command."""
    home = _review_home(data_dir, db_url, must_exist)
    _, factory = _review_db(home, db_url)
    with factory() as s:
        try:
            yield home, s
        except LeukoMorphError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(error_exit) from exc


_DATA_DIR_HELP = "Review store folder (default $LEUKOMORPH_HOME or ~/.local/share/leukomorph)."
_DB_HELP = "SQLAlchemy database URL (default: SQLite file in the data folder; postgresql://... supported)."


def _imported(case) -> str:
    """What an import stored: cells, and fields where the case has them."""
    n = len(case.fields)
    return f"{len(case.cells)} cells" + (f", {n} field{'s' if n != 1 else ''}" if n else "")


@app.command("import")
def import_cmd(
    results_dir: Path = typer.Argument(
        ...,
        help="An analyze output folder (cells.csv, results.json), or the top folder of `analyze --per-folder` "
        "(cases.csv): every case it lists as ok.",
    ),
    name: str = typer.Option(None, "--name", help="Case name in the store (default: the analysed case name)."),
    data_dir: Path = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
) -> None:
    """Load analyze output into the review store (cell images copied by content hash)."""
    from ..report import BATCH_SUMMARY
    from ..review.store import batch_cases, import_results

    batch = (results_dir / BATCH_SUMMARY).is_file() and not (results_dir / "results.json").is_file()
    if batch and name:
        console.print("[red]error:[/red] --name names one case; a batch keeps each case's own name")
        raise typer.Exit(EXIT_USAGE)
    with _review_store(data_dir, db_url) as (home, s):
        if not batch:
            case = import_results(s, results_dir, home, name)
            console.print(f"imported case {case.name!r} ({_imported(case)}) into {home}")
            return
        code = EXIT_OK
        for case_name, folder, status in batch_cases(results_dir):
            if folder is None:
                console.print(f"[yellow]skipped[/yellow] case {case_name!r}: {status}")
                code = EXIT_SKIPPED
                continue
            try:
                case = import_results(s, folder, home)
            except LeukoMorphError as exc:  # one case must not stop the batch
                s.rollback()
                console.print(f"[yellow]skipped[/yellow] case {case_name!r}: {exc}")
                code = EXIT_SKIPPED
                continue
            console.print(f"imported case {case.name!r} ({_imported(case)}) into {home}")
    raise typer.Exit(code)


@app.command("add-user")
def add_user_cmd(
    username: str = typer.Argument(...),
    role: str = typer.Option(..., "--role", help="technologist, hematologist or admin."),
    password_env: str = typer.Option(
        None, "--password-env", help="Read the password from this environment variable (else prompt)."
    ),
    data_dir: Path = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
) -> None:
    """Create a review user (password hashed with argon2)."""
    import os

    from ..review.store import add_user

    with _review_store(data_dir, db_url) as (_, s):
        pw = os.environ.get(password_env, "") if password_env else typer.prompt("password", hide_input=True)
        add_user(s, username, pw, role)
    console.print(f"user {username!r} ({role}) added")


_INCLUDE_OPEN = typer.Option(False, "--include-open", help="Also cases not yet signed out.")
_DATA_DIR = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP)
_DB_URL = typer.Option(None, "--db-url", help=_DB_HELP)


@app.command("export-labels")
def export_labels_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="New CSV manifest (path,label,patient_id,...)."),
    include_open: bool = _INCLUDE_OPEN,
    data_dir: Path = _DATA_DIR,
    db_url: str = _DB_URL,
) -> None:
    """Export reviewed cell labels as a training manifest for `train-classifier --datasets`."""
    from ..review.store import export_labels

    with _review_store(data_dir, db_url, error_exit=EXIT_EXISTS, must_exist=True) as (home, s):
        console.print(f"{export_labels(s, home, out, signed_only=not include_open)} reviewed cells written to {out}")


@app.command("export-cases")
def export_cases_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="New CSV, one row per case."),
    include_open: bool = _INCLUDE_OPEN,
    data_dir: Path = _DATA_DIR,
    db_url: str = _DB_URL,
) -> None:
    """Export one row per reviewed case for quality monitoring: the AI's suggestion and blast % before
    review beside the reviewed ones, cells relabelled, added and excluded, findings, who signed."""
    from ..review.store import export_cases

    with _review_store(data_dir, db_url, error_exit=EXIT_EXISTS, must_exist=True) as (_, s):
        console.print(f"{export_cases(s, out, signed_only=not include_open)} cases written to {out}")


@app.command()
def serve(
    data_dir: Path = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000),
) -> None:
    """Run the review workstation (web app) on the review store."""
    if not 0 <= port <= 65535:
        console.print(f"[red]error:[/red] --port must be 0-65535, not {port}")
        raise typer.Exit(EXIT_USAGE)
    home = _review_home(data_dir, db_url, must_exist=True)
    engine, factory = _review_db(home, db_url)
    import uvicorn

    from ..review.app import create_app
    from ..review.db import User

    with factory() as s:
        if s.query(User).count() == 0:
            console.print("[yellow]no users yet:[/yellow] leukomorph add-user NAME --role hematologist")
    url = db_url or f"sqlite:///{home / 'review.sqlite'}"
    console.print(f"LeukoMorph review on http://{host}:{port}/  (store: {home})")
    uvicorn.run(create_app(url, home), host=host, port=port, log_level="warning")


@app.command()
def models(
    install: Path = typer.Option(
        None, "--install", help="Install a cell classifier's card (and its files) into $LEUKOMORPH_HOME/models."
    ),
    activate: str = typer.Option(
        None, "--activate", help="Make this cell classifier the one `analyze` uses when --model is not given."
    ),
    rollback: bool = typer.Option(
        False, "--rollback", help="Return to the classifier active before the last --activate."
    ),
) -> None:
    """List bundled and installed models (their cards); install, activate or roll back a cell classifier."""
    from ..models.registry import activate_model, active_classifier, install_model, list_cards, rollback_model

    try:
        if install is not None:
            c = install_model(install)
            console.print(f"installed {c.name} {c.version} ({c.sha256[:12]}) into {Path(c.card_path).parent}")
        if activate:
            rec = activate_model(activate)
            console.print(f"active cell classifier: {rec['classifier']} (was {rec['history'][-1]['classifier']})")
        if rollback:
            rec = rollback_model()
            console.print(f"active cell classifier: {rec['classifier']} (rolled back)")
        active = active_classifier()
    except LeukoMorphError as exc:
        console.print(f"[red]model error:[/red] {exc}")
        raise typer.Exit(EXIT_MODEL) from exc
    if install is not None or activate or rollback:
        raise typer.Exit(EXIT_OK)
    t = Table("version", "task", "input", "sha256")
    t.add_column("name", no_wrap=True, min_width=24)
    t.columns.insert(0, t.columns.pop())
    for c in list_cards():
        desc = (
            f"{c.input_size}px {c.input.get('dtype', '')}"
            if "size" in c.input
            else f"{c.input.get('features', '')[:40]} of "
            + (
                c.raw.get("depends_on", {}).get("name")
                or c.raw.get("depends_on", {}).get("cell_model", {}).get("name", "?")
            )
        )
        t.add_row(c.name + (" (active)" if c.name == active else ""), c.version, c.task, desc, c.sha256[:12])
    Console().print(t)


def _training_module(module: str):
    """Import a training module (needs the train extra) or exit with a clear message."""
    import importlib

    try:
        return importlib.import_module(f"leukomorph.training.{module}")
    except ImportError as exc:
        console.print(f"[red]error:[/red] training needs torch: pip install 'leukomorph[train]' ({exc})")
        raise typer.Exit(EXIT_USAGE) from exc


def _refuse_non_empty(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        console.print(f"[red]error:[/red] {out}: not empty (pass --overwrite)")
        raise typer.Exit(EXIT_EXISTS)


@app.command("train-classifier")
def train_classifier_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for model.onnx, card, split.csv, metrics."),
    datasets: str = typer.Option(
        "pbc,deepapl", help="Comma list of shared data sets, and/or paths to class folders or CSV manifests."
    ),
    data_root: Path = typer.Option(
        None, "--data-root", help="Shared data folder (default $LEUKOMORPH_DATA or ../shared/data)."
    ),
    arch: str = typer.Option("lm-resnet-s", help="lm-resnet-s, lm-resnet-m or timm:<name>."),
    size: int = typer.Option(128, help="Input size in pixels."),
    epochs: int = typer.Option(50),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(3e-3),
    balance_power: float = typer.Option(
        0.5, help="Sampling weight ∝ class frequency^-power (0: natural, 1: balanced)."
    ),
    balance_by: str = typer.Option(
        "class",
        help="What the frequencies count: class (taxonomy classes over all data sets) or source "
        "(each data set's classes on their own, so one laboratory's rare class is not drowned by another's).",
    ),
    seed: int = typer.Option(0),
    val_fraction: float = typer.Option(0.1, help="Share of groups for validation (0: train on train+val)."),
    temperature: float = typer.Option(None, help="Fixed softmax temperature (default: fitted on validation)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    cache_dir: Path = typer.Option(Path.home() / ".cache" / "leukomorph", help="Decoded-crop cache."),
    name: str = typer.Option("leukomorph-cell", help="Model name written into the card."),
    tta: str = typer.Option("none", help="Test-time augmentation recorded in the card: none, flip, rot4, d4."),
    augment: str = typer.Option(
        "standard",
        help="Training augmentation: standard, strong (cross-microscope), wide (strong, zoom 0.6-2), "
        "colour (strong, with other stains' and cameras' colour casts on half of each batch).",
    ),
    grayscale: bool = typer.Option(
        False,
        "--grayscale",
        help="Stain-blind model: every input reduced to its luminance, in training and inside the exported graph.",
    ),
    distill: Path = typer.Option(
        None,
        "--distill",
        help="Knowledge distillation from this teacher (a weights.pt of the same architecture and classes), "
        "its probabilities averaged over each batch as given and mirrored.",
    ),
    distill_weight: float = typer.Option(0.5, help="Share of the loss from the teacher's soft targets."),
    init: Path = typer.Option(
        None,
        "--init",
        help="Start from these weights: an SSL backbone.pt (new classification layer) or an earlier run's "
        "weights.pt with the same classes (warm start).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Train a cell classifier (train extra), export ONNX, evaluate on the held-out split, write a card."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tr = _training_module("train")
    TrainConfig, train_classifier = tr.TrainConfig, tr.train_classifier
    from ..training.card import finalize_model
    from ..training.sources import load_sources

    _check_tta_option(tta)
    _refuse_non_empty(out, overwrite)
    try:
        records = load_sources(datasets.split(","), data_root)
    except LeukoMorphError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc
    cfg = TrainConfig(
        arch=arch,
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        balance_power=balance_power,
        balance_by=balance_by,
        seed=seed,
        device=device,
        val_fraction=val_fraction,
        temperature=temperature,
        augment=augment,
        grayscale=grayscale,
        distill=str(distill) if distill else None,
        distill_weight=distill_weight,
        init=str(init) if init else None,
    )
    try:  # a bad option (augmentation, balancing, init weights) is a usage error, not a traceback
        train_classifier(records, cfg, out, cache_dir)
        card = finalize_model(out, name, records, datasets.split(","), tta=tta)
    except LeukoMorphError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc
    console.print(f"model card: {card}")


@app.command("finetune")
def finetune_cmd(
    manifests: list[Path] = typer.Argument(..., help="Reviewed-cell manifests from `leukomorph export-labels`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the run, the new card and finetune.json."),
    base: str = typer.Option(
        "leukomorph-cell", "--base", help="Cell classifier to start from (ships its training weights)."
    ),
    epochs: int = typer.Option(
        6,
        "--epochs",
        help="Most epochs (at least 1); the epoch kept is chosen on the laboratory's validation cases, and may be "
        "epoch 0, the base model itself.",
    ),
    lr: float = typer.Option(2e-4, "--lr"),
    replay: str = typer.Option(
        "pbc,deepapl", "--replay", help="Shared data sets whose training crops are mixed in (none: no replay)."
    ),
    replay_size: int = typer.Option(4000, "--replay-size", help="How many replayed crops at most."),
    name: str = typer.Option(None, "--name", help="Name of the new model (default: <base>-ft-<date-time>)."),
    data_root: Path = typer.Option(
        None, "--data-root", help="Shared data folder (default $LEUKOMORPH_DATA or ../shared/data)."
    ),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Fine-tune a cell classifier on reviewed cells (train extra); compare it with the base model.

    Nothing changes for `analyze` until `leukomorph models --install <card> --activate <name>`;
    `leukomorph models --rollback` goes back."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ft = _training_module("finetune")
    _refuse_non_empty(out, overwrite)
    datasets = (
        () if replay.strip().lower() in ("", "none") else tuple(d.strip() for d in replay.split(",") if d.strip())
    )
    try:
        res = ft.finetune(
            [str(m) for m in manifests],
            out,
            base=base,
            epochs=epochs,
            lr=lr,
            replay=datasets,
            replay_size=replay_size,
            name=name,
            data_root=data_root,
            device=device,
        )
    except LeukoMorphError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc
    t = Table("model", "laboratory test cases: accuracy (95% CI)", "base validation split: accuracy (95% CI)")
    for key in ("base", "finetuned"):
        c = res["comparison"][key]
        lab = c["laboratory_test_cases"]
        labs = (
            f"{lab['accuracy']:.3f} ({lab['ci95'][0]:.3f}–{lab['ci95'][1]:.3f}), n={lab['n']}" if lab.get("n") else "–"
        )
        shared = "; ".join(
            f"{d} {v['accuracy']:.3f} ({v['ci95'][0]:.3f}–{v['ci95'][1]:.3f})"
            for d, v in c["base_validation_split"].items()
            if v.get("n")
        )
        t.add_row(c["model"], labs, shared or "–")
    Console().print(t)
    ch = res["chosen_epoch"]
    console.print(f"kept epoch {ch['epoch']} of {ch['of']} (best on the laboratory's validation cases) {ch['note']}")
    console.print(f"card: {res['card']}\n{res['note']}")
    console.print(f"to use it: leukomorph models --install {res['card']} --activate <name>; undo: --rollback")


@app.command("train-detector")
def train_detector_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the ONNX model, card and training.json."),
    epochs: int = typer.Option(60),
    size: int = typer.Option(256, help="Longer side of a field at model scale (px)."),
    zoom: tuple[float, float] = typer.Option((0.5, 2.2), help="Random zoom range of training fields."),
    overlap_paste: float = typer.Option(
        0.0,
        "--overlap-paste",
        help="Probability that a training field gets a white cell of another field laid over one of its own "
        "(0-45% overlap), to learn to separate clumps.",
    ),
    name: str = typer.Option("leukomorph-det", help="Model name written into the card."),
    seed: int = typer.Option(0),
    data_root: Path = typer.Option(None, "--data-root", help="Shared data folder (needs txl_pbc/)."),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Train the smear-field detector (white cells, red cells, platelets) on txl_pbc (train extra)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not 0.0 <= overlap_paste <= 1.0:
        console.print(f"[red]error:[/red] --overlap-paste is a probability (0-1), not {overlap_paste}")
        raise typer.Exit(EXIT_USAGE)
    td = _training_module("detect")
    _refuse_non_empty(out, overwrite)
    try:
        cfg = td.DetConfig(epochs=epochs, size=size, scale_jitter=zoom, seed=seed, overlap_paste=overlap_paste)
        td.train_detector(out, cfg, data_root)
        card = td.finalize_detector(out, name, root=data_root)
    except LeukoMorphError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc
    ap = json.loads(card.read_text())["metrics"]["held_out_val_ap50"]["white_blood_cell"]["all"]
    console.print(f"white-cell AP@0.5 on txl_pbc val: {ap['ap50']:.3f}; model card: {card}")


@app.command("train-case-model")
def train_case_model_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the case model's card and parameters."),
    cell_model: str = typer.Option(None, "--cell-model", help="Cell classifier whose probabilities it uses."),
    name: str = typer.Option("leukomorph-apl", help="Model name written into the card."),
    c: float = typer.Option(0.1, "--c", help="Inverse L2 strength of the logistic regression."),
    repeats: int = typer.Option(10, help="Repeats of the patient-level 5-fold cross-validation."),
    data_root: Path = typer.Option(None, "--data-root", help="Shared data folder."),
    feature_classes: str = typer.Option(
        None,
        "--feature-classes",
        help="Comma list of cell classes whose features (log fraction, log mean probability) the model uses "
        "(default: all).",
    ),
) -> None:
    """Fit the patient-level APL-vs-AML model on DeepAPL (train extra: scikit-learn)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        from ..training.case_model import fit_case_model
    except ImportError as exc:
        console.print(f"[red]error:[/red] needs scikit-learn: pip install 'leukomorph[train]' ({exc})")
        raise typer.Exit(EXIT_USAGE) from exc
    from ..models import DEFAULT_CLASSIFIER

    try:
        fc = [v.strip() for v in feature_classes.split(",") if v.strip()] if feature_classes else None
        card = fit_case_model(cell_model or DEFAULT_CLASSIFIER, out, name, c, repeats, data_root, fc)
    except LeukoMorphError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc
    cv = json.loads(card.read_text())["metrics"]["cross_validation"]
    console.print(
        f"cross-validated AUROC {cv['auroc_mean_over_repeats']:.3f} (95% CI {cv['auroc_ci95'][0]:.3f}-"
        f"{cv['auroc_ci95'][1]:.3f}); promyelocyte-fraction baseline {cv['baseline_promyelocyte_fraction_auroc']:.3f}"
    )
    console.print(f"model card: {card}")


@app.command()
def evaluate(
    model: str = typer.Option(None, "--model", help="Model name or card path (default: the bundled classifier)."),
    split: Path = typer.Option(None, "--split", help="split.csv from training (default: the bundled model's split)."),
    which: str = typer.Option("test", help="Which split rows to evaluate: test, val or train."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for metrics.json, metrics.md and confusion PNGs."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the CIs."),
    tta: str = typer.Option(None, "--tta", help="Test-time augmentation: none, flip, rot4, d4 (default: the card's)."),
    labels: Path = typer.Option(
        None,
        "--labels",
        help="Evaluate on your own labelled cells instead of a split: a CSV with path,label[,patient_id] "
        "(e.g. from export-labels) or a class-per-folder tree (a sub-folder is the case). With case ids it "
        "also gives the per-case differential agreement (bias, 95% limits of agreement).",
    ),
    label_names: str = typer.Option(
        "taxonomy",
        "--label-names",
        help="What the --labels names are: taxonomy (class names as in docs/taxonomy.md), cellavision "
        "(CellaVision class names as in the DeepAPL export, e.g. 'Segmented neutrophils', 'Blast, no lineage "
        "spec') or pbc (PBC's folder names).",
    ),
) -> None:
    """Per-class precision/recall/F1, macro-F1, balanced accuracy with bootstrap CIs, per source; on
    the model's held-out split, or on your laboratory's labelled cells (--labels)."""
    from ..models import DEFAULT_CLASSIFIER, get_card

    _check_tta_option(tta)
    from .evaluate import run_evaluation

    try:
        card = get_card(model or DEFAULT_CLASSIFIER)
    except ModelError as exc:
        console.print(f"[red]model error:[/red] {exc}")
        raise typer.Exit(EXIT_MODEL) from exc
    try:
        if labels is not None and split is not None:
            raise ConfigError("give --split or --labels, not both")
        report, text = run_evaluation(card, split, which, out, n_boot, tta, labels, label_names)
    except LeukoMorphError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc
    print(text)
    if out:
        (out / "metrics.json").write_text(jsonio.dumps(report, indent=1))


if __name__ == "__main__":  # pragma: no cover
    app()
