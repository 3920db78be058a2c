"""Evaluation: per-image rows, reduce-once aggregation, the baseline's fold run, the figure."""

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from grainflow.evaluation import crossval as ev
from grainflow.figures import evaluation as fe
from grainflow.io.hdf5 import write_specimen
from grainflow.splits import make_manifest, write_manifest
from grainflow.synth.specimen import synthesize_specimen
from grainflow.synth.tessellation import boundary_mask

SETTINGS = {
    "grains": {
        "sessions_per_specimen": 1,
        "images_per_session": 2,
        "image_size_px": 48,
        "tessellation": ["voronoi"],
        "modalities": ["sem", "optical"],
        "grain_diameter_px": [10, 14],
        "dispersion": [0.2, 0.4],
        "elongation": [1.5, 2.0],
        "elongated_fraction": 0.0,
        "boundary_width_px": 2,
    },
    "phases": {
        "sessions_per_specimen": 1,
        "images_per_session": 2,
        "image_size_px": 48,
        "modalities": ["sem_precipitates", "tem_particles"],
        "area_fraction": [0.2, 0.4],
        "particle_diameter_px": [8, 10],
    },
}
GRIDS = {
    "grains": {"sigma_px": [0.7, 1.0], "threshold_offset": [-0.5]},
    "phases": {"sigma_px": [1.0], "polarity": ["auto", "bright"]},
}


def _grain_labels(ids):
    return {"grain_ids": ids, "boundaries": boundary_mask(ids).astype(np.uint8)}


