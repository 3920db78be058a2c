"""Detection scores: predicted particles as boxes, matched one to one to true boxes.

For ground truth given as boxes (no masks): each connected particle of a predicted
label image becomes its bounding box, the boxes are matched to the true ones at box
IoU >= 0.5 by an optimal assignment, and the matches are counted (true positives,
false positives, false negatives) per plane, summed over planes and scored once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from grainflow.evaluation.metrics import _f1, _ratio

__all__ = [
    "DETECTION_COUNTS",
    "DETECTION_SCORES",
    "label_boxes",
    "box_iou",
    "match_boxes",
    "DetectionCounts",
    "detection_counts",
    "score_detection",
]

#: count columns of a detection table (they add over planes)
DETECTION_COUNTS = ("det_tp", "det_fp", "det_fn")
#: score columns computed from (summed) counts
DETECTION_SCORES = (
    "det_precision",
    "det_recall",
    "det_f1",
    "count_true",
    "count_pred",
    "count_error",
    "count_error_rel",
)


def _check_boxes(boxes, name: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"{name} must have shape (n, 4) (top, left, bottom, right), got {boxes.shape}"
        )
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{name} hold NaN or infinite values")
    if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
        i = int(np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))[0])
        raise ValueError(
            f"{name} must have bottom > top and right > left, got box {i}: {boxes[i].tolist()}"
        )
    return boxes


def _check_threshold(iou_threshold: float) -> None:
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold=}")


def label_boxes(ids: np.ndarray) -> np.ndarray:
    """Bounding boxes of the objects of a label image.

    Parameters
    ----------
    ids : ndarray of shape (M, N), int
        Object labels, 0 = background (e.g. ``particle_ids``).

    Returns
    -------
    boxes : ndarray of shape (n, 4), float64
        ``top, left, bottom, right`` of each label present, in increasing label
        order, in pixels with exclusive bottom and right (pixel ``(i, j)``
        covers ``[i, i + 1) x [j, j + 1)``): the convention of the true boxes
        (:func:`grainflow.stacks.boxes.read_yolo_boxes`).
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"ids must be 2-D (rows, cols), got shape {ids.shape}")
    if ids.dtype.kind not in "iub":
        raise ValueError(f"ids must hold integer labels, got dtype {ids.dtype}")
    if ids.size and ids.min() < 0:
        raise ValueError("ids must not be negative (0 is background)")
    slices = ndi.find_objects(ids.astype(np.int64, copy=False)) if ids.size else []
    boxes = [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in slices if s is not None]
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def box_iou(a, b) -> np.ndarray:
    """Intersection over union of every box of ``a`` with every box of ``b``.

    Parameters
    ----------
    a, b : array-like of shape (n, 4) and (m, 4)
        ``top, left, bottom, right``; bottom > top and right > left.

    Returns
    -------
    iou : ndarray of shape (n, m), float64, in [0, 1]
    """
    a, b = _check_boxes(a, "boxes a"), _check_boxes(b, "boxes b")
    top = np.maximum(a[:, None, 0], b[None, :, 0])
    left = np.maximum(a[:, None, 1], b[None, :, 1])
    bottom = np.minimum(a[:, None, 2], b[None, :, 2])
    right = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def match_boxes(pred, true, *, iou_threshold: float = 0.5):
    """One-to-one matches of predicted to true boxes at IoU >= ``iou_threshold``.

    Parameters
    ----------
    pred, true : array-like of shape (n, 4) and (m, 4)
        ``top, left, bottom, right``.
    iou_threshold : float in (0, 1]

    Returns
    -------
    pred_index, true_index : ndarray of int64
        Matched pairs, in increasing ``pred_index``.
    iou : ndarray of float64
        Their IoU, each at least ``iou_threshold``.

    Notes
    -----
    The assignment maximises the summed IoU of the matched pairs
    (:func:`scipy.optimize.linear_sum_assignment`) over the pairs at or above the
    threshold; pairs below it count as 0 and are never matched. So one box never
    matches two (two predictions on one true particle: one true positive and one
    false positive), and, unlike greedy matching by decreasing IoU, a box is not
    taken by a neighbour that has a better alternative.
    """
    _check_threshold(iou_threshold)
    iou = box_iou(pred, true)
    empty = np.zeros(0, np.int64)
    if iou.size == 0:
        return empty, empty, np.zeros(0)
    gain = np.where(iou >= iou_threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    keep = iou[rows, cols] >= iou_threshold
    rows, cols = rows[keep].astype(np.int64), cols[keep].astype(np.int64)
    return rows, cols, iou[rows, cols]


@dataclass(frozen=True)
class DetectionCounts:
    """Matched and unmatched boxes of one plane or, summed, of many.

    Attributes
    ----------
    tp : int
        Predicted boxes matched to a true box.
    fp : int
        Predicted boxes matched to none.
    fn : int
        True boxes matched to none.
    """

    tp: int
    fp: int
    fn: int

    def __add__(self, other: DetectionCounts) -> DetectionCounts:
        return DetectionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def __radd__(self, other):
        return self if other == 0 else self.__add__(other)  # sum() starts at 0

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp

    @property
    def n_true(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        """Matched / predicted boxes (NaN if nothing predicted)."""
        return _ratio(self.tp, self.n_pred)

    @property
    def recall(self) -> float:
        """Matched / true boxes (NaN if no true box)."""
        return _ratio(self.tp, self.n_true)

    @property
    def f1(self) -> float:
        """2 TP / (2 TP + FP + FN); 1 if both sides are empty, 0 if only one is."""
        return _f1(self.tp, self.n_pred, self.tp, self.n_true)

    @property
    def count_error(self) -> int:
        """Predicted minus true count."""
        return self.n_pred - self.n_true

    @property
    def count_error_rel(self) -> float:
        """(predicted - true) / true count (NaN if no true box)."""
        return _ratio(self.count_error, self.n_true)

    def as_dict(self) -> dict[str, int]:
        """The :data:`DETECTION_COUNTS` columns."""
        return {f"det_{k}": v for k, v in asdict(self).items()}

    def scores(self) -> dict[str, float]:
        """The :data:`DETECTION_SCORES` columns."""
        return {
            "det_precision": self.precision,
            "det_recall": self.recall,
            "det_f1": self.f1,
            "count_true": self.n_true,
            "count_pred": self.n_pred,
            "count_error": self.count_error,
            "count_error_rel": self.count_error_rel,
        }


def detection_counts(pred, true, *, iou_threshold: float = 0.5) -> DetectionCounts:
    """Count the one-to-one matches of predicted to true boxes (:func:`match_boxes`).

    Parameters
    ----------
    pred, true : array-like of shape (n, 4) and (m, 4)
        ``top, left, bottom, right`` in pixels.
    iou_threshold : float in (0, 1]

    Returns
    -------
    DetectionCounts
    """
    pred, true = _check_boxes(pred, "predicted boxes"), _check_boxes(true, "true boxes")
    matched, _, _ = match_boxes(pred, true, iou_threshold=iou_threshold)
    tp = len(matched)
    return DetectionCounts(tp=tp, fp=len(pred) - tp, fn=len(true) - tp)


def score_detection(ids: np.ndarray, true, *, iou_threshold: float = 0.5) -> dict:
    """Counts and scores of a predicted label image against true boxes.

    Parameters
    ----------
    ids : ndarray of shape (M, N), int
        Predicted objects (``particle_ids``; 0 = background).
    true : array-like of shape (m, 4)
        True boxes, ``top, left, bottom, right`` in pixels.
    iou_threshold : float in (0, 1]

    Returns
    -------
    row : dict
        :data:`DETECTION_COUNTS` and :data:`DETECTION_SCORES`.
    """
    counts = detection_counts(label_boxes(ids), true, iou_threshold=iou_threshold)
    return {**counts.as_dict(), **counts.scores()}
