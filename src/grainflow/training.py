"""Training of grainflow's networks: data, loss, schedule, loop, resume.

One call, :func:`train_fold`, trains the model of one cross-validation fold
from the split manifest; :func:`train` is the same loop on any two datasets.

What the loop does
------------------
- **Data.** :class:`grainflow.datasets.MicrographDataset` reads the images of
  the manifest rows through :mod:`grainflow.io` and normalises each image by
  its own percentiles (:func:`grainflow.normalize.normalize_image`, as inference
  does). The model of fold ``k`` trains on every row whose fold is not ``k``
  (originals and their offline augmented copies) and is validated on the
  *original* images of fold ``k``.
- **Online augmentation.** Each training image gets one of the 8 flips/90°
  rotations of the square (4 when the image is not square), drawn from
  ``(seed, epoch, index)`` in the DataLoader workers (:class:`OnlineFlips`),
  on top of the offline copies.
- **Loss.** Class-weighted cross-entropy plus soft Dice of the foreground
  classes (:class:`DiceCELoss`); with ``class_weights: auto`` the weight of
  class ``c`` is ``sqrt(f_0 / f_c)`` for training-set pixel frequencies ``f``,
  about 5 for boundaries that cover 4 % of the pixels.
- **Optimiser.** AdamW (or Adam) with linear warm-up and cosine decay per
  optimiser step (:func:`lr_at`).
- **Hardware.** ``device: auto`` picks CUDA when present. On CUDA: bf16
  autocast (fp16 with gradient scaling on request), ``channels_last``, TF32
  for float32 work and cuDNN autotuning, optionally ``torch.compile``, and a
  DataLoader with pinned memory, workers and prefetching. On the CPU:
  ``torch.set_num_threads(threads)`` and optionally ``torch.compile``
  (worth it only for runs much longer than its compile of minutes). Every
  choice is logged.
- **Determinism.** Weights, data order, flips and dropout derive from
  ``seed`` and the epoch (:func:`grainflow.seeds.derive_seed`), never from
  worker count or timing. With ``deterministic: true`` the CPU run is
  bit-for-bit reproducible (same machine, torch build and thread count; a
  different thread count may change the last bits of reductions).
  On CUDA, ``deterministic: true`` sets ``CUBLAS_WORKSPACE_CONFIG``, turns on
  ``torch.use_deterministic_algorithms`` (warn-only there, so that an op
  without a deterministic CUDA kernel warns instead of failing a long job),
  cuDNN's deterministic kernels and no autotuning; the losses avoid the
  atomics of ``nll_loss2d``. Repeats and resumed runs then agree bit for bit
  on the same GPU model, driver and torch build (checked on an H100, about
  10 % slower). Not deterministic on CUDA: runs with ``deterministic: false``
  (cuDNN autotuning may pick other kernels run to run), different GPU models,
  drivers or torch versions, ``compile`` across versions, and any GPU run
  compared with a CPU run (bf16 autocast and TF32 round differently).
- **Resume.** ``last.pt`` is written atomically after every epoch with the
  model, optimiser, scheduler, RNG states, history and the best weights so
  far. A job killed at any moment restarts from it and, because the data
  order and augmentation of epoch ``e`` depend only on ``(seed, e)`` and the
  global generator is reseeded each epoch, ends with the same weights as an
  uninterrupted run. ``last.pt`` is reused only when its fingerprint (model,
  result-affecting config, training and validation image ids) matches.
- **Several GPUs.** ``train(..., world_size=N)`` trains with N processes, one
  per GPU, under :class:`~torch.nn.parallel.DistributedDataParallel` (backend
  NCCL; gloo on the CPU, for tests). The configured ``batch_size`` stays the
  *global* batch: each process takes ``batch_size / N`` images of every batch
  of the one-process order (:class:`EpochSampler` split like
  :class:`~torch.utils.data.distributed.DistributedSampler`); BatchNorm
  becomes :class:`~torch.nn.SyncBatchNorm` (statistics of the global batch;
  CUDA only, so on the CPU the model must use group norm); the loss sums its
  counts over the processes (:class:`DiceCELoss` with ``distributed=True``), so
  that weighted cross-entropy and batch Dice are those of the global batch.
  The loss curve is then that of one process up to float rounding, and
  ``best.pt``, ``last.pt`` and ``history.tsv`` have the same contents. Only
  process 0 validates and writes; all processes resume from ``last.pt``. The
  processes are forked (:func:`torch.multiprocessing.start_processes`), so the
  caller's functions need not be picklable and a Snakemake script is not
  re-run; CUDA must not be initialised before (:func:`world_size_for` counts
  GPUs through NVML). World size 1 is the plain one-process loop.
- **Outputs.** ``best.pt`` (weights of the epoch with the highest validation
  score, as computed by the injected ``score_fn``) and ``history.tsv`` are
  written only when training has finished, atomically.

History columns (one row per epoch): ``epoch, step, lr`` (learning rate of
the epoch's last step), ``train_loss, val_loss, val_<metric>...`` (metrics of
``metrics_fn``), ``score`` (``score_fn`` of those), ``images_per_s``
(training images per second, excluding validation), ``peak_memory_mb``
(CUDA: peak allocated tensor memory during the epoch; CPU: peak resident
memory of the process so far), ``epoch_s`` (wall time of the epoch).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from grainflow.checkpoint import (
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    set_rng_state,
    sha256_file,
    unwrap_model,
)
from grainflow.datasets import Target, fold_datasets
from grainflow.io import atomic_path
from grainflow.seeds import derive_seed

__all__ = [
    "TrainConfig",
    "TrainResult",
    "DiceCELoss",
    "make_loss",
    "lr_at",
    "dihedral",
    "OnlineFlips",
    "EpochSampler",
    "pixel_metrics",
    "default_score",
    "Runtime",
    "runtime",
    "train_one_epoch",
    "evaluate",
    "train",
    "train_fold",
    "arch_settings",
    "world_size_for",
]

LOG = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adam")
LOSSES = ("dice_ce", "ce")
DEVICES = ("auto", "cpu", "cuda")
AMP = ("bf16", "fp16", "off")
TRANSFER = ("full", "frozen", "finetune")
# Config fields that do not change the result: a last.pt written with other values is resumed.
RUN_ONLY_FIELDS = ("threads", "num_workers", "progress")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained (one config block per architecture).

    Build it from the config's mapping with :meth:`from_mapping`, which
    rejects unknown keys; every value is checked in ``__post_init__``.
    """

    # schedule
    epochs: int = 20  # passes over the training images
    batch_size: int = 8  # images per optimiser step
    optimizer: str = "adamw"  # "adamw" (U-Nets) or "adam" (the course's DiffractionCNN)
    lr: float = 1e-3  # peak learning rate, reached at the end of the warm-up
    min_lr: float = 1e-6  # learning rate at the end of the cosine decay
    warmup_epochs: float = 1.0  # length of the linear warm-up, in epochs (0: none)
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay (Adam: L2 penalty)
    grad_clip: float = 1.0  # largest global gradient norm (0: no clipping)
    # loss
    loss: str = "dice_ce"  # "dice_ce" (segmentation) or "ce" (classification)
    dice_weight: float = 1.0  # weight of (1 - soft Dice) beside cross-entropy
    class_weights: str | tuple[float, ...] = "auto"  # "auto": sqrt(f_0 / f_c); "none"; or a list
    # data
    flips: bool = True  # online random flips and 90° rotations of each training image
    norm_percentiles: tuple[float, float] = (1.0, 99.0)  # per-image percentiles mapped to 0 and 1
    # transfer learning (resnet18 only)
    transfer: str = "full"  # "full", "frozen" (head only) or "finetune" (last blocks + head)
    finetune_lr: float = 1e-5  # learning rate of the unfrozen backbone blocks with "finetune"
    finetune_blocks: int = 1  # residual stages unfrozen by "finetune", from the last
    pretrained: str = ""  # local file with weights to start from ("" = random init)
    # hardware
    device: str = "auto"  # "auto" (CUDA when present), "cuda" or "cpu"
    amp: str = "bf16"  # CUDA autocast: "bf16", "fp16" (with gradient scaling) or "off"
    channels_last: bool = True  # NHWC memory layout on CUDA (tensor-core convolutions)
    tf32: bool = True  # TF32 for the float32 matmuls/convolutions left outside autocast, CUDA
    compile: bool = False  # torch.compile the model (CUDA or CPU; the first epoch compiles)
    threads: int = 1  # CPU threads for torch (Snakemake's threads)
    num_workers: int = 0  # DataLoader worker processes (0: load in the main process)
    deterministic: bool = False  # bit-for-bit reproducible on the CPU; see the module notes
    seed: int = 0  # seeds weights, data order, flips and dropout
    progress: bool = True  # tqdm progress bar (loss, images/s) on stderr

    def __post_init__(self):
        ints = dict(epochs=1, batch_size=1, threads=1, num_workers=0, finetune_blocks=1, seed=0)
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"training.{name} must be an integer >= {low}, got {name}={value!r}")
        for name in ("lr", "min_lr", "warmup_epochs", "weight_decay", "grad_clip", "dice_weight",
                     "finetune_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"training.{name} must be a number >= 0, got {name}={value!r}")
        if not self.lr > 0:
            raise ValueError(f"training.lr must be > 0, got lr={self.lr!r}")
        if self.min_lr > self.lr:
            raise ValueError(f"training.min_lr must not exceed lr, got {self.min_lr=} > {self.lr=}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("loss", LOSSES), ("device", DEVICES),
                              ("amp", AMP), ("transfer", TRANSFER)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"training.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        cw = self.class_weights
        if isinstance(cw, str):
            if cw not in ("auto", "none"):
                raise ValueError(f"training.class_weights must be 'auto', 'none' or a list, got {cw!r}")
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
    def from_mapping(cls, values: Mapping | None = None, **overrides) -> "TrainConfig":
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


def arch_settings(arch: Mapping, *, shared: Mapping | None = None,
                  **overrides) -> tuple[str, dict, TrainConfig]:
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
    return str(arch["model"]), dict(arch.get("model_kwargs") or {}), TrainConfig.from_mapping(
        values, **overrides)


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    best_epoch: int
    best_score: float
    history: list[dict]
    model: nn.Module  # with the best weights, on the CPU, in eval mode
    resumed_from_epoch: int  # 0 for a fresh run


# --------------------------------------------------------------------------- sampling


class EpochSampler(Sampler[tuple[int, int]]):
    """Keys ``(epoch, index)`` in an order that depends only on ``(seed, epoch)``.

    The epoch travels with each index so that :class:`OnlineFlips` can draw a
    sample's augmentation in a DataLoader worker from ``(seed, epoch, index)``
    alone, whatever the number of workers.

    With ``num_replicas > 1`` (distributed training) process ``rank`` gets its
    share of that one order, split as :class:`DistributedSampler` splits a
    dataset: padded with the first keys to a multiple of ``num_replicas``, then
    every ``num_replicas``-th key from position ``rank``. Batch ``b`` of the
    processes (``batch_size / num_replicas`` keys each) together hold the keys
    of batch ``b`` of one process with ``batch_size``.
    """

    def __init__(self, n: int, *, seed: int, num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas), got {rank=}, {num_replicas=}")
        self.n, self.seed, self.epoch = n, seed, 0
        self.num_replicas, self.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "order", self.epoch))
        keys = [(self.epoch, i) for i in torch.randperm(self.n, generator=g).tolist()]
        if self.num_replicas > 1:
            share = DistributedSampler(keys, num_replicas=self.num_replicas, rank=self.rank,
                                       shuffle=False)
            keys = [keys[i] for i in share]
        return iter(keys)

    def __len__(self) -> int:
        return math.ceil(self.n / self.num_replicas)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # set by the DataLoader from its seeded generator
    np.random.seed(seed)
    random.seed(seed)


