"""Detector frames as the networks were trained on them: centre, first order, crop, bin, rescale.

A real detector records a diffraction pattern on a frame of its own size (512² to
4k²), with the direct beam anywhere near the middle, often hidden by a beam stop or
saturated, and at a camera length of the operator's choosing. The networks saw
``image_size_px`` patterns centred on the direct beam with the first order a few
pixels out (``first_order_px``, ``ring_first_order_px``). :func:`prepare_frame`
brings one frame there and records what it did; :func:`prepare_frames` does it
block by block over a scan of frames ``(*scan_axes, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import find_peaks

from grainflow.diffraction.crystal import DEFAULT_SETTINGS
from grainflow.diffraction.simulate import MODALITIES, log_normalize, pattern_size

__all__ = [
    "COARSE_SIDE_PX",
    "saturation_mask",
    "dark_mask",
    "find_centre",
    "radial_profile",
    "first_order_radius",
    "target_first_order_px",
    "resample_about",
    "prepare_frame",
    "prepare_frames",
]

#: the centre is searched on a copy binned to at most this side, then refined at full size
COARSE_SIDE_PX = 512


def _as_frame(frame) -> np.ndarray:
    frame = np.asarray(frame, dtype=np.float64)
    if frame.ndim != 2 or min(frame.shape) < 16:
        raise ValueError(f"a frame is one 2-D array of at least 16 × 16 px, got {frame.shape=}")
    return frame


def saturation_mask(frame: np.ndarray, *, saturation: float | None = None) -> np.ndarray:
    """Pixels at the detector's ceiling: ``>= saturation``, or, when not given, at the frame's
    maximum if at least 5 pixels share it (a clipped plateau, not one bright pixel)."""
    frame = np.asarray(frame, dtype=np.float64)
    if saturation is not None:
        return frame >= saturation
    top = np.nanmax(frame)
    at_top = frame >= top
    return at_top if at_top.sum() >= 5 else np.zeros(frame.shape, bool)


def dark_mask(
    frame: np.ndarray,
    centre: tuple[float, float],
    *,
    smooth_px: float = 2.0,
    fraction: float = 0.05,
    grow_px: int | None = None,
) -> np.ndarray:
    """Pixels behind a beam stop: much darker than the typical pixel at their radius.

    The arm of a stop covers a few degrees of each circle about ``centre``: a
    pixel is dark when its Gaussian-smoothed (``smooth_px``) value is below
    ``fraction`` of the 75th percentile of the smoothed values at its radius.
    The disc covers whole circles at the centre: every ring inside the first
    whose 75th percentile reaches a tenth of the brightest ring's is dark (none
    when the direct beam is visible: its ring is the brightest). The mask is
    grown by ``grow_px`` pixels (default ``2 smooth_px + 1``) to cover the
    stop's soft edge and the smoothing. Only dark regions that reach the
    centre count: a stop holds the direct beam.
    """
    frame = np.asarray(frame, dtype=np.float64)
    smooth = ndi.gaussian_filter(np.nan_to_num(frame), smooth_px, mode="nearest")
    k, n = _ring_groups(frame.shape, centre)
    level = np.nan_to_num(_ring_quantile(smooth, k, n, 0.75))
    dark = smooth < fraction * level[k]  # the arm: dark beside the rest of its ring
    bright = np.flatnonzero(level >= 0.1 * level.max())
    disc = int(bright[0]) if len(bright) else 0  # the disc: rings dark all round, at the centre
    dark |= k < disc
    grow = int(2 * smooth_px + 1) if grow_px is None else int(grow_px)
    # a stop reaches the centre: dark patches elsewhere (the gaps of a faint periphery) are not one
    labels, _ = ndi.label(dark)
    near = np.unique(labels[(k <= disc + grow) & dark])
    dark = np.isin(labels, near[near > 0])
    return ndi.binary_dilation(dark, iterations=grow) if grow > 0 else dark


def _radii(shape, centre) -> np.ndarray:
    rows, cols = np.indices(shape, dtype=np.float64)
    return np.hypot(rows - centre[0], cols - centre[1])


def _bin(frame: np.ndarray, factor: int) -> np.ndarray:
    """Sum of ``factor × factor`` blocks (the last partial blocks left out)."""
    if factor <= 1:
        return frame
    h, w = (frame.shape[0] // factor) * factor, (frame.shape[1] // factor) * factor
    return frame[:h, :w].reshape(h // factor, factor, w // factor, factor).sum(axis=(1, 3))


def _parabolic(values: np.ndarray, index: tuple[int, ...]) -> np.ndarray:
    """Sub-pixel peak position: a parabola through the peak and its neighbours on each axis."""
    out = np.asarray(index, dtype=np.float64)
    for axis, i in enumerate(index):
        if 0 < i < values.shape[axis] - 1:
            lo, hi = list(index), list(index)
            lo[axis], hi[axis] = i - 1, i + 1
            a, b, c = values[tuple(lo)], values[index], values[tuple(hi)]
            den = a - 2 * b + c
            if den < 0:
                out[axis] += float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))
    return out


def _symmetry_centre(image: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre of 180° symmetry of ``image`` (only where ``weight`` > 0), and the peak's sharpness.

    The convolution of a centrosymmetric image with itself peaks at twice its centre
    (``Σ_x g(x) g(s − x)`` is largest where ``s − x`` is the Friedel mate of ``x``).
    """
    h, w = image.shape
    g = image * weight
    shape = (2 * h, 2 * w)

    def conv(a, b):
        return np.fft.irfft2(np.fft.rfft2(a, shape) * np.fft.rfft2(b, shape), shape)

    # normalised by the energy of g over the overlap of the valid regions (Padfield's masked
    # correlation): Σ_O g(x) g(s - x) / Σ_O g(x)², O the pixels valid in both, at most 1
    corr = conv(g, g)
    energy = conv(g * g, weight)
    overlap = conv(weight, weight)
    keep = (overlap > 0.25 * overlap.max()) & (energy > 1e-9 * energy.max())
    corr = np.where(keep, corr / np.where(keep, energy, 1.0), -np.inf)
    peak = np.unravel_index(int(np.argmax(corr)), corr.shape)
    finite = corr[keep]
    sharp = float((corr[peak] - np.median(finite)) / (finite.std() + 1e-12))
    local = np.where(keep, corr, finite.min())
    return _parabolic(local, peak) / 2.0, sharp


