"""LeukoMorph: AI-assisted morphological diagnosis support for acute leukemia.

Decision support, not a diagnosis: every result is for review by a qualified hematologist.
"""

__version__ = "0.9.4"

import logging as _logging  # noqa: E402

_logging.getLogger(__name__).addHandler(_logging.NullHandler())  # libraries log; apps configure

from .errors import ImageReadError, LeukoMorphError, ModelError, OutputExistsError  # noqa: E402
from .taxonomy import CLASSES  # noqa: E402

__all__ = [
    "CLASSES",
    "ImageReadError",
    "LeukoMorphError",
    "ModelError",
    "OutputExistsError",
    "__version__",
    "read_image",
    "run_case",
    "write_outputs",
]


def __getattr__(name: str):
    # heavy stages are imported lazily so `import leukomorph` stays cheap
    if name == "run_case":
        from .pipeline import run_case

        return run_case
    if name == "write_outputs":
        from .report import write_outputs

        return write_outputs
    if name == "read_image":
        from .io import read_image

        return read_image
    raise AttributeError(name)