# --------------------------------------------------------------------------- loss and schedule


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
    (:func:`_sum_over_processes`), so that every process's loss is that of the
    global batch, not the mean of per-process losses (which differs for the
    weighted mean and for batch Dice).

    Logits (N, C, H, W), target (N, H, W) integer; computed in float32.
    """

    def __init__(self, *, class_weights: Sequence[float] | None = None, dice_weight: float = 1.0,
                 smooth: float = 1.0, distributed: bool = False):
        super().__init__()
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights)
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.distributed = distributed

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = logits.float(), target.long()
        nll = F.cross_entropy(logits, target, weight=self.class_weights, reduction="none")
        # the sums the loss is made of: cross-entropy's numerator and denominator, then
        # sum(p t), sum(p), sum(t) of each foreground class for Dice
        weight = (nll.new_tensor(nll.numel()) if self.class_weights is None
                  else self.class_weights[target].sum())
        sums = [nll.sum(), weight]
        if self.dice_weight:
            probs = logits.softmax(dim=1)
            for c in range(1, logits.shape[1]):
                p, t = probs[:, c], (target == c).to(probs.dtype)
                sums += [(p * t).sum(), p.sum(), t.sum()]
        sums = torch.stack(sums)
        if self.distributed:
            sums = _sum_over_processes(sums)
        ce = sums[0] / sums[1]
        if not self.dice_weight:
            return ce
        overlap, predicted, true = sums[2:].view(-1, 3).unbind(dim=1)
        dice = (2 * overlap + self.smooth) / (predicted + true + self.smooth)
        return ce + self.dice_weight * (1 - dice.mean())

    def extra_repr(self) -> str:
        weights = None if self.class_weights is None else [round(w, 3) for w in self.class_weights.tolist()]
        return (f"class_weights={weights}, dice_weight={self.dice_weight}, smooth={self.smooth}, "
                f"distributed={self.distributed}")


def _sum_over_processes(local: torch.Tensor) -> torch.Tensor:
    """``local`` summed over the processes of the default group, for a loss of the global batch.

    The value is the all-reduced sum. The gradient flows through this
    process's own ``local`` only (the other processes' shares enter as
    constants) and is multiplied by the world size: DistributedDataParallel
    averages the processes' gradients, and the average of ``W`` times each
    share is their sum, the gradient of the global batch's loss.
    """
    total = local.detach().clone()
    dist.all_reduce(total)
    return total + (local - local.detach()) * dist.get_world_size()


def make_loss(config: TrainConfig, class_counts: np.ndarray | None = None, *,
              distributed: bool = False) -> nn.Module:
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
    return DiceCELoss(class_weights=weights, dice_weight=dice_weight, distributed=distributed)


def lr_at(step: int, *, total_steps: int, warmup_steps: int, peak_lr: float,
          min_lr: float = 0.0) -> float:
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


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element ``k`` (0–7) of the square's symmetry group, on the last two axes.

    ``k`` 0–3: rotation by ``k`` × 90° counter-clockwise; 4–7: left-right flip,
    then that rotation. Returns a new contiguous tensor.
    """
    if k >= 4:
        x = x.flip(-1)
    return (x.rot90(k % 4, dims=(-2, -1)) if k % 4 else x).contiguous()


