"""Nanoparticles on a support as a STEM or TEM sees them.

:func:`supported_particles` makes the specimen: a lumpy support (thickness map, with
vacuum around it) and compact particles sitting on it, single, clustered or
overlapping, over a wide range of sizes. :func:`render_stem` images it: HAADF-STEM
(Z-contrast, intensity rising with the projected thickness times the atomic number,
particles bright on a dimmer support, vacuum black) or bright-field TEM (the same
projection seen in transmission: vacuum bright, support grey with phase-contrast
speckle, particles dark). :func:`particle_snr` scores how visible each particle is in
such an image (Rose's criterion), so that labels can keep only what an observer sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from grainflow.seeds import as_rng
from grainflow.synth.imaging import poisson_gaussian, smooth_field, speckle_field

__all__ = [
    "ROSE_SNR",
    "supported_particles",
    "StemOptics",
    "render_stem",
    "particle_snr",
    "visible_particles",
    "separated_phase",
]

#: Rose's criterion: an object of ``n`` pixels is seen when its contrast times ``sqrt(n)``
#: over the noise per pixel reaches about 5 (Rose 1948)
ROSE_SNR = 5.0


def _support(
    shape, *, coverage: float, scale_px: float, rng, texture: float = 0.0, texture_px: float = 8.0
) -> np.ndarray:
    """Projected support thickness in [0, 1]: an agglomerate of rounded lumps (spheres of
    radius about ``scale_px``) covering about ``coverage`` of the image, vacuum elsewhere,
    its thickness varying by about ``texture`` (relative) over ``texture_px`` (porous
    oxides are mottled down to the particles' size)."""
    rows, cols = shape
    thickness = np.zeros(shape)
    y, x = np.mgrid[0:rows, 0:cols]
    covered = 0.0
    for _ in range(1000):  # lumps, each beside the last (an agglomerate) or anywhere
        if covered >= coverage:
            break
        r = scale_px * float(np.exp(rng.uniform(np.log(0.5), np.log(1.5))))
        if thickness.any() and rng.random() < 0.8:
            inside = np.argwhere(thickness > 0)
            c = inside[rng.integers(len(inside))] + rng.normal(0, 0.5 * r, 2)
        else:
            c = rng.uniform(0, 1, 2) * np.array(shape)
        rho2 = ((y - c[0]) ** 2 + (x - c[1]) ** 2) / r**2
        thickness += r * np.sqrt(np.clip(1 - rho2, 0, None))
        covered = float(np.mean(thickness > 0))
    if thickness.max() > 0:
        thickness /= np.quantile(thickness[thickness > 0], 0.95)
    # a field far wider than the image is flat: keep the relief within the image
    relief = 1 + 0.2 * smooth_field(shape, scale_px=min(scale_px, max(shape)) / 4, rng=rng)
    if texture > 0:
        relief = relief * (1 + texture * smooth_field(shape, scale_px=texture_px, rng=rng))
    return np.clip(thickness * relief, 0, 1.5)


def supported_particles(
    shape: tuple[int, int],
    *,
    diameter_px: tuple[float, float],
    per_10k_px: float,
    support_coverage: float = 0.7,
    support_scale_px: float = 40.0,
    cluster_fraction: float = 0.3,
    elongation: float = 0.25,
    support_texture: float = 0.0,
    support_texture_px: float = 8.0,
    rng: int | np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A support with nanoparticles on it.

    Parameters
    ----------
    shape : tuple of int (M, N)
    diameter_px : (float, float)
        Particle diameters are log-uniform in this range, pixels.
    per_10k_px : float
        Particles per 10,000 px² of the image.
    support_coverage : float
        Fraction of the image covered by the support (the rest is vacuum).
    support_scale_px : float
        Correlation length of the support's lumps, pixels.
    cluster_fraction : float
        Fraction of the particles placed next to another one (touching or
        overlapping it), as sintered or agglomerated particles are.
    elongation : float
        Largest relative difference of a particle's two axes.
    support_texture, support_texture_px : float
        Relative thickness variation of the support (standard deviation; 0: smooth lumps)
        and its correlation length, pixels.
    rng : int or Generator

    Returns
    -------
    support : ndarray of shape (M, N), float
        Projected support thickness in [0, 1]; 0 is vacuum.
    particle_ids : ndarray of shape (M, N), uint32
        1..n, one per particle; where two overlap, the one on top.
    particle_thickness : ndarray of shape (M, N), float
        Projected thickness of the particles, pixels (a sphere's chord).
    """
    rng = as_rng(rng)
    lo, hi = (float(d) for d in diameter_px)
    if not 2 <= lo <= hi:
        raise ValueError(f"diameter_px must be (lo, hi) with 2 <= lo <= hi, got {diameter_px=}")
    if not 0 < support_coverage <= 1:
        raise ValueError(f"support_coverage must be in (0, 1], got {support_coverage=}")
    rows, cols = shape
    support = _support(
        shape,
        coverage=support_coverage,
        scale_px=support_scale_px,
        rng=rng,
        texture=support_texture,
        texture_px=support_texture_px,
    )
    n = int(rng.poisson(per_10k_px * rows * cols / 1e4))
    ids = np.zeros(shape, np.uint32)
    thickness = np.zeros(shape, float)
    on_support = np.argwhere(support > 0.05)
    centres: list[np.ndarray] = []
    for k in range(1, n + 1):
        d = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        if centres and rng.random() < cluster_fraction:  # beside an earlier particle
            other = centres[rng.integers(len(centres))]
            angle = rng.uniform(0, 2 * np.pi)
            c = other[:2] + (0.5 * other[2] + 0.5 * d) * rng.uniform(0.6, 1.0) * np.array(
                [np.sin(angle), np.cos(angle)]
            )
        elif len(on_support):
            c = on_support[rng.integers(len(on_support))] + rng.uniform(-0.5, 0.5, 2)
        else:
            c = rng.uniform(0, 1, 2) * np.array(shape)
        a = 0.5 * d * (1 + rng.uniform(0, elongation))
        b = 0.5 * d * (1 - rng.uniform(0, elongation))
        t = rng.uniform(0, np.pi)
        r0, r1 = int(max(c[0] - a - 1, 0)), int(min(c[0] + a + 2, rows))
        c0, c1 = int(max(c[1] - a - 1, 0)), int(min(c[1] + a + 2, cols))
        if r0 >= r1 or c0 >= c1:
            continue
        y, x = np.mgrid[r0:r1, c0:c1]
        u = (y - c[0]) * np.cos(t) + (x - c[1]) * np.sin(t)
        v = -(y - c[0]) * np.sin(t) + (x - c[1]) * np.cos(t)
        rho2 = (u / a) ** 2 + (v / b) ** 2
        inside = rho2 <= 1.0
        chord = 2 * b * np.sqrt(np.clip(1 - rho2, 0, None))
        ids[r0:r1, c0:c1][inside] = k
        thickness[r0:r1, c0:c1] = np.maximum(thickness[r0:r1, c0:c1], chord)
        centres.append(np.array([c[0], c[1], d]))
    # particles wholly outside the image leave gaps in the numbering
    present = np.unique(ids)
    lut = np.zeros(n + 1, np.uint32)
    lut[present] = np.arange(len(present), dtype=np.uint32)
    return support, lut[ids], thickness


@dataclass(frozen=True)
class StemOptics:
    """How :func:`render_stem` images a supported specimen, and so how :func:`particle_snr`
    judges what the image shows (one set of settings for both).

    The HAADF signal is ``support_signal * support + particle_signal * thickness``
    (Z-contrast: a heavy particle scatters more per pixel of thickness than the light
    support), compressed towards ``saturation`` as a detector does, on a ``background`` for
    vacuum. Bright field shows the complement (transmitted electrons). The amorphous
    support adds band-passed speckle (``speckle`` in amplitude, between Gaussians of
    ``speckle_px`` sigmas); then blur (``blur_px``), Poisson shot noise at ``dose``
    electrons per unit signal and ``read_noise``.
    """

    bright_field: bool = False
    support_signal: float = 0.35
    particle_signal: float = 0.06
    saturation: float = 0.9
    background: float = 0.03
    speckle: float = 0.05
    speckle_px: tuple[float, float] = (0.7, 2.0)
    blur_px: float = 1.0
    dose: float = 200.0
    read_noise: float = 0.01

    def signal(self, support: np.ndarray, particle_thickness: np.ndarray) -> np.ndarray:
        """The noise-free image before speckle and blur."""
        mass = self.support_signal * support + self.particle_signal * particle_thickness
        signal = self.saturation * (1 - np.exp(-mass / self.saturation))
        return 1.0 - self.background - signal if self.bright_field else self.background + signal

    @property
    def speckle_gain(self) -> float:
        """How strongly the support's speckle shows: fully in bright field, half in HAADF."""
        return 1.0 if self.bright_field else 0.5

    def blur(self, image: np.ndarray) -> np.ndarray:
        return ndi.gaussian_filter(image, self.blur_px) if self.blur_px > 0 else image


def render_stem(
    support: np.ndarray,
    particle_thickness: np.ndarray,
    *,
    rng,
    optics: StemOptics = StemOptics(),
) -> np.ndarray:
    """HAADF-STEM or bright-field TEM image of :func:`supported_particles` (see
    :class:`StemOptics`), float32 in [0, 1]."""
    rng = as_rng(rng)
    image = optics.signal(support, particle_thickness)
    amorphous = optics.speckle * speckle_field(
        support.shape, sigmas_px=tuple(optics.speckle_px), rng=rng
    )
    image = image + optics.speckle_gain * amorphous * (support > 0)
    image = optics.blur(image)
    image = poisson_gaussian(
        np.clip(image, 0, 1), dose=optics.dose, read_noise=optics.read_noise, rng=rng
    )
    return np.clip(image, 0, 1).astype(np.float32)


def particle_snr(
    ids: np.ndarray,
    support: np.ndarray,
    particle_thickness: np.ndarray,
    *,
    optics: StemOptics = StemOptics(),
) -> np.ndarray:
    """Rose signal-to-noise ratio of each particle in the image :func:`render_stem` makes
    with ``optics``.

    For particle ``k`` of ``n`` pixels: its mean noise-free (blurred) intensity minus that
    of a ring around it (other particles left out), over the noise of that mean: shot and
    read noise averaged over ``n`` pixels and the support's speckle averaged over a square
    of ``n`` pixels (measured on a field of the same band and blur). Returns an array
    indexed by id (entry 0 is 0).
    """
    clean = optics.blur(optics.signal(support, particle_thickness))
    # the speckle as the image has it (blurred), and the spread of its mean over a square
    # of a particle's area: a field of the same band stands in for the image's own
    field = np.zeros((128, 128))
    if optics.speckle > 0:
        field = optics.blur(speckle_field(field.shape, sigmas_px=tuple(optics.speckle_px), rng=0))
        field *= optics.speckle_gain * optics.speckle
    speckle_sd: dict[int, float] = {}
    snr = np.zeros(int(ids.max()) + 1)
    particles = ids > 0
    for k, box in enumerate(ndi.find_objects(ids), start=1):
        if box is None:
            continue
        n = int(np.count_nonzero(ids[box] == k))
        width = max(2, int(np.ceil(0.5 * np.sqrt(n))))  # ring about half a diameter wide
        grown = tuple(
            slice(max(sl.start - width, 0), min(sl.stop + width, size))
            for sl, size in zip(box, ids.shape)
        )
        own = ids[grown] == k
        near = ndi.binary_dilation(own, iterations=width)
        ring = near & ~particles[grown]
        if not ring.any():  # inside a cluster: the neighbours are its surroundings
            ring = near & ~own
        if not ring.any():  # fills the image: nothing to stand out from
            continue
        inside, around = float(clean[grown][own].mean()), float(clean[grown][ring].mean())
        shot = (max(around, 0.0) / optics.dose + optics.read_noise**2) / n
        side = max(1, min(int(round(np.sqrt(n))), field.shape[0] // 2))
        if side not in speckle_sd:
            speckle_sd[side] = float(ndi.uniform_filter(field, side).std())
        snr[k] = abs(inside - around) / np.sqrt(shot + speckle_sd[side] ** 2)
    return snr


def visible_particles(ids: np.ndarray, snr: np.ndarray, min_snr: float = ROSE_SNR) -> np.ndarray:
    """``ids`` with the particles whose ``snr`` is below ``min_snr`` removed, renumbered 1..m."""
    keep = np.asarray(snr) >= min_snr
    keep[0] = False
    lut = np.zeros(len(keep), np.uint32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return lut[ids]


def separated_phase(ids: np.ndarray, gap_px: int = 1) -> np.ndarray:
    """The particle phase with touching particles kept apart, as Ronneberger et al. (2015)
    kept touching cells apart: a particle pixel with another particle within ``gap_px``
    (chessboard distance) is left out, so a gap of about ``2 * gap_px`` px of matrix runs
    where two particles meet. ``gap_px`` 0: the particles' union. uint8, 1 = particle."""
    particles = ids > 0
    if gap_px <= 0:
        return particles.astype(np.uint8)
    size = 2 * int(gap_px) + 1
    others_low = ndi.minimum_filter(np.where(particles, ids, np.iinfo(ids.dtype).max), size=size)
    others_high = ndi.maximum_filter(ids, size=size)
    contact = particles & ((others_low != ids) | (others_high != ids))
    return (particles & ~contact).astype(np.uint8)
