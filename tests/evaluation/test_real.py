"""Metrology and scores of real stacks from inference stores, and their figures."""

import math

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from matplotlib.figure import Figure

from grainflow.evaluation import metrology as m
from grainflow.evaluation.metrology import g_from_na
from grainflow.evaluation.real import measure_stack, real_headline, truth_labels
from grainflow.figures.real import choose_planes, display_level, real_overlays, real_size_histogram
from grainflow.stacks.importer import import_stack


def _disc(shape, centre, radius):
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


def _fake_inference(path, *, stack, task, labels):
    """A minimal inference store: attributes, one-hot probabilities and label images."""
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    mask_name = "boundaries" if task == "grains" else "phase"
    fg = labels[mask_name].astype(np.float32)
    root.create_array("s0", data=np.stack([1 - fg, fg]))
    for name, data in labels.items():
        root.require_group("labels").create_group(name).create_array("s0", data=data)
    root.attrs["grainflow"] = {"task": task, "stack": stack}
    return path


@pytest.fixture
def phases_stack(tmp_path):
    """Two 40 x 48 planes with disc particles, masks as ground truth, pixel size unknown."""
    shape = (40, 48)
    masks = np.stack(
        [_disc(shape, (10, 12), 5) | _disc(shape, (28, 30), 7), _disc(shape, (20, 20), 6)]
    ).astype(np.uint8)
    rng = np.random.default_rng(0)
    images = (100 + 80 * masks + rng.integers(0, 20, masks.shape)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "images.tif", images)
    tifffile.imwrite(tmp_path / "masks.tif", masks)
    store = tmp_path / "discs.ome.zarr"
    import_stack(
        tmp_path / "images.tif",
        store,
        stack="discs",
        task="phases",
        ground_truth=tmp_path / "masks.tif",
        chunk=64,
        pyramid_min_px=64,
    )
    return store, masks


def test_truth_labels_hand_worked():
    mask = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], np.uint8)
    t = truth_labels("phases", mask)
    np.testing.assert_array_equal(t["particle_ids"], [[1, 0, 0], [0, 2, 2], [0, 0, 0]])
    np.testing.assert_array_equal(t["phase"], mask)
    boundary = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], np.uint8)
    g = truth_labels("grains", boundary)
    np.testing.assert_array_equal(g["grain_ids"], [[1, 0, 2]] * 3)
    ids = np.array([[1, 1, 2, 2]] * 2)
    g = truth_labels("grains", ids)
    np.testing.assert_array_equal(g["boundaries"], [[0, 1, 1, 0]] * 2)
    np.testing.assert_array_equal(g["grain_ids"], ids)
    with pytest.raises(ValueError, match="task"):
        truth_labels("kernels", ids)


def test_phases_metrology_and_scores_against_the_masks(tmp_path, phases_stack):
    store, masks = phases_stack
    ids = np.stack([truth_labels("phases", m)["particle_ids"] for m in masks])
    perfect = _fake_inference(
        tmp_path / "a.ome.zarr",
        stack="discs",
        task="phases",
        labels={"phase": masks, "particle_ids": ids},
    )
    half = masks.copy()
    half[:, :, 24:] = 0  # misses the right half of every plane
    halved = _fake_inference(
        tmp_path / "b.ome.zarr",
        stack="discs",
        task="phases",
        labels={
            "phase": half,
            "particle_ids": np.stack([truth_labels("phases", m)["particle_ids"] for m in half]),
        },
    )
    table, sizes = measure_stack(store, {"a": perfect, "b": halved})
    assert list(table["plane"]) == ["0", "1", "all", "0", "1", "all"]
    a = table[table["model"] == "a"].set_index("plane")
    assert (a["iou"] == 1.0).all() and (a["object_f1"] == 1.0).all()
    assert (table["length_unit"] == "px").all() and table["pixel_size_um"].isna().all()
    # bright discs: the import's estimate says the particles are not dark, and the table shows it
    assert list(a.loc[["0", "1"], "particles_dark"]) == [False, False]
    np.testing.assert_allclose(a.loc[["0", "1"], "area_fraction"], masks.mean(axis=(1, 2)))
    # the 'all' row sums the counts of the planes and scores them once
    b = table[table["model"] == "b"].set_index("plane")
    tp = np.count_nonzero(masks & half)
    union = np.count_nonzero(masks | half)
    assert b.loc["all", "px_tp"] == tp
    assert b.loc["all", "iou"] == pytest.approx(tp / union)
    assert b.loc["all", "iou"] != pytest.approx(b.loc[["0", "1"], "iou"].mean())
    # sizes: the truth's and the perfect model's objects are the same, ECD by hand
    truth = sizes[sizes["model"] == "truth"].sort_values(["plane", "label"])
    same = sizes[sizes["model"] == "a"].sort_values(["plane", "label"])
    np.testing.assert_allclose(truth["ecd"], same["ecd"])
    area = np.count_nonzero(_disc(masks.shape[1:], (20, 20), 6))
    disc = truth[truth["plane"] == 1]
    assert disc["ecd"].iloc[0] == pytest.approx(math.sqrt(4 * area / math.pi))
    assert a.loc["all", "n_particles"] == 3 and len(truth) == 3
    head = real_headline(_write(table, tmp_path / "discs.tsv"))
    assert head["ground_truth"] and head["unit"] == "px" and head["n_planes"] == 2
    assert [m["iou"] for m in head["models"]] == ["1.000", f"{tp / union:.3f}"]


