"""Few-label fine-tuning on a labelled real stack, cross-validated over its specimen groups.

A learning curve: for each GroupKFold fold over the sheet's ``group`` column, a network
is fine-tuned on 1, 2, 4, ... and then all labelled planes of the other groups and scored
on the fold's planes, from the synthetic-pretrained weights and from random weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.model_selection import GroupKFold

from grainflow.adaptation.planes import StackPlanes
from grainflow.runtime import loop_autocast
from grainflow.seeds import derive_seed
from grainflow.training.losses import DiceCELoss

__all__ = [
    "FinetuneSettings",
    "group_folds",
    "training_subsets",
    "random_crops",
    "finetune",
    "predict_full",
    "pixel_scores",
    "learning_curve",
    "CURVE_COLUMNS",
    "finetune_stacks",
    "adapt_stacks",
]

#: columns of the learning-curve table (``results/metrics/real/{stack}/finetune.tsv``)
CURVE_COLUMNS = (
    "stack",
    "arch",
    "init",
    "n_images",
    "n_train_groups",
    "fold",
    "test_groups",
    "train_files",
    "steps",
    "level",
    "iou",
    "precision",
    "recall",
    "area_fraction_true",
    "area_fraction_pred",
    "seconds",
)


@dataclass(frozen=True)
class FinetuneSettings:
    """How each fine-tuning run trains (config ``adapt.finetune``)."""

    steps: int = 60  # optimiser steps per run
    batch_size: int = 8  # crops per step
    crop_px: int = 128  # side of the square training crops, at the stack's level
    lr: float = 1e-3  # peak learning rate (cosine decay to 0 over the steps)
    weight_decay: float = 1e-4

    def __post_init__(self):
        for key in ("steps", "batch_size", "crop_px"):
            if int(getattr(self, key)) < 1:
                raise ValueError(
                    f"adapt.finetune.{key} must be at least 1, got {getattr(self, key)}"
                )
        if not self.lr > 0:
            raise ValueError(f"adapt.finetune.lr must be positive, got {self.lr}")


def group_folds(groups: Sequence[str], n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """GroupKFold over the planes' groups: (training planes, test planes) per fold.

    No group is ever on both sides. ``n_folds`` is capped at the number of groups.

    Raises
    ------
    ValueError
        Fewer than two groups: nothing can be held out honestly.
    """
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(
            f"few-label fine-tuning needs at least two groups of planes, got {n_groups}; give "
            "the stacks sheet a `group` pattern that tells the specimens apart"
        )
    splitter = GroupKFold(n_splits=min(int(n_folds), n_groups))
    return [(train, test) for train, test in splitter.split(groups, groups=groups)]


def training_subsets(
    pool: np.ndarray, groups: Sequence[str], sizes: Sequence[int], *, seed: int
) -> dict[str, np.ndarray]:
    """The planes each point of the curve trains on, nested: {"1": ..., "2": ..., "all": ...}.

    Groups are taken in a seeded order and their planes one after another, so that a
    small subset holds few groups (the images of one specimen first) and every subset
    contains the smaller ones. Sizes at or above the pool's are left out ("all" has them).
    """
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    names = sorted(set(groups[pool]))
    ordered = [i for g in rng.permutation(names) for i in rng.permutation(pool[groups[pool] == g])]
    ordered = np.asarray(ordered, dtype=int)
    subsets = {str(int(n)): ordered[: int(n)] for n in sorted(set(sizes)) if 0 < n < len(ordered)}
    subsets["all"] = ordered
    return subsets


def random_crops(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    *,
    n: int,
    crop: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random square crops with one of the 8 flips/rotations each; (n, 1, c, c), (n, c, c).

    Images smaller than ``crop`` are reflected up to it first.
    """
    xs, ys = [], []
    for _ in range(n):
        i = int(rng.integers(len(images)))
        x, y = images[i], targets[i]
        pad = [(0, max(crop - s, 0)) for s in x.shape]
        if any(p for _, p in pad):
            x, y = np.pad(x, pad, mode="reflect"), np.pad(y, pad, mode="reflect")
        r = int(rng.integers(x.shape[0] - crop + 1))
        c = int(rng.integers(x.shape[1] - crop + 1))
        x, y = x[r : r + crop, c : c + crop], y[r : r + crop, c : c + crop]
        k = int(rng.integers(8))
        x, y = np.rot90(x, k % 4), np.rot90(y, k % 4)
        if k >= 4:
            x, y = x[:, ::-1], y[:, ::-1]
        xs.append(np.ascontiguousarray(x, dtype=np.float32))
        ys.append(np.ascontiguousarray(y, dtype=np.int64))
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))


