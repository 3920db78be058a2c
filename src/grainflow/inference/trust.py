"""The trust map: how much an ensemble's members disagree, pixel by pixel.

:func:`disagreement` is the per-pixel measure, :func:`plane_trust` its summary over a
plane, :func:`beyond_reference` whether a plane exceeds the same summary on fresh synthetic
images (:mod:`grainflow.inference.reference`) and :func:`trust_warning` the report's words.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "REFERENCE_MIN_FRACTION",
    "disagreement",
    "plane_trust",
    "read_reference",
    "beyond_reference",
    "trust_warning",
]

#: a plane is only flagged when more than this fraction of its pixels is uncertain
#: (so that a reference of nearly 0 does not flag a plane for a handful of pixels)
REFERENCE_MIN_FRACTION = 0.01


def disagreement(members: Sequence, mean=None):
    """Mean total-variation distance of each member's probabilities from the ensemble mean.

    ``d = 1/M sum_m 1/2 sum_c |p_mc - pbar_c|``, per pixel.

    Parameters
    ----------
    members : sequence of M arrays of shape (N, C, H, W)
        The softmax probabilities of each member (fold model x test-time flip),
        NumPy arrays or torch tensors (the result is of the same kind).
    mean : array of shape (N, C, H, W), optional
        Their mean ``pbar``; computed when not given.

    Returns
    -------
    d : array of shape (N, H, W)
        In ``[0, 1 - 1/M]``: 0 where all members agree exactly; 1/2 for two
        members that put all probability on different classes.

    Notes
    -----
    Why this and not the mutual information (BALD): it is in probability units
    (the probability mass a member puts elsewhere than the ensemble, averaged
    over the members), it is bounded without a normalisation by ``log C``, it
    has no logarithm of 0 to guard, and for two classes it is simply the mean
    absolute deviation of the members' foreground probabilities. Both are 0
    exactly when the members agree and grow with their spread; neither sees a
    confident mistake that every member makes alike.
    """
    if len(members) == 0:
        raise ValueError("need at least one member, got none")
    if mean is None:
        mean = sum(members[1:], members[0]) / len(members)
    total = None
    for p in members:
        if tuple(p.shape) != tuple(mean.shape):
            raise ValueError(
                f"members must have the shape of their mean {tuple(mean.shape)}, got {tuple(p.shape)}"
            )
        tv = abs(p - mean).sum(1)
        total = tv if total is None else total + tv
    return total * (0.5 / len(members))


def plane_trust(plane, *, uncertain_above: float, block: int = 2048) -> dict:
    """Mean disagreement and fraction of uncertain pixels of one plane, read block by block.

    Parameters
    ----------
    plane : array-like of shape (Y, X)
        A disagreement map (:func:`disagreement`), e.g. a plane's own part of
        the ``disagreement`` array of an inference store (padding left out by
        the caller).
    uncertain_above : float
        A pixel is uncertain when its disagreement exceeds this (compared in
        float32, the map's precision: a pixel of ``float32(0.1)`` is not above 0.1).
    block : int
        Side of the blocks read, pixels.

    Returns
    -------
    dict
        ``disagreement_mean`` and ``uncertain_fraction`` (in [0, 1]).
    """
    rows, cols = (int(n) for n in plane.shape)
    if rows < 1 or cols < 1:
        raise ValueError(f"the plane is empty, got shape {(rows, cols)}")
    total, uncertain = 0.0, 0
    for r0 in range(0, rows, block):
        for c0 in range(0, cols, block):
            d = np.asarray(plane[r0 : r0 + block, c0 : c0 + block], dtype=np.float32)
            total += float(d.sum(dtype=np.float64))
            uncertain += int((d > uncertain_above).sum())
    n = rows * cols
    return {"disagreement_mean": total / n, "uncertain_fraction": uncertain / n}


def read_reference(path: str | os.PathLike) -> dict:
    """A reference written by the ``trust_reference`` rule
    (:func:`grainflow.inference.reference.trust_reference`)."""
    with open(path, encoding="utf-8") as f:
        reference = json.load(f)
    missing = {"uncertain_above", "uncertain_fraction_p99"} - set(reference)
    if missing:
        raise ValueError(
            f"{os.fspath(path)}: missing {sorted(missing)}; rerun rule trust_reference"
        )
    return reference


def beyond_reference(fraction: float, reference: Mapping, *, factor: float) -> bool:
    """Whether a plane's uncertain fraction exceeds the synthetic reference by a clear margin.

    True when ``fraction > factor * p99`` of the reference's fresh synthetic
    images and ``fraction > REFERENCE_MIN_FRACTION``; False for NaN.

    Parameters
    ----------
    fraction : float
        The plane's uncertain fraction (:func:`plane_trust`).
    reference : mapping
        :func:`~grainflow.inference.reference.trust_reference`'s record (its
        ``uncertain_fraction_p99``).
    factor : float
        The margin, a multiple of the reference's 99th percentile (>= 1).
    """
    if fraction is None or math.isnan(fraction):
        return False
    limit = max(factor * float(reference["uncertain_fraction_p99"]), REFERENCE_MIN_FRACTION)
    return bool(fraction > limit)


def trust_warning(stack: str, n_beyond: int, n_planes: int) -> str:
    """The report's warning about a stack with planes beyond the reference ("" for none).

    Parameters
    ----------
    stack : str
        The stack's name.
    n_beyond, n_planes : int
        Planes beyond the reference (:func:`beyond_reference`), and all planes.
    """
    if n_beyond < 1:
        return ""
    return (
        f"{stack} looks out of the training distribution: {n_beyond} of {n_planes} plane(s) "
        "have far more uncertain pixels than 99 % of fresh synthetic images "
        "(more than inference.trust.flag_factor times their 99th percentile); "
        "do not trust its numbers without checking"
    )
