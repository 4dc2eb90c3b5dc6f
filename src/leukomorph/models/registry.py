"""Model registry.

A model is a card (JSON) plus a weight file beside it. Bundled cards live in ``models/zoo``;
a user-trained model is addressed by the path of its card. Loading checks the weight file's
sha256 against the card and raises on any mismatch: there is no fallback model and no download.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ModelError, ModelIntegrityError, ModelNotFoundError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CASE_MODEL",
    "DEFAULT_CLASSIFIER",
    "ModelCard",
    "activate_model",
    "active_classifier",
    "ensemble_sha256",
    "get_card",
    "install_model",
    "leukomorph_home",
    "list_cards",
    "load_classifier",
    "load_detector",
    "load_segmenter",
    "rollback_model",
    "training_weights",
    "user_zoo",
]

#: Name of the bundled default cell classifier.
DEFAULT_CLASSIFIER = "leukomorph-cell"
#: Name of the bundled patient-level APL-vs-AML model (fitted on DEFAULT_CLASSIFIER's probabilities).
DEFAULT_CASE_MODEL = "leukomorph-apl-ens"


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    task: str
    file: str
    sha256: str
    classes: tuple[str, ...]
    input: dict[str, Any]
    card_path: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def weights_path(self) -> Path:
        return Path(self.card_path).parent / self.file

    @property
    def input_size(self) -> int:
        return int(self.input["size"])

    @property
    def is_ensemble(self) -> bool:
        return bool(self.raw.get("ensemble"))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ModelCard:
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
            return cls(
                name=raw["name"],
                version=str(raw["version"]),
                task=raw["task"],
                file=raw["file"],
                sha256=raw["sha256"],
                classes=tuple(raw["classes"]),
                input=dict(raw["input"]),
                card_path=str(p),
                raw=raw,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{p}: not a valid model card ({exc.__class__.__name__}: {exc})") from exc


def _zoo() -> Path:
    return Path(str(resources.files("leukomorph.models") / "zoo"))


def leukomorph_home() -> Path:
    """LeukoMorph's own folder: ``$LEUKOMORPH_HOME``, else ``~/.local/share/leukomorph`` (review
    store, installed models, the active-model record)."""
    return Path(os.environ.get("LEUKOMORPH_HOME") or Path.home() / ".local" / "share" / "leukomorph")


def user_zoo() -> Path:
    """Where ``leukomorph models --install`` puts a laboratory's own models (e.g. fine-tuned ones)."""
    return leukomorph_home() / "models"


def _bundled_cards() -> list[ModelCard]:
    return [ModelCard.from_file(p) for p in _zoo().glob("*.json")]


def _installed_cards() -> list[ModelCard]:
    z = user_zoo()
    return [ModelCard.from_file(p) for p in sorted(z.glob("*.json"))] if z.is_dir() else []


def list_cards(installed: bool = True) -> list[ModelCard]:
    """Cards of all bundled models (and, with ``installed``, the models installed in
    :func:`user_zoo`), sorted by name."""
    return sorted(_bundled_cards() + (_installed_cards() if installed else []), key=lambda c: c.name)


def get_card(name_or_path: str) -> ModelCard:
    """A bundled or installed card by name (bundled first: an installed model cannot shadow a
    bundled one), or any card by the path of its JSON file."""
    if name_or_path.endswith(".json") or os.sep in name_or_path:
        if not Path(name_or_path).is_file():
            raise ModelNotFoundError(f"{name_or_path}: model card file not found")
        return ModelCard.from_file(name_or_path)
    for card in _bundled_cards():
        if card.name == name_or_path:
            return card
    for card in _installed_cards():
        if card.name == name_or_path:
            return card
    names = ", ".join(c.name for c in list_cards()) or "none"
    raise ModelNotFoundError(f"no model named {name_or_path!r} (known: {names})")


