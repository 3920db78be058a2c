"""Contrast and noise models: how a microscope turns a microstructure into an image.

Every renderer takes label maps and returns a float32 image in [0, 1]. Geometric
distortions of the scan (drift, scan-line jitter) move pixels, so they are
applied by :func:`shift_rows` to the image *and* its labels together.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from grainflow.seeds import as_rng

__all__ = [
    "smooth_field",
    "speckle_field",
    "illumination",
    "poisson_gaussian",
    "row_shifts",
    "shift_rows",
    "render_sem_grains",
    "boundary_strength",
    "scratches",
    "render_optical_grains",
    "render_sem_phases",
    "render_tem_particles",
    "render_sem_superalloy",
    "render_bicrystal",
]


def smooth_field(shape, *, scale_px: float, rng) -> np.ndarray:
    """Gaussian random field with correlation length ``scale_px``, zero mean, unit std."""
    rng = as_rng(rng)
    field = _gaussian_filter_wrap(rng.standard_normal(shape), scale_px)
    std = field.std()
    return (field - field.mean()) / (std if std > 0 else 1.0)


def _gaussian_filter_wrap(image: np.ndarray, sigma: float, *, truncate: float = 4.0) -> np.ndarray:
    """``ndi.gaussian_filter(image, sigma, mode="wrap")``, computed by FFT.

    The same kernel (truncated at ``truncate * sigma``, normalised) wrapped onto the
    period of each axis, applied as a circular convolution: equal to the direct
    filter up to rounding, at a cost that does not grow with ``sigma``.
    """
    if sigma <= 0:
        return image
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / float(sigma) ** 2 * x**2)
    kernel /= kernel.sum()
    spectrum = sfft.rfftn(image)
    for axis, n in enumerate(image.shape):
        wrapped = np.zeros(n)
        np.add.at(wrapped, x % n, kernel)
        last = axis == image.ndim - 1
        gain = (sfft.rfft(wrapped) if last else sfft.fft(wrapped)).real  # symmetric kernel
        spectrum *= gain.reshape([-1 if a == axis else 1 for a in range(image.ndim)])
    return sfft.irfftn(spectrum, s=image.shape)


def speckle_field(shape, *, sigmas_px: tuple[float, float], rng) -> np.ndarray:
    """Fine-grained texture: white noise band-passed between two Gaussians, unit std."""
    rng = as_rng(rng)
    noise = rng.standard_normal(shape)
    band = ndi.gaussian_filter(noise, sigmas_px[0]) - ndi.gaussian_filter(noise, sigmas_px[1])
    return band / (band.std() + 1e-12)


def illumination(shape, *, strength: float, rng) -> np.ndarray:
    """Multiplicative uneven illumination: a tilted plane times a vignette, mean 1."""
    rng = as_rng(rng)
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols]
    y = (y - rows / 2) / rows
    x = (x - cols / 2) / cols
    t = rng.uniform(0, 2 * np.pi)
    plane = np.cos(t) * x + np.sin(t) * y
    cy, cx = rng.uniform(-0.3, 0.3, 2)
    vignette = -((x - cx) ** 2 + (y - cy) ** 2)
    field = plane + vignette
    field = (field - field.mean()) / (np.abs(field).max() + 1e-12)
    return 1.0 + strength * field


def poisson_gaussian(image: np.ndarray, *, dose: float, read_noise: float, rng) -> np.ndarray:
    """Shot noise at ``dose`` counts per unit intensity plus Gaussian read noise."""
    rng = as_rng(rng)
    counts = rng.poisson(np.clip(image, 0, None) * dose)
    return counts / dose + rng.normal(0.0, read_noise, image.shape)


def row_shifts(rows: int, *, drift_px: float, jitter_px: float, rng) -> np.ndarray:
    """Integer column shift of each scan line: slow linear drift plus line-to-line jitter."""
    rng = as_rng(rng)
    drift = drift_px * (np.arange(rows) / max(rows - 1, 1) - 0.5)
    jitter = rng.normal(0.0, jitter_px, rows) if jitter_px > 0 else np.zeros(rows)
    return np.rint(drift + jitter).astype(int)


def shift_rows(array: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shift each row of ``array`` right by ``shifts[row]`` pixels, repeating the edge."""
    rows, cols = array.shape
    src = np.clip(np.arange(cols)[None, :] - shifts[:, None], 0, cols - 1)
    return array[np.arange(rows)[:, None], src]


