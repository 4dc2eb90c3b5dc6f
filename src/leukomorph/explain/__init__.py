"""Explanations that work for any classifier backend (ONNX Runtime included, no torch needed)."""

from .occlusion import occlusion_map, overlay

__all__ = ["occlusion_map", "overlay"]
