"""Image files grainflow reads."""

from __future__ import annotations

__all__ = ["IMAGE_SUFFIXES"]


#: file name endings read as images (case-insensitive)
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
