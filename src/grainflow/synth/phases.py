"""Two-phase structures: precipitates in a matrix and nanoparticles on a support.

Particles sit one per cell of a rotated, jittered lattice of spacing ``c`` and
are clipped to their cell less a one-pixel gap, so no two particles touch and
each has its own id. One global size factor is found by bisection so that the
rendered mask meets the requested area fraction.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import label

from grainflow.seeds import as_rng

__all__ = ["particles", "MORPHOLOGIES"]

MORPHOLOGIES = ("cuboid", "blob", "faceted")


def particles(
    shape: tuple[int, int],
    *,
    area_fraction: float,
    particle_diameter_px: float,
    dispersion: float = 0.2,
    morphology: str = "cuboid",
    jitter: float = 0.15,
    rng: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Particle id map of a two-phase structure.

    Parameters
    ----------
    shape : tuple of int (M, N)
    area_fraction : float
        Requested fraction of the image covered by particles, in [0.02, 0.7].
    particle_diameter_px : float
        Mean equivalent-circle diameter of the particles, pixels.
    dispersion : float
        Standard deviation of log(particle size).
    morphology : {"cuboid", "blob", "faceted"}
        Rounded cuboids aligned on a common axis (γ′ in Ni superalloys),
        irregular blobs, or faceted polygons at random orientations
        (nanoparticles).
    jitter : float
        Random displacement of particle centres, as a fraction of the spacing.
    rng : int or Generator, optional

    Returns
    -------
    particle_ids : ndarray of shape (M, N), uint32
        0 for the matrix, 1..n for particles.
    """
    if morphology not in MORPHOLOGIES:
        raise ValueError(f"morphology must be one of {MORPHOLOGIES}, got {morphology=}")
    if not 0.02 <= area_fraction <= 0.7:
        raise ValueError(f"area_fraction must be in [0.02, 0.7], got {area_fraction=}")
    if not particle_diameter_px >= 3:
        raise ValueError(f"particle_diameter_px must be >= 3, got {particle_diameter_px=}")
    if not 0 <= jitter <= 0.5:
        raise ValueError(f"jitter must be in [0, 0.5], got {jitter=}")
    rng = as_rng(rng)
    rows, cols = (int(s) for s in shape)

    spacing = particle_diameter_px * np.sqrt(np.pi / (4 * area_fraction))
    theta = rng.uniform(0, np.pi / 2)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    rr, cc = np.mgrid[0:rows, 0:cols] + 0.5
    centred = np.stack([rr.ravel() - rows / 2, cc.ravel() - cols / 2])
    u = rot @ centred + rng.uniform(0, spacing, (2, 1))  # random lattice phase
    cell = np.floor(u / spacing).astype(int)
    lo = cell.min(axis=1)
    cell -= lo[:, None]
    ncell = cell.max(axis=1) + 1
    flat = cell[0] * ncell[1] + cell[1]
    n = int(ncell.prod())
    local = u - (cell + lo[:, None] + 0.5) * spacing  # coordinates from the cell centre

    size = np.exp(dispersion * rng.standard_normal(n) - dispersion**2)  # E[size^2] = 1
    shift = rng.uniform(-jitter, jitter, (2, n)) * spacing
    if morphology == "cuboid":
        angle = rng.normal(0.0, 0.05, n)  # aligned, as γ′ cubes on <100>
    else:
        angle = rng.uniform(0, 2 * np.pi, n)
    harmonics = rng.normal(0.0, 0.12, (3, n)) if morphology == "blob" else None
    phases = rng.uniform(0, 2 * np.pi, (3, n))
    sides = rng.integers(5, 9, n)

    x = local[0] - shift[0, flat]
    y = local[1] - shift[1, flat]
    ca, sa = np.cos(angle[flat]), np.sin(angle[flat])
    x, y = ca * x + sa * y, -sa * x + ca * y
    rho = np.hypot(x, y)
    phi = np.arctan2(y, x)
    if morphology == "cuboid":
        p = 4.0
        shape_r = (np.abs(x) ** p + np.abs(y) ** p) ** (1 / p)  # superellipse "radius"
    elif morphology == "blob":
        mod = 1 + sum(
            harmonics[k, flat] * np.cos((k + 2) * phi + phases[k, flat]) for k in range(3)
        )
        shape_r = rho / np.clip(mod, 0.5, None)
    else:  # regular polygon of `sides` sides
        m = sides[flat]
        sector = 2 * np.pi / m
        shape_r = rho * np.cos((phi % sector) - sector / 2) / np.cos(sector / 2)
    inside_cell = np.all(np.abs(local) < spacing / 2 - 1.0, axis=0)
    base = size[flat] * spacing / 2

    def mask_for(k: float) -> np.ndarray:
        return inside_cell & (shape_r <= k * base)

    lo_k, hi_k = 0.0, 2.0
    for _ in range(20):
        mid = 0.5 * (lo_k + hi_k)
        if mask_for(mid).mean() < area_fraction:
            lo_k = mid
        else:
            hi_k = mid
    mask = mask_for(0.5 * (lo_k + hi_k)).reshape(rows, cols)
    # particles never touch (each keeps a pixel's gap to its cell's edge), so
    # connected components are the particles; a blob cut in two counts twice
    return label(mask, connectivity=1).astype(np.uint32)
