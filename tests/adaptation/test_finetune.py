"""Few-label fine-tuning: honest group folds, nested subsets, hand-worked scores, learning."""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grainflow.adaptation.finetune import (
    FinetuneSettings,
    finetune_stacks,
    group_folds,
    learning_curve,
    pixel_scores,
    predict_full,
    training_subsets,
)
from grainflow.adaptation.planes import StackPlanes, level_shape
from grainflow.models.registry import build_model


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.sampled_from("abcdefg"), min_size=2, max_size=30).filter(
        lambda g: len(set(g)) >= 2
    ),
    n_folds=st.integers(2, 8),
)
def test_group_folds_never_put_one_group_on_both_sides(groups, n_folds):
    folds = group_folds(groups, n_folds)
    groups = np.asarray(groups)
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(len(groups)))  # every plane tested exactly once
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert len(test) and len(train)


def test_group_folds_need_two_groups():
    with pytest.raises(ValueError, match="at least two groups"):
        group_folds(["spot1"] * 4, 3)


def test_training_subsets_are_nested_and_take_groups_one_by_one():
    groups = np.array(["a", "a", "b", "b", "b", "c", "d"])
    pool = np.array([0, 1, 2, 3, 4, 5])  # d held out
    subsets = training_subsets(pool, groups, [1, 2, 4, 6, 10], seed=3)
    assert list(subsets) == ["1", "2", "4", "all"]  # 6 and 10 are not below the pool's 6
    assert sorted(subsets["all"]) == list(pool)
    for small, big in [("1", "2"), ("2", "4"), ("4", "all")]:
        assert list(subsets[big][: len(subsets[small])]) == list(subsets[small])
    order = groups[subsets["all"]]
    runs = [g for i, g in enumerate(order) if i == 0 or g != order[i - 1]]
    assert sorted(runs) == ["a", "b", "c"]  # each group's planes together
    assert training_subsets(pool, groups, [1, 2], seed=3)["2"].tolist() == subsets["2"].tolist()


def test_pixel_scores_hand_worked():
    truth = [np.array([[1, 1, 0, 0]]), np.array([[0, 0, 0, 1]])]
    pred = [np.array([[1, 0, 1, 0]]), np.array([[0, 0, 0, 1]])]
    s = pixel_scores(truth, pred)  # tp 2, fp 1, fn 1 over 8 pixels
    assert s["iou"] == pytest.approx(2 / 4)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["area_fraction_true"] == pytest.approx(3 / 8)
    assert s["area_fraction_pred"] == pytest.approx(3 / 8)


def test_level_shape_follows_the_pyramid():
    assert level_shape((512, 511), 0) == (512, 511)
    assert level_shape((512, 511), 1) == (256, 256)
    assert level_shape((5, 9), 2) == (2, 3)


def test_predict_full_maps_back_to_level_zero():
    model = build_model("unet", depth=2, base_channels=4)
    probs = predict_full(model, np.zeros((30, 21), np.float32), level=1, shape=(59, 41))
    assert probs.shape == (2, 59, 41)
    assert np.allclose(probs.sum(axis=0), 1, atol=1e-5)


def _disc_planes(n=6, size=48, seed=0) -> StackPlanes:
    """Bright discs on a noisy dark field, four groups; the truth is the discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, truth = [], []
    for _ in range(n):
        mask = np.zeros((size, size), bool)
        for _ in range(4):
            cy, cx, r = rng.uniform(8, size - 8), rng.uniform(8, size - 8), rng.uniform(4, 8)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        images.append((mask * 1.0 + rng.normal(0, 0.3, mask.shape)).astype(np.float32))
        truth.append(mask.astype(np.uint8))
    return StackPlanes(
        name="discs",
        task="phases",
        level=0,
        images=images,
        truth=truth,
        truth_full=truth,
        groups=["g0", "g0", "g1", "g1", "g2", "g3"][:n],
        files=[f"f{i}.png" for i in range(n)],
        shapes=[(size, size)] * n,
    )


@pytest.mark.parametrize("cpu_amp", ["off", "bf16"])
def test_learning_curve_learns_and_is_deterministic(cpu_amp):
    torch.set_num_threads(1)
    planes = _disc_planes()

    def make():
        return build_model("unet", depth=2, base_channels=4)

    run = dict(
        arch="unet",
        sizes=[1],
        n_folds=2,
        seed=5,
        cpu_amp=cpu_amp,
    )
    config = FinetuneSettings(steps=40, batch_size=4, crop_px=32, lr=1e-2)
    table = learning_curve(planes, {"random": make}, config, **run)
    folds = group_folds(planes.groups, 2)
    # per fold: 1 image, then every plane of the other groups
    assert list(table["n_images"]) == [n for train, _ in folds for n in (1, len(train))]
    for _, row in table.iterrows():  # the scored planes are never trained on
        trained = set(row["train_files"].split(","))
        held = {f for f, g in zip(planes.files, planes.groups) if g in row["test_groups"]}
        assert not trained & held
    untrained = pixel_scores(
        planes.truth,
        [predict_full(make(), im, level=0, shape=im.shape).argmax(0) for im in planes.images],
    )["iou"]
    assert table["iou"].min() > max(untrained, 0.5)  # it learnt the discs
    again = learning_curve(planes, {"random": make}, config, **run)
    pd.testing.assert_frame_equal(table.drop(columns="seconds"), again.drop(columns="seconds"))


def test_learning_curve_scores_the_synthetic_start_as_it_is():
    planes = _disc_planes()
    config = FinetuneSettings(steps=1, batch_size=2, crop_px=32)
    table = learning_curve(
        planes,
        {"synthetic": lambda: build_model("unet", depth=2, base_channels=4)},
        config,
        arch="unet",
        sizes=[],
        n_folds=2,
        seed=0,
    )
    assert table[table["n_images"] == 0]["steps"].tolist() == [0, 0]


def test_finetune_stacks_refuse_what_cannot_be_fine_tuned(tmp_path):
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    (boxes / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    sheet = pd.DataFrame(
        {
            "task": ["phases", "grains", "phases"],
            "ground_truth": ["masks", None, str(boxes)],
        },
        index=["alloy", "steel", "particles"],
    )
    assert finetune_stacks(sheet, ["alloy"], sheet_path="s.tsv") == ["alloy"]
    with pytest.raises(ValueError, match="not a stack of the sheet s.tsv"):
        finetune_stacks(sheet, ["nope"], sheet_path="s.tsv")
    with pytest.raises(ValueError, match="no ground_truth"):
        finetune_stacks(sheet, ["steel"], sheet_path="s.tsv")
    with pytest.raises(ValueError, match="is boxes"):
        finetune_stacks(sheet, ["particles"], sheet_path="s.tsv")
