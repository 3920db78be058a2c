"""A trained network's probabilities on whole images, and label maps from them.

Images are normalised exactly as in training (the percentiles stored in the
checkpoint). Label maps: ``grains`` -> boundary mask (P(boundary) > 0.5) and
grain instances by a watershed of P(boundary) from the regions the mask
encloses; ``phases`` -> phase mask (P(phase) > 0.5) and particles as its
connected components.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from skimage.measure import label as connected_components
from skimage.segmentation import relabel_sequential, watershed

from grainflow.normalize import normalize_image

__all__ = ["FLIPS", "predict_probabilities", "labels_from_probability", "foreground"]

#: test-time flips, as tensor dims: identity, left-right, up-down, both
FLIPS = ((), (-1,), (-2,), (-2, -1))


@torch.inference_mode()
def predict_probabilities(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    *,
    norm_percentiles: Sequence[float] = (1.0, 99.0),
    batch_size: int = 8,
    flips: bool = False,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Softmax probabilities of ``model`` on ``images``.

    Parameters
    ----------
    model : Module
        Maps (N, 1, H, W) to logits (N, C, H, W); H and W must suit it.
    images : sequence of ndarray of shape (H, W)
    norm_percentiles : (float, float)
        Per-image normalisation, as in training.
    flips : bool
        Average the probabilities over the four flips of :data:`FLIPS`
        (test-time augmentation, 4x the compute), as the ``infer`` rule's
        ``test_time_flips`` does on real stacks.

    Returns
    -------
    probs : ndarray of shape (N, C, H, W), float32
    """
    model = model.eval().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = np.stack([normalize_image(im, percentiles=norm_percentiles) for im in chunk])
        x = torch.from_numpy(x[:, None].astype(np.float32)).to(device)
        total = 0
        for dims in FLIPS if flips else FLIPS[:1]:
            xi = torch.flip(x, dims) if dims else x
            p = torch.softmax(model(xi).float(), dim=1)
            total = total + (torch.flip(p, dims) if dims else p)
        out.append((total / (len(FLIPS) if flips else 1)).cpu().numpy())
    return np.concatenate(out) if out else np.empty((0,))


def labels_from_probability(
    task: str,
    probability: np.ndarray,
    *,
    threshold: float = 0.5,
    min_grain_px: int = 4,
) -> dict[str, np.ndarray]:
    """Label maps from the foreground probability of one image.

    Parameters
    ----------
    task : {"grains", "phases"}
    probability : ndarray of shape (M, N)
        P(boundary) for grains, P(particle phase) for phases.
    threshold : float
        Probability above which a pixel is boundary / particle.
    min_grain_px : int
        Enclosed regions smaller than this do not seed a grain.

    Returns
    -------
    labels : dict
        grains -> ``boundaries`` (uint8) and ``grain_ids`` (uint32, 1..n);
        phases -> ``phase`` (uint8) and ``particle_ids`` (uint32, 0 = matrix).
    """
    if probability.ndim != 2:
        raise ValueError(f"probability must be 2-D, got {probability.shape=}")
    fg = probability > threshold
    if task == "phases":
        return {
            "phase": fg.astype(np.uint8),
            "particle_ids": connected_components(fg, connectivity=1).astype(np.uint32),
        }
    if task != "grains":
        raise ValueError(f"task must be 'grains' or 'phases', got {task=}")
    seeds = connected_components(~fg, connectivity=1)
    sizes = np.bincount(seeds.ravel())
    small = sizes < min_grain_px
    small[0] = False
    seeds[small[seeds]] = 0
    if seeds.max() == 0:
        grains = np.ones(probability.shape, np.int64)
    else:
        grains = watershed(probability, markers=seeds, connectivity=1)
    grains = relabel_sequential(grains)[0].astype(np.uint32)
    return {"boundaries": fg.astype(np.uint8), "grain_ids": grains}


def foreground(probs: np.ndarray) -> np.ndarray:
    """The foreground-class probability (class 1) of (N, C, H, W) probabilities."""
    if probs.shape[1] < 2:
        raise ValueError(f"need at least two classes, got {probs.shape=}")
    return probs[:, 1]
