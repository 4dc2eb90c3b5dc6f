"""One exception tree for LeukoMorph.

Every error raised by the library derives from :class:`LeukoMorphError`. Errors about a file carry
the file path and a human-readable reason; all are picklable so they survive process pools.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "ImageReadError",
    "LabelMappingError",
    "LeukoMorphError",
    "ModelError",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "OutputExistsError",
]


class LeukoMorphError(Exception):
    """Base class of every error LeukoMorph raises on purpose."""


class ConfigError(LeukoMorphError):
    """A configuration value or command-line option is invalid."""


class OutputExistsError(LeukoMorphError):
    """An output location exists and overwriting was not requested."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = str(path)

    def __str__(self) -> str:
        return f"{self.path}: output already exists (pass --overwrite to replace it)"


class ImageReadError(LeukoMorphError):
    """An input image cannot be used; names the file and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class DataError(LeukoMorphError):
    """A data set, manifest or folder tree is malformed."""


class LabelMappingError(DataError):
    """A data set label has no entry in the mapping table (never dropped silently)."""

    def __init__(self, dataset: str, label: str, where: str = "", accepted: tuple[str, ...] = ()) -> None:
        super().__init__(dataset, label)
        self.dataset = dataset
        self.label = label
        self.where = where  # a user's folder or CSV line, where the label was read
        self.accepted = accepted  # the names of the user's vocabulary, when it is not the taxonomy's

    def __str__(self) -> str:
        if self.where and self.accepted:
            names = ", ".join(repr(a) for a in self.accepted)
            return f"{self.where}: label {self.label!r} is not a {self.dataset} class name; use one of {names}"
        if self.where:
            from .taxonomy import CLASSES

            return (
                f"{self.where}: label {self.label!r} is not a taxonomy class; use one of {', '.join(CLASSES)}, "
                "or 'a|b' for a cell known to be one of several (docs/taxonomy.md)"
            )
        return f"{self.dataset}: label {self.label!r} has no mapping in leukomorph.taxonomy"


class ModelError(LeukoMorphError):
    """A model cannot be found, verified or run."""


class ModelNotFoundError(ModelError):
    """No model of that name is registered."""


class ModelIntegrityError(ModelError):
    """A weight file is missing or its sha256 does not match its model card."""
