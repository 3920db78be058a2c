"""The training settings of one job, as a frozen dataclass."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from torch import nn

from grainflow.normalize import POLARITIES
from grainflow.runtime import AMP, CPU_AMP, DEVICES

__all__ = [
    "OPTIMIZERS",
    "LOSSES",
    "TRANSFER",
    "RUN_ONLY_FIELDS",
    "MODEL_KEYS",
    "JOB_KEYS",
    "TrainConfig",
    "arch_settings",
    "TrainResult",
]


OPTIMIZERS = ("adamw", "adam")

LOSSES = ("dice_ce", "ce")


TRANSFER = ("full", "frozen", "finetune")

# Config fields that do not change the result: a last.pt written with other values is resumed.
RUN_ONLY_FIELDS = ("threads", "num_workers", "progress")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained (one config block per architecture).

    Build it from the config's mapping with :meth:`from_mapping`, which
    rejects unknown keys; every value is checked in ``__post_init__``.
    """

    # schedule
    epochs: int = 20  # passes over the training images
    batch_size: int = 8  # images per optimiser step
    optimizer: str = "adamw"  # "adamw" (U-Nets) or "adam" (the teaching example's DiffractionCNN)
    lr: float = 1e-3  # peak learning rate, reached at the end of the warm-up
    min_lr: float = 1e-6  # learning rate at the end of the cosine decay
    warmup_epochs: float = 1.0  # length of the linear warm-up, in epochs (0: none)
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay (Adam: L2 penalty)
    grad_clip: float = 1.0  # largest global gradient norm (0: no clipping)
    # loss
    loss: str = "dice_ce"  # "dice_ce" (segmentation) or "ce" (classification)
    dice_weight: float = 1.0  # weight of (1 - soft Dice) beside cross-entropy
    class_weights: str | tuple[float, ...] = "auto"  # "auto": sqrt(f_0 / f_c); "none"; or a list
    separation_weight: float = 0.0  # phases: extra weight of matrix gaps between particles (0: off)
    separation_px: int = 3  # phases: a gap pixel has two particles within this many pixels
    # data
    flips: bool = True  # online random flips and 90° rotations of each training image
    norm_percentiles: tuple[float, float] = (1.0, 99.0)  # per-image percentiles mapped to 0 and 1
    polarity: str = "learned"  # phases: "given" shows particles bright (dark ones inverted)
    # transfer learning (resnet18 only)
    transfer: str = "full"  # "full", "frozen" (head only) or "finetune" (last blocks + head)
    finetune_lr: float = 1e-5  # learning rate of the unfrozen backbone blocks with "finetune"
    finetune_blocks: int = 1  # residual stages unfrozen by "finetune", from the last
    pretrained: str = ""  # local file with weights to start from ("" = random init)
    # hardware
    device: str = "auto"  # "auto" (CUDA when present), "cuda" or "cpu"
    amp: str = "bf16"  # CUDA autocast: "bf16", "fp16" (with gradient scaling) or "off"
    cpu_amp: str = "off"  # CPU autocast: "bf16", "auto" (bf16 where the CPU has it natively), "off"
    channels_last: bool = True  # NHWC memory layout (tensor cores on CUDA, oneDNN on the CPU)
    tf32: bool = True  # TF32 for the float32 matmuls/convolutions left outside autocast, CUDA
    compile: bool = False  # torch.compile the model (CUDA or CPU; the first epoch compiles)
    threads: int = 1  # CPU threads for torch (Snakemake's threads)
    num_workers: int = 0  # DataLoader worker processes (0: load in the main process)
    deterministic: bool = False  # bit-for-bit reproducible on the CPU; see runtime.runtime
    seed: int = 0  # seeds weights, data order, flips and dropout
    progress: bool = True  # a line a minute within each epoch: batches, loss, images/s, time left

    def __post_init__(self):
        ints = dict(
            epochs=1,
            batch_size=1,
            threads=1,
            num_workers=0,
            finetune_blocks=1,
            seed=0,
            separation_px=1,
        )
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(
                    f"training.{name} must be an integer >= {low}, got {name}={value!r}"
                )
        for name in (
            "lr",
            "min_lr",
            "warmup_epochs",
            "weight_decay",
            "grad_clip",
            "dice_weight",
            "separation_weight",
            "finetune_lr",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"training.{name} must be a number >= 0, got {name}={value!r}")
        if not self.lr > 0:
            raise ValueError(f"training.lr must be > 0, got lr={self.lr!r}")
        if self.min_lr > self.lr:
            raise ValueError(f"training.min_lr must not exceed lr, got {self.min_lr=} > {self.lr=}")
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("loss", LOSSES),
            ("device", DEVICES),
            ("amp", AMP),
            ("cpu_amp", CPU_AMP),
            ("transfer", TRANSFER),
            ("polarity", POLARITIES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"training.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        cw = self.class_weights
        if isinstance(cw, str):
            if cw not in ("auto", "none"):
                raise ValueError(
                    f"training.class_weights must be 'auto', 'none' or a list, got {cw!r}"
                )
        else:
            cw = tuple(float(w) for w in cw)
            if not cw or any(not w > 0 for w in cw):
                raise ValueError(f"training.class_weights must be positive, got class_weights={cw}")
            object.__setattr__(self, "class_weights", cw)
        lo, hi = (float(p) for p in self.norm_percentiles)
        if not 0 <= lo < hi <= 100:
            raise ValueError(
                f"training.norm_percentiles must be (low, high) with 0 <= low < high <= 100, "
                f"got {self.norm_percentiles!r}"
            )
        object.__setattr__(self, "norm_percentiles", (lo, hi))

    @classmethod
    def from_mapping(cls, values: Mapping | None = None, **overrides) -> TrainConfig:
        """Build from a config mapping (e.g. ``config["training"]["unet"]``) plus overrides."""
        values = {**(values or {}), **overrides}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training keys {unknown}; known keys: {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)

    def to_dict(self) -> dict:
        """Plain dict (tuples kept), for checkpoints."""
        return dataclasses.asdict(self)


MODEL_KEYS = ("model", "model_kwargs", "tasks")

# Keys of config["training"] that are not TrainConfig fields: the architectures, and the GPUs
# that a training job asks for (the rule's resources; see world_size_for).
JOB_KEYS = ("archs", "gpus_per_job")


def arch_settings(
    arch: Mapping, *, shared: Mapping | None = None, **overrides
) -> tuple[str, dict, TrainConfig]:
    """Model name, model arguments and :class:`TrainConfig` of one architecture block.

    Parameters
    ----------
    arch : mapping
        One entry of ``config["training"]["archs"]``: ``model`` (registry name),
        ``model_kwargs``, optionally ``tasks``, and any :class:`TrainConfig` field.
    shared : mapping
        Settings common to all architectures (``config["training"]``: device,
        deterministic, …; its ``archs`` and ``gpus_per_job`` are ignored);
        ``arch`` overrides them.
    **overrides
        Values from the job itself, e.g. ``threads=snakemake.threads, seed=...``.

    Examples
    --------
    >>> name, kwargs, cfg = arch_settings({"model": "unet", "model_kwargs": {"depth": 3},
    ...                                   "epochs": 5}, shared={"device": "cpu"}, threads=2)
    >>> name, kwargs, cfg.epochs, cfg.device, cfg.threads
    ('unet', {'depth': 3}, 5, 'cpu', 2)
    """
    if "model" not in arch:
        raise ValueError(f"an architecture block needs 'model' (a registry name), got {dict(arch)}")
    values = {**(shared or {}), **{k: v for k, v in arch.items() if k not in MODEL_KEYS}}
    for key in JOB_KEYS:
        values.pop(key, None)
    return (
        str(arch["model"]),
        dict(arch.get("model_kwargs") or {}),
        TrainConfig.from_mapping(values, **overrides),
    )


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    best_epoch: int  # the epoch whose weights best.pt keeps (train's select: best or last)
    best_score: float  # its validation score
    history: list[dict]
    model: nn.Module  # with those weights, on the CPU, in eval mode
    resumed_from_epoch: int  # 0 for a fresh run
