"""A trained network's probabilities on whole images, with test-time flips."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from grainflow.normalize import normalize_image, polarity_view

__all__ = ["FLIPS", "predict_probabilities", "foreground"]


#: test-time flips, as tensor dims: identity, left-right, up-down, both
FLIPS = ((), (-1,), (-2,), (-2, -1))


@torch.inference_mode()
def predict_probabilities(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    *,
    norm_percentiles: Sequence[float] = (1.0, 99.0),
    polarity: str = "learned",
    particles_dark: Sequence[bool] | None = None,
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
    polarity : {"learned", "given"}, particles_dark : sequence of bool, optional
        How the model was shown the particles, and whether each image's are dark
        (:func:`~grainflow.normalize.polarity_view`; needed with ``"given"``).
    flips : bool
        Average the probabilities over the four flips of :data:`FLIPS`
        (test-time augmentation, 4x the compute), as the ``infer`` rule's
        ``test_time_flips`` does on real stacks.

    Returns
    -------
    probs : ndarray of shape (N, C, H, W), float32
    """
    model = model.eval().to(device)
    dark = [None] * len(images) if particles_dark is None else list(particles_dark)
    if len(dark) != len(images):
        raise ValueError(f"got {len(images)} images but {len(dark)} particles_dark values")
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        x = np.stack(
            [
                polarity_view(
                    normalize_image(im, percentiles=norm_percentiles),
                    particles_dark=d,
                    polarity=polarity,
                )
                for im, d in zip(chunk, dark[start : start + batch_size])
            ]
        )
        x = torch.from_numpy(x[:, None].astype(np.float32)).to(device)
        total = 0
        for dims in FLIPS if flips else FLIPS[:1]:
            xi = torch.flip(x, dims) if dims else x
            p = torch.softmax(model(xi).float(), dim=1)
            total = total + (torch.flip(p, dims) if dims else p)
        out.append((total / (len(FLIPS) if flips else 1)).cpu().numpy())
    return np.concatenate(out) if out else np.empty((0,))


def foreground(probs: np.ndarray) -> np.ndarray:
    """The foreground-class probability (class 1) of (N, C, H, W) probabilities."""
    if probs.shape[1] < 2:
        raise ValueError(f"need at least two classes, got {probs.shape=}")
    return probs[:, 1]
