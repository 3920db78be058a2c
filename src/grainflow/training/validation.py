"""Validation during training: the metrics of the held-out images and the score they give."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from functools import reduce
from operator import add

import numpy as np

from grainflow.evaluation.metrics import boundary_counts, pixel_counts
from grainflow.tasks import TASKS, check_task, task_info

__all__ = ["pixel_metrics", "default_score", "segmentation_metrics", "primary_score"]


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


def _segmentation_metrics(
    true: Sequence[np.ndarray], pred: Sequence[np.ndarray], *, task: str, tolerance_px: int
) -> dict[str, float]:
    if TASKS[task].score == "boundary_f1":
        b = reduce(
            add, (boundary_counts(t, q, tolerance_px=tolerance_px) for t, q in zip(true, pred))
        )
        return {"boundary_f1": b.f1, "boundary_precision": b.precision, "boundary_recall": b.recall}
    c = reduce(add, (pixel_counts(t > 0, q > 0) for t, q in zip(true, pred)))
    return {"iou": float(c.iou()[1]), "dice": float(c.dice()[1])}


def segmentation_metrics(task: str, *, tolerance_px: int) -> Callable:
    """Validation scores of a segmentation task, from counts summed over the held-out images.

    Returns ``metrics(true, pred) -> dict`` for :func:`train_fold`'s ``metrics_fn``:
    boundary F1, precision and recall (``tolerance_px``) for ``grains``;
    particle-phase IoU and Dice for ``phases``.
    """
    check_task(task, allowed=tuple(TASKS))
    return functools.partial(_segmentation_metrics, task=task, tolerance_px=tolerance_px)


def _score(metrics: Mapping[str, float], *, key: str) -> float:
    return metrics[key]


def primary_score(task: str) -> Callable[[Mapping[str, float]], float]:
    """A task's validation score (:attr:`grainflow.tasks.Task.score`), ``metrics -> float``."""
    return functools.partial(_score, key=task_info(task, allowed=tuple(TASKS)).score)
