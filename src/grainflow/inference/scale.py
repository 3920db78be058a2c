"""Physical scale: the factor that brings a real stack's features to the networks' scale."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi

from grainflow.inference.stack import open_source
from grainflow.io.hdf5 import read_specimen
from grainflow.io.staging import atomic_path

__all__ = [
    "feature_length_px",
    "median_feature_length_px",
    "scale_level",
    "choose_level",
    "write_scale",
    "read_scale",
]


def feature_length_px(image: np.ndarray, *, smooth_px: float = 1.0) -> float:
    """Characteristic size of an image's features, pixels, from its autocorrelation.

    Parameters
    ----------
    image : ndarray of shape (M, N)
        One plane, any intensity scale.
    smooth_px : float
        Gaussian smoothing before the autocorrelation, so that pixel noise
        (which decorrelates at one pixel) does not shorten the length.

    Returns
    -------
    length : float
        The first lag at which the radially averaged autocorrelation of the
        image crosses zero, pixels (linear interpolation between lags); NaN for
        a constant image; half the shorter side when it never crosses.

    Notes
    -----
    For a two-phase structure the autocorrelation of the phase indicator falls
    to zero at about 0.6 particle diameters (measured on grainflow's synthetic
    phases); for polycrystals it follows the grain size. Noise and texture
    only change the autocorrelation near lag 0, so the zero crossing of the
    image's autocorrelation equals that of its label map (tested). Only ratios
    of lengths measured the same way are used (:func:`scale_level`).
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got {image.shape=}")
    if np.ptp(image) == 0:  # before smoothing, whose rounding would leave a faint pattern
        return math.nan
    if smooth_px > 0:
        image = ndi.gaussian_filter(image, smooth_px)
    image = image - image.mean()
    rows, cols = image.shape
    max_lag = min(rows, cols) // 2
    spectrum = np.fft.rfft2(image, s=(2 * rows, 2 * cols))  # zero-padded: no wrap-around
    corr = np.fft.irfft2(np.abs(spectrum) ** 2, s=(2 * rows, 2 * cols))
    lags = np.arange(-max_lag, max_lag + 1)
    corr = corr[np.ix_(lags % (2 * rows), lags % (2 * cols))]  # lags within +-max_lag
    pairs = np.outer(rows - np.abs(lags), cols - np.abs(lags))  # pixel pairs at each lag
    radius = np.rint(np.hypot(*np.meshgrid(lags, lags, indexing="ij"))).astype(int)
    keep = radius <= max_lag
    sums = np.bincount(radius[keep], weights=(corr / pairs)[keep], minlength=max_lag + 1)
    counts = np.bincount(radius[keep], minlength=max_lag + 1)
    profile = sums / np.maximum(counts, 1)
    below = np.nonzero(profile <= 0)[0]
    if below.size == 0:
        return float(max_lag)
    r = int(below[0])  # first lag at or below zero (r >= 1: profile[0] is the variance)
    a, b = profile[r - 1], profile[r]
    return float(r - 1 + a / (a - b))


def median_feature_length_px(images: Iterable[np.ndarray], **kwargs) -> float:
    """The median of :func:`feature_length_px` over ``images`` (NaNs left out)."""
    lengths = [feature_length_px(im, **kwargs) for im in images]
    lengths = [v for v in lengths if math.isfinite(v)]
    if not lengths:
        raise ValueError("no image with a measurable feature length (all constant?)")
    return float(np.median(lengths))


def scale_level(real_length_px: float, trained_length_px: float, *, levels: int) -> int:
    """The pyramid level (0 = full resolution, each level halves) to read a stack at.

    Parameters
    ----------
    real_length_px : float
        The stack's feature length at full resolution (:func:`feature_length_px`).
    trained_length_px : float
        The feature length of the networks' training images, measured the same way.
    levels : int
        How many levels the stack's pyramid has.

    Returns
    -------
    level : int
        ``round(log2(real / trained))``, clipped to ``[0, levels - 1]``: the level
        whose features are closest (by ratio) to those the networks learnt.
        Features smaller than the training ones are never enlarged.
    """
    if not (real_length_px > 0 and trained_length_px > 0):
        raise ValueError(
            f"feature lengths must be positive, got {real_length_px=}, {trained_length_px=}"
        )
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels=}")
    level = round(math.log2(real_length_px / trained_length_px))
    return int(min(max(level, 0), levels - 1))


def choose_level(
    stack: str | os.PathLike,
    specimens: Sequence[str | os.PathLike],
    *,
    crop_px: int = 2048,
    level: int | None = None,
) -> dict:
    """The pyramid level an imported stack is best read at by networks trained on ``specimens``.

    Parameters
    ----------
    stack : path-like
        An OME-Zarr store of :func:`grainflow.stacks.importer.import_stack`; only read.
    specimens : sequence of path-like
        The synthetic specimen files (HDF5) of the stack's task, the networks'
        training world.
    crop_px : int
        Each plane is measured on its central ``crop_px`` x ``crop_px`` pixels at full
        resolution (enough for features far smaller than that); a padded plane on
        its own part only.
    level : int, optional
        A level the user chose (``inference.scale_levels``): taken as it is (the
        feature lengths are still measured and recorded), for stacks whose image
        features are not the objects to segment, e.g. particles on a lumpy support.

    Returns
    -------
    record : dict
        ``feature_length_px`` (median over the stack's planes),
        ``trained_length_px`` (median over the synthetic images), ``level`` (of
        :func:`scale_level`), ``factor`` (``2 ** level``) and ``method``.
    """
    source = open_source(stack, task=None, block_px=crop_px)
    s0 = source.levels[0]

    def central(z, rows, cols):
        r0, c0 = max(0, (rows - crop_px) // 2), max(0, (cols - crop_px) // 2)
        return s0[z, r0 : min(r0 + crop_px, rows), c0 : min(c0 + crop_px, cols)]

    planes = (central(z, *shape) for z, shape in enumerate(source.plane_shapes))
    real = median_feature_length_px(planes)
    trained = median_feature_length_px(
        sample.image for path in specimens for sample in read_specimen(path).samples
    )
    method = (
        "first zero of the radially averaged autocorrelation; level "
        "round(log2(stack / synthetic)), within the pyramid"
    )
    if level is None:
        level = scale_level(real, trained, levels=len(source.levels))
    elif not 0 <= int(level) < len(source.levels):
        raise ValueError(
            f"inference.scale_levels sets level {level} for {stack}, whose pyramid has levels "
            f"0 to {len(source.levels) - 1}; choose one of those"
        )
    else:
        level = int(level)
        method = "set in the config (inference.scale_levels)"
    return {
        "feature_length_px": round(real, 3),
        "trained_length_px": round(trained, 3),
        "level": level,
        "factor": 2**level,
        "method": method,
    }


def write_scale(record: dict, path: str | os.PathLike) -> None:
    """Write a :func:`choose_level` record as JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def read_scale(path: str | os.PathLike) -> dict:
    """A record written by :func:`write_scale`."""
    with open(path) as f:
        return json.load(f)
