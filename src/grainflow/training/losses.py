"""Loss functions and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from grainflow.training.config import TrainConfig
from grainflow.training.distributed import sum_over_processes

__all__ = ["SEPARATION", "DiceCELoss", "make_loss", "lr_at"]

#: target code of a matrix pixel between two particles (:func:`~grainflow.training.data.separation_pixels`):
#: class 0, its cross-entropy weighted ``1 + separation_weight`` times
SEPARATION = 255


class DiceCELoss(nn.Module):
    """Class-weighted cross-entropy plus ``dice_weight * (1 - soft Dice)``.

    Cross-entropy is the weighted mean ``sum(w[t] * nll) / sum(w[t])`` (as
    ``torch.nn.CrossEntropyLoss``), reduced without atomics so that it is
    deterministic on CUDA too. Soft Dice is computed over the whole batch (sums
    over images and pixels, nnU-Net's batch Dice) for every class but class 0
    (background) and averaged. With ``dice_weight=0`` this is plain
    cross-entropy, for classification (logits (N, C), target (N,)).

    Both terms are ratios of sums over the batch. With ``distributed=True``
    (DistributedDataParallel training) the sums are added over the processes
    (:func:`sum_over_processes`), so that every process's loss is that of the
    global batch, not the mean of per-process losses (which differs for the
    weighted mean and for batch Dice).

    With ``separation_weight`` > 0, target pixels of value :data:`SEPARATION`
    are class 0 whose cross-entropy weighs ``1 + separation_weight`` times its
    class weight: the thin gaps of matrix between touching particles, which
    the network otherwise misses for their few pixels (the weight map of
    Ronneberger et al. 2015, at one level).

    Logits (N, C, H, W), target (N, H, W) integer; computed in float32.
    """

    def __init__(
        self,
        *,
        class_weights: Sequence[float] | None = None,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
        distributed: bool = False,
        separation_weight: float = 0.0,
    ):
        super().__init__()
        weights = (
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        )
        self.register_buffer("class_weights", weights)
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.distributed = distributed
        self.separation_weight = separation_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = logits.float(), target.long()
        if self.separation_weight:
            apart = target == SEPARATION
            target = target.masked_fill(apart, 0)
            nll = F.cross_entropy(logits, target, reduction="none")
            weight = 1 + self.separation_weight * apart.float()
            if self.class_weights is not None:
                weight = weight * self.class_weights[target]
            nll, weight = nll * weight, weight.sum()
        else:
            nll = F.cross_entropy(logits, target, weight=self.class_weights, reduction="none")
            weight = (
                nll.new_tensor(nll.numel())
                if self.class_weights is None
                else self.class_weights[target].sum()
            )
        # the sums the loss is made of: cross-entropy's numerator and denominator, then
        # sum(p t), sum(p), sum(t) of each foreground class for Dice
        sums = [nll.sum(), weight]
        if self.dice_weight:
            probs = logits.softmax(dim=1)
            for c in range(1, logits.shape[1]):
                p, t = probs[:, c], (target == c).to(probs.dtype)
                sums += [(p * t).sum(), p.sum(), t.sum()]
        sums = torch.stack(sums)
        if self.distributed:
            sums = sum_over_processes(sums)
        ce = sums[0] / sums[1]
        if not self.dice_weight:
            return ce
        overlap, predicted, true = sums[2:].view(-1, 3).unbind(dim=1)
        dice = (2 * overlap + self.smooth) / (predicted + true + self.smooth)
        return ce + self.dice_weight * (1 - dice.mean())

    def extra_repr(self) -> str:
        weights = (
            None
            if self.class_weights is None
            else [round(w, 3) for w in self.class_weights.tolist()]
        )
        return (
            f"class_weights={weights}, dice_weight={self.dice_weight}, smooth={self.smooth}, "
            f"distributed={self.distributed}, separation_weight={self.separation_weight}"
        )


def make_loss(
    config: TrainConfig, class_counts: np.ndarray | None = None, *, distributed: bool = False
) -> nn.Module:
    """The loss of ``config``, with class weights from ``class_counts`` when "auto".

    "dice_ce": :class:`DiceCELoss`; "ce": the same with ``dice_weight=0``.
    ``distributed``: the loss of the global batch of DistributedDataParallel
    training (see :class:`DiceCELoss`).
    """
    weights = None
    if isinstance(config.class_weights, tuple):
        weights = config.class_weights
    elif config.class_weights == "auto" and class_counts is not None:
        counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
        weights = tuple(float(w) for w in np.sqrt(counts[0] / counts))
    dice_weight = config.dice_weight if config.loss == "dice_ce" else 0.0
    return DiceCELoss(
        class_weights=weights,
        dice_weight=dice_weight,
        distributed=distributed,
        separation_weight=config.separation_weight,
    )


def lr_at(
    step: int, *, total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float = 0.0
) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then cosine.

    ``peak_lr * (step + 1) / (warmup_steps + 1)`` during the warm-up, ``peak_lr``
    at ``step == warmup_steps``, decaying along half a cosine to ``min_lr`` at
    ``step == total_steps`` (and ``min_lr`` after).

    Examples
    --------
    >>> lr_at(0, total_steps=10, warmup_steps=0, peak_lr=1.0)
    1.0
    >>> lr_at(5, total_steps=10, warmup_steps=0, peak_lr=1.0)
    0.5
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / (warmup_steps + 1)
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak_lr - min_lr)