def training_weights(card: ModelCard) -> Path:
    """The torch weights a card ships for further training (``leukomorph finetune``), sha256-checked."""
    tw = card.raw.get("training_weights")
    if not tw:
        raise ModelError(f"model {card.name!r} {card.version} ships no training weights (fine-tuning needs them)")
    return _sha_checked(Path(card.card_path).parent / tw["file"], tw["sha256"], card, "training weights", "use")


def _active_file() -> Path:
    return leukomorph_home() / "active-model.json"


def active_classifier() -> str:
    """The cell classifier `analyze` uses when none is named: the one made active with
    ``leukomorph models --activate`` (an installed model), else DEFAULT_CLASSIFIER. An active model
    that cannot be found is an error, never replaced by the bundled one."""
    f = _active_file()
    if not f.is_file():
        return DEFAULT_CLASSIFIER
    try:
        name = json.loads(f.read_text(encoding="utf-8")).get("classifier") or DEFAULT_CLASSIFIER
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"{f}: unreadable active-model record ({exc}); fix or delete it") from exc
    get_card(name)  # raises ModelNotFoundError: no silent fallback to the bundled model
    return name


def install_model(card_path: str | os.PathLike[str]) -> ModelCard:
    """Copy a cell classifier's card and its files (weights, split file) into :func:`user_zoo`
    after verifying it loads; a name already bundled or installed is refused."""
    import shutil

    card = get_card(str(card_path))
    if card.raw.get("ensemble"):
        raise ModelError(f"{card.card_path}: an ensemble card; install its members and write its card in the user zoo")
    load_classifier(card.card_path)  # verifies sha256 and that it is a cell classifier
    if any(c.name == card.name for c in list_cards()):
        raise ModelError(f"a model named {card.name!r} is already bundled or installed; give the new one another name")
    src = Path(card.card_path).parent
    files = [card.raw["file"], card.raw.get("split_file"), (card.raw.get("training_weights") or {}).get("file")]
    z = user_zoo()
    z.mkdir(parents=True, exist_ok=True)
    for f in [f for f in files if f]:
        if (z / f).exists():
            raise ModelError(f"{z / f} exists; refusing to overwrite another installed model's file")
    for f in [f for f in files if f]:
        shutil.copyfile(src / f, z / f)
    shutil.copyfile(card.card_path, z / f"{card.name}.json")
    return get_card(card.name)


def activate_model(name: str) -> dict:
    """Make an installed or bundled cell classifier the one `analyze` uses by default; the previous
    choice is kept for :func:`rollback_model`. Returns the record written."""
    from datetime import datetime, timezone

    card = get_card(name)
    load_classifier(card.card_path)
    f = _active_file()
    rec = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {"classifier": None, "history": []}
    prev = rec.get("classifier") or DEFAULT_CLASSIFIER
    rec["history"] = [*rec.get("history", []), {"classifier": prev, "replaced": datetime.now(timezone.utc).isoformat()}]
    rec["classifier"] = card.name
    rec["sha256"] = card.sha256
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(rec, indent=2), encoding="utf-8")
    return rec


def rollback_model() -> dict:
    """Return to the cell classifier active before the last activation (the bundled default at the
    start of the history). Returns the record written."""
    f = _active_file()
    rec = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
    if not rec.get("history"):
        raise ModelError(f"nothing to roll back: no earlier active model recorded in {f}")
    prev = rec["history"].pop()["classifier"]
    rec["classifier"] = prev
    rec["sha256"] = get_card(prev).sha256  # raises when the earlier model has gone
    f.write_text(json.dumps(rec, indent=2), encoding="utf-8")
    return rec


def load_segmenter(name_or_path: str = "leukomorph-seg", threads: int | None = None):
    """Load a verified nucleus/cytoplasm segmentation model (ONNX Runtime backend)."""
    from ..segment.model import OnnxSegmenter

    card = get_card(name_or_path)
    if card.task != "segmentation":
        raise ModelError(f"model {card.name!r} is a {card.task!r} model, not a segmentation model")
    return OnnxSegmenter.from_file(verify(card), card.input_size, card=card, threads=threads)