def _feature_image(frame: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """``sqrt(I)`` less its smooth background (a Gaussian over valid pixels only)."""
    v = np.sqrt(np.clip(np.nan_to_num(frame), 0.0, None)) * valid
    num = ndi.gaussian_filter(v, sigma, mode="constant")
    den = ndi.gaussian_filter(valid.astype(np.float64), sigma, mode="constant")
    return np.where(valid, v - num / np.maximum(den, 1e-6), 0.0)


def _bright_disc(frame: np.ndarray, saturated: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Centre of mass and equivalent radius of the brightest disc (the saturated plateau if any)."""
    if saturated.any():
        labels, n = ndi.label(saturated)
        sizes = ndi.sum(saturated, labels, range(1, n + 1))
        disc = labels == 1 + int(np.argmax(sizes))
        weights = disc.astype(np.float64)
    else:
        smooth = ndi.gaussian_filter(np.nan_to_num(frame), 1.0, mode="nearest")
        top = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
        floor = np.median(smooth)
        half = floor + 0.5 * (smooth[top] - floor)
        labels, _ = ndi.label(smooth >= half)
        disc = labels == labels[top]
        weights = np.where(disc, smooth - half, 0.0)
    if weights.sum() <= 0 or ndi.binary_fill_holes(disc).sum() > 1.2 * disc.sum():
        return None  # nothing bright, or a bright ring about a dark middle (a stop's rim)
    com = np.array(ndi.center_of_mass(weights))
    return com, math.sqrt(disc.sum() / math.pi)


def find_centre(
    frame,
    *,
    mask: np.ndarray | None = None,
    saturation: float | None = None,
    beam_stop: bool | None = None,
) -> dict:
    """The direct beam's position in a frame: the bright disc, or the centre of symmetry.

    Parameters
    ----------
    frame : array-like of shape (H, W)
        Counts (or any non-negative intensity), not log-scaled.
    mask : ndarray of bool, shape (H, W), optional
        Pixels to ignore (a known beam stop, dead pixels).
    saturation : float, optional
        The detector's ceiling; default: the frame's maximum when a plateau of
        at least 5 pixels sits at it.
    beam_stop : bool, optional
        Whether a beam stop hides the direct beam: True skips the bright-disc
        test, False skips the dark-pixel mask; default: both tried.

    Returns
    -------
    dict
        ``centre`` (row, col) in pixels, ``method`` (``"direct_beam"`` or
        ``"symmetry"``), ``symmetry_centre``, ``beam_centre`` (or None),
        ``beam_radius_px``, ``saturated_px``, ``sharpness`` (height of the
        symmetry peak in standard deviations of the correlation).

    Notes
    -----
    A kinematic pattern is centrosymmetric about the direct beam (Friedel's law), so
    the convolution of the frame with itself peaks at twice the centre, however much
    of the frame is hidden. It is computed on ``sqrt(I)`` (Poisson noise even over
    the frame; the fall of the intensities with the radius kept, for in a net every
    lattice point is a centre of symmetry of the positions and only the intensities
    single out the beam) less a broad background (a Gaussian of 16 px over the valid
    pixels), normalised by the energy of the overlap of the valid regions
    (Padfield's masked correlation), on a copy binned to at most
    :data:`COARSE_SIDE_PX`, then on the full frame in a window about the coarse
    answer. Saturated and masked pixels take no part, nor, after a first pass, the
    pixels behind a beam stop (:func:`dark_mask`). When the brightest disc (the
    saturated plateau, or the region above half the brightest smoothed value) lies
    within twice its radius (at least 3 px) of the centre of symmetry, its centre of
    mass is taken instead: it is the direct beam, and its centroid is the more
    precise. A stop's disc is not bright (nor is a bright rim about a dark middle a
    disc), and a diffracted spot lies away from the centre of symmetry, so neither
    is taken for the beam.
    """
    frame = _as_frame(frame)
    invalid = ~np.isfinite(frame)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != frame.shape:
            raise ValueError(f"mask must have the frame's shape {frame.shape}, got {mask.shape}")
        invalid |= mask
    saturated = saturation_mask(np.where(invalid, -np.inf, frame), saturation=saturation)
    frame = np.where(invalid, 0.0, frame)
    # saturated plateaus are symmetric only in outline; leave them and their rim out
    valid = ~(invalid | ndi.binary_dilation(saturated, iterations=2))

    def locate(valid):
        factor = max(1, math.ceil(max(frame.shape) / COARSE_SIDE_PX))
        coarse = _bin(frame, factor)
        cvalid = _bin(valid.astype(np.float64), factor) >= factor * factor
        feat = _feature_image(coarse, cvalid, sigma=16.0)
        (r, c), sharp = _symmetry_centre(feat, cvalid.astype(np.float64))
        centre = np.array([r, c]) * factor + (factor - 1) / 2.0
        if factor > 1:  # refine at full size in a window an eighth of the frame each way
            half = int(min(frame.shape) // 8)
            r0 = int(np.clip(round(centre[0]) - half, 0, frame.shape[0] - 2 * half))
            c0 = int(np.clip(round(centre[1]) - half, 0, frame.shape[1] - 2 * half))
            window = (slice(r0, r0 + 2 * half), slice(c0, c0 + 2 * half))
            feat = _feature_image(frame[window], valid[window], sigma=16.0 * factor)
            fine, sharp = _symmetry_centre(feat, valid[window].astype(np.float64))
            if np.all(np.abs(fine + (r0, c0) - centre) <= 3 * factor):
                centre = fine + (r0, c0)
        return centre, sharp

    centre, sharp = locate(valid)
    stopped = bool(beam_stop)
    if beam_stop is not False:  # a second pass without the pixels behind a stop
        dark = dark_mask(frame, tuple(centre)) & ~saturated
        if dark.any():
            centre, sharp = locate(valid & ~dark)
            at = tuple(np.clip(np.round(centre).astype(int), 0, np.array(frame.shape) - 1))
            stopped = stopped or bool(dark[at])
    sym = centre.copy()
    beam = None if stopped else _bright_disc(frame, saturated)
    method = "symmetry"
    if beam is not None:
        com, radius = beam
        if np.hypot(*(com - sym)) <= max(3.0, 2.0 * radius):
            centre, method = com, "direct_beam"
    return {
        "centre": (float(centre[0]), float(centre[1])),
        "method": method,
        "symmetry_centre": (float(sym[0]), float(sym[1])),
        "beam_centre": None if beam is None else (float(beam[0][0]), float(beam[0][1])),
        "beam_radius_px": None if beam is None else float(beam[1]),
        "saturated_px": int(saturated.sum()),
        "sharpness": sharp,
    }


def _ring_groups(shape, centre, step_px: float = 1.0):
    """Ring index of each pixel (``floor(r / step_px)``) and the number of rings."""
    k = (_radii(shape, centre) / step_px).astype(np.int64)
    return k, int(k.max()) + 1


def _ring_quantile(values: np.ndarray, k: np.ndarray, n: int, q: float) -> np.ndarray:
    """The ``q`` quantile (lower) of ``values`` in each ring ``k`` (NaN where a ring is empty)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    k = k.ravel()
    if not len(values):
        return np.full(n, np.nan)
    lo, hi = values.min(), values.max()
    key = k + (values - lo) / ((hi - lo) * (1 + 1e-9) if hi > lo else 1.0)  # ring, then value
    order = np.argsort(key, kind="stable")
    counts = np.bincount(k, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pick = starts + np.floor(q * np.maximum(counts - 1, 0)).astype(np.int64)
    out = values[order][np.minimum(pick, len(values) - 1)]
    return np.where(counts > 0, out, np.nan)


def radial_profile(
    frame, centre: tuple[float, float], *, valid: np.ndarray | None = None, step_px: float = 1.0
) -> dict[str, np.ndarray]:
    """Azimuthal statistics of ``frame`` about ``centre`` in rings ``step_px`` wide, valid pixels only.

    Returns
    -------
    dict of ndarray, each of shape (n,)
        ``radius`` (ring centres, pixels); ``mean`` and ``median`` of the
        valid pixels of each ring (NaN where none); ``excess``, the mean of
        each pixel less the median profile interpolated at its own radius;
        ``coverage``, the fraction of the ring's pixels that are valid.
        ``excess`` is what spots add to a ring: the isotropic direct-beam
        tail and diffuse background cancel (the interpolation keeps a steep
        tail's slope across a ring from passing for a spot), and spots cover
        too little of a ring to move its median.
    """
    frame = _as_frame(frame)
    if valid is None:
        valid = np.isfinite(frame)
    valid = np.asarray(valid, dtype=bool)
    r = _radii(frame.shape, centre)
    k = (r / step_px).astype(np.int64)
    n = int(k.max()) + 1
    total = np.bincount(k.ravel(), minlength=n).astype(np.float64)
    good = np.bincount(k[valid], minlength=n).astype(np.float64)

    def ring_mean(values):
        sums = np.bincount(k[valid], weights=values[valid], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(good > 0, sums / good, np.nan)

    radius = (np.arange(n) + 0.5) * step_px
    median = _ring_quantile(frame[valid], k[valid], n, 0.5)
    known = np.isfinite(median)
    trend = np.interp(r, radius[known], median[known]) if known.any() else np.zeros_like(r)
    return {
        "radius": radius,
        "mean": ring_mean(frame),
        "median": median,
        "excess": ring_mean(frame - trend),
        "coverage": good / np.maximum(total, 1),
    }


def _lower_envelope(radius: np.ndarray, values: np.ndarray, factor: float) -> np.ndarray:
    """Grey opening of a profile over windows ``[r / factor, r * factor]`` (log-radius windows)."""
    lo = np.searchsorted(radius, radius / factor, side="left")
    hi = np.searchsorted(radius, radius * factor, side="right")
    eroded = np.array([values[a:b].min() for a, b in zip(lo, hi)])
    return np.array([eroded[a:b].max() for a, b in zip(lo, hi)])


def first_order_radius(
    profile: Mapping[str, np.ndarray],
    *,
    modality: str,
    min_radius_px: float = 0.0,
    min_coverage: float = 0.3,
    relative_strength: float = 0.05,
    noise_sigmas: float = 5.0,
) -> dict:
    """The first strong peak of a radial profile (:func:`radial_profile`) beyond the direct beam.

    Parameters
    ----------
    profile : mapping
        ``radius``, ``mean``, ``excess``, ``coverage``.
    modality : {"spot", "ring"}
        What a peak stands on. Spots: ``excess`` (what the spots add to each
        ring; the isotropic beam tail and diffuse background cancel).
        Rings fill their circles, so the median rises with them: ``mean`` less
        its lower envelope (a grey opening over radii within a factor 1.2).
    min_radius_px : float
        The direct beam's extent: no peak at or inside it counts.
    min_coverage : float
        Rings of pixels with fewer valid ones (behind a beam stop) are left out.
    relative_strength : float
        A peak is strong when its height times its radius (proportional to
        the integrated intensity of the spot shell or ring) reaches this
        fraction of the largest such product.
    noise_sigmas : float
        ... and its height this many standard deviations of the profile's
        noise (from the median absolute difference of neighbouring radii).

    Returns
    -------
    dict
        ``radius_px`` (refined by a parabola through the peak and its
        neighbours; NaN without a strong peak), ``height``, ``peaks_px`` (radii
        of every peak found), ``strong_px`` (those that are strong).

    Notes
    -----
    The simulator puts the first reflection with at least 1 % of the strongest's
    ``|F|²`` (excitation included) at ``first_order_px``. Reflections that weak are
    lost in the noise of a recorded frame; with ``relative_strength`` 0.05 the
    estimate finds the first order when it carries at least about 5 % of the
    strongest shell's or ring's intensity, and the next strong one otherwise.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality=}")
    radius = np.asarray(profile["radius"], dtype=np.float64)
    mean = np.asarray(profile["mean"])
    use = (
        (np.asarray(profile["coverage"]) >= min_coverage)
        & np.isfinite(mean)
        & (radius > min_radius_px)
    )
    none = {"radius_px": math.nan, "height": 0.0, "peaks_px": [], "strong_px": []}
    if use.sum() < 5:
        return none
    first = int(np.argmax(use))
    last = first + int(np.argmin(use[first:])) if not use[first:].all() else len(use)
    r = radius[first:last]
    if modality == "spot":
        signal = np.asarray(profile["excess"])[first:last]
    else:
        m = ndi.gaussian_filter1d(mean[first:last], 0.7, mode="nearest")
        signal = m - _lower_envelope(r, m, 1.2)
    signal = ndi.gaussian_filter1d(signal, 0.7, mode="nearest")
    noise = 1.4826 * float(np.median(np.abs(np.diff(signal)))) / math.sqrt(2.0)
    peaks, _ = find_peaks(signal)
    if not len(peaks):
        return none
    weight = signal[peaks] * r[peaks]
    strong = peaks[
        (weight >= relative_strength * weight.max()) & (signal[peaks] >= noise_sigmas * noise)
    ]
    if not len(strong):
        return {**none, "peaks_px": [float(v) for v in r[peaks]]}
    i = int(strong[0])
    a, b, c = signal[i - 1], signal[i], signal[i + 1]
    den = a - 2 * b + c
    shift = float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) if den < 0 else 0.0
    return {
        "radius_px": float(r[i] + shift * (r[1] - r[0])),
        "height": float(signal[i]),
        "peaks_px": [float(v) for v in r[peaks]],
        "strong_px": [float(v) for v in r[strong]],
    }


def target_first_order_px(
    modality: str, settings: Mapping | None = None, *, size: int | None = None
) -> tuple[float, float]:
    """The first-order radius range the networks were trained on for ``modality`` (pixels).

    In pixels of a ``size``-px output: the trained range (``first_order_px`` of
    the ``image_size_px`` spot patterns, ``ring_first_order_px`` of the
    ``ring_image_size_px`` ring patterns) scaled by ``size`` over the trained
    side (default ``size``: the trained side).
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality=}")
    s = {**DEFAULT_SETTINGS, **dict(settings or {})}
    low, high = s["first_order_px" if modality == "spot" else "ring_first_order_px"]
    zoom = 1.0 if size is None else int(size) / pattern_size(s, modality)
    return float(low) * zoom, float(high) * zoom


def resample_about(
    frame: np.ndarray, centre: tuple[float, float], *, scale: float, size: int
) -> tuple[np.ndarray, dict]:
    """A ``size × size`` image centred on ``centre`` at ``scale`` output pixels per frame pixel.

    The frame is first binned by ``b = floor(1 / scale)`` (sums of ``b × b``
    blocks: no count is lost and the noise stays Poisson-like), then
    interpolated (bilinear, after a Gaussian anti-alias filter when the
    remaining factor shrinks further) so that output pixel ``(i, j)`` samples
    frame position ``centre + ((i, j) - (size - 1) / 2) / scale``; the output
    holds counts per output pixel. Positions outside the frame take the
    median of the frame's border.

    Returns
    -------
    image : ndarray of shape (size, size), float64
    info : dict
        ``bin`` factor, ``crop_box`` (row0, row1, col0, col1) of the frame
        region the output covers (may reach past the frame), ``padded``
        (whether it does).
    """
    frame = _as_frame(frame)
    if not scale > 0 or size < 4:
        raise ValueError(f"need scale > 0 and size >= 4, got {scale=}, {size=}")
    half = (size / 2.0) / scale
    box = (
        int(math.floor(centre[0] - half)),
        int(math.ceil(centre[0] + half)) + 1,
        int(math.floor(centre[1] - half)),
        int(math.ceil(centre[1] + half)) + 1,
    )
    h, w = frame.shape
    padded = box[0] < 0 or box[2] < 0 or box[1] > h or box[3] > w
    fill = float(np.median(np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])))
    b = max(1, int(math.floor(1.0 / scale + 1e-9)))
    # the crop, with a margin of one bin and aligned so that bins start at box[0], box[2]
    r0, c0 = box[0] - b, box[2] - b
    r1 = r0 + b * math.ceil((box[1] + b - r0) / b)
    c1 = c0 + b * math.ceil((box[3] + b - c0) / b)
    crop = np.full((r1 - r0, c1 - c0), fill)
    sr, sc = slice(max(r0, 0), min(r1, h)), slice(max(c0, 0), min(c1, w))
    crop[sr.start - r0 : sr.stop - r0, sc.start - c0 : sc.stop - c0] = frame[sr, sc]
    binned = _bin(crop, b)
    rest = scale * b  # output pixels per binned pixel, in (0.5, 1] or > 1 when zooming in
    if rest < 1:
        binned = ndi.gaussian_filter(binned, 0.5 * math.sqrt(1.0 / rest**2 - 1.0), mode="nearest")
    grid = (np.arange(size) - (size - 1) / 2.0) / scale
    rows = (centre[0] + grid - r0 - (b - 1) / 2.0) / b
    cols = (centre[1] + grid - c0 - (b - 1) / 2.0) / b
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    image = ndi.map_coordinates(binned, [rr, cc], order=1, mode="nearest")
    image /= rest**2
    return image, {"bin": b, "crop_box": box, "padded": bool(padded)}


def prepare_frame(
    frame,
    *,
    modality: str,
    size: int | None = None,
    first_order_px: float | Sequence[float] | None = None,
    settings: Mapping | None = None,
    centre: tuple[float, float] | None = None,
    radius_px: float | None = None,
    mask: np.ndarray | None = None,
    saturation: float | None = None,
    beam_stop: bool | None = None,
    log_scale: bool = True,
) -> tuple[np.ndarray, dict]:
    """One detector frame as the networks saw patterns in training.

    Parameters
    ----------
    frame : array-like of shape (H, W)
        Detector counts (any size, e.g. 512 × 512 to 4096 × 4096).
    modality : {"spot", "ring"}
        What was recorded: a zone-axis spot pattern or a ring pattern.
    size : int, optional
        Output side; default the trained side of ``modality``
        (:func:`~grainflow.diffraction.simulate.pattern_size`: 64 for spots, 128
        for rings); the target first order scales with it.
    first_order_px : float or (low, high), optional
        Where the first order should land, pixels; default the middle of the
        trained range of ``modality`` (:func:`target_first_order_px` of
        ``settings``, the config's ``synthesize.diffraction`` block).
    centre : (row, col), optional
        The direct beam, when known (skips :func:`find_centre`).
    radius_px : float, optional
        The first-order radius in frame pixels, when known (skips
        :func:`first_order_radius`).
    mask, saturation, beam_stop
        As in :func:`find_centre`.
    log_scale : bool
        ``log(1 + counts)`` scaled to [0, 1] as the simulator stores patterns
        (:func:`grainflow.diffraction.simulate.log_normalize`); False returns
        the counts per output pixel.

    Returns
    -------
    pattern : ndarray of shape (size, size), float32
    record : dict
        ``frame_shape``; ``centre`` (row, col) and ``centre_method``
        (``direct_beam``, ``symmetry`` or ``given``); ``first_order_found_px``
        (frame pixels; NaN when no peak was found); ``first_order_px`` (where
        it lands in the output) and ``trained_range_px``; ``scale`` (output
        pixels per frame pixel), ``bin``, ``crop_box`` (row0, row1, col0,
        col1; frame pixels, may reach past the frame), ``padded``;
        ``dose_counts`` (counts at the brightest diffracted output pixel) and
        ``intensity_scale`` (the factor that brought them there);
        ``saturated_px``; ``masked_fraction`` (masked or behind a stop).

    Notes
    -----
    The steps: the direct beam (:func:`find_centre`); the azimuthal statistics about
    it over the pixels neither masked nor behind a beam stop (:func:`radial_profile`;
    saturated pixels stay, clipped but bright where the pattern is) and their first
    strong peak beyond the direct beam's extent (the stop's disc, 1.5 times the
    bright disc, for rings the first minimum of the profile): the first order
    (:func:`first_order_radius`); the scale that puts it at ``first_order_px``; the
    square about the centre that becomes the output, binned and interpolated
    (:func:`resample_about`). The counts are then scaled so that the brightest
    diffracted pixel (beyond three quarters of the first order) holds counts in the
    trained ``dose_counts`` range — the log scale's shape depends on them, and a
    binned 4k frame holds far more counts per pixel than any training pattern — and
    ``log(1 + counts)`` is scaled to [0, 1]. Without a peak (a blank frame) the
    frame's shorter side is resized to the output and ``first_order_found_px`` is
    NaN.
    """
    frame = _as_frame(frame)
    s = {**DEFAULT_SETTINGS, **dict(settings or {})}
    size = pattern_size(s, modality) if size is None else int(size)
    low, high = target_first_order_px(modality, s, size=size)
    if first_order_px is None:
        target = 0.5 * (low + high)
    elif np.ndim(first_order_px):
        target = 0.5 * (float(first_order_px[0]) + float(first_order_px[1]))
    else:
        target = float(first_order_px)
    if not 0 < target < size / 2:
        raise ValueError(f"first_order_px must be in (0, {size / 2}), got {target=}")
    finite = np.isfinite(frame)
    if mask is not None:
        finite &= ~np.asarray(mask, dtype=bool)
    found = {"method": "given", "saturated_px": 0, "beam_radius_px": None}
    if centre is None:
        found = find_centre(frame, mask=mask, saturation=saturation, beam_stop=beam_stop)
        centre = found["centre"]
    centre = (float(centre[0]), float(centre[1]))
    clean = np.where(finite, frame, 0.0)
    saturated = saturation_mask(np.where(finite, frame, -np.inf), saturation=saturation)
    valid = finite.copy()  # saturated pixels stay: clipped, but bright where the pattern is
    if beam_stop is not False:
        valid &= ~(dark_mask(clean, centre) & ~saturated)
    if radius_px is None:
        profile = radial_profile(ndi.gaussian_filter(clean, 1.0), centre, valid=valid)
        beam_r = _beam_extent(profile, found, modality)
        peak = first_order_radius(profile, modality=modality, min_radius_px=beam_r)
        radius_px = peak["radius_px"]
    radius_px = float(radius_px)
    if math.isfinite(radius_px) and radius_px > 0:
        scale = target / radius_px
    else:  # nothing to measure: the frame's shorter side becomes the output
        scale = size / min(frame.shape)
    image, geom = resample_about(np.where(valid, clean, 0.0), centre, scale=scale, size=size)
    # counts at the brightest diffracted pixel (beyond 3/4 of the first order) into the trained range
    out_r = _radii(image.shape, ((size - 1) / 2.0, (size - 1) / 2.0))
    found_dose = float(image[out_r >= 0.75 * target].max(initial=0.0))
    dose_low, dose_high = (float(v) for v in s["dose_counts"])
    dose = float(np.clip(found_dose, dose_low, dose_high)) if found_dose > 0 else 0.0
    intensity_scale = dose / found_dose if found_dose > 0 else 1.0
    image = image * intensity_scale
    pattern = log_normalize(image) if log_scale else image.astype(np.float32)
    return pattern, {
        "frame_shape": tuple(int(v) for v in frame.shape),
        "centre": centre,
        "centre_method": found["method"],
        "first_order_found_px": radius_px,
        "first_order_px": float(radius_px * scale) if math.isfinite(radius_px) else math.nan,
        "trained_range_px": (low, high),
        "scale": float(scale),
        **geom,
        "dose_counts": dose,
        "intensity_scale": float(intensity_scale),
        "saturated_px": int(saturated.sum()),
        "masked_fraction": float(1.0 - valid.mean()),
    }


def _beam_extent(profile: Mapping[str, np.ndarray], found: Mapping, modality: str) -> float:
    """Radius inside which the direct beam (or the stop over it) fills the profile.

    The stop's disc (rings of pixels mostly behind it), 1.5 times the radius of
    the bright disc of the beam, and for rings the first minimum of the mean
    profile beyond them (the beam's tail falls until the first ring lifts it).
    """
    radius, coverage = profile["radius"], profile["coverage"]
    inner = float(radius[0])
    if found.get("beam_radius_px") and found.get("method") == "direct_beam":
        inner = 1.5 * float(found["beam_radius_px"])
    blocked = np.flatnonzero(coverage < 0.3)
    if len(blocked) and blocked[0] == 0:  # a stop over the centre: its disc
        run = np.flatnonzero(np.diff(blocked) != 1)
        inner = max(inner, float(radius[blocked[run[0]] if len(run) else blocked[-1]]))
    if modality == "ring":
        start = int(np.searchsorted(radius, inner))
        m = profile["mean"][start:]
        good = np.isfinite(m)
        if good.sum() > 3:
            m = ndi.gaussian_filter1d(np.where(good, m, np.nanmax(m)), 1.0, mode="nearest")
            rising = np.flatnonzero(np.diff(m) > 0)
            if len(rising):
                inner = max(inner, float(radius[start + rising[0]]))
    return inner


def prepare_frames(
    frames,
    *,
    modality: str,
    out=None,
    block: int | None = None,
    **options,
) -> tuple[np.ndarray, dict]:
    """:func:`prepare_frame` over a scan of frames ``(*scan_axes, H, W)``, block by block.

    Parameters
    ----------
    frames : array-like of shape (*scan_axes, H, W)
        A Zarr array or an ndarray (a 4D-STEM scan ``(ny, nx, H, W)``); it is
        read ``block`` rows of its first axis at a time, never whole.
    modality : {"spot", "ring"}
    out : array-like of shape (*scan_axes, size, size), optional
        Where to write the prepared patterns (e.g. a Zarr array, written a
        block at a time); default a new float32 ndarray.
    block : int, optional
        Rows of the first scan axis per read; default one chunk of a Zarr
        array, else 1.
    **options
        Passed to :func:`prepare_frame` (``size``, ``settings``, ``mask``, ...).

    Returns
    -------
    out : array of shape (*scan_axes, size, size)
    records : dict of ndarray, each of shape ``scan_axes``
        ``centre_row``, ``centre_col``, ``first_order_found_px``,
        ``first_order_px``, ``scale``, ``bin``, ``dose_counts``,
        ``intensity_scale``, ``masked_fraction``, ``saturated_px``, ``padded``
        and ``centre_method`` of each frame (see :func:`prepare_frame`).
    """
    shape = tuple(frames.shape)
    if len(shape) < 3:
        raise ValueError(f"frames must be (*scan_axes, H, W), got {shape=}")
    lead = shape[:-2]
    size = int(
        options.get("size")
        or pattern_size({**DEFAULT_SETTINGS, **(options.get("settings") or {})}, modality)
    )
    if out is None:
        out = np.zeros((*lead, size, size), dtype=np.float32)
    elif tuple(out.shape) != (*lead, size, size):
        raise ValueError(f"out must have shape {(*lead, size, size)}, got {tuple(out.shape)}")
    if block is None:  # a chunk of a Zarr array (a tuple per axis for Dask), else one row
        chunks = getattr(frames, "chunks", None)
        first = chunks[0] if chunks else 1
        block = first[0] if isinstance(first, tuple) else first
    block = int(block)
    if block < 1:
        raise ValueError(f"block must be at least 1 row, got {block=}")
    numbers = (
        "first_order_found_px",
        "first_order_px",
        "scale",
        "bin",
        "dose_counts",
        "intensity_scale",
        "masked_fraction",
    )
    keys = ("centre_row", "centre_col", *numbers, "saturated_px")
    records = {k: np.zeros(lead, dtype=np.float64) for k in keys}
    records["padded"] = np.zeros(lead, dtype=bool)
    records["centre_method"] = np.empty(lead, dtype=object)
    for start in range(0, lead[0], block):
        data = np.asarray(frames[start : start + block])
        flat = data.reshape(-1, *shape[-2:])
        prepared = np.empty((len(flat), size, size), dtype=np.float32)
        index = np.unravel_index(np.arange(len(flat)), data.shape[:-2])
        for k, frame in enumerate(flat):
            prepared[k], rec = prepare_frame(frame, modality=modality, **options)
            at = (start + index[0][k], *(ix[k] for ix in index[1:]))
            records["centre_row"][at], records["centre_col"][at] = rec["centre"]
            for key in (*numbers, "saturated_px"):
                records[key][at] = rec[key]
            records["padded"][at] = rec["padded"]
            records["centre_method"][at] = rec["centre_method"]
        out[start : start + len(data)] = prepared.reshape(*data.shape[:-2], size, size)
    return out, records
