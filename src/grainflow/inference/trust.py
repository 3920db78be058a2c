"""The trust map: how much an ensemble's members disagree, pixel by pixel.

:func:`disagreement` is the per-pixel measure, :func:`plane_trust` its summary over a
plane, :func:`trust_reference` the same summary on fresh synthetic images (what "in
distribution" looks like without labels) and :func:`beyond_reference` the planes of a
real stack that exceed it.
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
    "trust_reference",
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


def trust_reference(
    task: str,
    settings: Mapping,
    checkpoints: Sequence[str | os.PathLike],
    *,
    seed: int,
    n_images: int,
    uncertain_above: float,
    tile_px: int = 256,
    overlap_px: int = 64,
    margin_px: int = 16,
    batch_size: int = 8,
    sigma_scale: float = 0.125,
    flips: bool = False,
    device: str = "auto",
    threads: int = 1,
) -> dict:
    """The uncertain fraction of fresh synthetic images: what "in distribution" looks like.

    ``n_images`` new specimens of ``task`` (one image each, drawn from the task's
    synthesis ``settings`` with ``seed``, which no training job uses) go through
    the ensemble exactly as a real plane does in
    :func:`grainflow.inference.stack.infer_stack` (percentile normalisation, tiles,
    Gaussian blending), and :func:`plane_trust` summarises each.

    Parameters
    ----------
    task : {"grains", "phases"}
    settings : mapping
        The task's block of the config's ``synthesize`` section.
    checkpoints : sequence of path-like
        The folds' ``best.pt`` files of one architecture.
    seed : int
        The job's seed.
    n_images : int
        Fresh images, at least 1.
    uncertain_above : float
        As in :func:`plane_trust`.
    tile_px, overlap_px, margin_px, batch_size, sigma_scale, flips, device, threads
        As in :func:`~grainflow.inference.stack.infer_stack`.

    Returns
    -------
    reference : dict
        ``task``, ``uncertain_above``, ``members`` (models x flips), ``seed``,
        ``n_images``, ``image_size_px``, per image ``uncertain_fraction`` and
        ``disagreement_mean`` (lists), and the 50th, 95th and 99th percentiles of
        the uncertain fractions (``uncertain_fraction_p50``, ``_p95``, ``_p99``).
    """
    from grainflow.inference.ensemble import load_ensemble
    from grainflow.inference.predict import FLIPS
    from grainflow.inference.tiling import check_integers, predict_plane
    from grainflow.normalize import apply_limits, plane_limits
    from grainflow.runtime import torch_threads
    from grainflow.synth.specimen import synthesize_specimen

    check_integers(n_images=(n_images, 1), threads=(threads, 1))
    ensemble = load_ensemble(checkpoints, task=task, device=device, flips=flips)
    one_image = {**settings, "sessions_per_specimen": 1, "images_per_session": 1}
    first = int(settings.get("specimens", 0))  # names after the training specimens'
    fractions, means = [], []
    with torch_threads(threads):
        for i in range(n_images):
            (sample,), _ = synthesize_specimen(task, f"s{first + i:02d}", one_image, seed=seed)
            image = np.asarray(sample.image, dtype=np.float32)
            low, high = plane_limits(image, percentiles=ensemble.norm_percentiles)
            out = np.zeros((ensemble.n_classes + 1, *image.shape), np.float32)
            predict_plane(
                image,
                ensemble.with_disagreement(),
                out=out,
                tile=tile_px,
                overlap=overlap_px,
                block=max(image.shape),
                margin=margin_px,
                batch_size=batch_size,
                sigma_scale=sigma_scale,
                transform=lambda region, lo=low, hi=high: apply_limits(region, lo, hi),
            )
            summary = plane_trust(out[-1], uncertain_above=uncertain_above)
            fractions.append(summary["uncertain_fraction"])
            means.append(summary["disagreement_mean"])
    p50, p95, p99 = (float(np.percentile(fractions, q)) for q in (50, 95, 99))
    return {
        "task": task,
        "uncertain_above": float(uncertain_above),
        "members": len(ensemble.models) * (len(FLIPS) if flips else 1),
        "checkpoints": ensemble.checkpoints,
        "seed": int(seed),
        "n_images": int(n_images),
        "image_size_px": int(settings["image_size_px"]),
        "uncertain_fraction": [round(f, 6) for f in fractions],
        "disagreement_mean": [round(m, 6) for m in means],
        "uncertain_fraction_p50": p50,
        "uncertain_fraction_p95": p95,
        "uncertain_fraction_p99": p99,
    }


def read_reference(path: str | os.PathLike) -> dict:
    """A reference written by the ``trust_reference`` rule (:func:`trust_reference`)."""
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
        :func:`trust_reference`'s record (its ``uncertain_fraction_p99``).
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
