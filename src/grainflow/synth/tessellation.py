"""Voronoi and Laguerre (power-weighted) tessellations of the image plane: polycrystals.

:func:`polycrystal` makes a grain map, :func:`boundary_mask` its grain boundaries.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.segmentation import relabel_sequential

from grainflow.seeds import as_rng

__all__ = ["polycrystal", "boundary_mask", "PACKING_FRACTION"]

#: Fraction of the plane that the hard-core disks cover. Well below the RSA
#: jamming limit (~0.547) so that placement always succeeds quickly.
PACKING_FRACTION = 0.42


def _stretch(elongation: float, angle_deg: float) -> np.ndarray:
    """Matrix mapping image (row, col) to the isotropic frame (area preserving)."""
    t = np.deg2rad(angle_deg)
    # rotation taking the elongation direction (angle from the +col axis, counter-clockwise
    # on screen, i.e. towards -row) onto the first axis of the frame
    direction = np.array([-np.sin(t), np.cos(t)])
    normal = np.array([np.cos(t), np.sin(t)])
    rot = np.stack([direction, normal])
    scale = np.diag([1.0 / np.sqrt(elongation), np.sqrt(elongation)])
    return scale @ rot


def _rsa_disks(
    lo: np.ndarray, hi: np.ndarray, radii: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Place disks of ``radii`` (largest first) without overlap in the box [lo, hi)."""
    order = np.argsort(radii)[::-1]
    radii = radii[order]
    centres = np.empty((len(radii), 2))
    placed = 0
    grid: dict[tuple[int, int], list[int]] = {}
    cell = 2.0 * radii.max()
    for shrink in (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5):
        attempts = 0
        while placed < len(radii) and attempts < 200 * len(radii):
            attempts += 1
            r = radii[placed] * shrink
            c = lo + rng.random(2) * (hi - lo)
            gi, gj = int(c[0] // cell), int(c[1] // cell)
            neighbours = [
                k
                for di in (-1, 0, 1)
                for dj in (-1, 0, 1)
                for k in grid.get((gi + di, gj + dj), ())
            ]
            if neighbours:
                d = np.hypot(*(centres[neighbours] - c).T)
                if np.any(d < r + radii[neighbours] * shrink):
                    continue
            centres[placed] = c
            grid.setdefault((gi, gj), []).append(placed)
            placed += 1
        if placed == len(radii):
            break
        radii = radii.copy()
    if placed < len(radii):  # pragma: no cover - the packing fraction makes this unreachable
        raise RuntimeError(f"could place only {placed} of {len(radii)} grain seeds")
    return centres


def polycrystal(
    shape: tuple[int, int],
    *,
    grain_diameter_px: float,
    dispersion: float = 0.0,
    elongation: float = 1.0,
    angle_deg: float = 0.0,
    rng: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Label map of a polycrystal.

    Parameters
    ----------
    shape : tuple of int (M, N)
        Image shape in pixels.
    grain_diameter_px : float
        Mean equivalent-circle diameter ``d``: the mean grain area is
        ``pi * d**2 / 4`` pixels.
    dispersion : float, optional
        Standard deviation of ``log(grain diameter)``: 0 gives a Voronoi
        tessellation, > 0 a Laguerre tessellation with a log-normal size
        distribution.
    elongation : float, optional
        Aspect ratio of the grains (1 = equiaxed; 2 = twice as long as wide,
        as after rolling).
    angle_deg : float, optional
        Direction of elongation, degrees counter-clockwise from the image's
        +column axis.
    rng : int or Generator, optional

    Returns
    -------
    labels : ndarray of shape (M, N), uint32
        Grain ids 1..n, each grain one connected region.

    Notes
    -----
    Seeds are hard-core disks placed by random sequential addition (RSA) in a
    stretched frame; each pixel belongs to the seed with the smallest power distance
    ``|x - c_i|**2 - r_i**2``. With equal radii this is a Voronoi tessellation of
    well-separated seeds; with log-normal radii it is a Laguerre tessellation whose
    cell sizes follow the radii (non-overlapping disks each lie inside their own
    power cell, so no cell is empty). Grains are elongated by an area-preserving
    stretch along ``angle_deg``.
    """
    rows, cols = (int(s) for s in shape)
    if rows < 2 or cols < 2:
        raise ValueError(f"shape must be at least 2x2 pixels, got {shape=}")
    if not grain_diameter_px >= 2:
        raise ValueError(f"grain_diameter_px must be >= 2, got {grain_diameter_px=}")
    if not 0 <= dispersion <= 1.5:
        raise ValueError(f"dispersion must be in [0, 1.5], got {dispersion=}")
    if not 1 <= elongation <= 10:
        raise ValueError(f"elongation must be in [1, 10], got {elongation=}")
    rng = as_rng(rng)

    stretch = _stretch(elongation, angle_deg)
    rr, cc = np.mgrid[0:rows, 0:cols]
    pix = np.stack([rr.ravel() + 0.5, cc.ravel() + 0.5], axis=1) @ stretch.T
    # seeds cover the stretched image plus a margin of two grains, so that
    # grains at the image edge are cut from full-sized cells
    margin = 2.0 * grain_diameter_px * np.sqrt(elongation)
    lo, hi = pix.min(axis=0) - margin, pix.max(axis=0) + margin
    box_area = float(np.prod(hi - lo))
    n_seeds = max(2, int(round(box_area / (np.pi * grain_diameter_px**2 / 4))))

    if dispersion > 0:
        z = rng.standard_normal(n_seeds)
        rel = np.exp(dispersion * z)
    else:
        rel = np.ones(n_seeds)
    # disk radii scaled so that the disks cover PACKING_FRACTION of the box
    radii = rel * np.sqrt(PACKING_FRACTION * box_area / (np.pi * np.sum(rel**2)))
    centres = _rsa_disks(lo, hi, radii, rng)
    # power distance |x - c|^2 - r^2 == Euclidean distance to the seed lifted to
    # height sqrt(R^2 - r^2) in 3-D (minus R^2), so a k-d tree answers it exactly
    order = np.argsort(radii)[::-1]
    radii = radii[order]
    lift = np.sqrt(radii.max() ** 2 - radii**2)
    tree = cKDTree(np.column_stack([centres, lift]))
    _, owner = tree.query(np.column_stack([pix, np.zeros(len(pix))]))
    labels = owner.reshape(rows, cols).astype(np.int64) + 1
    labels, _, _ = relabel_sequential(labels)
    return _split_disconnected(labels).astype(np.uint32)


def _split_disconnected(labels: np.ndarray) -> np.ndarray:
    """Give each 4-connected piece of a grain its own id (pixelation can cut slivers)."""
    pieces = np.zeros_like(labels)
    offset = 0
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        comp, n = ndi.label(labels[sl] == i)
        mask = comp > 0
        pieces[sl][mask] = comp[mask] + offset
        offset += n
    return pieces


def boundary_mask(labels: np.ndarray, *, width_px: int = 2) -> np.ndarray:
    """Grain-boundary mask of a given width from a label map.

    Parameters
    ----------
    labels : ndarray of shape (M, N), int
    width_px : int
        Boundary width in pixels: 1 marks the pixel above or left of each
        boundary, 2 the pixels on both sides (the default); larger widths grow
        these symmetrically.

    Returns
    -------
    mask : ndarray of shape (M, N), bool
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got {labels.shape=}")
    if not 1 <= width_px <= 15:
        raise ValueError(f"width_px must be in [1, 15], got {width_px=}")
    # a boundary runs between two pixels: width 1 marks the pixel above / left of it,
    # width 2 the pixels on both sides
    down = labels[:-1, :] != labels[1:, :]
    right = labels[:, :-1] != labels[:, 1:]
    base = np.zeros(labels.shape, bool)
    base[:-1, :] |= down
    base[:, :-1] |= right
    if width_px % 2 == 0:
        base[1:, :] |= down
        base[:, 1:] |= right
    grow = (width_px - 1) // 2 if width_px % 2 else (width_px - 2) // 2
    if grow:
        base = ndi.binary_dilation(base, structure=np.ones((2 * grow + 1,) * 2, bool))
    return base
