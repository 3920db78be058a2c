"""Abstention: accuracy against coverage, thresholds chosen on validation crystals."""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from grainflow.diffraction import evaluate
from grainflow.diffraction.data import CLASSES, fold_rows
from grainflow.diffraction.evaluate import (
    abstention_headline,
    abstention_tables,
    abstention_threshold,
    accuracy_coverage,
    evaluate_classifier,
    predict_validation,
)
from grainflow.diffraction.figures import coverage_figure
from grainflow.diffraction.simulate import synthesize_diffraction_specimen
from grainflow.diffraction.train import train_diffraction_fold
from grainflow.io.hdf5 import write_specimen
from grainflow.splits import make_manifest, read_manifest, write_manifest

# five patterns, confidences 0.9 > 0.8 > 0.7 > 0.6 > 0.5; right, wrong, right, right, wrong
PROBS = np.array(
    [
        [0.9, 0.05, 0.05],
        [0.8, 0.1, 0.1],
        [0.2, 0.7, 0.1],
        [0.6, 0.3, 0.1],
        [0.1, 0.4, 0.5],
    ]
)
LABELS = np.array([0, 1, 1, 0, 1])


def test_accuracy_at_each_coverage_by_hand():
    curve = accuracy_coverage(PROBS, LABELS)
    np.testing.assert_allclose(curve["threshold"], [0.9, 0.8, 0.7, 0.6, 0.5])
    assert curve["accepted"].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(curve["coverage"], [0.2, 0.4, 0.6, 0.8, 1.0])
    assert curve["correct"].tolist() == [1, 1, 2, 3, 3]
    np.testing.assert_allclose(curve["accuracy"], [1.0, 1 / 2, 2 / 3, 3 / 4, 3 / 5])


def test_threshold_for_a_target_coverage_or_accuracy():
    curve = accuracy_coverage(PROBS, LABELS)
    # the highest threshold that keeps at least the target share
    assert abstention_threshold(curve, coverage=0.6) == 0.7
    assert abstention_threshold(curve, coverage=0.5) == 0.7
    assert abstention_threshold(curve, coverage=0.2) == 0.9
    assert abstention_threshold(curve, coverage=1.0) == 0.5
    # the lowest threshold (largest coverage) whose kept predictions reach the accuracy
    assert abstention_threshold(curve, accuracy=0.75) == 0.6
    assert abstention_threshold(curve, accuracy=0.7) == 0.6
    assert abstention_threshold(curve, accuracy=0.6) == 0.5
    assert abstention_threshold(curve, accuracy=1.0) == 0.9
    # the most confident prediction wrong: no threshold reaches 100 %, abstain on all
    wrong_first = accuracy_coverage(PROBS, [1, 1, 1, 0, 1])
    assert abstention_threshold(wrong_first, accuracy=1.0) == math.inf
    with pytest.raises(ValueError, match="one of coverage or accuracy"):
        abstention_threshold(curve, coverage=0.9, accuracy=0.9)
    with pytest.raises(ValueError, match="one of coverage or accuracy"):
        abstention_threshold(curve)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        abstention_threshold(curve, coverage=0.0)


def test_ties_are_kept_or_dropped_together():
    probs = PROBS.copy()
    probs[1:4] = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.8, 0.15, 0.05]]  # three at 0.8
    labels = np.array([0, 1, 1, 0, 1])  # 0.9 right; at 0.8 wrong, right, right; 0.5 wrong
    curve = accuracy_coverage(probs, labels)
    np.testing.assert_allclose(curve["threshold"], [0.9, 0.8, 0.5])
    np.testing.assert_allclose(curve["coverage"], [0.2, 0.8, 1.0])
    np.testing.assert_allclose(curve["accuracy"], [1.0, 3 / 4, 3 / 5])
    # no threshold keeps 40 %: the target is met by keeping the whole tie (80 %)
    assert abstention_threshold(curve, coverage=0.4) == 0.8
    # the order of tied patterns does not matter
    for order in ([3, 2, 1, 0, 4], [4, 1, 3, 2, 0]):
        pd.testing.assert_frame_equal(accuracy_coverage(probs[order], labels[order]), curve)


def predictions_table(probs, labels, fold):
    probs = np.asarray(probs, dtype=float)
    table = pd.DataFrame(
        {
            "fold": fold,
            "class_index": labels,
            "true": [CLASSES[i] for i in labels],
            "pred": [CLASSES[i] for i in probs.argmax(axis=1)],
            "confidence": probs.max(axis=1),
        }
    )
    for k, name in enumerate(CLASSES):
        table[f"p_{name}"] = probs[:, k]
    return table


