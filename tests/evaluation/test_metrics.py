"""Metrics pinned on hand-worked cases and on scikit-learn / scikit-image references."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from skimage.metrics import variation_of_information
from skimage.morphology import skeletonize
from sklearn.metrics import (
    adjusted_rand_score,
    f1_score,
    jaccard_score,
    precision_score,
    recall_score,
)

from grainflow.evaluation.metrics import (
    BoundaryCounts,
    ObjectCounts,
    PixelCounts,
    boundary_counts,
    instance_scores,
    object_counts,
    pixel_counts,
)

# ----------------------------------------------------------------------------- pixels


def test_pixel_counts_hand_worked():
    true = np.array([[1, 1, 0, 0]])
    pred = np.array([[1, 0, 1, 0]])
    c = pixel_counts(true, pred)
    assert c.as_dict() == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert c.iou()[1] == pytest.approx(1 / 3)
    assert c.dice()[1] == pytest.approx(1 / 2)
    assert c.precision()[1] == pytest.approx(1 / 2)
    assert c.recall()[1] == pytest.approx(1 / 2)
    assert c.accuracy() == pytest.approx(1 / 2)


def test_pixel_counts_match_sklearn():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, (24, 24))
    pred = np.where(rng.random((24, 24)) < 0.7, true, rng.integers(0, 3, (24, 24)))
    c = pixel_counts(true, pred, n_classes=3)
    t, p = true.ravel(), pred.ravel()
    np.testing.assert_allclose(c.iou(), jaccard_score(t, p, average=None))
    np.testing.assert_allclose(c.dice(), f1_score(t, p, average=None))
    np.testing.assert_allclose(c.precision(), precision_score(t, p, average=None))
    np.testing.assert_allclose(c.recall(), recall_score(t, p, average=None))


def test_counts_reduce_once_over_images():
    # image 1: a big object, found perfectly; image 2: a one-pixel object, missed
    t1 = np.zeros((10, 10), int)
    t1[:5] = 1
    t2 = np.zeros((10, 10), int)
    t2[0, 0] = 1
    p1, p2 = t1.copy(), np.zeros_like(t2)
    total = sum([pixel_counts(t1, p1), pixel_counts(t2, p2)])
    whole = pixel_counts(np.concatenate([t1, t2]), np.concatenate([p1, p2]))
    np.testing.assert_array_equal(total.confusion, whole.confusion)
    assert total.iou()[1] == pytest.approx(50 / 51)  # not the mean of 1 and 0


def test_pixel_counts_class_absent_is_nan():
    c = pixel_counts(np.zeros((4, 4), int), np.zeros((4, 4), int))
    assert np.isnan(c.iou()[1]) and c.iou()[0] == 1.0


def test_pixel_counts_round_trip_from_binary():
    c = PixelCounts.from_binary(tp=3, fp=2, fn=1, tn=10)
    assert c.as_dict() == {"tp": 3, "fp": 2, "fn": 1, "tn": 10}


def test_pixel_counts_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        pixel_counts(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="values must lie"):
        pixel_counts(np.full((4, 4), 2), np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="cannot add"):
        pixel_counts(np.zeros((2, 2), int), np.zeros((2, 2), int)) + pixel_counts(
            np.zeros((2, 2), int), np.zeros((2, 2), int), n_classes=3
        )


# ------------------------------------------------------------------------- boundaries


def _vline(col, shape=(32, 32), rows=slice(4, 28), width=1):
    m = np.zeros(shape, bool)
    m[rows, col : col + width] = True
    return m


def test_boundary_f1_tolerance_is_inclusive():
    true, pred = _vline(10), _vline(12)  # parallel lines 2 px apart, 24 px long
    c = boundary_counts(true, pred, tolerance_px=2)
    assert (c.pred_matched, c.pred_total, c.true_matched, c.true_total) == (24, 24, 24, 24)
    assert c.f1 == 1.0
    assert boundary_counts(true, pred, tolerance_px=1.9).f1 == 0.0


def test_boundary_f1_thick_boundaries_are_thinned():
    thin = _vline(10)
    thick = _vline(9, width=3)  # centred on column 10
    c = boundary_counts(thick, thin, tolerance_px=2)  # thinning shortens the ends by ~1 px
    assert c.precision == 1.0 and c.recall == 1.0
    assert c.pred_total == 24
    assert 20 <= c.true_total <= 24  # a one-pixel skeleton, not the 72 pixels of the bar


def test_boundary_f1_hand_worked_extra_line():
    true = _vline(10)
    pred = _vline(10) | _vline(25)  # the true line plus a false one of the same length
    c = boundary_counts(true, pred, tolerance_px=2)
    assert c.precision == pytest.approx(0.5)
    assert c.recall == 1.0
    assert c.f1 == pytest.approx(2 * 0.5 / 1.5)


def test_boundary_f1_empty_maps():
    empty = np.zeros((16, 16), bool)
    line = _vline(5, shape=(16, 16), rows=slice(2, 14))
    assert boundary_counts(empty, empty).f1 == 1.0
    c = boundary_counts(line, empty)
    assert c.f1 == 0.0 and np.isnan(c.precision) and c.recall == 0.0


def test_boundary_counts_match_brute_force():
    rng = np.random.default_rng(3)
    for tol in (0.0, 1.0, 1.5, 3.0):
        true = rng.random((40, 40)) < 0.08
        pred = rng.random((40, 40)) < 0.08
        c = boundary_counts(true, pred, tolerance_px=tol)
        t = np.argwhere(skeletonize(true))
        p = np.argwhere(skeletonize(pred))
        d = cdist(p, t)
        assert c.pred_matched == np.count_nonzero(d.min(axis=1) <= tol)
        assert c.true_matched == np.count_nonzero(d.min(axis=0) <= tol)
        assert (c.pred_total, c.true_total) == (len(p), len(t))


def test_boundary_counts_sum():
    a = BoundaryCounts(1, 2, 3, 4)
    assert sum([a, a, a]) == BoundaryCounts(3, 6, 9, 12)


def test_boundary_counts_bad_tolerance():
    with pytest.raises(ValueError, match="tolerance_px"):
        boundary_counts(np.zeros((4, 4)), np.zeros((4, 4)), tolerance_px=-1)


# -------------------------------------------------------------------------- instances


def test_ari_and_vi_match_references():
    rng = np.random.default_rng(1)
    for _ in range(3):
        true = rng.integers(1, 6, (20, 30))
        pred = np.where(rng.random((20, 30)) < 0.6, true * 7, rng.integers(0, 9, (20, 30)))
        s = instance_scores(true, pred)
        assert s.ari == pytest.approx(adjusted_rand_score(true.ravel(), pred.ravel()), abs=1e-12)
        np.testing.assert_allclose([s.vi_split, s.vi_merge], variation_of_information(true, pred))


def test_ari_exact_on_large_images():
    # pair counts of a 512 x 512 image overflow int64 products; results stay exact
    true = np.repeat(np.arange(1, 5), 512 * 128).reshape(512, 512)
    pred = true.copy()
    pred[:, :3] = 9
    s = instance_scores(true, pred)
    assert s.ari == pytest.approx(adjusted_rand_score(true.ravel(), pred.ravel()), rel=1e-12)


def test_background_is_ignored_like_skimage():
    rng = np.random.default_rng(2)
    true = rng.integers(0, 4, (16, 16))
    pred = rng.integers(0, 4, (16, 16))
    s = instance_scores(true, pred, background=0)
    np.testing.assert_allclose(
        [s.vi_split, s.vi_merge], variation_of_information(true, pred, ignore_labels=[0])
    )
    keep = true != 0
    assert s.ari == pytest.approx(adjusted_rand_score(true[keep], pred[keep]))


def test_vi_hand_worked_split_in_two():
    true = np.ones((8, 8), int)
    pred = np.ones((8, 8), int)
    pred[:, 4:] = 2  # the one grain split into two equal halves: 1 bit of splits
    s = instance_scores(true, pred)
    assert s.vi_split == pytest.approx(1.0)
    assert s.vi_merge == 0.0
    assert s.ari == 0.0
    s = instance_scores(pred, true)  # and the mirror image: 1 bit of merges
    assert (s.vi_split, s.vi_merge) == (0.0, pytest.approx(1.0))


def test_identical_maps_up_to_relabelling():
    true = np.repeat(np.arange(1, 9), 8).reshape(8, 8)
    pred = 100 - true
    s = instance_scores(true, pred)
    assert (s.ari, s.vi, s.counts.n_matched) == (1.0, 0.0, 8)
    assert s.counts.over_segmentation == 0.0 and s.counts.under_segmentation == 0.0


def _quadrants():
    true = np.zeros((8, 8), int)
    true[:4, :4], true[:4, 4:], true[4:, :4], true[4:, 4:] = 1, 2, 3, 4
    pred = np.zeros_like(true)
    pred[:4, :4] = 1  # quadrant 1 exact
    pred[:4, 4:6], pred[:4, 6:] = 2, 3  # quadrant 2 split in two halves
    pred[4:, :] = 4  # quadrants 3 and 4 merged
    return true, pred


def test_matching_split_and_merge_hand_worked():
    true, pred = _quadrants()
    c = instance_scores(true, pred).counts  # IoU > 0.5: halves (0.5) do not match
    assert c == ObjectCounts(n_true=4, n_pred=4, n_matched=1, n_split=1, n_merged=1)
    assert (c.precision, c.recall) == (0.25, 0.25)
    assert (c.over_segmentation, c.under_segmentation) == (0.25, 0.25)
    c = instance_scores(true, pred, inclusive=True).counts  # IoU >= 0.5: one-to-one still
    assert c.n_matched == 3


def test_particles_object_precision_recall_hand_worked():
    true = np.zeros((20, 20), int)
    pred = np.zeros_like(true)
    true[1:5, 1:5], pred[1:5, 1:5] = 1, 1  # exact
    true[8:12, 1:5], pred[8:12, 2:6] = 2, 2  # shifted by 1 px: IoU 12/20 = 0.6
    true[14:18, 1:5], pred[14:18, 3:7] = 3, 3  # shifted by 2 px: IoU 8/24 < 0.5
    pred[1:5, 10:14] = 4  # false particle
    c = object_counts(true, pred, iou_threshold=0.5)
    assert (c.n_true, c.n_pred, c.n_matched) == (3, 4, 2)
    assert c.precision == pytest.approx(0.5) and c.recall == pytest.approx(2 / 3)
    assert object_counts(true, pred, iou_threshold=0.65).n_matched == 1
    total = sum([c, c])
    assert total.precision == c.precision and total.n_true == 6


def test_object_counts_no_objects():
    c = object_counts(np.zeros((5, 5), int), np.zeros((5, 5), int))
    assert (c.n_true, c.n_pred, c.n_matched) == (0, 0, 0)
    assert c.f1 == 1.0 and np.isnan(c.precision)


def test_instance_bad_input():
    with pytest.raises(ValueError, match="iou_threshold"):
        instance_scores(np.ones((3, 3)), np.ones((3, 3)), iou_threshold=0)
    with pytest.raises(ValueError, match="same shape"):
        object_counts(np.ones((3, 3)), np.ones((3, 4)))