def load_detector(name_or_path: str = "leukomorph-det", threads: int | None = None):
    """Load a verified smear-field detector (ONNX Runtime backend)."""
    from ..detect.model import OnnxDetector

    card = get_card(name_or_path)
    if card.task != "detection":
        raise ModelError(f"model {card.name!r} is a {card.task!r} model, not a detector")
    return OnnxDetector.from_file(
        verify(card),
        card.input_size,
        card.classes,
        int(card.input["stride"]),
        card=card,
        threads=threads,
        rbc_diameter_px=card.input.get("rbc_diameter_px"),
        um_per_px=card.input.get("um_per_px"),
        score_thresholds=card.raw.get("inference", {}).get("score_threshold"),
    )


def member_card(card: ModelCard, member: dict[str, Any], kind: str = "ensemble") -> ModelCard:
    """The card of an ensemble member (a registry name, or a card path relative to the ensemble's
    card), refused unless its sha256 is the one the ensemble card records."""
    ref = member["model"]
    if (ref.endswith(".json") or os.sep in ref) and not os.path.isabs(ref):
        ref = str(Path(card.card_path).parent / ref)
    mc = get_card(ref)
    if mc.sha256 != member["sha256"]:
        raise ModelIntegrityError(
            f"{kind} {card.name!r}: member {mc.name!r} has sha256 {mc.sha256}, card expects {member['sha256']}"
        )
    return mc


def ensemble_sha256(member_sha256s: list[str]) -> str:
    """The identity of an ensemble: sha256 over its members' sha256 values, in order."""
    return hashlib.sha256("\n".join(member_sha256s).encode()).hexdigest()


def load_params(card: ModelCard, task: str, what: str) -> dict:
    """Verified ``.npz`` parameters of a non-ONNX model (case models, attribute heads)."""
    import numpy as np

    if card.task != task:
        raise ModelError(f"model {card.name!r} is a {card.task!r} model, not {what}")
    path = verify(card)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def verify(card: ModelCard) -> Path:
    """Return the weight path after checking it exists and matches the card's sha256."""
    return _sha_checked(card.weights_path, card.sha256, card, "weight file", "load")


def _sha_checked(path: Path, sha256: str, card: ModelCard, what: str, verb: str) -> Path:
    """``path`` after checking that it exists and that its sha256 is the one ``card`` records."""
    if not path.is_file():
        raise ModelIntegrityError(f"{path}: {what} of model {card.name!r} is missing")
    h = hashlib.sha256(path.read_bytes()).hexdigest()
    if h != sha256:
        raise ModelIntegrityError(
            f"{path}: sha256 {h} does not match model card {card.card_path} ({sha256}); refusing to {verb}"
        )
    return path


def load_classifier(name_or_path: str = DEFAULT_CLASSIFIER, threads: int | None = None):
    """Load a verified cell classifier (ONNX Runtime backend)."""
    from .backends.onnx import OnnxClassifier

    card = get_card(name_or_path)
    if card.task != "cell-classification":
        raise ModelError(f"model {card.name!r} is a {card.task!r} model, not a cell classifier")
    ens = card.raw.get("ensemble")
    if ens:
        from .backends.ensemble import EnsembleClassifier

        members = []
        for m in ens["members"]:
            mc = member_card(card, m)
            if mc.raw.get("ensemble"):
                raise ModelError(f"ensemble {card.name!r}: member {mc.name!r} is itself an ensemble")
            members.append(load_classifier(mc.card_path, threads=threads))
        if ensemble_sha256([m["sha256"] for m in ens["members"]]) != card.sha256:
            raise ModelIntegrityError(f"ensemble {card.name!r}: sha256 does not match its member list")
        return EnsembleClassifier(card, members, [float(m.get("weight", 1.0)) for m in ens["members"]])
    return OnnxClassifier(card, verify(card), threads=threads)
