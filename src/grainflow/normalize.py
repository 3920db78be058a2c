"""Per-image intensity normalisation, one definition shared by training and inference.

Every image is mapped by its own low and high percentiles to 0 and 1, so that a network
trained on synthetic images never sees a microscope's absolute brightness or contrast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_PERCENTILES",
    "percentile_limits",
    "apply_limits",
    "normalize_image",
    "plane_limits",
    "POLARITIES",
    "polarity_view",
]

#: low and high percentiles (in percent) mapped to 0 and 1
DEFAULT_PERCENTILES = (1.0, 99.0)
#: how a phases network meets the particles: ``given`` (always as the brighter phase: the
#: polarity of each image is known and dark particles are inverted) or ``learned`` (in either
#: tone, as imaged: the network must tell particles from matrix by their shape)
POLARITIES = ("given", "learned")
#: a smaller high - low than this counts as a constant image (mapped to zeros)
_MIN_SCALE = 1e-12


def _check_percentiles(percentiles: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(p) for p in percentiles)
    except (TypeError, ValueError):
        raise ValueError(
            f"percentiles must be (low, high) in percent, got {percentiles=}"
        ) from None
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles=}")
    return low, high


def percentile_limits(
    values: np.ndarray, *, percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> tuple[float, float]:
    """Return the intensities at the low and high percentiles of ``values``.

    Parameters
    ----------
    values : ndarray of any shape
        Intensities (any real dtype; computed in float32 like the images).
    percentiles : (float, float)
        Low and high percentiles, in percent.

    Returns
    -------
    low, high : float
    """
    low, high = _check_percentiles(percentiles)
    values = np.asarray(values, dtype=np.float32)
    if values.size == 0:
        raise ValueError(f"cannot compute percentiles of an empty array, got shape {values.shape}")
    lo, hi = np.percentile(values, (low, high))
    return float(lo), float(hi)


def apply_limits(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low`` to 0 and ``high`` to 1 (float32, not clipped).

    When ``high - low`` is not positive (a constant image) the result is zeros,
    as in training.

    Parameters
    ----------
    image : ndarray of any shape
    low, high : float
        From :func:`percentile_limits` or :func:`plane_limits`.

    Returns
    -------
    normalized : ndarray of the shape of ``image``, float32
    """
    image = np.asarray(image, dtype=np.float32)
    low = np.float64(low)
    scale = float(np.float64(high) - low)
    if not scale > _MIN_SCALE:
        return np.zeros_like(image)
    return ((image - low) / scale).astype(np.float32)  # computed in float64, as in training


def normalize_image(
    image: np.ndarray, *, percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> np.ndarray:
    """Map an image's low and high percentiles to 0 and 1 (float32, not clipped).

    Parameters
    ----------
    image : ndarray of shape (H, W)
    percentiles : (float, float)
        Low and high percentiles, in percent.

    Returns
    -------
    normalized : ndarray of shape (H, W), float32
        A constant image gives zeros.

    Notes
    -----
    Values outside the percentiles are kept, not clipped, so bright boundaries stay
    distinct. Training applies this function to each synthetic image
    (:mod:`grainflow.training.data`); inference applies the same map to each plane of
    a real stack: a plane can be far larger than memory, so its limits come from a
    regular subsample (:func:`plane_limits`, exact when the plane has at most
    ``max_pixels`` pixels) and are applied block by block (:func:`apply_limits`),
    giving the same numbers as this function on the whole plane.

    Examples
    --------
    >>> normalize_image(np.arange(101.0), percentiles=(0, 100))[[0, 50, 100]]
    array([0. , 0.5, 1. ], dtype=float32)
    """
    return apply_limits(image, *percentile_limits(image, percentiles=percentiles))


def plane_limits(
    plane,
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    max_pixels: int = 1 << 22,
    block: int = 2048,
) -> tuple[float, float]:
    """Percentile limits of a 2-D plane too large for memory, from a regular subsample.

    Every ``stride``-th pixel in rows and columns is read, block by block, with
    the smallest stride that keeps the sample within ``max_pixels``. A plane
    of at most ``max_pixels`` pixels is read whole, and the limits equal
    :func:`percentile_limits` of the plane.

    Parameters
    ----------
    plane : array-like of shape (M, N)
        Anything sliceable like a NumPy array (a Zarr array, a
        :class:`grainflow.inference.tiling.PlaneView`, an ndarray); read only in blocks of
        at most ``block`` × ``block`` pixels.
    percentiles : (float, float)
        Low and high percentiles, in percent.
    max_pixels : int
        Largest number of pixels sampled.
    block : int
        Side of the blocks read, in pixels.

    Returns
    -------
    low, high : float
    """
    if len(plane.shape) != 2:
        raise ValueError(f"plane must be 2-D (rows, cols), got shape {tuple(plane.shape)}")
    if max_pixels < 1 or block < 1:
        raise ValueError(f"max_pixels and block must be positive, got {max_pixels=}, {block=}")
    rows, cols = (int(n) for n in plane.shape)
    stride = max(1, math.ceil(math.sqrt(rows * cols / max_pixels)))
    while math.ceil(rows / stride) * math.ceil(cols / stride) > max_pixels:
        stride += 1
    step = max(stride, (block // stride) * stride)  # block side, a multiple of the stride
    samples = []
    for r0 in range(0, rows, step):
        for c0 in range(0, cols, step):
            region = np.asarray(plane[r0 : min(r0 + step, rows), c0 : min(c0 + step, cols)])
            samples.append(region[::stride, ::stride].astype(np.float32).ravel())
    return percentile_limits(np.concatenate(samples), percentiles=percentiles)


def polarity_view(image: np.ndarray, *, particles_dark: bool | None, polarity: str) -> np.ndarray:
    """A normalised image as a network of ``polarity`` (:data:`POLARITIES`) is shown it.

    With ``"given"`` an image whose particles are darker than their matrix becomes
    ``1 - image``, so the particles are always the brighter phase (exactly the
    normalised inverted image: the percentile map commutes with inversion); with
    ``"learned"`` the image is returned as it is.

    Raises
    ------
    ValueError
        An unknown ``polarity``, or ``"given"`` with ``particles_dark`` None (unknown).
    """
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    if polarity == "learned":
        return image
    if particles_dark is None:
        raise ValueError(
            "this network was trained with the particles' polarity given (training.polarity: "
            "given), but whether this image's particles are dark is unknown"
        )
    return (1 - image).astype(np.float32, copy=False) if particles_dark else image