def _quads(n=16):
    ids = np.ones((n, n), np.uint32)
    ids[: n // 2, n // 2 :], ids[n // 2 :, : n // 2], ids[n // 2 :, n // 2 :] = 2, 3, 4
    return ids


def test_perfect_prediction_scores():
    true = _grain_labels(_quads())
    row = ev.evaluate_segmentation("grains", true, {k: v.copy() for k, v in true.items()})
    assert row["boundary_f1"] == 1.0 and row["pixel_iou"] == 1.0
    assert (row["ari"], row["vi"], row["grain_f1"]) == (1.0, 0.0, 1.0)
    assert row["grain_size_error_G"] == 0.0
    assert set(row) == {*ev.COUNTS["grains"], *ev.SCORES["grains"]}

    ids = np.zeros((20, 20), np.uint32)
    ids[2:8, 2:8], ids[12:18, 12:18] = 1, 2
    phases = {"phase": (ids > 0).astype(np.uint8), "particle_ids": ids}
    row = ev.evaluate_segmentation("phases", phases, phases)
    assert (row["iou"], row["object_f1"], row["area_fraction_error"]) == (1.0, 1.0, 0.0)
    assert row["area_fraction_true"] == pytest.approx(72 / 400)


def test_grain_size_error_sign():
    true = _grain_labels(_quads(32))
    merged = _grain_labels(np.ones((32, 32), np.uint32))
    row = ev.evaluate_segmentation("grains", true, merged, pixel_size_um=0.5)
    # 4 quarter-grains (N = 1) against 1 grain holding four corners (N = 1): same N_A
    assert row["grain_size_error_G"] == pytest.approx(0.0)
    split = _grain_labels(np.arange(1, 65, dtype=np.uint32).reshape(8, 8).repeat(4, 0).repeat(4, 1))
    row = ev.evaluate_segmentation("grains", true, split)
    assert row["grain_size_error_G"] > 0  # more, smaller grains: a larger G
    assert row["over_segmentation"] == 1.0 and row["grain_recall"] == 0.0


def test_missing_label_key_is_an_error():
    with pytest.raises(ValueError, match="lacks"):
        ev.evaluate_segmentation("grains", _grain_labels(_quads()), {"grain_ids": _quads()})


def _table():
    """Four images in two folds, counts chosen by hand."""
    rows = []
    for fold, image, tp, fp, fn, n_true, n_match, af in [
        (0, "a", 90, 10, 0, 4, 4, 0.1),
        (0, "b", 0, 0, 10, 2, 0, 0.3),
        (1, "c", 50, 0, 50, 3, 1, -0.2),
        (1, "d", 10, 10, 0, 1, 1, 0.0),
    ]:
        counts = {
            "px_tp": tp,
            "px_fp": fp,
            "px_fn": fn,
            "px_tn": 1000,
            "n_true": n_true,
            "n_pred": n_true,
            "n_matched": n_match,
        }
        rows.append(
            {
                "task": "phases",
                "model": "classical",
                "fold": fold,
                "image_id": image,
                "specimen": f"s{fold}",
                "session": "b0",
                "modality": "sem",
                **counts,
                **ev.scores_from_counts("phases", counts),
                "area_fraction_true": 0.2,
                "area_fraction_pred": 0.2 + af,
                "area_fraction_error": af,
                "area_fraction_abs_error": abs(af),
            }
        )
    return pd.DataFrame(rows)


def test_summarize_sums_counts_then_scores_once():
    s = ev.summarize(_table(), task="phases", by=["fold"]).set_index("fold")
    assert s.loc[0, "iou"] == pytest.approx(90 / 110)  # not mean(0.9, 0.0)
    assert s.loc[1, "iou"] == pytest.approx(60 / 120)
    assert s.loc[0, "object_recall"] == pytest.approx(4 / 6)
    assert s.loc[0, "area_fraction_error"] == pytest.approx(0.2)  # a per-image mean
    assert s.loc[0, "n_images"] == 2


def test_cross_validation_table():
    cv = ev.cross_validation_table(_table(), task="phases").set_index("fold")
    assert list(cv.index) == ["0", "1", "mean", "std", "pooled"]
    assert cv.loc["mean", "iou"] == pytest.approx((90 / 110 + 60 / 120) / 2)
    assert cv.loc["std", "iou"] == pytest.approx(np.std([90 / 110, 60 / 120], ddof=1))
    assert cv.loc["pooled", "iou"] == pytest.approx(150 / 230)
    assert cv.loc["pooled", "n_images"] == 4
    assert list(cv.columns[:3]) == ["task", "model", "n_images"]
    with pytest.raises(ValueError, match="one task and one model"):
        ev.cross_validation_table(_table().assign(model=["a", "b", "a", "b"]), task="phases")


def test_select_fit_images_respects_the_fold():
    m = pd.DataFrame(
        {
            "image_id": [f"t/s{i}/b0/i{k}" for i in range(3) for k in range(4)],
            "specimen": [f"s{i}" for i in range(3) for _ in range(4)],
            "fold": [i for i in range(3) for _ in range(4)],
        }
    )
    m["original_id"] = m["image_id"]
    chosen = ev.select_fit_images(m, fold=1, max_images=3, rng=0)
    assert len(chosen) == 3 and not any("/s1/" in c for c in chosen)
    assert {c.split("/")[1] for c in chosen[:2]} == {"s0", "s2"}  # specimens take turns
    assert chosen == ev.select_fit_images(m, fold=1, max_images=3, rng=0)


@pytest.fixture(scope="module", params=["grains", "phases"])
def task_files(request, tmp_path_factory):
    task = request.param
    root = tmp_path_factory.mktemp(task)
    files = []
    for i in range(3):
        name = f"s{i:02d}"
        samples, spec = synthesize_specimen(task, name, SETTINGS[task], seed=10 + i)
        path = root / f"{name}.h5"
        write_specimen(path, samples, task=task, specimen=name, specimen_params=spec)
        files.append(str(path))
    manifest = root / f"{task}.tsv"
    write_manifest(make_manifest(files, folds=3), manifest)
    return task, manifest, files


def test_run_baseline_fold(task_files, tmp_path):
    task, manifest, files = task_files
    per_image, info = ev.run_baseline_fold(
        task, manifest, files, fold=1, grid=GRIDS[task], max_fit_images=3, rng=0
    )
    held_out = pd.read_csv(manifest, sep="\t").query("fold == 1")["image_id"]
    assert sorted(per_image["image_id"]) == sorted(held_out)
    assert not set(info["fit_images"]) & set(held_out)  # fitted on other folds only
    assert len(info["fit_images"]) == 3 and len(info["grid_scores"]) == 2
    assert (per_image["model"] == "classical").all() and (per_image["fold"] == 1).all()
    json.dumps(info)
    # round trip through TSV, aggregation and the figure
    for k in range(3):
        table = per_image.assign(fold=k)
        ev.write_tsv(table, tmp_path / f"fold{k}.tsv")
    paths = [tmp_path / f"fold{k}.tsv" for k in range(3)]
    back = ev.read_metric_tables(paths)
    np.testing.assert_allclose(
        back[list(ev.SCORES[task])].to_numpy(float),
        pd.concat([per_image] * 3)[list(ev.SCORES[task])].to_numpy(float),
        rtol=1e-5,
    )
    cv, specimens = ev.aggregate_metrics(paths, task=task)
    assert cv.set_index("fold").loc["std", ev.SCORES[task][0]] == pytest.approx(0.0, abs=1e-9)
    assert set(specimens["specimen"]) == set(per_image["specimen"])
    head = ev.headline_scores(paths, task=task)
    assert head["n_folds"] == 3 and head["n_images"] == 3 * len(per_image)
    fig = fe.plot_metric_distributions(back, task=task)
    assert isinstance(fig, Figure)
    assert sum(ax.get_visible() for ax in fig.axes) == len(fe.FIGURE_METRICS[task])


def test_run_baseline_fold_errors(task_files):
    task, manifest, files = task_files
    with pytest.raises(ValueError, match="fold 7 has no original images"):
        ev.run_baseline_fold(task, manifest, files, fold=7, grid=GRIDS[task])
    with pytest.raises(ValueError, match="no synthetic file"):
        ev.run_baseline_fold(task, manifest, files[:1], fold=1, grid=GRIDS[task])
