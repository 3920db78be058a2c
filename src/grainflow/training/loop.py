"""The training loop: epochs, validation, checkpoints, resume, history."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import resource
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from grainflow.checkpoint import (
    load_checkpoint,
    load_pretrained,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    set_rng_state,
    sha256_file,
    unwrap_model,
)
from grainflow.io.staging import atomic_path
from grainflow.logs import Progress
from grainflow.models.registry import build_model
from grainflow.models.resnet import ResNet18, set_transfer_strategy
from grainflow.runtime import Runtime, resolve_device, runtime
from grainflow.seeds import derive_seed
from grainflow.tasks import TASKS
from grainflow.training.config import RUN_ONLY_FIELDS, TrainConfig, TrainResult
from grainflow.training.data import EpochSampler, OnlineFlips, Target, fold_datasets, seed_worker
from grainflow.training.distributed import convert_batchnorm
from grainflow.training.losses import lr_at, make_loss
from grainflow.training.validation import default_score, pixel_metrics

__all__ = [
    "LOG",
    "TIMING_COLUMNS",
    "SELECT",
    "last_history",
    "train_one_epoch",
    "evaluate",
    "train",
    "train_fold",
]


LOG = logging.getLogger(__name__)

#: history columns that are wall-clock measurements: in history.tsv, never in last.pt
TIMING_COLUMNS = ("images_per_s", "peak_memory_mb", "epoch_s")

#: the epochs best.pt may keep (train's ``select``): the best-scoring on validation images
#: independent of any test, or the last, when the validation images are the test fold
SELECT = ("best", "last")


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler,
    loss_fn: nn.Module,
    rt: Runtime,
    grad_clip: float = 0.0,
    description: str = "train",
    progress: bool = True,
    every_s: float = 60.0,
) -> dict[str, float]:
    """One pass over ``loader``; one optimiser and scheduler step per batch.

    With ``progress``, a line at most every ``every_s`` seconds reports the
    batches done, the last loss, images/s and the time left in the epoch
    (:class:`grainflow.logs.Progress`, ``description`` first).

    Returns ``{"loss": mean training loss, "lr": learning rate of the last step,
    "images": images seen, "seconds": wall time}``.
    """
    model.train()
    total = torch.zeros((), device=rt.device)
    seen, lr = 0, float("nan")
    start = time.perf_counter()
    bar = Progress(
        len(loader), what=f"{description} batch", logger=LOG, every_s=every_s, final_line=False
    )
    for images, targets in loader:
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
        if progress:
            bar.update(
                detail=lambda loss=loss, seen=seen: (
                    f"loss {loss.item():.4f}, "
                    f"{seen / max(time.perf_counter() - start, 1e-9):.1f} images/s"
                )
            )
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)
    return {
        "loss": float(total) / max(seen, 1),
        "lr": lr,
        "images": seen,
        "seconds": time.perf_counter() - start,
    }


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    loss_fn: nn.Module,
    rt: Runtime,
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


def _fingerprint(
    model_name: str,
    model_kwargs: Mapping,
    config: TrainConfig,
    train_set: Dataset,
    val_set: Dataset,
    select: str,
) -> str:
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
        "model": model_name,
        "kwargs": dict(model_kwargs),
        "config": result_config,
        "select": select,
        "train": list(getattr(train_set, "ids", [len(train_set)])),
        "val": list(getattr(val_set, "ids", [len(val_set)])),
        # the pixels too: regenerated data under the same ids must not resume an old run
        "data": [
            ds.content_digest() if hasattr(ds, "content_digest") else None
            for ds in (train_set, val_set)
        ],
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _build(model_name: str, model_kwargs: Mapping, config: TrainConfig):
    """Model (seeded initialisation, pretrained weights, transfer strategy) and param groups.

    Seeds torch's generator, and NumPy's and Python's global ones too: nothing here draws
    from those, but their states go into ``last.pt``, which equal runs write byte for byte.
    """
    torch.manual_seed(derive_seed(config.seed, "init"))
    np.random.seed(derive_seed(config.seed, "numpy") % 2**32)
    random.seed(derive_seed(config.seed, "python"))
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
        groups = set_transfer_strategy(
            model,
            config.transfer,
            lr=config.lr,
            finetune_lr=config.finetune_lr,
            blocks=config.finetune_blocks,
        )
    else:
        if config.pretrained or config.transfer != "full":
            raise ValueError(
                f"training.pretrained and training.transfer apply to resnet18 only, got model "
                f"{model_name!r} with {config.transfer=} and {config.pretrained=}"
            )
        groups = [{"name": "all", "params": list(model.parameters()), "lr": config.lr}]
    return model, groups


def _timings_path(last_path: Path) -> Path:
    """The file beside ``last.pt`` that keeps the epochs' timings (``last.timings.json``)."""
    return last_path.with_suffix(".timings.json")