def test_thresholds_are_chosen_on_validation_and_scored_on_held_out_crystals():
    # fold 0's validation keeps 3 of 4 at threshold 0.7; fold 1's at 0.6
    val = pd.concat(
        [
            predictions_table(
                [[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.8, 0.1, 0.1], [0.5, 0.3, 0.2]],
                [0, 0, 1, 0],
                0,
            ),
            predictions_table(
                [[0.6, 0.3, 0.1], [0.95, 0.05, 0.0], [0.4, 0.35, 0.25], [0.1, 0.85, 0.05]],
                [0, 0, 0, 1],
                1,
            ),
        ]
    )
    test = pd.concat(
        [predictions_table(PROBS, LABELS, 0), predictions_table(PROBS[::-1], LABELS[::-1], 1)]
    )
    curve, table = abstention_tables(test, val, coverage=0.75)
    rows = table.set_index("fold")
    assert rows.loc["0", "threshold"] == 0.7 and rows.loc["1", "threshold"] == 0.6
    assert rows.loc["0", "val_coverage"] == 0.75 and rows.loc["0", "val_accuracy"] == pytest.approx(
        2 / 3
    )
    # fold 0 keeps 0.9, 0.8, 0.7 of the held-out five (2 right); fold 1 keeps four (3 right)
    assert rows.loc["0", "accepted"] == 3 and rows.loc["0", "accuracy"] == pytest.approx(2 / 3)
    assert rows.loc["1", "accepted"] == 4 and rows.loc["1", "accuracy"] == pytest.approx(3 / 4)
    # pooled: counts summed over the folds, each under its own threshold
    assert rows.loc["all", "patterns"] == 10 and rows.loc["all", "accepted"] == 7
    assert rows.loc["all", "coverage"] == pytest.approx(0.7)
    assert rows.loc["all", "accuracy"] == pytest.approx(5 / 7)
    assert rows.loc["all", "accuracy_all"] == pytest.approx(0.6)
    assert rows.loc["all", "threshold"] == pytest.approx(0.65)
    assert set(curve["fold"]) == {"0", "1", "all"}
    pooled = curve[curve["fold"] == "all"]
    assert pooled["accepted"].iloc[-1] == 10 and pooled["coverage"].iloc[-1] == 1.0
    with pytest.raises(ValueError, match=r"fold\(s\) \[1\]"):
        abstention_tables(test, val[val["fold"] == 0], coverage=0.75)


def test_validation_predictions_are_the_crystals_training_held_out(monkeypatch):
    manifest = pd.DataFrame(
        {
            "image_id": [f"x/s{i:02d}/b0/i00" for i in range(12)],
            "specimen": [f"s{i:02d}" for i in range(12)],
            "crystal_system": [CLASSES[i % 3] for i in range(12)],
            "fold": [i % 2 for i in range(12)],
            "file": "none.h5",
            "index": 0,
        }
    )
    monkeypatch.setattr(evaluate, "predict_rows", lambda checkpoint, rows, **kw: rows.copy())
    got = predict_validation("fold1.pt", manifest, 1, val_specimens_per_class=1, validation_seed=7)
    _, expected, _ = fold_rows(manifest, 1, val_specimens_per_class=1, seed=7)
    assert got["image_id"].tolist() == expected["image_id"].tolist()
    assert (got["fold"] == 1).all() and (got["crystal_fold"] == 0).all()
    assert sorted(got["crystal_system"]) == sorted(CLASSES)


def test_figure_and_caption_numbers(tmp_path):
    test = pd.concat(
        [predictions_table(PROBS, LABELS, 0), predictions_table(PROBS[::-1], LABELS[::-1], 1)]
    )
    curve, table = abstention_tables(test, test, coverage=0.8)
    path = tmp_path / "abstention.tsv"
    table.to_csv(path, sep="\t", index=False)
    head = abstention_headline({"cnn": path})["cnn"]
    assert head["coverage"] == 80.0 and head["accuracy"] == 75.0 and head["accuracy_all"] == 60.0
    fig = coverage_figure({"cnn": curve, "resnet": curve}, {"cnn": table}, target=0.8)
    assert isinstance(fig, Figure)
    assert len(fig.axes[0].get_lines()) >= 4  # a line and a dot per classifier, a star


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """12 crystals in 2 folds and a one-epoch DiffractionCNN per fold."""
    root = tmp_path_factory.mktemp("abstention")
    files = []
    for i in range(12):
        name = f"s{i:02d}"
        samples, spec = synthesize_diffraction_specimen(
            name, {"sessions_per_specimen": 2, "images_per_session": 2}, seed=200 + i
        )
        files.append(root / f"{name}.h5")
        write_specimen(files[-1], samples, task="diffraction", specimen=name, specimen_params=spec)
    write_manifest(make_manifest(files, folds=2, stratify_by="crystal_system"), root / "split.tsv")
    models = {}
    for fold in (0, 1):
        out = root / f"fold{fold}"
        train_diffraction_fold(
            root / "split.tsv",
            fold,
            arch={"model": "diffraction_cnn", "epochs": 1},
            shared={"device": "cpu", "deterministic": True, "progress": False, "batch_size": 8},
            best_path=out / "best.pt",
            history_path=out / "history.tsv",
            last_path=out / "last.pt",
            seed=fold,
            validation_seed=3,
        )
        models[fold] = out / "best.pt"
    return root, models


def test_abstention_of_trained_models_end_to_end(tiny_run):
    root, models = tiny_run
    pred, _ = evaluate_classifier(root / "split.tsv", models)
    manifest = read_manifest(root / "split.tsv")
    val = pd.concat(
        [
            predict_validation(path, manifest, fold, val_specimens_per_class=1, validation_seed=3)
            for fold, path in models.items()
        ]
    )
    assert len(val) == 2 * 3 * 4  # per fold one crystal per system, 4 patterns each
    for fold in models:  # a model's validation crystals are never its test crystals
        held_out = set(pred[pred["fold"] == fold]["specimen"])
        assert not held_out & set(val[val["fold"] == fold]["specimen"])
    curve, table = abstention_tables(pred, val, coverage=0.9)
    rows = table.set_index("fold")
    assert (rows.loc[["0", "1"], "val_coverage"] >= 0.9).all()
    assert rows.loc["all", "patterns"] == len(pred)
    assert 0 < rows.loc["all", "coverage"] <= 1
