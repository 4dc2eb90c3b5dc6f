"""White-cell segmentation. ``classical``: colour transform + Otsu threshold (no model needed)."""

from .classical import nucleus_mask, nucleus_size_fraction

__all__ = ["nucleus_mask", "nucleus_size_fraction"]