def _boundary_distance(labels: np.ndarray) -> np.ndarray:
    """Distance in pixels from each pixel to the nearest grain boundary."""
    edges = find_boundaries(labels, connectivity=1, mode="thick")
    return ndi.distance_transform_edt(~edges)


def boundary_strength(labels: np.ndarray, *, faint_fraction: float, rng) -> np.ndarray:
    """A strength in [0, 1] for every boundary (grain pair), spread to every pixel.

    Each pair of neighbouring grains draws its boundary's strength: with probability
    ``faint_fraction`` faint (0.1-0.3: a boundary present in the label, barely
    visible in the image), else 0.4-1. Every pixel takes the strength of the
    boundary nearest to it. With ``faint_fraction`` 0, every boundary has strength 1.
    """
    rng = as_rng(rng)
    edges = find_boundaries(labels, connectivity=1, mode="inner")
    if faint_fraction <= 0 or not edges.any():  # every boundary at full strength
        return np.ones(labels.shape)
    high = ndi.maximum_filter(labels, size=3, mode="nearest")
    low = ndi.minimum_filter(labels, size=3, mode="nearest")
    other = np.where(high != labels, high, low)
    a, b = np.minimum(labels, other)[edges], np.maximum(labels, other)[edges]
    pairs, index = np.unique(a.astype(np.int64) * (int(labels.max()) + 1) + b, return_inverse=True)
    faint = rng.random(len(pairs)) < faint_fraction
    strength = np.where(faint, rng.uniform(0.1, 0.3, len(pairs)), rng.uniform(0.4, 1.0, len(pairs)))
    at_edge = np.zeros(labels.shape)
    at_edge[edges] = strength[index.ravel()]
    nearest = ndi.distance_transform_edt(~edges, return_distances=False, return_indices=True)
    return at_edge[nearest[0], nearest[1]]


def scratches(shape, *, count: int, rng) -> np.ndarray:
    """Polishing scratches as a [0, 1] map: long, thin, gently curved lines across the
    image (distractors: they look like boundaries but are none)."""
    rng = as_rng(rng)
    out = np.zeros(shape)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    for _ in range(count):
        theta = rng.uniform(0, np.pi)
        c = rng.uniform(0, 1, 2) * np.array(shape)
        u = (y - c[0]) * np.cos(theta) - (x - c[1]) * np.sin(theta)  # across the scratch
        v = (y - c[0]) * np.sin(theta) + (x - c[1]) * np.cos(theta)  # along it
        u = u - rng.uniform(-1, 1) * 1e-3 * v**2  # a slight curve
        width = rng.uniform(0.5, 1.2)
        fade = np.exp(-((v / (rng.uniform(0.3, 1.0) * max(shape))) ** 2))
        np.maximum(out, np.exp(-(u**2) / (2 * width**2)) * fade, out=out)
    return out


def _finish(image, *, blur_px, dose, read_noise, rng) -> np.ndarray:
    if blur_px > 0:
        image = ndi.gaussian_filter(image, blur_px)
    image = poisson_gaussian(image, dose=dose, read_noise=read_noise, rng=rng)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def render_sem_grains(
    labels: np.ndarray,
    *,
    rng,
    tone_range=(0.15, 0.85),
    groove_depth: float = 0.25,
    groove_sign: int = -1,
    groove_width_px: float = 1.0,
    edge_gain: float = 0.1,
    edge_length_px: float = 2.0,
    faint_fraction: float = 0.0,
    charging: float = 0.1,
    blur_px: float = 0.6,
    dose: float = 60.0,
    read_noise: float = 0.02,
) -> np.ndarray:
    """Backscatter/channelling SEM image of a polycrystal.

    Each grain gets its own orientation (channelling) tone; boundaries are
    grooves (dark for ``groove_sign=-1``, bright for +1), each boundary as deep as
    its own strength (:func:`boundary_strength`, ``faint_fraction`` of them nearly
    invisible); a secondary-electron
    edge effect brightens a thin band along each boundary; charging adds a
    smooth gradient; Poisson-Gaussian noise sets the dose.
    """
    rng = as_rng(rng)
    tone = rng.uniform(*tone_range, int(labels.max()) + 1)
    image = tone[labels]
    d = _boundary_distance(labels)
    depth = groove_depth * boundary_strength(labels, faint_fraction=faint_fraction, rng=rng)
    image = image + groove_sign * depth * np.exp(-(d**2) / (2 * groove_width_px**2))
    image = image + edge_gain * np.exp(-d / edge_length_px)
    image = image * illumination(labels.shape, strength=charging, rng=rng)
    return _finish(image, blur_px=blur_px, dose=dose, read_noise=read_noise, rng=rng)


