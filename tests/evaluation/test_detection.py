"""Detection scores: particle boxes matched one to one to true boxes, hand-worked."""

import math

import numpy as np
import pytest

from grainflow.evaluation.detection import (
    DETECTION_COUNTS,
    DETECTION_SCORES,
    DetectionCounts,
    box_iou,
    detection_counts,
    label_boxes,
    match_boxes,
    score_detection,
)

# true boxes and predictions (top, left, bottom, right), IoU worked by hand
TRUE = [
    [0, 0, 10, 10],
    [20, 20, 30, 30],
    [50, 50, 60, 60],
    [100, 100, 110, 110],
]
PRED = [
    [0, 0, 10, 10],  # T0 exactly: IoU 1
    [20, 20, 30, 35],  # T1: 100 / 150 = 2/3
    [50, 50, 60, 70],  # T2: 100 / 200 = 0.5, matched (>= 0.5)
    [80, 80, 90, 90],  # nothing
    [100, 100, 110, 120.5],  # T3: 100 / 205 < 0.5, not matched
]


def test_small_case_exact_numbers():
    iou = box_iou(PRED, TRUE)
    assert iou.shape == (5, 4)
    np.testing.assert_allclose(np.diag(iou[:4]), [1.0, 2 / 3, 0.5, 0.0])
    assert iou[4, 3] == pytest.approx(100 / 205)
    pred_i, true_i, matched = match_boxes(PRED, TRUE)
    assert pred_i.tolist() == [0, 1, 2] and true_i.tolist() == [0, 1, 2]
    np.testing.assert_allclose(matched, [1.0, 2 / 3, 0.5])

    counts = detection_counts(PRED, TRUE)
    assert counts == DetectionCounts(tp=3, fp=2, fn=1)
    assert counts.as_dict() == {"det_tp": 3, "det_fp": 2, "det_fn": 1}
    assert list(counts.as_dict()) == list(DETECTION_COUNTS)
    scores = counts.scores()
    assert list(scores) == list(DETECTION_SCORES)
    assert scores["det_precision"] == pytest.approx(3 / 5)
    assert scores["det_recall"] == pytest.approx(3 / 4)
    assert scores["det_f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert (scores["count_true"], scores["count_pred"], scores["count_error"]) == (4, 5, 1)
    assert scores["count_error_rel"] == pytest.approx(0.25)


def test_iou_half_is_the_boundary():
    truth = [[0, 0, 4, 4]]
    assert detection_counts([[0, 0, 4, 2]], truth).tp == 1  # 8 / 16 = 0.5 exactly
    assert detection_counts([[0, 0, 4, 1.96]], truth).tp == 0  # 7.84 / 16 < 0.5
    assert detection_counts([[0, 0, 4, 1.96]], truth, iou_threshold=0.4).tp == 1
    assert detection_counts([[0, 0, 4, 2]], truth, iou_threshold=0.51).tp == 0


def test_matching_is_one_to_one_and_optimal():
    truth = [[0, 10, 10, 20]]
    two = [[0, 10, 10, 20], [0, 10, 10, 19]]  # both on one truth (IoU 1 and 0.9)
    assert detection_counts(two, truth) == DetectionCounts(tp=1, fp=1, fn=0)
    pred_i, true_i, _ = match_boxes(two, truth)
    assert (pred_i.tolist(), true_i.tolist()) == ([0], [0])  # the better one
    # greedy by IoU would give P0 to T0 (0.818) and leave P1 unmatched; the
    # assignment gives P0 to T1 (0.538) and P1 to T0 (0.667): two matches
    truths = [[0, 10, 10, 20], [0, 14, 10, 24]]
    preds = [[0, 11, 10, 21], [0, 8, 10, 18]]
    iou = box_iou(preds, truths)
    np.testing.assert_allclose(iou, [[90 / 110, 70 / 130], [80 / 120, 40 / 160]])
    pred_i, true_i, _ = match_boxes(preds, truths)
    assert sorted(zip(pred_i.tolist(), true_i.tolist())) == [(0, 1), (1, 0)]
    assert detection_counts(preds, truths).tp == 2


def test_empty_sides_have_defined_values():
    truth = [[0, 0, 2, 2], [5, 5, 7, 7], [9, 9, 12, 12]]
    missed = detection_counts(np.zeros((0, 4)), truth).scores()
    assert math.isnan(missed["det_precision"])  # nothing predicted
    assert (missed["det_recall"], missed["det_f1"]) == (0.0, 0.0)
    assert (missed["count_error"], missed["count_error_rel"]) == (-3, -1.0)

    spurious = detection_counts(truth[:2], []).scores()
    assert spurious["det_precision"] == 0.0 and math.isnan(spurious["det_recall"])
    assert spurious["det_f1"] == 0.0 and spurious["count_error"] == 2
    assert math.isnan(spurious["count_error_rel"])  # no true particle to count

    nothing = detection_counts([], []).scores()
    assert nothing["det_f1"] == 1.0 and nothing["count_error"] == 0  # both empty: agree
    assert math.isnan(nothing["det_precision"]) and math.isnan(nothing["det_recall"])
    assert math.isnan(nothing["count_error_rel"])
    pred_i, true_i, matched = match_boxes([], truth)
    assert pred_i.size == true_i.size == matched.size == 0


def test_counts_add_over_planes_and_are_scored_once():
    a = DetectionCounts(tp=3, fp=1, fn=0)
    b = DetectionCounts(tp=0, fp=0, fn=4)
    pooled = sum([a, b])
    assert pooled == DetectionCounts(tp=3, fp=1, fn=4)
    assert pooled.recall == pytest.approx(3 / 7)  # not the mean of 1 and 0


def test_label_boxes_and_score_of_a_label_image():
    ids = np.zeros((12, 12), np.uint32)
    ids[1:4, 2:6] = 1  # rows 1..3, cols 2..5
    ids[8:12, 9:12] = 3  # label 2 absent
    np.testing.assert_array_equal(label_boxes(ids), [[1, 2, 4, 6], [8, 9, 12, 12]])
    assert label_boxes(np.zeros((5, 5), np.int32)).shape == (0, 4)
    row = score_detection(ids, [[1, 2, 4, 6], [0, 0, 1, 1]])
    assert {k: row[k] for k in DETECTION_COUNTS} == {"det_tp": 1, "det_fp": 1, "det_fn": 1}
    assert row["det_f1"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: box_iou([[0, 0, 1]], [[0, 0, 1, 1]]), r"shape \(n, 4\)"),
        (lambda: box_iou([0, 0, 1, 1], [[0, 0, 1, 1]]), r"shape \(n, 4\)"),
        (lambda: detection_counts([[0, 0, np.nan, 1]], []), "NaN or infinite"),
        (lambda: detection_counts([[2, 0, 1, 1]], []), "bottom > top"),
        (lambda: detection_counts([], [[0, 3, 1, 3]]), "right > left"),
        (lambda: match_boxes([[0, 0, 1, 1]], [], iou_threshold=0.0), "iou_threshold"),
        (lambda: detection_counts([], [], iou_threshold=1.5), "iou_threshold"),
        (lambda: label_boxes(np.zeros((2, 2, 2), int)), "2-D"),
        (lambda: label_boxes(np.zeros((2, 2), float)), "integer"),
        (lambda: label_boxes(-np.ones((2, 2), int)), "negative"),
    ],
)
def test_bad_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
