"""Two-grain images: the lecture's bicrystal and straight or curved boundaries."""

from __future__ import annotations

import numpy as np

from grainflow.seeds import as_rng

__all__ = ["bicrystal", "GEOMETRIES"]

GEOMETRIES = ("corner", "straight", "curved")


def bicrystal(
    shape: tuple[int, int],
    *,
    geometry: str = "corner",
    angle_deg: float = 90.0,
    curvature: float = 0.0,
    offset_px: float = 0.0,
    rng: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Label map of two grains.

    Parameters
    ----------
    shape : tuple of int (M, N)
    geometry : {"corner", "straight", "curved"}
        ``"corner"`` is the lecture's image: grain 2 fills the bottom-right
        quadrant, so the boundary has one vertical segment (column N/2, lower
        half) and one horizontal segment (row M/2, right half).
        ``"straight"`` is a straight boundary through the centre (shifted by
        ``offset_px`` along its normal) at ``angle_deg``, degrees
        counter-clockwise from the +column axis (90 = vertical).
        ``"curved"`` bends that line into a parabola of ``curvature`` (1/px).
    rng : int or Generator, optional
        Unused by the geometry (kept for a uniform generator signature).

    Returns
    -------
    labels : ndarray of shape (M, N), uint32 with values {1, 2}
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry=}")
    rows, cols = (int(s) for s in shape)
    if rows < 4 or cols < 4:
        raise ValueError(f"shape must be at least 4x4 pixels, got {shape=}")
    as_rng(rng)
    r, c = np.mgrid[0:rows, 0:cols] + 0.5
    if geometry == "corner":
        second = (r >= rows / 2) & (c >= cols / 2)
    else:
        t = np.deg2rad(angle_deg)
        along = np.array([-np.sin(t), np.cos(t)])  # (row, col) direction of the line
        normal = np.array([np.cos(t), np.sin(t)])
        dr, dc = r - rows / 2, c - cols / 2
        s = dr * along[0] + dc * along[1]
        n = dr * normal[0] + dc * normal[1] - offset_px
        if geometry == "curved":
            n = n - 0.5 * curvature * s**2
        second = n > 0
    return np.where(second, 2, 1).astype(np.uint32)
