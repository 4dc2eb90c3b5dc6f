"""Safe readers for user images (crops today; fields and slides later)."""

from .images import IMAGE_SUFFIXES, MAX_PIXELS, check_pixel_size, expand_inputs, read_image, sha256_file

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "check_pixel_size", "expand_inputs", "read_image", "sha256_file"]
