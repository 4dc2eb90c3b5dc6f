"""White-cell segmentation and morphometrics.

``classical``: colour transform + Otsu thresholds (no model); ``model``: the learned U-Net through
ONNX Runtime; ``morphometrics``: measurements from a label image (0 background, 1 cytoplasm,
2 nucleus); ``metrics``: Dice.
"""

from .classical import cell_mask, classical_labels, nucleus_mask, nucleus_size_fraction
from .metrics import dice, dice_scores
from .morphometrics import MORPHOMETRIC_COLUMNS, morphometrics

__all__ = [
    "MORPHOMETRIC_COLUMNS",
    "cell_mask",
    "classical_labels",
    "dice",
    "dice_scores",
    "morphometrics",
    "nucleus_mask",
    "nucleus_size_fraction",
]