def _triple_junctions(labels: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds three or more grains."""
    padded = np.pad(labels, 1, mode="edge")
    rows, cols = labels.shape
    low = ndi.minimum_filter(labels, size=3, mode="nearest")
    high = ndi.maximum_filter(labels, size=3, mode="nearest")
    # three or more ids <=> one of them lies strictly between the lowest and the highest
    out = np.zeros(labels.shape, bool)
    for i in range(3):
        for j in range(3):
            window = padded[i : i + rows, j : j + cols]
            out |= (window > low) & (window < high)
    return out


def _spots(shape, *, count: int, radius_px: tuple[float, float], rng) -> np.ndarray:
    """Soft round spots (inclusions, dust) as a [0, 1] map."""
    out = np.zeros(shape)
    for _ in range(count):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r = rng.uniform(*radius_px)
        # a spot is zero beyond 1.5 r: draw it in its bounding box only
        r0, r1 = max(0, int(cy - 1.5 * r)), min(shape[0], int(cy + 1.5 * r) + 2)
        c0, c1 = max(0, int(cx - 1.5 * r)), min(shape[1], int(cx + 1.5 * r) + 2)
        y, x = np.arange(r0, r1)[:, None], np.arange(c0, c1)[None, :]
        spot = np.clip(1.5 - np.hypot(y - cy, x - cx) / r, 0, 1)
        np.maximum(out[r0:r1, c0:c1], spot, out=out[r0:r1, c0:c1])
    return out


def render_optical_grains(
    labels: np.ndarray,
    *,
    rng,
    grain_tone: float = 0.78,
    tone_spread: float = 0.06,
    boundary_darkness: float = 0.6,
    boundary_width_px: float = 1.0,
    width_variation: float = 0.4,
    faint_fraction: float = 0.25,
    faint_boundaries: float = 0.0,
    shading: float = 0.0,
    pit_probability: float = 0.3,
    etch_pits: int = 0,
    inclusions: int = 3,
    dust: int = 1,
    scratch_count: int = 0,
    scratch_darkness: float = 0.3,
    illumination_strength: float = 0.2,
    blur_px: float = 1.0,
    dose: float = 200.0,
    read_noise: float = 0.015,
) -> np.ndarray:
    """Etched optical (bright-field) micrograph of a polycrystal.

    Grains are bright with a slight etch tint per grain and, with ``shading``, a
    tint gradient across each grain (orientation contrast, relief); boundaries are
    dark lines whose width and strength vary along them, so that a fraction of
    boundary length is only faintly etched, and with ``faint_boundaries`` that
    fraction of whole boundaries is nearly invisible (:func:`boundary_strength`);
    triple junctions may be pitted; distractors that are not boundaries: etch pits
    inside grains, small inclusions, out-of-focus dust and polishing scratches;
    uneven illumination; blur.
    """
    rng = as_rng(rng)
    shape = labels.shape
    n = int(labels.max()) + 1
    tone = grain_tone + tone_spread * rng.standard_normal(n)
    image = tone[labels]
    if shading > 0:  # a tint gradient across each grain, about `shading` per 100 px
        y, x = np.mgrid[0 : shape[0], 0 : shape[1]] / 100.0
        gy, gx = shading * rng.standard_normal((2, n))
        count = np.maximum(np.bincount(labels.ravel(), minlength=n), 1)
        cy = np.bincount(labels.ravel(), weights=y.ravel(), minlength=n) / count
        cx = np.bincount(labels.ravel(), weights=x.ravel(), minlength=n) / count
        image = image + gy[labels] * (y - cy[labels]) + gx[labels] * (x - cx[labels])
    d = _boundary_distance(labels)
    scale = max(shape) / 8
    width = boundary_width_px * np.exp(
        width_variation * smooth_field(shape, scale_px=scale, rng=rng)
    )
    # strength along the boundaries: a smooth field; its lowest `faint_fraction`
    # quantile is mapped to faint (10-30 %) etching
    field = smooth_field(shape, scale_px=scale, rng=rng)
    cut = np.quantile(field, faint_fraction) if faint_fraction > 0 else -np.inf
    strength = np.where(field < cut, 0.1 + 0.2 * rng.random(), 1.0)
    strength = ndi.gaussian_filter(strength, 2.0)
    if faint_boundaries > 0:
        strength = strength * boundary_strength(labels, faint_fraction=faint_boundaries, rng=rng)
    image = image - boundary_darkness * strength * np.exp(-(d**2) / (2 * width**2))
    if pit_probability > 0:
        tj = _triple_junctions(labels)
        comp, n = ndi.label(tj)
        keep = np.concatenate([[False], rng.random(n) < pit_probability])
        pits = ndi.binary_dilation(keep[comp], iterations=1)
        image = np.where(pits, image * 0.35, image)
    image = image * (1 - 0.7 * _spots(shape, count=inclusions, radius_px=(0.8, 2.0), rng=rng))
    if etch_pits > 0:  # dark pits inside grains, larger than inclusions, a grey rim
        image = image * (1 - 0.55 * _spots(shape, count=etch_pits, radius_px=(1.5, 5.0), rng=rng))
    if scratch_count > 0:
        image = image * (1 - scratch_darkness * scratches(shape, count=scratch_count, rng=rng))
    dust_map = ndi.gaussian_filter(_spots(shape, count=dust, radius_px=(4, 10), rng=rng), 3)
    image = image * (1 - 0.3 * dust_map)
    image = image * illumination(shape, strength=illumination_strength, rng=rng)
    return _finish(image, blur_px=blur_px, dose=dose, read_noise=read_noise, rng=rng)


def render_sem_phases(
    phase: np.ndarray,
    *,
    rng,
    matrix_tone: float = 0.6,
    precipitate_tone: float = 0.3,
    edge_gain: float = 0.08,
    charging: float = 0.1,
    blur_px: float = 0.7,
    dose: float = 80.0,
    read_noise: float = 0.02,
) -> np.ndarray:
    """SEM image of precipitates (``phase == 1``) in a matrix; either phase may be darker."""
    rng = as_rng(rng)
    image = np.where(phase > 0, precipitate_tone, matrix_tone).astype(float)
    edges = find_boundaries(phase, mode="inner")
    image = image + edge_gain * ndi.gaussian_filter(edges.astype(float), 0.8) * 2
    image = image * illumination(phase.shape, strength=charging, rng=rng)
    return _finish(image, blur_px=blur_px, dose=dose, read_noise=read_noise, rng=rng)


def render_sem_superalloy(
    phase: np.ndarray,
    tertiary: np.ndarray,
    *,
    rng,
    matrix_tone: float = 0.6,
    precipitate_tone: float = 0.4,
    rim_gain: float = 0.05,
    rim_px: float = 2.0,
    tertiary_contrast: float = 0.0,
    edge_contrast: float = 0.0,
    edge_px: float = 2.0,
    texture: float = 0.02,
    texture_px: float = 6.0,
    precipitate_speckle: float = 0.05,
    matrix_speckle: float = 0.02,
    speckle_px: tuple[float, float] = (0.7, 2.0),
    charging: float = 0.1,
    blur_px: float = 0.8,
    dose: float = 300.0,
    read_noise: float = 0.01,
) -> np.ndarray:
    """SEM image of an etched γ/γ′ superalloy: precipitates (``phase``) in γ channels.

    Parameters
    ----------
    phase, tertiary : ndarray of shape (M, N), bool
        Secondary and tertiary γ′. The secondary take ``precipitate_tone`` (either
        phase may be darker); the tertiary that tone pushed further from the
        matrix's by ``tertiary_contrast`` times their difference (0: the same tone;
        fine etched γ′ often look darker than the large ones), within [0, 1].
    rim_gain, rim_px : float
        Secondary-electron edge effect: the γ next to a precipitate is shifted
        away from the precipitate's tone by ``rim_gain``, falling off over
        ``rim_px`` pixels (bright rims along dark γ′).
    edge_contrast, edge_px : float
        Etched edge band inside each precipitate: its tone pushed further from
        the matrix's by ``edge_contrast`` times their difference at the edge,
        falling off over ``edge_px`` pixels inwards (large γ′ with dark outlines
        and a paler interior; 0: none).
    texture, texture_px : float
        Amplitude and correlation length of a smooth field added everywhere
        (etch relief, orientation contrast).
    precipitate_speckle, matrix_speckle : float
        Amplitude of a fine-grained texture in each phase (noise band-passed
        between Gaussians of ``speckle_px`` sigmas): the etched γ′ surface is rough,
        the γ channels smoother.
    """
    rng = as_rng(rng)
    step = tertiary_contrast * (precipitate_tone - matrix_tone)
    tertiary_tone = float(np.clip(precipitate_tone + step, 0, 1))
    image = np.where(phase, precipitate_tone, np.where(tertiary, tertiary_tone, matrix_tone))
    image = image.astype(float)
    outside = ndi.distance_transform_edt(~phase)
    rim = np.exp(-outside / max(rim_px, 1e-3)) * ~phase
    image += rim_gain * np.sign(matrix_tone - precipitate_tone) * rim
    if edge_contrast > 0:
        inside = ndi.distance_transform_edt(phase)  # 1 on a precipitate's edge pixels
        band = np.exp(-(inside - 1) / max(edge_px, 1e-3)) * phase
        image += edge_contrast * (precipitate_tone - matrix_tone) * band
    image += texture * smooth_field(phase.shape, scale_px=texture_px, rng=rng)
    band = speckle_field(phase.shape, sigmas_px=speckle_px, rng=rng)
    image += np.where(phase | tertiary, precipitate_speckle, matrix_speckle) * band
    image = image * illumination(phase.shape, strength=charging, rng=rng)
    return _finish(image, blur_px=blur_px, dose=dose, read_noise=read_noise, rng=rng)


def render_tem_particles(
    particle_ids: np.ndarray,
    *,
    rng,
    support_tone: float = 0.65,
    particle_tone: float = 0.35,
    speckle: float = 0.08,
    fringe_contrast: float = 0.12,
    fringe_period_px: tuple[float, float] = (3.0, 6.0),
    thickness_variation: float = 0.1,
    blur_px: float = 0.6,
    dose: float = 100.0,
    read_noise: float = 0.02,
) -> np.ndarray:
    """Bright-field TEM image of crystalline nanoparticles on an amorphous support.

    The support is speckled (band-passed noise, as amorphous carbon looks at
    high magnification) with slow thickness variation; particles are darker
    (mass-thickness contrast) and carry lattice fringes at a random
    orientation and period each. The fringes modulate the particle's
    transmitted intensity by the fraction ``fringe_contrast`` of it (the
    interference of transmitted and diffracted beams scales with the local
    intensity), so a fringe never lifts a particle to the support's tone.
    """
    rng = as_rng(rng)
    shape = particle_ids.shape
    band = speckle_field(shape, sigmas_px=(0.7, 2.0), rng=rng)
    thickness = smooth_field(shape, scale_px=max(shape) / 6, rng=rng)
    image = support_tone + speckle * band + thickness_variation * 0.5 * thickness
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    for sl_index, sl in enumerate(ndi.find_objects(particle_ids), start=1):
        if sl is None:
            continue
        mask = particle_ids[sl] == sl_index
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(*fringe_period_px)
        phase0 = rng.uniform(0, 2 * np.pi)
        fr = np.cos(2 * np.pi * (x[sl] * np.cos(theta) + y[sl] * np.sin(theta)) / period + phase0)
        tone = (particle_tone + rng.normal(0, 0.03)) * (1 + fringe_contrast * fr)
        image[sl] = np.where(mask, tone + 0.3 * speckle * band[sl], image[sl])
    return _finish(image, blur_px=blur_px, dose=dose, read_noise=read_noise, rng=rng)


def render_bicrystal(
    labels: np.ndarray,
    *,
    rng,
    tones=(0.3, 0.7),
    blur_px: float = 0.5,
    dose: float = 400.0,
    read_noise: float = 0.01,
) -> np.ndarray:
    """The lecture's two-grain image: two flat tones, slight blur and noise."""
    rng = as_rng(rng)
    lut = np.array([0.0, *tones])
    return _finish(lut[labels], blur_px=blur_px, dose=dose, read_noise=read_noise, rng=rng)
