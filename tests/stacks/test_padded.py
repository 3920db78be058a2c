"""Folder stacks of images of different sizes and colour modes, and box labels."""

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image
from skimage.color import rgb2gray

from grainflow.evaluation.crossval import write_tsv
from grainflow.evaluation.real import measure_stack, real_headline
from grainflow.report.summary import _real_row
from grainflow.stacks.boxes import read_yolo_boxes
from grainflow.stacks.importer import import_stack, plane_boxes, plane_shapes
from grainflow.stacks.reader import StackError, open_stack, source_files

# (rows, cols) of each image: a.png grey, b.tif grey, c.png RGB; c is odd at level 1
SHAPES = {"a.png": (40, 50), "b.tif": (64, 48), "c.png": (30, 70)}
SETTINGS = dict(chunk=32, pyramid_min_px=32, block=32)


def _image(shape, seed, colour=False):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 255, (*shape, 3) if colour else shape, dtype=np.uint8)


def _folder(path):
    """The three images; returns them as grey, as the reader gives them."""
    path.mkdir(parents=True, exist_ok=True)
    grey = {}
    for seed, (name, shape) in enumerate(SHAPES.items()):
        data = _image(shape, seed, colour=name == "c.png")
        if name.endswith(".tif"):
            tifffile.imwrite(path / name, data)
        else:
            Image.fromarray(data).save(path / name)
        if data.ndim == 3:
            data = np.clip(np.rint(rgb2gray(data.astype(np.float64))), 0, 255).astype(np.uint8)
        grey[name] = data
    return grey


