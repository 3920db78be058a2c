"""The trust map's in-distribution reference: fresh synthetic images through the ensemble."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from grainflow.inference.ensemble import load_ensemble
from grainflow.inference.predict import FLIPS
from grainflow.inference.tiling import check_integers, predict_plane
from grainflow.inference.trust import plane_trust
from grainflow.normalize import apply_limits, plane_limits, polarity_view
from grainflow.runtime import torch_threads
from grainflow.synth.specimen import synthesize_specimen

__all__ = ["trust_reference"]


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
    Gaussian blending), and :func:`~grainflow.inference.trust.plane_trust` summarises each.

    Parameters
    ----------
    task : {"grains", "phases", "nanoparticles"}
    settings : mapping
        The task's block of the config's ``synthesize`` section.
    checkpoints : sequence of path-like
        The folds' ``best.pt`` files of one architecture.
    seed : int
        The job's seed.
    n_images : int
        Fresh images, at least 1.
    uncertain_above : float
        As in :func:`~grainflow.inference.trust.plane_trust`.
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
                transform=lambda region, lo=low, hi=high, s=sample: polarity_view(
                    apply_limits(region, lo, hi),
                    particles_dark=s.params.get("particles_dark", False),
                    polarity=ensemble.polarity,
                ),
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
