"""Segmentation metrics: count first, reduce once.

A ``*_counts`` function turns one image (or tile) into a dataclass of integer counts that
add with ``+``; tiles, images and folds are reduced by summing counts and scored once from
the sums (nnU-Net's global Dice), never by averaging per-image scores. ARI and VI do not
sum: average them over images. Argument order is always ``(true, pred)``, as in scikit-learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from skimage.morphology import skeletonize
from sklearn.metrics.cluster import contingency_matrix

__all__ = [
    "PixelCounts",
    "BoundaryCounts",
    "ObjectCounts",
    "InstanceScores",
    "pixel_counts",
    "boundary_counts",
    "object_counts",
    "instance_scores",
]


def _ratio(num, den):
    """num / den elementwise, NaN where den == 0."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out if out.ndim else float(out)


def _f1(precision_num, precision_den, recall_num, recall_den) -> float:
    """F1 from counts; 1 when both sides are empty, 0 when only one is."""
    if precision_den == 0 and recall_den == 0:
        return 1.0
    if precision_den == 0 or recall_den == 0:
        return 0.0
    p = precision_num / precision_den
    r = recall_num / recall_den
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _check_pair(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(
            f"true and pred must have the same shape, got {true.shape=}, {pred.shape=}"
        )
    if true.size == 0:
        raise ValueError(f"images must not be empty, got {true.shape=}")
    return true, pred


class _Counts:
    """Mixin: field-wise ``+`` so that counts reduce with ``sum``.

    Notes
    -----
    Tiles, images, specimens and folds are reduced by summing counts, and the score
    is computed once from the sums (nnU-Net's global Dice, segmentation_models_pytorch's
    ``get_stats``). Averaging per-image scores instead would weight a nearly empty
    image like a full one.
    """

    def __add__(self, other):
        if not isinstance(other, type(self)):
            return NotImplemented
        return type(self)(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def __radd__(self, other):
        if isinstance(other, int) and other == 0:  # sum() starts from 0
            return self
        return NotImplemented

    def as_dict(self) -> dict[str, int]:
        """The counts as a flat dict of Python ints."""
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


# --------------------------------------------------------------------------- pixels


@dataclass(frozen=True, eq=False)
class PixelCounts(_Counts):
    """Confusion matrix of a semantic segmentation.

    Attributes
    ----------
    confusion : ndarray of shape (C, C), int64
        ``confusion[t, p]`` = number of pixels of true class ``t`` predicted as ``p``.
    """

    confusion: np.ndarray

    def __add__(self, other):
        if isinstance(other, PixelCounts) and other.confusion.shape != self.confusion.shape:
            raise ValueError(f"cannot add counts of {self.n_classes} and {other.n_classes} classes")
        return super().__add__(other)

    @classmethod
    def from_binary(cls, *, tp: int, fp: int, fn: int, tn: int) -> PixelCounts:
        """Two-class counts from the counts of class 1 (e.g. as stored in a table)."""
        return cls(np.array([[tn, fp], [fn, tp]], dtype=np.int64))

    def as_dict(self) -> dict[str, int]:
        """Counts of class 1 as ``tp, fp, fn, tn`` (two classes only)."""
        if self.n_classes != 2:
            raise ValueError(f"as_dict needs two classes, got {self.n_classes=}")
        return {k: int(getattr(self, k)[1]) for k in ("tp", "fp", "fn", "tn")}

    @property
    def n_classes(self) -> int:
        return self.confusion.shape[0]

    @property
    def tp(self) -> np.ndarray:
        """True positives per class, shape (C,)."""
        return np.diag(self.confusion).copy()

    @property
    def fp(self) -> np.ndarray:
        return self.confusion.sum(axis=0) - self.tp

    @property
    def fn(self) -> np.ndarray:
        return self.confusion.sum(axis=1) - self.tp

    @property
    def tn(self) -> np.ndarray:
        return self.confusion.sum() - self.tp - self.fp - self.fn

    def iou(self) -> np.ndarray:
        """Intersection over union per class, shape (C,); NaN for a class absent from both."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    def dice(self) -> np.ndarray:
        """Dice (F1) per class, shape (C,); NaN for a class absent from both."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def precision(self) -> np.ndarray:
        """Precision per class, shape (C,); NaN for a class never predicted."""
        return _ratio(self.tp, self.tp + self.fp)

    def recall(self) -> np.ndarray:
        """Recall per class, shape (C,); NaN for a class never present."""
        return _ratio(self.tp, self.tp + self.fn)

    def accuracy(self) -> float:
        return float(self.tp.sum() / self.confusion.sum())


def pixel_counts(true: np.ndarray, pred: np.ndarray, *, n_classes: int = 2) -> PixelCounts:
    """Confusion matrix of two class maps.

    Parameters
    ----------
    true, pred : ndarray of shape (M, N) (any shape), int or bool
        Class maps with values in ``0 .. n_classes - 1``.
    n_classes : int

    Returns
    -------
    PixelCounts
    """
    true, pred = _check_pair(true, pred)
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes=}")
    t = true.astype(np.int64, copy=False).ravel()
    p = pred.astype(np.int64, copy=False).ravel()
    for name, a in (("true", t), ("pred", p)):
        if a.min() < 0 or a.max() >= n_classes:
            raise ValueError(
                f"{name} values must lie in [0, {n_classes - 1}], got min {a.min()}, max {a.max()}"
            )
    cm = np.bincount(t * n_classes + p, minlength=n_classes**2).reshape(n_classes, n_classes)
    return PixelCounts(cm.astype(np.int64))


# ------------------------------------------------------------------------- boundaries


@dataclass(frozen=True)
class BoundaryCounts(_Counts):
    """Matched and total skeleton pixels of a boundary map against the truth.

    Attributes
    ----------
    pred_matched : int
        Predicted skeleton pixels within the tolerance of a true skeleton pixel.
    pred_total : int
        Predicted skeleton pixels.
    true_matched : int
        True skeleton pixels within the tolerance of a predicted skeleton pixel.
    true_total : int
        True skeleton pixels.
    """

    pred_matched: int
    pred_total: int
    true_matched: int
    true_total: int

    @property
    def precision(self) -> float:
        """Fraction of predicted boundary that lies near a true boundary (NaN if none predicted)."""
        return _ratio(self.pred_matched, self.pred_total)

    @property
    def recall(self) -> float:
        """Fraction of true boundary that lies near a predicted one (NaN if no true boundary)."""
        return _ratio(self.true_matched, self.true_total)

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall; 1 if both maps are empty, 0 if one is."""
        return _f1(self.pred_matched, self.pred_total, self.true_matched, self.true_total)


def boundary_counts(
    true: np.ndarray, pred: np.ndarray, *, tolerance_px: float = 2.0
) -> BoundaryCounts:
    """Boundary matching counts with a distance tolerance.

    Both maps are thinned to one-pixel skeletons
    (:func:`skimage.morphology.skeletonize`), so that a thick boundary counts
    like a thin one. A predicted skeleton pixel is matched when the Euclidean
    distance to the nearest true skeleton pixel is at most ``tolerance_px``,
    and vice versa. Matching is not one-to-one (as in the usual distance-
    transform form of the boundary F1): a doubled predicted line near one true
    line is fully "matched" but is caught by the instance metrics.

    Parameters
    ----------
    true, pred : ndarray of shape (M, N), bool or 0/1
        Boundary masks of any width.
    tolerance_px : float
        Largest distance, in pixels, at which a boundary pixel still counts as found.

    Returns
    -------
    BoundaryCounts
    """
    true, pred = _check_pair(true, pred)
    if true.ndim != 2:
        raise ValueError(f"boundary maps must be 2-D, got {true.shape=}")
    if not (np.isfinite(tolerance_px) and tolerance_px >= 0):
        raise ValueError(f"tolerance_px must be a finite number >= 0, got {tolerance_px=}")
    t = skeletonize(true.astype(bool))
    p = skeletonize(pred.astype(bool))
    n_t, n_p = int(t.sum()), int(p.sum())
    if n_t == 0 or n_p == 0:
        return BoundaryCounts(0, n_p, 0, n_t)
    dist_to_true = ndi.distance_transform_edt(~t)
    dist_to_pred = ndi.distance_transform_edt(~p)
    return BoundaryCounts(
        pred_matched=int(np.count_nonzero(dist_to_true[p] <= tolerance_px)),
        pred_total=n_p,
        true_matched=int(np.count_nonzero(dist_to_pred[t] <= tolerance_px)),
        true_total=n_t,
    )


# -------------------------------------------------------------------------- instances


@dataclass(frozen=True)
class ObjectCounts(_Counts):
    """Object-level agreement of two instance maps.

    Attributes
    ----------
    n_true, n_pred : int
        Objects in the truth and in the prediction (background excluded).
    n_matched : int
        One-to-one matches at the IoU threshold (true positives).
    n_split : int
        True objects that are the majority parent of two or more predicted
        objects (over-segmentation).
    n_merged : int
        Predicted objects that are the majority host of two or more true
        objects (under-segmentation).
    """

    n_true: int
    n_pred: int
    n_matched: int
    n_split: int = 0
    n_merged: int = 0

    @property
    def precision(self) -> float:
        """Matched / predicted objects (NaN if nothing predicted)."""
        return _ratio(self.n_matched, self.n_pred)

    @property
    def recall(self) -> float:
        """Matched / true objects (NaN if no true object)."""
        return _ratio(self.n_matched, self.n_true)

    @property
    def f1(self) -> float:
        return _f1(self.n_matched, self.n_pred, self.n_matched, self.n_true)

    @property
    def over_segmentation(self) -> float:
        """Fraction of true objects split into two or more predicted objects."""
        return _ratio(self.n_split, self.n_true)

    @property
    def under_segmentation(self) -> float:
        """Fraction of predicted objects that merge two or more true objects."""
        return _ratio(self.n_merged, self.n_pred)


@dataclass(frozen=True)
class InstanceScores:
    """Agreement of two instance maps of one image.

    Attributes
    ----------
    counts : ObjectCounts
        Summable object counts.
    ari : float
        Adjusted Rand index of the pixel partitions (1 = identical, ~0 = chance).
    vi_split : float
        Conditional entropy H(pred | true) in bits: false splits (over-segmentation).
    vi_merge : float
        Conditional entropy H(true | pred) in bits: false merges (under-segmentation).
    """

    counts: ObjectCounts
    ari: float
    vi_split: float
    vi_merge: float

    @property
    def vi(self) -> float:
        """Variation of information, bits."""
        return self.vi_split + self.vi_merge


def _table(true: np.ndarray, pred: np.ndarray):
    """Sparse contingency table (COO) with the sorted label values of each side."""
    t_lab = np.unique(true)
    p_lab = np.unique(pred)
    table = sparse.coo_array(contingency_matrix(true.ravel(), pred.ravel(), sparse=True))
    return table, t_lab, p_lab


def _ari(table: sparse.coo_array) -> float:
    """Adjusted Rand index from a contingency table, in exact integer arithmetic."""
    nij = table.data.astype(np.int64)
    a = np.asarray(table.sum(axis=1)).ravel().astype(np.int64)
    b = np.asarray(table.sum(axis=0)).ravel().astype(np.int64)
    n = int(a.sum())
    comb = int(np.sum(nij * (nij - 1) // 2))
    sa = int(np.sum(a * (a - 1) // 2))
    sb = int(np.sum(b * (b - 1) // 2))
    pairs = n * (n - 1) // 2
    num = 2 * (pairs * comb - sa * sb)
    den = pairs * (sa + sb) - 2 * sa * sb
    if den == 0:  # both partitions trivial in the same way (as scikit-learn)
        return 1.0
    return num / den


def _vi(table: sparse.coo_array) -> tuple[float, float]:
    """(H(pred|true), H(true|pred)) in bits from a contingency table."""
    nij = table.data.astype(float)
    n = nij.sum()
    a = np.asarray(table.sum(axis=1)).ravel().astype(float)
    b = np.asarray(table.sum(axis=0)).ravel().astype(float)
    pij = nij / n
    split = -np.sum(pij * np.log2(nij / a[table.row]))
    merge = -np.sum(pij * np.log2(nij / b[table.col]))
    return float(max(0.0, split)), float(max(0.0, merge))


def _match(table, t_lab, p_lab, *, iou_threshold, inclusive, background):
    """Greedy one-to-one matching by decreasing IoU; returns ObjectCounts."""
    a = np.asarray(table.sum(axis=1)).ravel()
    b = np.asarray(table.sum(axis=0)).ravel()
    t_obj = np.ones(len(t_lab), bool) if background is None else t_lab != background
    p_obj = np.ones(len(p_lab), bool) if background is None else p_lab != background
    rows, cols, inter = table.row, table.col, table.data.astype(float)
    keep = t_obj[rows] & p_obj[cols]
    rows, cols, inter = rows[keep], cols[keep], inter[keep]
    iou = inter / (a[rows] + b[cols] - inter)
    ok = iou >= iou_threshold if inclusive else iou > iou_threshold
    order = np.lexsort((cols[ok], rows[ok], -iou[ok]))  # highest IoU first, ties by label
    used_t, used_p = set(), set()
    for i, j in zip(rows[ok][order], cols[ok][order]):
        if i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
    # majority parent of each predicted object / majority host of each true object
    csr = table.tocsr()
    parent = np.asarray(csr.argmax(axis=0)).ravel()  # true row holding most of column j
    host = np.asarray(csr.argmax(axis=1)).ravel()  # pred column holding most of row i
    p_idx = np.flatnonzero(p_obj)
    t_idx = np.flatnonzero(t_obj)
    parents = parent[p_idx]
    parents = parents[t_obj[parents]]
    hosts = host[t_idx]
    hosts = hosts[p_obj[hosts]]
    n_split = int(np.count_nonzero(np.bincount(parents, minlength=len(t_lab)) >= 2))
    n_merged = int(np.count_nonzero(np.bincount(hosts, minlength=len(p_lab)) >= 2))
    return ObjectCounts(
        n_true=int(t_obj.sum()),
        n_pred=int(p_obj.sum()),
        n_matched=len(used_t),
        n_split=n_split,
        n_merged=n_merged,
    )


def object_counts(
    true: np.ndarray,
    pred: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    inclusive: bool = True,
    background: int | None = 0,
) -> ObjectCounts:
    """Object-level matching of two instance maps (e.g. particle ids).

    A true and a predicted object match when their IoU is at least
    ``iou_threshold`` (strictly above when ``inclusive=False``); matches are
    one-to-one, taken greedily by decreasing IoU. Above 0.5 the matching is
    unique anyway; at exactly 0.5 a tie goes to the lower label.

    Parameters
    ----------
    true, pred : ndarray of shape (M, N), int
        Instance maps; ``background`` marks pixels that belong to no object.
    iou_threshold : float in (0, 1]
    inclusive : bool
        Match at IoU >= threshold (True, the default) or IoU > threshold.
    background : int or None
        Label of "no object" in both maps (0 for particle ids; None for grain
        maps, which tile the whole image).

    Returns
    -------
    ObjectCounts
    """
    true, pred = _check_pair(true, pred)
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold=}")
    table, t_lab, p_lab = _table(true, pred)
    return _match(
        table, t_lab, p_lab, iou_threshold=iou_threshold, inclusive=inclusive, background=background
    )


def instance_scores(
    true: np.ndarray,
    pred: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    inclusive: bool = False,
    background: int | None = None,
) -> InstanceScores:
    """Grain-level agreement of two instance maps from one contingency table.

    Parameters
    ----------
    true, pred : ndarray of shape (M, N), int
        Instance (grain id) maps.
    iou_threshold : float in (0, 1]
        IoU needed for a matched grain; by default a match needs IoU > 0.5,
        which makes matches unique.
    inclusive : bool
        Match at IoU >= threshold instead of > threshold.
    background : int or None
        If given, pixels where ``true == background`` are left out of the ARI
        and VI (as ``ignore_labels`` in scikit-image), and objects with this
        label are left out of the object counts on both sides.

    Returns
    -------
    InstanceScores
        ARI, VI split/merge parts (bits) and :class:`ObjectCounts` (matched,
        split and merged grains).

    Notes
    -----
    VI follows :func:`skimage.metrics.variation_of_information` with
    ``image0=true``: ``vi_split = H(pred|true)``, ``vi_merge = H(true|pred)``.
    """
    true, pred = _check_pair(true, pred)
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold=}")
    table, t_lab, p_lab = _table(true, pred)
    counts = _match(
        table, t_lab, p_lab, iou_threshold=iou_threshold, inclusive=inclusive, background=background
    )
    if background is not None:
        keep = true != background
        if not keep.any():
            return InstanceScores(counts, math.nan, math.nan, math.nan)
        table, _, _ = _table(true[keep], pred[keep])
    split, merge = _vi(table)
    return InstanceScores(counts=counts, ari=_ari(table), vi_split=split, vi_merge=merge)
