"""ResNet-18 for single-channel diffraction patterns; the teaching example's transfer strategies.

torchvision's ResNet-18 (same layers, same state-dict keys) with a one-channel first
convolution and a 3-class head; pretrained weights come only from local files
(:func:`grainflow.checkpoint.load_pretrained`), nothing is downloaded.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

__all__ = ["ResNet18", "STRATEGIES", "set_transfer_strategy"]

STRATEGIES = ("frozen", "finetune", "full")
STAGES = ("layer1", "layer2", "layer3", "layer4")
STEM = ("conv1", "bn1")


class ResNet18(ResNet):
    """torchvision ResNet-18 with ``in_channels`` input channels and ``num_classes`` outputs.

    Input (N, in_channels, H, W) with H, W >= 32 (five halvings; 64×64 patterns
    reach layer4 at 2×2); output logits (N, num_classes).

    Modules named in ``frozen`` (set by :func:`set_transfer_strategy`) stay in
    eval mode when the model is put in training mode, so that a frozen
    backbone's batch-norm statistics do not drift.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self.hparams = dict(in_channels=in_channels, num_classes=num_classes)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.frozen: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> logits (N, num_classes)."""
        if x.ndim != 4 or min(x.shape[-2:]) < 32:
            raise ValueError(f"ResNet18 input must be (N, C, H>=32, W>=32), got {tuple(x.shape)}")
        return super().forward(x)

    def train(self, mode: bool = True) -> ResNet18:
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self


def set_transfer_strategy(
    model: ResNet18,
    strategy: str,
    *,
    lr: float = 1e-3,
    finetune_lr: float = 1e-5,
    blocks: int = 1,
) -> list[dict]:
    """Choose which parameters train; return the optimiser's parameter groups.

    Parameters
    ----------
    model : ResNet18
    strategy : {"frozen", "finetune", "full"}
    lr : float
        Learning rate of the head (and of everything with "full").
    finetune_lr : float
        Learning rate of the unfrozen residual stages with "finetune" (the
        teaching example's 1e-5).
    blocks : int
        Residual stages unfrozen by "finetune", counted from the last (1–4).

    Returns
    -------
    groups : list of dict
        ``[{"name", "params", "lr"}, ...]`` for ``torch.optim``; only parameters
        that train appear. Frozen parameters get ``requires_grad = False`` and
        their modules stay in eval mode (see :class:`ResNet18`).

    Notes
    -----
    The strategies::

        frozen    only the head (fc) trains; the backbone, its batch-norm statistics
                  included, stays as loaded
        finetune  the last ``blocks`` residual stages (layer4, then layer3, …) train at
                  a low learning rate (``finetune_lr``) and the new head at ``lr``
        full      everything trains at ``lr``
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy=}")
    if not 1 <= blocks <= len(STAGES):
        raise ValueError(f"blocks must be 1 to {len(STAGES)}, got {blocks=}")
    if strategy == "full":
        trainable, frozen = [*STEM, *STAGES], ()
    elif strategy == "frozen":
        trainable, frozen = [], (*STEM, *STAGES)
    else:
        trainable, frozen = list(STAGES[-blocks:]), (*STEM, *STAGES[:-blocks])
    for name in frozen:
        for p in getattr(model, name).parameters():
            p.requires_grad_(False)
    for name in (*trainable, "fc"):
        for p in getattr(model, name).parameters():
            p.requires_grad_(True)
    model.frozen = tuple(frozen)
    model.train(model.training)  # re-apply eval mode to the frozen modules

    backbone = [p for name in trainable for p in getattr(model, name).parameters()]
    head = list(model.fc.parameters())
    if strategy == "full":
        return [{"name": "all", "params": backbone + head, "lr": lr}]
    if strategy == "frozen":
        return [{"name": "head", "params": head, "lr": lr}]
    return [
        {"name": "backbone", "params": backbone, "lr": finetune_lr},
        {"name": "head", "params": head, "lr": lr},
    ]