def _write(table, path):
    table.to_csv(path, sep="\t", index=False, na_rep="NaN")
    return path


def test_grain_metrology_in_micrometres(tmp_path):
    # 4 x 4 square grains of 16 px at 0.5 um: Jeffries 4 inside + 8 edges / 2 + 4 corners / 4
    ids = (np.arange(64)[:, None] // 16 * 4 + np.arange(64)[None, :] // 16 + 1).astype(np.uint32)
    image = (ids * 10 % 200 + 20).astype(np.uint8)
    tifffile.imwrite(tmp_path / "grid.tif", image)
    store = tmp_path / "grid.ome.zarr"
    import_stack(
        tmp_path / "grid.tif",
        store,
        stack="grid",
        task="grains",
        pixel_size_um=0.5,
        chunk=64,
        pyramid_min_px=64,
    )
    boundaries = truth_labels("grains", ids)["boundaries"]
    pred = _fake_inference(
        tmp_path / "unet.ome.zarr",
        stack="grid",
        task="grains",
        labels={"boundaries": boundaries[None], "grain_ids": ids[None]},
    )
    table, sizes = measure_stack(store, {"unet": pred})
    row = table.set_index("plane").loc["0"]
    area_mm2 = (64 * 0.5e-3) ** 2
    assert row["astm_g_planimetric"] == pytest.approx(g_from_na(9 / area_mm2))
    assert row["length_unit"] == "um" and row["n_grains"] == 16 and row["n_grains_measured"] == 4
    assert row["ecd_median"] == pytest.approx(math.sqrt(4 * 256 / math.pi) * 0.5)
    assert 0 < row["mean_intercept"] < 16 * 0.5 * 1.5 and math.isfinite(row["astm_g_intercept"])
    # E112 §15 over 3 x 3 fields of 21-22 px: every field holds the same pattern of
    # 16 px grains up to a pixel, so a narrow interval around the field mean
    assert row["n_fields"] == 9
    lo, hi = row["astm_g_planimetric_ci95_low"], row["astm_g_planimetric_ci95_high"]
    assert lo <= row["astm_g_planimetric"] + 0.1 and row["astm_g_planimetric"] - 0.1 <= hi
    assert 0 <= row["planimetric_ra_pct"] < 20 and 0 <= row["intercept_ra_pct"] < 20
    assert row["astm_g_difference"] == pytest.approx(
        m.e112_statistics(ids, pixel_size_um=0.5, grid=(3, 3)).g_difference
    )
    assert row["boundary_kept"] == 1.0  # the boundaries are the grain map's own
    pooled = table.set_index("plane").loc["all"]
    for column in ("astm_g_planimetric", "astm_g_intercept", "ecd_median", "n_fields"):
        assert pooled[column] == pytest.approx(row[column])
    assert pooled["astm_g_planimetric_ci95_low"] == pytest.approx(lo)
    assert "iou" not in table.columns and "boundary_f1" not in table.columns
    assert set(sizes["model"]) == {"unet"} and (sizes["length_unit"] == "um").all()
    head = real_headline(_write(table, tmp_path / "grid.tsv"))
    assert head["unit"] == "µm" and head["models"][0]["g_planimetric"] == (
        f"{row['astm_g_planimetric']:.2f}"
    )
    with pytest.raises(ValueError, match="stack 'discs', not 'grains' of 'grid'"):
        measure_stack(
            store,
            {
                "x": _fake_inference(
                    tmp_path / "x.ome.zarr",
                    stack="discs",
                    task="grains",
                    labels={"boundaries": boundaries[None], "grain_ids": ids[None]},
                )
            },
        )


def test_display_level_and_chosen_planes():
    assert display_level([(4000, 3000), (2000, 1500), (1000, 750)], max_px=1024) == 2
    assert display_level([(600, 800), (300, 400)], max_px=1024) == 0
    assert display_level([(5000, 5000), (2500, 2500)], max_px=1024) == 1
    metrics = pd.DataFrame(
        {
            "model": ["a"] * 6,
            "plane": ["0", "1", "2", "3", "4", "all"],
            "iou": [0.5, 0.1, 0.9, 0.3, 0.7, 0.5],
        }
    )
    assert choose_planes(metrics, task="phases", n=2) == [1, 2]
    assert choose_planes(metrics.drop(columns="iou"), task="phases", n=2) == [0, 1]


def test_figures_of_a_stack_with_truth(tmp_path, phases_stack):
    store, masks = phases_stack
    ids = np.stack([truth_labels("phases", m)["particle_ids"] for m in masks])
    inference = {
        "unet": _fake_inference(
            tmp_path / "a.ome.zarr",
            stack="discs",
            task="phases",
            labels={"phase": masks, "particle_ids": ids},
        )
    }
    table, sizes = measure_stack(store, inference)
    fig = real_overlays(store, inference, table)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 5  # 2 planes x (3 + truth, errors)
    assert fig.axes[-1].get_xlabel() == "x (px)"
    hist = real_size_histogram(sizes, task="phases")
    ax = hist.axes[0]
    assert ax.get_xlabel() == "particle equivalent-circle diameter (px)"
    assert [t.get_text().split(" (")[0] for t in ax.get_legend().get_texts()] == ["unet", "truth"]
    empty = real_size_histogram(sizes.assign(edge=True), task="grains")
    assert "no grains" in empty.axes[0].texts[0].get_text()