class OnlineFlips(Dataset):
    """Each training item under a random flip/90° rotation drawn from ``(seed, epoch, index)``.

    Items are asked for by key ``(epoch, index)`` (see :class:`EpochSampler`).
    A label map (H, W) is transformed with its image (C, H, W); a class index
    is left as it is. Square images draw one of the 8 elements of the
    dihedral group (:func:`dihedral`), others one of 4 (identity, 180°, and
    the two flips), which keep the shape. The work happens in the DataLoader
    workers, on the CPU, and is the same for any number of workers.
    """

    def __init__(self, dataset: Dataset, *, seed: int, enabled: bool = True):
        self.dataset, self.seed, self.enabled = dataset, seed, enabled

    def __len__(self) -> int:
        return len(self.dataset)

    def element(self, epoch: int, index: int, *, square: bool) -> int:
        """The dihedral element (0–7) that ``index`` gets in ``epoch``."""
        elements = (0, 1, 2, 3, 4, 5, 6, 7) if square else (0, 2, 4, 6)
        return elements[derive_seed(self.seed, "flips", epoch, index) % len(elements)]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        image, target = self.dataset[index]
        if not self.enabled:
            return image, target
        k = self.element(epoch, index, square=image.shape[-1] == image.shape[-2])
        target = dihedral(target, k) if target.ndim >= 2 else target
        return dihedral(image, k), target


