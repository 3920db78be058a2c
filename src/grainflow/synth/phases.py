"""Two-phase structures: precipitates in a matrix and nanoparticles on a support.

Particles sit one per cell of a rotated, jittered lattice of spacing ``c`` and
are clipped to their cell less a one-pixel gap, so no two particles touch and
each has its own id. One global size factor is found by bisection so that the
rendered mask meets the requested area fraction.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label

from grainflow.seeds import as_rng
from grainflow.synth.imaging import smooth_field

__all__ = ["lattice_spacing", "particles", "superalloy_phase", "tertiary_particles", "MORPHOLOGIES"]

MORPHOLOGIES = ("cuboid", "blob", "faceted")


def lattice_spacing(area_fraction: float, particle_diameter_px: float) -> float:
    """The spacing of a square lattice of discs of this diameter covering this area fraction.

    Raises ValueError for an area fraction outside [0.02, 0.7] or a diameter below 3 px.
    """
    if not 0.02 <= area_fraction <= 0.7:
        raise ValueError(f"area_fraction must be in [0.02, 0.7], got {area_fraction=}")
    if not particle_diameter_px >= 3:
        raise ValueError(f"particle_diameter_px must be >= 3, got {particle_diameter_px=}")
    return particle_diameter_px * np.sqrt(np.pi / (4 * area_fraction))


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
    spacing = lattice_spacing(area_fraction, particle_diameter_px)
    if not 0 <= jitter <= 0.5:
        raise ValueError(f"jitter must be in [0, 0.5], got {jitter=}")
    rng = as_rng(rng)
    rows, cols = (int(s) for s in shape)

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


def superalloy_phase(
    shape: tuple[int, int],
    *,
    area_fraction: float,
    particle_diameter_px: float,
    order: float = 0.7,
    warp: float = 1.2,
    rng: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Mask of coalesced, irregular γ′ precipitates separated by γ channels.

    Parameters
    ----------
    shape : tuple of int (M, N)
    area_fraction : float
        Fraction of the image covered by γ′, in [0.02, 0.7]; met exactly (to a pixel).
    particle_diameter_px : float
        Typical size of one precipitate, pixels (the lattice spacing is chosen so
        that isolated precipitates have about this equivalent-circle diameter).
    order : float
        In [0, 1]: 1 places cuboids on a bent square lattice (γ′ aligned on
        ⟨100⟩), 0 gives free blobs of one size; between, the precipitates
        coalesce, raft and lose their corners.
    warp : float
        How far the lattice's rows bend, radians of phase.
    rng : int or Generator, optional

    Returns
    -------
    phase : ndarray of shape (M, N), bool

    Notes
    -----
    The mask is a level set of a smooth field: the lattice term
    ``min(|sin(u / 2)|, |sin(v / 2)|)``, which is 0 on a square grid of channel lines
    and largest at the cell centres, with phases displaced by smooth random
    fields (so rows bend and cells vary in size), mixed with a Gaussian random field of
    correlation length ``particle_diameter_px / 4`` (which makes outlines
    irregular and joins neighbours). The threshold is the field's
    ``1 - area_fraction`` quantile.
    """
    spacing = lattice_spacing(area_fraction, particle_diameter_px)
    if not 0 <= order <= 1:
        raise ValueError(f"order must be in [0, 1], got {order=}")
    rng = as_rng(rng)
    rows, cols = (int(s) for s in shape)
    theta = rng.uniform(0, np.pi / 2)
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    k = 2 * np.pi / spacing
    u = k * (np.cos(theta) * x + np.sin(theta) * y) + rng.uniform(0, 2 * np.pi)
    v = k * (-np.sin(theta) * x + np.cos(theta) * y) + rng.uniform(0, 2 * np.pi)
    bend_u = warp * smooth_field((rows, cols), scale_px=spacing, rng=rng)
    bend_v = warp * smooth_field((rows, cols), scale_px=spacing, rng=rng)
    # distance-like to the nearest channel line (u or v a multiple of 2 pi): the γ channels
    # form one connected grid and the γ′ are blocks between them, at any area fraction
    lattice = np.minimum(np.abs(np.sin((u + bend_u) / 2)), np.abs(np.sin((v + bend_v) / 2)))
    lattice = (lattice - lattice.mean()) / (lattice.std() or 1.0)
    blobs = smooth_field((rows, cols), scale_px=particle_diameter_px / 4, rng=rng)
    field = order * lattice + (1 - order) * blobs
    return field > np.quantile(field, 1 - area_fraction)


def tertiary_particles(
    phase: np.ndarray,
    *,
    per_10k_px: float,
    radius_px: tuple[float, float] = (1.0, 3.0),
    gap_px: float = 2.0,
    rng: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Fine tertiary γ′: small discs in the γ channels, never touching ``phase``.

    Parameters
    ----------
    phase : ndarray of shape (M, N), bool
        The secondary precipitates.
    per_10k_px : float
        Mean number of discs tried per 10,000 pixels (Poisson); those that
        would come closer than ``gap_px`` to a secondary precipitate are dropped.
    radius_px : (float, float)
        Range of the disc radii, pixels.

    Returns
    -------
    tertiary : ndarray of shape (M, N), bool
    """
    rng = as_rng(rng)
    distance = ndi.distance_transform_edt(~phase)
    out = np.zeros(phase.shape, bool)
    rows, cols = phase.shape
    n = rng.poisson(per_10k_px * phase.size / 1e4)
    centres = rng.uniform(0, 1, (n, 2)) * (rows, cols)
    radii = rng.uniform(*radius_px, n)
    for (cy, cx), r in zip(centres, radii):
        # the disc's centre may lie up to 1/sqrt(2) px from the pixel centre read here
        if distance[int(cy), int(cx)] < r + gap_px + 0.71:
            continue
        r0, r1 = max(0, int(cy - r)), min(rows, int(cy + r) + 2)
        c0, c1 = max(0, int(cx - r)), min(cols, int(cx + r) + 2)
        yy, xx = np.mgrid[r0:r1, c0:c1]
        out[r0:r1, c0:c1] |= (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r
    return out
