"""ResNet-18 for single-channel diffraction patterns, and the course's transfer strategies.

The model is torchvision's ResNet-18 (``resnet18(weights=None)``: same layers,
same state-dict keys) with a one-channel first convolution and a 3-class
head. Pretrained weights are only ever read from a local file
(:func:`load_pretrained`); nothing is downloaded.

Strategies (:func:`set_transfer_strategy`)::

    frozen    only the head (fc) trains; the backbone, its batch-norm statistics
              included, stays as loaded
    finetune  the last ``blocks`` residual stages (layer4, then layer3, …) train at
              a low learning rate (1e-5) and the new head at the normal one
    full      everything trains at the normal learning rate
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

__all__ = ["ResNet18", "STRATEGIES", "set_transfer_strategy", "load_pretrained"]

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

    def train(self, mode: bool = True) -> "ResNet18":
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
        course's 1e-5).
    blocks : int
        Residual stages unfrozen by "finetune", counted from the last (1–4).

    Returns
    -------
    groups : list of dict
        ``[{"name", "params", "lr"}, ...]`` for ``torch.optim``; only parameters
        that train appear. Frozen parameters get ``requires_grad = False`` and
        their modules stay in eval mode (see :class:`ResNet18`).
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


def _strip_prefixes(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def load_pretrained(model: ResNet18, path: str | os.PathLike) -> dict:
    """Load backbone weights from a local file into ``model`` (never downloads).

    Accepted files: a torchvision ResNet-18 state dict (e.g. ImageNet weights
    saved once with ``torch.save(resnet18(weights=...).state_dict(), path)``)
    or a grainflow checkpoint of a ``resnet18`` model. Read with
    ``weights_only=True``. RGB first-layer weights (64, 3, 7, 7) are summed
    over the colour channels into (64, 1, 7, 7), so that a grey image gives
    the response of the same grey RGB image. The head is loaded only when its
    shape matches (same number of classes); otherwise it stays freshly
    initialised.

    Returns
    -------
    report : dict
        ``{"file", "loaded": int, "head": "loaded" | "new", "conv1": "copied" | "summed RGB"}``
    """
    from grainflow.checkpoint import read_torch_file

    obj = read_torch_file(path)
    state = obj.get("model_state", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path} holds no ResNet-18 state dict; save one with "
            "torch.save(model.state_dict(), path)"
        )
    state = _strip_prefixes(state)
    own = model.state_dict()
    report = {"file": str(path), "conv1": "copied", "head": "new"}

    w = state.get("conv1.weight")
    want = own["conv1.weight"].shape
    if w is not None and w.shape != want:
        if w.ndim == 4 and w.shape[1] == 3 and want[1] == 1 and w.shape[0] == want[0]:
            state["conv1.weight"] = w.sum(dim=1, keepdim=True)
            report["conv1"] = "summed RGB"
        else:
            raise ValueError(
                f"{path}: conv1.weight has shape {tuple(w.shape)}, the model needs {tuple(want)}"
            )
    head = {k: v for k, v in state.items() if k.startswith("fc.")}
    if head and all(k in own and own[k].shape == v.shape for k, v in head.items()):
        report["head"] = "loaded"
    else:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    backbone_keys = {k for k in own if not k.startswith("fc.")}
    missing = sorted(backbone_keys - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not hold ResNet-18 weights: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]} (of {len(missing)}, "
            f"{len(unexpected)}, {len(wrong)}); give a torchvision resnet18 state dict"
        )
    model.load_state_dict(state, strict=False)
    report["loaded"] = len(state)
    return report
