"""Voronoi and Laguerre (power-weighted) tessellations of the image plane: polycrystals.

:func:`polycrystal` makes a grain map, :func:`boundary_mask` its grain boundaries.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.measure import label

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
        Grain ids 1..n in raster order, each grain one 4-connected region.

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
    stretch, centres, weights = _seeds(
        (rows, cols),
        grain_diameter_px=grain_diameter_px,
        dispersion=dispersion,
        elongation=elongation,
        angle_deg=angle_deg,
        rng=as_rng(rng),
    )
    return _split_disconnected(_power_cells((rows, cols), stretch, centres, weights))


def _rsa_disks(
    lo: np.ndarray, hi: np.ndarray, radii: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Centres of disks of ``radii`` (sorted largest first) placed without overlap in [lo, hi).

    Random sequential addition: uniform proposals, taken in turn, each accepted for
    the next disk in line unless it overlaps a disk already placed. If
    ``200 * len(radii)`` proposals do not place every disk, all radii shrink a
    little and placement continues.

    Notes
    -----
    Proposals come in batches. A k-d tree checks a batch against the disks placed
    before it; the candidates that pass are then taken in order, each against the
    candidates accepted before it in the batch (pairs from a second k-d tree), which
    is exactly the one-at-a-time process on the same random numbers.
    """
    n = len(radii)
    centres = np.empty((n, 2))
    placed = 0
    # small batches while the plane is empty: the cost is in pairs of candidates
    batch = max(64, n // 4)
    for shrink in (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5):
        r = radii * shrink
        attempts = 0
        while placed < n and attempts < 200 * n:
            batch = min(batch, 200 * n - attempts)
            proposals = lo + rng.random((batch, 2)) * (hi - lo)
            attempts += batch
            before = placed
            placed = _place(proposals, centres, r, placed)
            # the next batch: about enough proposals for the disks left at this batch's rate
            rate = max(placed - before, 1) / batch
            batch = int(min(max(64, (n - placed) / rate), 1 << 16))
        if placed == n:
            return centres
    raise RuntimeError(  # pragma: no cover - the packing fraction makes this unreachable
        f"could place only {placed} of {n} grain seeds"
    )


def _place(proposals: np.ndarray, centres: np.ndarray, radii: np.ndarray, placed: int) -> int:
    """Take ``proposals`` in turn for disks ``placed, placed + 1, ...``; return the new count."""
    n = len(radii)
    r_first = radii[placed]  # radii fall along the line: no proposal gets a larger one
    r_last = radii[min(placed + len(proposals), n) - 1]  # ... nor a smaller one
    gap = np.full(len(proposals), np.inf)  # clearance to the rims of the disks placed before
    if placed:
        near = cKDTree(proposals).sparse_distance_matrix(
            cKDTree(centres[:placed]), r_first + radii[0], output_type="ndarray"
        )
        np.minimum.at(gap, near["i"], near["v"] - radii[near["j"]])
    keep = np.flatnonzero(gap >= r_last)
    xy = proposals[keep]
    # pairs of candidates close enough to collide if both were accepted
    earlier: list[list[int]] = [[] for _ in range(len(keep))]
    for i, j in cKDTree(xy).query_pairs(2 * r_first, output_type="ndarray").tolist():
        earlier[max(i, j)].append(min(i, j))
    xy_list, gap_list, r_list = xy.tolist(), gap[keep].tolist(), radii.tolist()
    slot = [-1] * len(keep)  # which disk each candidate became
    for s, (x, y) in enumerate(xy_list):
        if placed == n:
            break
        r = r_list[placed]
        if gap_list[s] < r:
            continue
        for t in earlier[s]:
            k = slot[t]
            if k >= 0 and math.hypot(x - xy_list[t][0], y - xy_list[t][1]) < r + r_list[k]:
                break
        else:
            centres[placed] = x, y
            slot[s] = placed
            placed += 1
    return placed


def _seeds(
    shape: tuple[int, int],
    *,
    grain_diameter_px: float,
    dispersion: float,
    elongation: float,
    angle_deg: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stretch matrix, seed centres (in the stretched frame) and power weights."""
    rows, cols = shape
    stretch = _stretch(elongation, angle_deg)
    # seeds cover the stretched image (spanned by its corner pixels' centres) plus a
    # margin of two grains, so that grains at the image edge are cut from full-sized cells
    corners = np.array([[0.5, 0.5], [0.5, cols - 0.5], [rows - 0.5, 0.5], [rows - 0.5, cols - 0.5]])
    corners = corners @ stretch.T
    margin = 2.0 * grain_diameter_px * np.sqrt(elongation)
    lo, hi = corners.min(axis=0) - margin, corners.max(axis=0) + margin
    box_area = float(np.prod(hi - lo))
    n_seeds = max(2, int(round(box_area / (np.pi * grain_diameter_px**2 / 4))))

    if dispersion > 0:
        z = rng.standard_normal(n_seeds)
        rel = np.exp(dispersion * z)
    else:
        rel = np.ones(n_seeds)
    # disk radii scaled so that the disks cover PACKING_FRACTION of the box
    radii = rel * np.sqrt(PACKING_FRACTION * box_area / (np.pi * np.sum(rel**2)))
    radii = np.sort(radii)[::-1]
    centres = _rsa_disks(lo, hi, radii, rng)
    return stretch, centres, radii**2


def _power_cells(
    shape: tuple[int, int],
    stretch: np.ndarray,
    centres: np.ndarray,
    weights: np.ndarray,
    *,
    tile: int = 8,
) -> np.ndarray:
    """Index of the seed nearest in power distance to each pixel centre.

    Parameters
    ----------
    shape : tuple of int (M, N)
    stretch : ndarray of shape (2, 2)
        Maps image (row, col) to the seeds' frame.
    centres : ndarray of shape (S, 2)
    weights : ndarray of shape (S,)
        The pixel centre ``x`` belongs to the seed with the smallest
        ``|x - c|**2 - w`` (the lowest index on a tie).
    tile : int
        Side in pixels of the square tiles that share a list of candidate seeds.

    Returns
    -------
    owner : ndarray of shape (M, N), intp

    Notes
    -----
    Lifted to 3-D at height ``sqrt(max(w) - w)``, a seed's squared Euclidean distance
    to ``(x, 0)`` is its power distance plus ``max(w)``, so a k-d tree answers
    nearest-seed queries. If the pixel centres of a tile lie within ``rho`` of its
    centre ``q`` and ``D`` is the lifted distance from ``q`` to its nearest seed,
    every pixel of the tile belongs to a seed within ``D + 2 * rho`` of ``q``
    (triangle inequality). Each pixel is compared with those candidates only, in
    index order, which gives the exact assignment.
    """
    rows, cols = shape
    t = int(tile)
    tr, tc = -(-rows // t), -(-cols // t)
    # pixel centres of the image padded to whole tiles, in the seeds' frame, a row per tile
    # (element-wise products, not a matrix product, so that the tests' brute force
    # computes the same numbers)
    r = (np.arange(tr * t) + 0.5).reshape(tr, 1, t, 1)
    c = (np.arange(tc * t) + 0.5).reshape(1, tc, 1, t)
    x0 = (stretch[0, 0] * r + stretch[0, 1] * c).reshape(tr * tc, t * t)
    x1 = (stretch[1, 0] * r + stretch[1, 1] * c).reshape(tr * tc, t * t)
    q_rc = np.column_stack(
        [(np.arange(tr) * t + t / 2).repeat(tc), np.tile(np.arange(tc) * t + t / 2, tr)]
    )
    half = (t - 1) / 2
    rho = np.hypot(*(np.array([[half, half], [half, -half]]) @ stretch.T).T).max()

    tree = cKDTree(np.column_stack([centres, np.sqrt(weights.max() - weights)]))
    q = np.column_stack([q_rc @ stretch.T, np.zeros(len(q_rc))])
    reach = tree.query(q)[0] + 2 * rho
    # a little slack for rounding: an extra candidate costs time, a missing one errors
    candidates = tree.query_ball_point(q, reach * (1 + 1e-9) + 1e-9, return_sorted=True)
    counts = np.fromiter(map(len, candidates), np.intp, len(candidates))
    # tiles with the most candidates first, so that candidate k concerns a prefix of tiles
    order = np.argsort(-counts, kind="stable")
    counts = counts[order]
    index = np.full((len(order), counts[0]), len(centres))  # padding: a seed at infinity
    index[np.arange(counts[0]) < counts[:, None]] = np.fromiter(
        itertools.chain.from_iterable(candidates[order]), np.intp, counts.sum()
    )
    cx, cy = np.append(centres[:, 0], np.inf), np.append(centres[:, 1], np.inf)
    w = np.append(weights, 0.0)
    x0, x1 = x0[order], x1[order]
    best = np.full(x0.shape, np.inf)
    owner = np.zeros(x0.shape, np.intp)
    for k in range(counts[0]):
        m = int(np.count_nonzero(counts > k))
        i = index[:m, k, None]
        d = (x0[:m] - cx[i]) ** 2 + (x1[:m] - cy[i]) ** 2 - w[i]
        better = d < best[:m]
        np.copyto(best[:m], d, where=better)
        np.copyto(owner[:m], i, where=better)
    owner[order] = owner.copy()
    owner = owner.reshape(tr, tc, t, t).transpose(0, 2, 1, 3).reshape(tr * t, tc * t)
    return owner[:rows, :cols]


def _split_disconnected(owner: np.ndarray) -> np.ndarray:
    """Grain ids 1..n, one per 4-connected piece of a cell (pixelation can cut slivers)."""
    return label(owner, background=-1, connectivity=1).astype(np.uint32)


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