def _split_timings(row: Mapping) -> tuple[dict, dict]:
    """A history row as (what a rerun reproduces, wall-clock timings)."""
    timings = {k: row[k] for k in TIMING_COLUMNS if k in row}
    return {k: v for k, v in row.items() if k not in TIMING_COLUMNS}, timings


def _save_timings(path: Path, fingerprint: str, history: Sequence[Mapping]) -> None:
    rows = {str(row["epoch"]): _split_timings(row)[1] for row in history}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "epochs": rows}, indent=1))


def last_history(last_path: str | os.PathLike, checkpoint: Mapping | None = None) -> list[dict]:
    """The history of a resume checkpoint, with the timings of its epochs put back.

    Parameters
    ----------
    last_path : path-like
        A ``last.pt`` written by :func:`train`.
    checkpoint : mapping, optional
        Its contents, when already loaded.

    Returns
    -------
    list of dict
        One row per epoch done, as in ``history.tsv``; the timings
        (:data:`TIMING_COLUMNS`) come from ``last.timings.json`` beside it,
        NaN where that file is lost or belongs to another run.
    """
    last_path = Path(last_path)
    last = checkpoint if checkpoint is not None else load_checkpoint(last_path)
    timings_path = _timings_path(last_path)
    try:
        saved = json.loads(timings_path.read_text())
        same_run = saved.get("fingerprint") == last["extra"].get("fingerprint")
        timings = saved["epochs"] if same_run else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        timings = {}
    if not isinstance(timings, dict) or not all(isinstance(t, dict) for t in timings.values()):
        timings = {}
    rows = last["extra"]["history"]
    history = []
    for row in rows:  # a last.pt of an older grainflow still holds its timings
        found = {**row, **timings.get(str(row["epoch"]), {})}
        history.append({**row, **{k: found.get(k, math.nan) for k in TIMING_COLUMNS}})
    if any(math.isnan(row[k]) for row in history for k in TIMING_COLUMNS):
        LOG.info("%s lacks some epochs' timings; they are NaN in the history", timings_path)
    return history


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
    select: str = "best",
) -> TrainResult:
    """Train ``build_model(model_name, **model_kwargs)``; write best.pt and history.tsv at the end.

    Parameters
    ----------
    model_name, model_kwargs
        Registry name and arguments (see :func:`grainflow.models.registry.build_model`).
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
        boundary F1 from :mod:`grainflow.evaluation.metrics`); default :func:`pixel_metrics`.
    score_fn : callable
        ``metrics -> float``, higher is better; picks ``best.pt`` with ``select="best"``.
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
        DistributedDataParallel (see Notes); ``config.batch_size``
        is the global batch and must be a multiple of N, and
        ``config.threads`` is shared among the processes. See
        :func:`world_size_for`.
    select : {"best", "last"}
        The weights ``best.pt`` keeps: those of the epoch with the highest score
        on ``val_set`` ("best"; the validation images must then be independent of
        any test, e.g. crystals held out of the training folds), or of the last
        epoch ("last"; ``val_set`` is scored each epoch as a learning curve only,
        so it may be the test fold itself). See :data:`SELECT`.

    Notes
    -----
    Each epoch: online flips (one of the 8 flips/90° rotations of the square, 4 when
    the image is not square, drawn from ``(seed, epoch, index)`` in the DataLoader
    workers, :class:`~grainflow.training.data.OnlineFlips`), the loss of
    ``config.loss`` (:class:`~grainflow.training.losses.DiceCELoss`; with
    ``class_weights: auto`` the weight of class ``c`` is ``sqrt(f_0 / f_c)`` for
    training-set pixel frequencies ``f``, about 5 for boundaries that cover 4 % of
    the pixels), AdamW (or Adam) with linear warm-up and cosine decay per optimiser
    step (:func:`~grainflow.training.losses.lr_at`), then validation. Device,
    precision and determinism are set by :func:`grainflow.runtime.runtime`, and every
    choice is logged. Weights, data order, flips and dropout derive from ``seed`` and
    the epoch (:func:`grainflow.seeds.derive_seed`), never from worker count or
    timing.

    **Resume.** ``last.pt`` is written atomically after every epoch with the model,
    optimiser, scheduler, RNG states, history and the best weights so far. A job
    killed at any moment restarts from it and, because the data order and
    augmentation of epoch ``e`` depend only on ``(seed, e)`` and the global generator
    is reseeded each epoch, ends with the same weights as an uninterrupted run.
    ``last.pt`` is reused only when its fingerprint (model, result-affecting config,
    training and validation image ids) matches.

    **Several GPUs.** With ``world_size=N`` the N processes (backend NCCL; gloo on
    the CPU, for tests) each take ``batch_size / N`` images of every batch of the
    one-process order (:class:`~grainflow.training.data.EpochSampler`, split like
    :class:`~torch.utils.data.distributed.DistributedSampler`); BatchNorm becomes
    :class:`~torch.nn.SyncBatchNorm` (statistics of the global batch; CUDA only, so
    on the CPU the model must use group norm); the loss sums its counts over the
    processes (``DiceCELoss(distributed=True)``), so that weighted cross-entropy and
    batch Dice are those of the global batch. The loss curve is then that of one
    process up to float rounding, and ``best.pt``, ``last.pt`` and ``history.tsv``
    have the same contents. Only process 0 validates and writes; all processes
    resume from ``last.pt``. The processes are forked
    (:func:`torch.multiprocessing.start_processes`), so the caller's functions need
    not be picklable and a Snakemake script is not re-run; CUDA must not be
    initialised before (:func:`~grainflow.training.distributed.world_size_for` counts
    GPUs through NVML).

    **Outputs.** ``best.pt`` (weights of the epoch that ``select`` keeps) and
    ``history.tsv`` are written only when training has finished, atomically. History
    columns, one row per epoch: ``epoch, step, lr`` (learning rate of the epoch's
    last step), ``train_loss, val_loss, val_<metric>...`` (metrics of
    ``metrics_fn``), ``score`` (``score_fn`` of those), ``images_per_s`` (training
    images per second, excluding validation), ``peak_memory_mb`` (CUDA: peak
    allocated tensor memory during the epoch; CPU: peak resident memory of the
    process so far), ``epoch_s`` (wall time of the epoch).

    **Resume state.** ``last.pt`` holds the model, optimiser, scheduler, RNG states,
    epoch, step and the history without its timings (:data:`TIMING_COLUMNS`), so that
    equal runs write it byte for byte; the timings go beside it, to
    ``last.timings.json``, and back into the history of a resumed run (NaN where that
    file is lost). Each epoch logs one line: its losses and score, the time elapsed
    and an estimate of the time left (:class:`grainflow.logs.Progress`).
    """
    best_path, history_path, last_path = Path(best_path), Path(history_path), Path(last_path)
    model_kwargs = dict(model_kwargs)
    if select not in SELECT:
        raise ValueError(f"select must be one of {SELECT}, got {select=}")
    if not len(train_set) or not len(val_set):
        raise ValueError(
            f"need training and validation images, got {len(train_set)} and {len(val_set)}"
        )
    if (
        isinstance(world_size, bool)
        or not isinstance(world_size, (int, np.integer))
        or world_size < 1
    ):
        raise ValueError(f"world_size must be an integer >= 1, got {world_size=}")
    if config.batch_size % world_size:
        raise ValueError(
            f"training.batch_size is the global batch, split evenly among the "
            f"{world_size} processes; make it a multiple of {world_size}, got "
            f"batch_size={config.batch_size}"
        )
    fingerprint = _fingerprint(model_name, model_kwargs, config, train_set, val_set, select)
    counts = None
    if config.class_weights == "auto":
        counts = _class_counts(train_set, _num_classes(build_model(model_name, **model_kwargs)))
    job = dict(
        model_name=model_name,
        model_kwargs=model_kwargs,
        train_set=train_set,
        val_set=val_set,
        config=config,
        class_counts=counts,
        fingerprint=fingerprint,
        best_path=best_path,
        history_path=history_path,
        last_path=last_path,
        metrics_fn=metrics_fn,
        score_fn=score_fn,
        resume=resume,
        extra=extra,
        on_epoch_end=on_epoch_end,
        select=select,
    )
    if world_size == 1:
        return _fit(**job)

    import torch.multiprocessing as mp

    if torch.cuda.is_initialized():
        raise RuntimeError(
            "CUDA is already initialised in this process, so the training "
            "processes cannot be forked; call train before any CUDA work"
        )
    LOG.info(
        "training with %d processes (DistributedDataParallel), %d images per process and step",
        world_size,
        config.batch_size // world_size,
    )
    with tempfile.TemporaryDirectory(prefix="grainflow-ddp-") as rendezvous:
        # fork: the datasets and callables reach the processes without pickling, and a
        # Snakemake script (the __main__ module) is not run again as with "spawn"
        mp.start_processes(
            _train_rank,
            args=(world_size, Path(rendezvous), job),
            nprocs=world_size,
            start_method="fork",
        )
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
    cuda = resolve_device(config.device, key="training.device").type == "cuda"
    if cuda:
        if torch.cuda.device_count() < world_size:
            raise ValueError(
                f"world_size {world_size} needs as many GPUs, this job sees "
                f"{torch.cuda.device_count()}"
            )
        torch.cuda.set_device(rank)
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        init_method=f"file://{rendezvous}/store",
        rank=rank,
        world_size=world_size,
    )
    try:
        result = _fit(
            **{**job, "config": dataclasses.replace(config, threads=threads)},
            rank=rank,
            world_size=world_size,
        )
        if rank == 0:
            torch.save(
                {
                    "best_epoch": result.best_epoch,
                    "best_score": result.best_score,
                    "history": result.history,
                    "resumed_from_epoch": result.resumed_from_epoch,
                },
                rendezvous / "result.pt",
            )
    finally:
        dist.destroy_process_group()


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
    select: str,
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
        LOG.info(
            "model %s %s: %d parameters (%d trainable); loss %s %s",
            model_name,
            model_kwargs,
            sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad),
            config.loss,
            loss_fn.extra_repr(),
        )
        if distributed:
            model = convert_batchnorm(model, rt.device)
        model.to(rt.device)
        if rt.channels_last:
            model.to(memory_format=torch.channels_last)
        opt_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        optimizer = opt_class(groups, lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
        total_steps = config.epochs * steps_per_epoch
        warmup_steps = round(config.warmup_epochs * steps_per_epoch)
        schedule = dict(
            total_steps=total_steps,
            warmup_steps=warmup_steps,
            peak_lr=1.0,
            min_lr=config.min_lr / config.lr,
        )
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
                    LOG.warning(
                        "%s belongs to another run (model, config or data changed); "
                        "starting from scratch",
                        last_path,
                    )
                else:
                    unwrap_model(model).load_state_dict(last["model_state"])
                    optimizer.load_state_dict(last["optimizer_state"])
                    scheduler.load_state_dict(last["scheduler_state"])
                    if rt.scaler is not None and last["extra"].get("scaler_state"):
                        rt.scaler.load_state_dict(last["extra"]["scaler_state"])
                    set_rng_state(last["rng"])
                    start_epoch, step = last["epoch"], last["step"]
                    history = last_history(last_path, last)
                    best = dict(last["extra"]["best"])
                    LOG.info(
                        "resumed from %s after epoch %d (step %d)", last_path, start_epoch, step
                    )

        cuda = rt.device.type == "cuda"
        forward_model, train_loss_fn = model, loss_fn
        if distributed:
            forward_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[rt.device.index] if cuda else None
            )
            train_loss_fn = make_loss(config, class_counts, distributed=True).to(rt.device)
        if config.compile:  # CPU: ~1.5x faster steps after a compile of minutes on 2 cores
            forward_model = torch.compile(forward_model)
        # process 0 validates alone: with the model itself, outside DDP and its collectives
        eval_model = model if distributed else forward_model
        workers = config.num_workers
        loader_kwargs = dict(
            num_workers=workers,
            pin_memory=cuda,
            worker_init_fn=seed_worker if workers else None,
            generator=torch.Generator().manual_seed(derive_seed(config.seed, "loader")),
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers else None,
        )
        sampler = EpochSampler(len(train_set), seed=config.seed, num_replicas=world_size, rank=rank)
        flipped = OnlineFlips(train_set, seed=config.seed, enabled=config.flips)
        train_loader = DataLoader(
            flipped, sampler=sampler, batch_size=config.batch_size // world_size, **loader_kwargs
        )
        val_loader = DataLoader(
            val_set, shuffle=False, batch_size=config.batch_size, **loader_kwargs
        )

        epochs = Progress(config.epochs, what="epoch", logger=LOG, done=start_epoch)
        for epoch in range(start_epoch + 1, config.epochs + 1):
            # dropout etc.; each process draws its own
            rank_part = (rank,) if distributed else ()
            torch.manual_seed(derive_seed(config.seed, "epoch", epoch, *rank_part))
            sampler.set_epoch(epoch)
            if cuda:
                torch.cuda.reset_peak_memory_stats(rt.device)
            started = time.perf_counter()
            fit = train_one_epoch(
                forward_model,
                train_loader,
                optimizer=optimizer,
                scheduler=scheduler,
                loss_fn=train_loss_fn,
                rt=rt,
                grad_clip=config.grad_clip,
                description=f"epoch {epoch}/{config.epochs}",
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
                "epoch": epoch,
                "step": step,
                "lr": fit["lr"],
                "train_loss": fit["loss"],
                "val_loss": val_loss,
                **{f"val_{k}": v for k, v in val.items()},
                "score": score,
                "images_per_s": fit["images"] * world_size / max(fit["seconds"], 1e-9),
                "peak_memory_mb": _peak_memory_mb(rt.device),
                "epoch_s": time.perf_counter() - started,
            }
            history.append(row)
            if select == "last" or score > best["score"]:
                state = unwrap_model(model).state_dict()
                best = {
                    "epoch": epoch,
                    "score": score,
                    "metrics": dict(val),
                    "model_state": {k: v.detach().to("cpu", copy=True) for k, v in state.items()},
                }
            epochs.update(
                detail=f"train loss {fit['loss']:.4f}, val loss {val_loss:.4f}, score "
                f"{score:.4f} ({select} {best['score']:.4f} at {best['epoch']}), lr {fit['lr']:.2e}, "
                f"{row['images_per_s']:.1f} images/s, {row['peak_memory_mb']:.0f} MB"
            )
            # timings beside last.pt, not in it: equal runs write equal last.pt bytes
            _save_timings(_timings_path(last_path), fingerprint, history)
            extra_state = {
                "fingerprint": fingerprint,
                "history": [_split_timings(r)[0] for r in history],
                "best": best,
            }
            if rt.scaler is not None:
                extra_state["scaler_state"] = rt.scaler.state_dict()
            save_checkpoint(
                last_path,
                make_checkpoint(
                    model=model,
                    model_name=model_name,
                    model_kwargs=model_kwargs,
                    epoch=epoch,
                    step=step,
                    config=config.to_dict(),
                    optimizer=optimizer,
                    scheduler=scheduler,
                    extra=extra_state,
                ),
            )
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)

    if not lead:
        return None
    if best["model_state"] is None:
        raise ValueError(f"{last_path} records no best model; delete it and rerun")
    final = make_checkpoint(
        model=model,
        model_name=model_name,
        model_kwargs=model_kwargs,
        epoch=best["epoch"],
        step=best["epoch"] * steps_per_epoch,
        config=config.to_dict(),
        with_rng=False,
        extra={
            **dict(extra or {}),
            "score": best["score"],
            "metrics": best["metrics"],
            "fingerprint": fingerprint,
            "epochs": config.epochs,
            "select": select,
        },
    )
    final["model_state"] = best["model_state"]
    _write_history(history_path, history)
    save_checkpoint(best_path, final)
    unwrap_model(model).load_state_dict(best["model_state"])
    LOG.info(
        "kept epoch %d (%s), validation score %.4f; wrote %s and %s",
        best["epoch"],
        select,
        best["score"],
        best_path,
        history_path,
    )
    return TrainResult(
        best_epoch=best["epoch"],
        best_score=best["score"],
        history=history,
        model=unwrap_model(model).cpu().eval(),
        resumed_from_epoch=start_epoch,
    )


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

    Trains on the rows of the other folds and keeps the last epoch's weights;
    the original images of ``fold`` are scored after each epoch as a learning
    curve. They are the images the cross-validation tests, so no epoch is chosen
    on them (``select="last"``): a choice there would lift the held-out score it
    is then measured by. See :func:`train` for the outputs and ``world_size``
    (one process per GPU) and :func:`fold_datasets` for the data. A task that
    does not keep touching instances apart trains with ``separation_weight`` 0.
    """
    if not isinstance(config, TrainConfig):
        config = TrainConfig.from_mapping(config)
    if task not in TASKS or not TASKS[task].separate_touching:  # a setting of particle tasks
        config = dataclasses.replace(config, separation_weight=0.0)
    train_set, val_set = fold_datasets(
        manifest,
        fold,
        task=task,
        target=target,
        root=root,
        norm_percentiles=config.norm_percentiles,
        polarity=config.polarity,
        separation_px=config.separation_px if config.separation_weight else 0,
    )
    LOG.info(
        "task %s, fold %d: %d training images, %d validation images",
        task,
        fold,
        len(train_set),
        len(val_set),
    )
    return train(
        model_name,
        model_kwargs,
        train_set,
        val_set,
        config,
        best_path=best_path,
        history_path=history_path,
        last_path=last_path,
        metrics_fn=metrics_fn,
        score_fn=score_fn,
        extra={"task": task, "fold": int(fold)},
        world_size=world_size,
        select="last",
    )