def pixel_metrics(target: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Fallback validation metrics: accuracy, and for label maps foreground IoU and F1.

    target, pred : ndarray of shape (N, H, W) (class 1 is the foreground) or (N,)
        Truth first, as everywhere in grainflow (and scikit-learn).
    Counts are summed over all images before the scores are computed.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    scores = {"accuracy": float(np.mean(pred == target))}
    if pred.ndim >= 2:
        p, t = pred == 1, target == 1
        tp, fp, fn = int(np.sum(p & t)), int(np.sum(p & ~t)), int(np.sum(~p & t))
        scores["iou"] = tp / (tp + fp + fn) if tp + fp + fn else 1.0
        scores["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return scores


def default_score(metrics: Mapping[str, float]) -> float:
    """Model-selection score: ``f1`` when present, else ``accuracy``."""
    return float(metrics["f1"] if "f1" in metrics else metrics["accuracy"])


# --------------------------------------------------------------------------- runtime


@dataclass
class Runtime:
    """Where and how the loop computes."""

    device: torch.device
    amp_dtype: torch.dtype | None = None  # autocast dtype (CUDA only)
    channels_last: bool = False
    scaler: torch.amp.GradScaler | None = None  # fp16 only

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        non_blocking = self.device.type == "cuda"
        if self.channels_last and x.ndim == 4:
            return x.to(self.device, non_blocking=non_blocking, memory_format=torch.channels_last)
        return x.to(self.device, non_blocking=non_blocking)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("training.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return torch.device(name)


def _tf32_flags() -> tuple:
    """Current TF32 settings (matmul, cuDNN conv), in whichever API this torch has."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        return matmul.fp32_precision, conv.fp32_precision
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _set_tf32(flags: tuple | bool) -> None:
    """Restore flags from :func:`_tf32_flags`, or switch TF32 on (True) or off (False)."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    new_api = hasattr(matmul, "fp32_precision")
    if isinstance(flags, bool):
        flags = (("tf32" if flags else "ieee") if new_api else flags,) * 2
    if new_api:
        matmul.fp32_precision, conv.fp32_precision = flags
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@contextlib.contextmanager
def runtime(config: TrainConfig) -> Iterator[Runtime]:
    """Set threads, determinism, TF32 and autotuning for ``config``; restore them on exit."""
    device = _resolve_device(config.device)
    cuda = device.type == "cuda"
    if cuda:  # this process's GPU (distributed training sets one per process)
        device = torch.device("cuda", torch.cuda.current_device())
    saved = dict(
        threads=torch.get_num_threads(),
        deterministic=torch.are_deterministic_algorithms_enabled(),
        warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn_deterministic=torch.backends.cudnn.deterministic,
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        tf32=_tf32_flags(),
    )
    try:
        amp_dtype = None
        if cuda:
            if config.deterministic:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[config.amp]
            if amp_dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
                LOG.warning("this GPU has no bf16; using fp16 autocast with gradient scaling")
                amp_dtype = torch.float16
            _set_tf32(bool(config.tf32))
            torch.backends.cudnn.benchmark = not config.deterministic
            LOG.info("device %s (%s): autocast %s, channels_last %s, TF32 %s, cudnn.benchmark %s, "
                     "compile %s", device, torch.cuda.get_device_name(device),
                     amp_dtype, config.channels_last, config.tf32,
                     torch.backends.cudnn.benchmark, config.compile)
        else:
            torch.set_num_threads(config.threads)
            LOG.info("device cpu: %d threads, float32 (autocast, channels_last and TF32 apply to "
                     "CUDA only), compile %s", torch.get_num_threads(), config.compile)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=cuda)
            torch.backends.cudnn.deterministic = True
            LOG.info("deterministic algorithms on%s", " (warn only on CUDA)" if cuda else "")
        scaler = torch.amp.GradScaler("cuda") if amp_dtype is torch.float16 else None
        yield Runtime(device=device, amp_dtype=amp_dtype,
                      channels_last=cuda and config.channels_last, scaler=scaler)
    finally:
        torch.set_num_threads(saved["threads"])
        torch.use_deterministic_algorithms(saved["deterministic"], warn_only=saved["warn_only"])
        torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]
        torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
        _set_tf32(saved["tf32"])


# --------------------------------------------------------------------------- loop


def train_one_epoch(model: nn.Module, loader: DataLoader, *, optimizer: torch.optim.Optimizer,
                    scheduler, loss_fn: nn.Module, rt: Runtime, grad_clip: float = 0.0,
                    description: str = "train", progress: bool = True) -> dict[str, float]:
    """One pass over ``loader``; one optimiser and scheduler step per batch.

    Returns ``{"loss": mean training loss, "lr": learning rate of the last step,
    "images": images seen, "seconds": wall time}``.
    """
    model.train()
    total = torch.zeros((), device=rt.device)
    seen, lr = 0, float("nan")
    start = time.perf_counter()
    bar = tqdm(loader, desc=description, file=sys.stderr, disable=not progress, unit="batch",
               leave=False, dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0)
    for i, (images, targets) in enumerate(bar):
        images, targets = rt.to_device(images), rt.to_device(targets).long()
        with rt.autocast():
            logits = model(images)
        loss = loss_fn(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        if rt.scaler is not None:
            rt.scaler.scale(loss).backward()
            rt.scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        lr = optimizer.param_groups[-1]["lr"]
        if rt.scaler is not None:
            rt.scaler.step(optimizer)
            rt.scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        total += loss.detach() * images.shape[0]
        seen += images.shape[0]
        if progress and (i % 10 == 0 or i == len(loader) - 1):
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / max(elapsed, 1e-9):.1f}")
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)
    return {"loss": float(total) / max(seen, 1), "lr": lr, "images": seen,
            "seconds": time.perf_counter() - start}