def _yolo(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


@pytest.fixture
def mixed(tmp_path):
    grey = _folder(tmp_path / "images")
    out = tmp_path / "mixed.ome.zarr"
    summary = import_stack(tmp_path / "images", out, stack="mixed", task="phases", **SETTINGS)
    return out, grey, summary


def test_mixed_sizes_and_colour_are_padded_and_recorded(mixed):
    out, grey, summary = mixed
    root = zarr.open_group(str(out), mode="r")
    s0 = root["s0"][:]
    assert s0.shape == (3, 64, 70) and s0.dtype == np.uint8
    assert summary["colour_converted_to_grey"] and "padding" in summary
    info = root.attrs["grainflow"]
    assert [p["file"] for p in info["planes"]] == list(SHAPES)
    assert [p["shape"] for p in info["planes"]] == [list(s) for s in SHAPES.values()]
    assert plane_shapes(info, s0.shape) == list(SHAPES.values())
    for z, (name, (rows, cols)) in enumerate(SHAPES.items()):
        np.testing.assert_array_equal(s0[z, :rows, :cols], grey[name])  # RGB read as grey
        assert not s0[z, rows:].any() and not s0[z, :, cols:].any()  # zeros below and right
        plane = info["planes"][z]
        assert (plane["min"], plane["max"]) == (grey[name].min(), grey[name].max())


def test_each_padded_plane_has_the_pyramid_it_would_have_alone(tmp_path, mixed):
    out, _, _ = mixed
    root = zarr.open_group(str(out), mode="r")
    assert [list(root[f"s{k}"].shape) for k in range(3)] == [[3, 64, 70], [3, 32, 35], [3, 16, 18]]
    for z, (name, (rows, cols)) in enumerate(SHAPES.items()):
        alone = tmp_path / f"{name}.ome.zarr"
        import_stack(tmp_path / "images" / name, alone, stack="alone", **SETTINGS)
        single = zarr.open_group(str(alone), mode="r")
        for k in range(len(single.attrs["grainflow"]["levels"])):  # 2 or 3 alone
            own = -(-rows // 2**k), -(-cols // 2**k)
            np.testing.assert_array_equal(
                root[f"s{k}"][z, : own[0], : own[1]], single[f"s{k}"][0], err_msg=f"{name} s{k}"
            )


def test_same_size_stacks_record_no_padding(tmp_path):
    (tmp_path / "same").mkdir()
    for i in range(2):
        Image.fromarray(_image((20, 20), i)).save(tmp_path / "same" / f"{i}.png")
    summary = import_stack(tmp_path / "same", tmp_path / "same.ome.zarr", stack="same")
    assert "padding" not in summary and all("shape" not in p for p in summary["planes"])
    assert summary["ground_truth_kind"] is None


def test_masks_of_padded_planes(tmp_path):
    _folder(tmp_path / "images")
    masks = {}
    for i, (name, shape) in enumerate(SHAPES.items()):
        masks[name] = np.zeros(shape, np.uint8)
        masks[name][2 : 5 + i, 3:9] = 1
        stem = name.rsplit(".", 1)[0]
        _save = tmp_path / "masks" / f"{stem}_mask.png"
        _save.parent.mkdir(exist_ok=True)
        Image.fromarray(masks[name]).save(_save)
    out = tmp_path / "masked.ome.zarr"
    summary = import_stack(
        tmp_path / "images",
        out,
        stack="m",
        task="phases",
        ground_truth=tmp_path / "masks",
        **SETTINGS,
    )
    assert summary["ground_truth_kind"] == "mask"
    truth = zarr.open_group(str(out), mode="r")["labels/ground_truth/s0"][:]
    for z, (name, (rows, cols)) in enumerate(SHAPES.items()):
        np.testing.assert_array_equal(truth[z, :rows, :cols], masks[name])
        assert not truth[z, rows:].any() and not truth[z, :, cols:].any()
    # a mask of another size than its image
    Image.fromarray(np.zeros((41, 50), np.uint8)).save(tmp_path / "masks" / "a_mask.png")
    with pytest.raises(
        StackError, match=r"a_mask.png has shape \(41, 50\) .* a.png has \(40, 50\)"
    ):
        import_stack(
            tmp_path / "images", tmp_path / "x.ome.zarr", stack="m", ground_truth=tmp_path / "masks"
        )


def test_mixed_bit_depths_are_refused(tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(_image((20, 20), 0)).save(tmp_path / "in" / "a.png")
    tifffile.imwrite(tmp_path / "in" / "b.tif", _image((20, 20), 1).astype(np.uint16) * 100)
    with pytest.raises(StackError, match="b.tif holds uint16 values but a.png uint8"):
        open_stack(tmp_path / "in", name="bits")


# ----------------------------------------------------------------------------- box labels


def test_read_yolo_boxes_hand_worked(tmp_path):
    path = _yolo(tmp_path / "b.txt", ["0 0.5 0.25 0.2 0.5", "", "0 0.1 0.9 0.2 0.2"])
    boxes = read_yolo_boxes(path, (40, 50))  # cx, w in units of 50 cols; cy, h of 40 rows
    np.testing.assert_allclose(boxes, [[0, 20, 20, 30], [32, 0, 40, 10]], atol=1e-9)
    assert read_yolo_boxes(_yolo(tmp_path / "e.txt", []), (4, 4)).shape == (0, 4)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.5 0.5 0.1", "5 numbers"),
        ("0 0.5 0.5 0.1 0.1 0.2 0.2", "5 numbers"),
        ("a 0.5 0.5 0.1 0.1", "not numbers"),
        ("1.5 0.5 0.5 0.1 0.1", "non-negative integer"),
        ("0 0.5 0.5 0 0.1", "positive"),
        ("0 0.5 nan 0.1 0.1", "finite"),
        ("0 0.99 0.5 0.1 0.1", "outside the image"),
    ],
)
def test_bad_box_lines_name_the_file_and_line(tmp_path, line, message):
    path = _yolo(tmp_path / "p.txt", ["0 0.5 0.5 0.1 0.1", line])
    with pytest.raises(ValueError, match=r"p.txt, line 2 .*" + message):
        read_yolo_boxes(path, (10, 10))


@pytest.fixture
def boxed(tmp_path):
    _folder(tmp_path / "images")
    boxes = tmp_path / "boxes"
    _yolo(boxes / "a.txt", ["0 0.5 0.5 0.2 0.5"])  # rows 10-30, cols 20-30 of 40 x 50
    _yolo(boxes / "b.txt", [])  # no particle
    _yolo(boxes / "c.txt", ["0 0.25 0.5 0.1 0.2", "0 0.75 0.5 0.1 0.2"])  # of 30 x 70
    out = tmp_path / "boxed.ome.zarr"
    import_stack(
        tmp_path / "images", out, stack="boxed", task="phases", ground_truth=boxes, **SETTINGS
    )
    return out


def test_box_labels_are_stored_per_plane_in_pixels(boxed, tmp_path):
    root = zarr.open_group(str(boxed), mode="r")
    info = root.attrs["grainflow"]
    assert info["ground_truth_kind"] == "boxes" and "labels" not in root
    assert [(p["ground_truth_file"], p["n_boxes"]) for p in info["planes"]] == [
        ("a.txt", 1),
        ("b.txt", 0),
        ("c.txt", 2),
    ]
    boxes = plane_boxes(info)
    np.testing.assert_allclose(boxes[0], [[10, 20, 30, 30]])
    assert boxes[1].shape == (0, 4)
    np.testing.assert_allclose(boxes[2], [[12, 14, 18, 21], [12, 49, 18, 56]])
    assert [p.name for p in source_files(tmp_path / "boxes")] == ["a.txt", "b.txt", "c.txt"]


def test_box_files_must_pair_with_the_images(tmp_path):
    _folder(tmp_path / "images")
    _yolo(tmp_path / "boxes" / "a.txt", [])
    _yolo(tmp_path / "boxes" / "b.txt", [])
    _yolo(tmp_path / "boxes" / "z.txt", [])
    out = tmp_path / "results" / "bad.ome.zarr"
    with pytest.raises(StackError, match=r"stack 'bad'.*no box file for .*c.png.*no image .*z.txt"):
        import_stack(tmp_path / "images", out, stack="bad", ground_truth=tmp_path / "boxes")
    with pytest.raises(StackError, match="paired to images by file name"):
        import_stack(
            tmp_path / "images" / "a.png", out, stack="bad", ground_truth=tmp_path / "boxes"
        )
    assert not out.exists()


def _fake_inference(path, root, ids):
    """An inference store of the stack's shape holding the particle ids ``ids`` (Z, Y, X)."""
    store = zarr.open_group(str(path), mode="w", zarr_format=3)
    fg = (ids > 0).astype(np.float32)
    store.create_array("s0", data=np.stack([1 - fg, fg]))
    labels = store.require_group("labels")
    labels.create_group("phase").create_array("s0", data=(ids > 0).astype(np.uint8))
    labels.create_group("particle_ids").create_array("s0", data=ids.astype(np.uint32))
    info = root.attrs["grainflow"]
    store.attrs["grainflow"] = {"task": info["task"], "stack": info["stack"]}
    return path


def test_scores_and_measurements_leave_the_padding_out(boxed, tmp_path):
    root = zarr.open_group(str(boxed), mode="r")
    ids = np.zeros(root["s0"].shape, np.uint32)
    ids[0, 10:30, 20:30] = 1  # a's true box exactly
    ids[0, 50:60, 60:70] = 2  # in a's padding (rows >= 40): not an object
    ids[1, 10:20, 40:48] = 3  # b: touches its own right edge (48), no true box: FP, cut
    ids[1, 10:20, 48:60] = 4  # in b's padding (cols >= 48)
    ids[2, 12:18, 14:21] = 5  # c's first box; its second missed
    ids[2, 40:50, 0:10] = 6  # in c's padding (rows >= 30)
    per_plane, sizes = measure_stack(boxed, {"unet": _fake_inference(tmp_path / "u", root, ids)})
    rows = per_plane.set_index("plane")
    assert rows["n_particles"].tolist() == [1, 1, 1, 3]
    assert rows["n_particles_measured"].tolist() == [1, 0, 1, 2]  # b's touches its own edge
    assert rows.loc["0", "area_fraction"] == pytest.approx(200 / (40 * 50))  # own area only
    assert rows[["det_tp", "det_fp", "det_fn"]].values.tolist() == [
        [1, 0, 0],
        [0, 1, 0],
        [1, 0, 1],
        [2, 1, 1],
    ]
    assert rows.loc["1", "det_f1"] == 0.0 and np.isnan(rows.loc["1", "det_recall"])
    assert rows.loc["all", "det_precision"] == pytest.approx(2 / 3)
    assert rows.loc["all", "det_f1"] == pytest.approx(4 / 6)
    assert (rows.loc["all", "count_true"], rows.loc["all", "count_error"]) == (3, 0)
    assert set(sizes["model"]) == {"unet"} and len(sizes) == 3
    assert sizes.loc[sizes["plane"] == 1, "edge"].tolist() == [True]
    write_tsv(per_plane, tmp_path / "boxed.tsv")
    headline = real_headline(tmp_path / "boxed.tsv")
    assert headline["boxes"] and not headline["ground_truth"]
    assert headline["models"][0]["det_f1"] == "0.667"
    assert headline["models"][0]["count_true"] == 3
    summary = _real_row(tmp_path / "boxed.tsv", {"phases": "unet"})  # the report's summary row
    assert summary["real_quantity"].startswith("particle detection F1")
    assert summary["real_value"] == pytest.approx(2 / 3)


def test_overlays_show_each_plane_on_its_own_part_with_its_boxes(boxed, tmp_path):
    from matplotlib.patches import Rectangle

    from grainflow.figures.real import real_overlays

    root = zarr.open_group(str(boxed), mode="r")
    ids = np.zeros(root["s0"].shape, np.uint32)
    ids[0, 10:30, 20:30] = 1
    ids[2, 12:18, 14:21] = 5
    store = _fake_inference(tmp_path / "u", root, ids)
    per_plane, _ = measure_stack(boxed, {"unet": store})
    fig = real_overlays(boxed, {"unet": store}, per_plane, n_planes=3)
    axes = np.asarray(fig.axes).reshape(3, -1)  # image, P, prediction, true boxes
    assert axes.shape[1] == 4
    true_boxes = {"a": 1, "b": 0, "c": 2}
    for ax_row in axes:
        name = ax_row[0].get_title()
        assert ax_row[0].images[0].get_array().shape == SHAPES[name]  # no padding drawn
        z = name[0]
        rectangles = [p for p in ax_row[3].patches if isinstance(p, Rectangle)]
        assert len(rectangles) == true_boxes[z]
        assert ax_row[3].get_title().startswith("true boxes, detection F1")
