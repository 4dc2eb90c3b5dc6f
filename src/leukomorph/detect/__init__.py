"""White-cell detection in smear fields (classical baseline) and detection metrics."""

from .classical import Detection, detect_white_cells
from .metrics import average_precision, iou

__all__ = ["Detection", "average_precision", "detect_white_cells", "iou"]