def evaluate(model: nn.Module, loader: DataLoader, *, loss_fn: nn.Module, rt: Runtime,
             metrics_fn: Callable[[np.ndarray, np.ndarray], Mapping[str, float]] = pixel_metrics,
             ) -> dict[str, float]:
    """Validation loss and ``metrics_fn(targets, predictions)`` over ``loader``.

    Predictions are the arg-max class, uint8 arrays of shape (N, H, W) for
    label maps or (N,) for class targets, gathered on the CPU. Runs under
    ``torch.inference_mode`` in eval mode.
    """
    model.eval()
    total, seen = 0.0, 0
    preds, truths = [], []
    with torch.inference_mode():
        for images, targets in loader:
            images, targets = rt.to_device(images), rt.to_device(targets).long()
            with rt.autocast():
                logits = model(images)
            total += float(loss_fn(logits.float(), targets)) * images.shape[0]
            seen += images.shape[0]
            preds.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
            truths.append(targets.cpu().numpy())
    metrics = dict(metrics_fn(np.concatenate(truths), np.concatenate(preds)))
    return {"loss": total / max(seen, 1), **{k: float(v) for k, v in metrics.items()}}


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _class_counts(dataset: Dataset, num_classes: int) -> np.ndarray:
    """Pixels (label maps) or images (class targets) per class in ``dataset``."""
    if hasattr(dataset, "class_counts"):
        return np.asarray(dataset.class_counts(num_classes))
    counts = np.zeros(num_classes, dtype=np.int64)
    for _, target in dataset:
        counts += np.bincount(np.asarray(target).ravel(), minlength=num_classes)[:num_classes]
    return counts


def _num_classes(model: nn.Module) -> int:
    hp = getattr(model, "hparams", {})
    return int(hp.get("out_channels", hp.get("num_classes", 2)))