def finetune(
    model: torch.nn.Module,
    batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    settings: FinetuneSettings,
    *,
    loss_fn: torch.nn.Module | None = None,
    cpu_amp: str = "off",
) -> torch.nn.Module:
    """Train ``model`` in place for ``settings.steps`` steps on ``batches(step)``.

    AdamW, learning rate on a cosine from ``settings.lr`` to 0; batch norm in training
    mode (its statistics follow the new images); bf16 autocast on the CPU by ``cpu_amp``
    (:func:`grainflow.runtime.loop_autocast`).
    """
    loss_fn = loss_fn or DiceCELoss()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    device = next(model.parameters()).device
    loss_fn = loss_fn.to(device)
    model.train()
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
        x, y = batches(step)
        with loop_autocast(device, cpu_amp):
            logits = model(x.to(device))
        loss = loss_fn(logits.float(), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.inference_mode()
def predict_full(
    model: torch.nn.Module, image: np.ndarray, *, level: int, shape: Sequence[int]
) -> np.ndarray:
    """Class probabilities (C, rows, cols) at level 0 of one normalised plane read at ``level``.

    The plane is reflected up to the model's size multiple, predicted whole, and the
    probabilities are resampled bilinearly by ``2**level`` onto the level-0 grid.
    """
    multiple = int(getattr(model, "size_multiple", 1))
    rows, cols = image.shape
    pad = (0, -cols % multiple, 0, -rows % multiple)
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    if any(pad):
        x = F.pad(x, pad, mode="reflect")
    probs = torch.softmax(model.eval()(x).float(), dim=1)[:, :, :rows, :cols]
    if level:
        probs = F.interpolate(probs, scale_factor=2**level, mode="bilinear", align_corners=False)
    return probs[0, :, : shape[0], : shape[1]].cpu().numpy()


def pixel_scores(truth: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> dict[str, float]:
    """Pooled foreground IoU, precision, recall and area fractions of class maps (class > 0)."""
    tp = fp = fn = total = true = 0
    for t, p in zip(truth, pred):
        t, p = np.asarray(t) > 0, np.asarray(p) > 0
        tp += int(np.count_nonzero(t & p))
        fp += int(np.count_nonzero(~t & p))
        fn += int(np.count_nonzero(t & ~p))
        total += t.size
        true += int(np.count_nonzero(t))

    def ratio(a, b):
        return a / b if b else math.nan

    return {
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "area_fraction_true": ratio(true, total),
        "area_fraction_pred": ratio(tp + fp, total),
    }


def learning_curve(
    planes: StackPlanes,
    inits: Mapping[str, Callable[[], torch.nn.Module]],
    settings: FinetuneSettings,
    *,
    arch: str,
    sizes: Sequence[int],
    n_folds: int,
    seed: int,
    class_weights: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
    cpu_amp: str = "off",
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Scores of fine-tuned networks on held-out groups, one row per init x size x fold.

    Parameters
    ----------
    planes : StackPlanes
        With mask ground truth (``planes.truth``).
    inits : mapping of str -> callable
        Init name ("synthetic", "random", ...) -> a function returning a fresh model.
        A "synthetic" init is also scored without fine-tuning (``n_images`` 0).
    sizes : sequence of int
        Numbers of labelled planes (then all of the other groups' planes).
    n_folds : int
        GroupKFold folds over ``planes.groups``.
    seed : int
        Seeds the subsets, the crops and the random weights, per fold, size and init.
    device : str or torch.device
        Where the networks train.
    cpu_amp : str
        CPU autocast of the fine-tuning steps (``training.cpu_amp``; the scores are float32).

    Returns
    -------
    DataFrame with :data:`CURVE_COLUMNS`; scores pooled over the fold's test planes at
    level 0 (:func:`pixel_scores`).
    """
    if planes.truth is None:
        raise ValueError(
            f"stack {planes.name!r} has no mask ground truth; few-label fine-tuning needs one"
        )
    loss_fn = DiceCELoss(class_weights=class_weights)
    rows = []

    def score(model, test):
        pred = [
            predict_full(
                model, planes.images[z], level=planes.level, shape=planes.shapes[z]
            ).argmax(axis=0)
            for z in test
        ]
        return pixel_scores([planes.truth_full[z] for z in test], pred)

    for fold, (pool, test) in enumerate(group_folds(planes.groups, n_folds)):
        subsets = training_subsets(pool, planes.groups, sizes, seed=derive_seed(seed, fold))
        test_groups = ",".join(sorted({planes.groups[z] for z in test}))
        for init, make in inits.items():
            points = ({"0": np.array([], dtype=int)} if init == "synthetic" else {}) | subsets
            for size, train in points.items():
                t0 = time.perf_counter()
                run_seed = derive_seed(seed, fold, size, init)
                torch.manual_seed(run_seed)
                model = make().to(device)
                if len(train):
                    rng = np.random.default_rng(run_seed)
                    images = [planes.images[z] for z in train]
                    targets = [planes.truth[z] for z in train]
                    finetune(
                        model,
                        lambda step, rng=rng, im=images, tg=targets: random_crops(
                            im, tg, n=settings.batch_size, crop=settings.crop_px, rng=rng
                        ),
                        settings,
                        loss_fn=loss_fn,
                        cpu_amp=cpu_amp,
                    )
                scores = score(model, test)
                rows.append(
                    {
                        "stack": planes.name,
                        "arch": arch,
                        "init": init,
                        "n_images": len(train),
                        "n_train_groups": len({planes.groups[z] for z in train}),
                        "fold": fold,
                        "test_groups": test_groups,
                        "train_files": ",".join(planes.files[z] for z in train),
                        "steps": settings.steps if len(train) else 0,
                        "level": planes.level,
                        **scores,
                        "seconds": round(time.perf_counter() - t0, 2),
                    }
                )
                if log:
                    log(
                        f"fold {fold} ({test_groups}), {init}, {len(train)} image(s): "
                        f"IoU {scores['iou']:.3f} in {rows[-1]['seconds']:.1f} s"
                    )
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def _check_stack(sheet: pd.DataFrame, name: str, *, key: str, sheet_path: str):
    from grainflow.tasks import TASKS

    where = f"{key} names {name!r}"
    if name not in sheet.index:
        raise ValueError(
            f"{where}, which is not a stack of the sheet {sheet_path}; remove it or add the stack"
        )
    row = sheet.loc[name]
    if row["task"] not in TASKS:
        raise ValueError(f"{where}, a {row['task']!r} stack; adaptation is for {sorted(TASKS)}")
    return row, where


def adapt_stacks(sheet: pd.DataFrame, names: Sequence[str], *, sheet_path: str) -> list[str]:
    """Check the stacks ``adapt.unsupervised.stacks`` names against the sheet; return them."""
    for name in names:
        _check_stack(sheet, name, key="adapt.unsupervised.stacks", sheet_path=sheet_path)
    return list(names)


def finetune_stacks(sheet: pd.DataFrame, names: Sequence[str], *, sheet_path: str) -> list[str]:
    """Check the stacks ``adapt.finetune.stacks`` names against the sheet; return them.

    Each must be a row of the sheet, of a segmentation task, with a ground-truth label
    image (box labels score particles but cannot train a segmentation).
    """
    from grainflow.stacks.boxes import is_box_folder

    for name in names:
        row, where = _check_stack(sheet, name, key="adapt.finetune.stacks", sheet_path=sheet_path)
        truth = row.get("ground_truth")
        if not isinstance(truth, str) or not truth:
            raise ValueError(
                f"{where}, which has no ground_truth in {sheet_path}; fine-tuning needs labels"
            )
        if is_box_folder(truth):
            raise ValueError(
                f"{where}, whose ground truth {truth} is boxes; fine-tuning a segmentation "
                "needs label images (masks)"
            )
    return list(names)