def _fingerprint(model_name: str, model_kwargs: Mapping, config: TrainConfig,
                 train_set: Dataset, val_set: Dataset) -> str:
    result_config = {k: v for k, v in config.to_dict().items() if k not in RUN_ONLY_FIELDS}
    if config.pretrained:
        if not Path(config.pretrained).is_file():
            raise FileNotFoundError(
                f"training.pretrained names {config.pretrained}, which does not exist; save the "
                "weights there once (e.g. torch.save(resnet18(weights=...).state_dict(), path)) "
                "or set pretrained to an empty string"
            )
        result_config["pretrained_sha256"] = sha256_file(config.pretrained)
    payload = {
        "model": model_name, "kwargs": dict(model_kwargs), "config": result_config,
        "train": list(getattr(train_set, "ids", [len(train_set)])),
        "val": list(getattr(val_set, "ids", [len(val_set)])),
        # the pixels too: regenerated data under the same ids must not resume an old run
        "data": [ds.content_digest() if hasattr(ds, "content_digest") else None
                 for ds in (train_set, val_set)],
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _build(model_name: str, model_kwargs: Mapping, config: TrainConfig):
    """Model (seeded initialisation, pretrained weights, transfer strategy) and param groups."""
    from grainflow.models import ResNet18, build_model, load_pretrained, set_transfer_strategy

    torch.manual_seed(derive_seed(config.seed, "init"))
    model = build_model(model_name, **model_kwargs)
    if isinstance(model, ResNet18):
        if config.transfer != "full" and not config.pretrained:
            raise ValueError(
                f"training.transfer {config.transfer!r} keeps random backbone weights without "
                "training.pretrained; name a local weights file (ImageNet or grainflow's "
                "pretraining) or use transfer 'full'"
            )
        if config.pretrained:
            report = load_pretrained(model, config.pretrained)
            LOG.info("pretrained weights: %s", report)
        groups = set_transfer_strategy(model, config.transfer, lr=config.lr,
                                       finetune_lr=config.finetune_lr, blocks=config.finetune_blocks)
    else:
        if config.pretrained or config.transfer != "full":
            raise ValueError(
                f"training.pretrained and training.transfer apply to resnet18 only, got model "
                f"{model_name!r} with {config.transfer=} and {config.pretrained=}"
            )
        groups = [{"name": "all", "params": list(model.parameters()), "lr": config.lr}]
    return model, groups


def _write_history(path: Path, rows: Sequence[Mapping]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def train(
    model_name: str,
    model_kwargs: Mapping,
    train_set: Dataset,
    val_set: Dataset,
    config: TrainConfig,
    *,
    best_path: str | os.PathLike,
    history_path: str | os.PathLike,
    last_path: str | os.PathLike,
    metrics_fn: Callable[[np.ndarray, np.ndarray], Mapping[str, float]] = pixel_metrics,
    score_fn: Callable[[Mapping[str, float]], float] = default_score,
    resume: bool = True,
    extra: Mapping | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    world_size: int = 1,
) -> TrainResult:
    """Train ``build_model(model_name, **model_kwargs)``; write best.pt and history.tsv at the end.

    Parameters
    ----------
    model_name, model_kwargs
        Registry name and arguments (see :func:`grainflow.models.build_model`).
    train_set, val_set : Dataset
        Items ``(image (C, H, W) float32, target (H, W) or () int64)``; an
        ``ids`` attribute (image ids) enters the resume fingerprint.
    config : TrainConfig
    best_path, history_path : path
        Final outputs, written atomically once all epochs are done.
    last_path : path
        Resume checkpoint, rewritten atomically after every epoch. Keep it out
        of a rule's declared outputs (Snakemake deletes those before a rerun).
    metrics_fn : callable
        ``(true, pred) -> {name: value}`` on the validation set: truth and
        arg-max predictions, (N, H, W) uint8/int64 arrays or (N,) (e.g.
        boundary F1 from :mod:`grainflow.metrics`); default :func:`pixel_metrics`.
    score_fn : callable
        ``metrics -> float``, higher is better; picks ``best.pt``.
    resume : bool
        Continue from ``last_path`` when it exists and matches this run.
    extra : mapping
        Plain values stored in ``best.pt`` (e.g. task, fold).
    on_epoch_end : callable
        ``(epoch, history_row)`` after each epoch's ``last.pt`` is saved (tests
        use it to interrupt a run); in process 0 only.
    world_size : int
        Training processes: 1 trains here; N > 1 forks N processes, one per
        GPU (NCCL) or, on the CPU, gloo processes, that train one model with
        DistributedDataParallel (see the module notes); ``config.batch_size``
        is the global batch and must be a multiple of N, and
        ``config.threads`` is shared among the processes. See
        :func:`world_size_for`.
    """
    best_path, history_path, last_path = Path(best_path), Path(history_path), Path(last_path)
    model_kwargs = dict(model_kwargs)
    if not len(train_set) or not len(val_set):
        raise ValueError(f"need training and validation images, got {len(train_set)} and "
                         f"{len(val_set)}")
    if (isinstance(world_size, bool) or not isinstance(world_size, (int, np.integer))
            or world_size < 1):
        raise ValueError(f"world_size must be an integer >= 1, got {world_size=}")
    if config.batch_size % world_size:
        raise ValueError(f"training.batch_size is the global batch, split evenly among the "
                         f"{world_size} processes; make it a multiple of {world_size}, got "
                         f"batch_size={config.batch_size}")
    fingerprint = _fingerprint(model_name, model_kwargs, config, train_set, val_set)
    counts = None
    if config.class_weights == "auto":
        from grainflow.models import build_model

        counts = _class_counts(train_set, _num_classes(build_model(model_name, **model_kwargs)))
    job = dict(model_name=model_name, model_kwargs=model_kwargs, train_set=train_set,
               val_set=val_set, config=config, class_counts=counts, fingerprint=fingerprint,
               best_path=best_path, history_path=history_path, last_path=last_path,
               metrics_fn=metrics_fn, score_fn=score_fn, resume=resume, extra=extra,
               on_epoch_end=on_epoch_end)
    if world_size == 1:
        return _fit(**job)

    import torch.multiprocessing as mp

    if torch.cuda.is_initialized():
        raise RuntimeError("CUDA is already initialised in this process, so the training "
                           "processes cannot be forked; call train before any CUDA work")
    LOG.info("training with %d processes (DistributedDataParallel), %d images per process "
             "and step", world_size, config.batch_size // world_size)
    with tempfile.TemporaryDirectory(prefix="grainflow-ddp-") as rendezvous:
        # fork: the datasets and callables reach the processes without pickling, and a
        # Snakemake script (the __main__ module) is not run again as with "spawn"
        mp.start_processes(_train_rank, args=(world_size, Path(rendezvous), job),
                           nprocs=world_size, start_method="fork")
        summary = torch.load(Path(rendezvous) / "result.pt", weights_only=True)
    return TrainResult(model=model_from_checkpoint(best_path), **summary)


def _train_rank(rank: int, world_size: int, rendezvous: Path, job: dict) -> None:
    """One of ``world_size`` forked training processes; process 0 reports to ``rendezvous``."""
    config = job["config"]
    threads = max(1, config.threads // world_size)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    if rank:  # one log: process 0's
        logging.getLogger("grainflow").setLevel(logging.WARNING)
    cuda = _resolve_device(config.device).type == "cuda"
    if cuda:
        if torch.cuda.device_count() < world_size:
            raise ValueError(f"world_size {world_size} needs as many GPUs, this job sees "
                             f"{torch.cuda.device_count()}")
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{rendezvous}/store",
                            rank=rank, world_size=world_size)
    try:
        result = _fit(**{**job, "config": dataclasses.replace(config, threads=threads)},
                      rank=rank, world_size=world_size)
        if rank == 0:
            torch.save({"best_epoch": result.best_epoch, "best_score": result.best_score,
                        "history": result.history, "resumed_from_epoch": result.resumed_from_epoch},
                       rendezvous / "result.pt")
    finally:
        dist.destroy_process_group()


def _convert_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers as SyncBatchNorm: statistics of the global batch (CUDA only in torch)."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    if device.type != "cuda":
        raise ValueError(
            "this model has BatchNorm layers, which torch synchronises across processes on CUDA "
            "only (SyncBatchNorm); on the CPU train it with world_size=1 or with group norm "
            "(model_kwargs norm: group)"
        )
    # the converted layers keep the same parameters (so the optimiser's groups stay valid),
    # buffers and state-dict keys
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def _fit(
    *,
    model_name: str,
    model_kwargs: dict,
    train_set: Dataset,
    val_set: Dataset,
    config: TrainConfig,
    class_counts: np.ndarray | None,
    fingerprint: str,
    best_path: Path,
    history_path: Path,
    last_path: Path,
    metrics_fn: Callable[[np.ndarray, np.ndarray], Mapping[str, float]],
    score_fn: Callable[[Mapping[str, float]], float],
    resume: bool,
    extra: Mapping | None,
    on_epoch_end: Callable[[int, dict], None] | None,
    rank: int = 0,
    world_size: int = 1,
) -> TrainResult | None:
    """The loop of :func:`train`, in one process or in process ``rank`` of ``world_size``.

    Returns the result in process 0, None in the others.
    """
    distributed, lead = world_size > 1, rank == 0
    with runtime(config) as rt:
        model, groups = _build(model_name, model_kwargs, config)
        loss_fn = make_loss(config, class_counts).to(rt.device)
        LOG.info("model %s %s: %d parameters (%d trainable); loss %s %s", model_name,
                 model_kwargs, sum(p.numel() for p in model.parameters()),
                 sum(p.numel() for p in model.parameters() if p.requires_grad), config.loss,
                 loss_fn.extra_repr())
        if distributed:
            model = _convert_batchnorm(model, rt.device)
        model.to(rt.device)
        if rt.channels_last:
            model.to(memory_format=torch.channels_last)
        opt_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        optimizer = opt_class(groups, lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
        total_steps = config.epochs * steps_per_epoch
        warmup_steps = round(config.warmup_epochs * steps_per_epoch)
        schedule = dict(total_steps=total_steps, warmup_steps=warmup_steps, peak_lr=1.0,
                        min_lr=config.min_lr / config.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, **schedule))

        start_epoch, step, history = 0, 0, []
        best: dict = {"epoch": 0, "score": -math.inf, "metrics": {}, "model_state": None}
        if resume and last_path.exists():
            try:
                last = load_checkpoint(last_path)
            except (ValueError, OSError) as error:
                LOG.warning("cannot resume: %s; starting from scratch", error)
            else:
                if last["extra"].get("fingerprint") != fingerprint:
                    LOG.warning("%s belongs to another run (model, config or data changed); "
                                "starting from scratch", last_path)
                else:
                    unwrap_model(model).load_state_dict(last["model_state"])
                    optimizer.load_state_dict(last["optimizer_state"])
                    scheduler.load_state_dict(last["scheduler_state"])
                    if rt.scaler is not None and last["extra"].get("scaler_state"):
                        rt.scaler.load_state_dict(last["extra"]["scaler_state"])
                    set_rng_state(last["rng"])
                    start_epoch, step = last["epoch"], last["step"]
                    history = list(last["extra"]["history"])
                    best = dict(last["extra"]["best"])
                    LOG.info("resumed from %s after epoch %d (step %d)", last_path, start_epoch, step)

        cuda = rt.device.type == "cuda"
        forward_model, train_loss_fn = model, loss_fn
        if distributed:
            forward_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[rt.device.index] if cuda else None)
            train_loss_fn = make_loss(config, class_counts, distributed=True).to(rt.device)
        if config.compile:  # CPU: ~1.5x faster steps after a compile of minutes on 2 cores
            forward_model = torch.compile(forward_model)
        # process 0 validates alone: with the model itself, outside DDP and its collectives
        eval_model = model if distributed else forward_model
        workers = config.num_workers
        loader_kwargs = dict(
            num_workers=workers, pin_memory=cuda,
            worker_init_fn=_seed_worker if workers else None,
            generator=torch.Generator().manual_seed(derive_seed(config.seed, "loader")),
            persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
        )
        sampler = EpochSampler(len(train_set), seed=config.seed, num_replicas=world_size,
                               rank=rank)
        flipped = OnlineFlips(train_set, seed=config.seed, enabled=config.flips)
        train_loader = DataLoader(flipped, sampler=sampler,
                                  batch_size=config.batch_size // world_size, **loader_kwargs)
        val_loader = DataLoader(val_set, shuffle=False, batch_size=config.batch_size,
                                **loader_kwargs)

        for epoch in range(start_epoch + 1, config.epochs + 1):
            # dropout etc.; each process draws its own
            rank_part = (rank,) if distributed else ()
            torch.manual_seed(derive_seed(config.seed, "epoch", epoch, *rank_part))
            sampler.set_epoch(epoch)
            if cuda:
                torch.cuda.reset_peak_memory_stats(rt.device)
            started = time.perf_counter()
            fit = train_one_epoch(
                forward_model, train_loader, optimizer=optimizer, scheduler=scheduler,
                loss_fn=train_loss_fn, rt=rt,
                grad_clip=config.grad_clip, description=f"epoch {epoch}/{config.epochs}",
                progress=config.progress and lead,
            )
            step += steps_per_epoch
            if not lead:  # process 0 alone validates, keeps the history and writes
                continue
            val = evaluate(eval_model, val_loader, loss_fn=loss_fn, rt=rt, metrics_fn=metrics_fn)
            val_loss = val.pop("loss")
            score = float(score_fn(val))
            score = -math.inf if math.isnan(score) else score
            row = {
                "epoch": epoch, "step": step, "lr": fit["lr"], "train_loss": fit["loss"],
                "val_loss": val_loss, **{f"val_{k}": v for k, v in val.items()}, "score": score,
                "images_per_s": fit["images"] * world_size / max(fit["seconds"], 1e-9),
                "peak_memory_mb": _peak_memory_mb(rt.device),
                "epoch_s": time.perf_counter() - started,
            }
            history.append(row)
            if score > best["score"]:
                state = unwrap_model(model).state_dict()
                best = {"epoch": epoch, "score": score, "metrics": dict(val),
                        "model_state": {k: v.detach().to("cpu", copy=True) for k, v in state.items()}}
            LOG.info("epoch %d/%d: train loss %.4f, val loss %.4f, score %.4f (best %.4f at %d), "
                     "lr %.2e, %.1f images/s, %.0f MB", epoch, config.epochs, fit["loss"], val_loss,
                     score, best["score"], best["epoch"], fit["lr"], row["images_per_s"],
                     row["peak_memory_mb"])
            extra_state = {"fingerprint": fingerprint, "history": history, "best": best}
            if rt.scaler is not None:
                extra_state["scaler_state"] = rt.scaler.state_dict()
            save_checkpoint(last_path, make_checkpoint(
                model=model, model_name=model_name, model_kwargs=model_kwargs, epoch=epoch,
                step=step, config=config.to_dict(), optimizer=optimizer, scheduler=scheduler,
                extra=extra_state,
            ))
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)

    if not lead:
        return None
    if best["model_state"] is None:
        raise ValueError(f"{last_path} records no best model; delete it and rerun")
    final = make_checkpoint(
        model=model, model_name=model_name, model_kwargs=model_kwargs, epoch=best["epoch"],
        step=best["epoch"] * steps_per_epoch, config=config.to_dict(), with_rng=False,
        extra={**dict(extra or {}), "score": best["score"], "metrics": best["metrics"],
               "fingerprint": fingerprint, "epochs": config.epochs},
    )
    final["model_state"] = best["model_state"]
    _write_history(history_path, history)
    save_checkpoint(best_path, final)
    unwrap_model(model).load_state_dict(best["model_state"])
    LOG.info("best epoch %d, score %.4f; wrote %s and %s", best["epoch"], best["score"],
             best_path, history_path)
    return TrainResult(best_epoch=best["epoch"], best_score=best["score"], history=history,
                       model=unwrap_model(model).cpu().eval(), resumed_from_epoch=start_epoch)


def world_size_for(gpus: int, *, device: str = "auto") -> int:
    """Training processes for a job granted ``gpus`` GPUs: one per GPU it sees, at most ``gpus``.

    Parameters
    ----------
    gpus : int
        GPUs granted to the job (the train rule's ``gpu`` resource,
        ``training.gpus_per_job``; on SLURM the job sees them through
        ``CUDA_VISIBLE_DEVICES``).
    device : {"auto", "cpu", "cuda"}
        ``training.device``.

    Returns
    -------
    world_size : int
        1 on the CPU (device "cpu", or "auto" without a visible GPU);
        otherwise ``min(gpus, visible GPUs)``, with a warning when fewer GPUs
        are visible than granted. GPUs are counted through NVML
        (:func:`torch.cuda.device_count`), which leaves CUDA uninitialised so
        that :func:`train` can fork its processes.
    """
    if isinstance(gpus, bool) or not isinstance(gpus, (int, np.integer)) or gpus < 1:
        raise ValueError(f"gpus must be an integer >= 1, got {gpus=}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device=}")
    visible = torch.cuda.device_count() if device != "cpu" else 0
    if visible and visible < gpus:
        LOG.warning("the job was granted %d GPUs but sees %d (CUDA_VISIBLE_DEVICES=%s); "
                    "training on %d", gpus, visible, os.environ.get("CUDA_VISIBLE_DEVICES"),
                    visible)
    return max(1, min(gpus, visible))


def train_fold(
    manifest: str | os.PathLike | pd.DataFrame,
    fold: int,
    *,
    task: str,
    model_name: str,
    model_kwargs: Mapping,
    config: TrainConfig | Mapping,
    best_path: str | os.PathLike,
    history_path: str | os.PathLike,
    last_path: str | os.PathLike,
    root: str | os.PathLike = ".",
    target: Target | None = None,
    metrics_fn: Callable[[np.ndarray, np.ndarray], Mapping[str, float]] = pixel_metrics,
    score_fn: Callable[[Mapping[str, float]], float] = default_score,
    world_size: int = 1,
) -> TrainResult:
    """Train the model of fold ``fold`` of a split manifest (the ``train`` rule's one call).

    Trains on the rows of the other folds, validates on the original images
    of ``fold``; see :func:`train` for the outputs and ``world_size`` (one
    process per GPU) and :func:`fold_datasets` for the data.
    """
    if not isinstance(config, TrainConfig):
        config = TrainConfig.from_mapping(config)
    train_set, val_set = fold_datasets(manifest, fold, task=task, target=target, root=root,
                                       norm_percentiles=config.norm_percentiles)
    LOG.info("task %s, fold %d: %d training images, %d validation images", task, fold,
             len(train_set), len(val_set))
    return train(model_name, model_kwargs, train_set, val_set, config, best_path=best_path,
                 history_path=history_path, last_path=last_path, metrics_fn=metrics_fn,
                 score_fn=score_fn, extra={"task": task, "fold": int(fold)},
                 world_size=world_size)
