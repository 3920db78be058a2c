"""Importing real stacks as OME-Zarr: shipped examples, read-back with ome-zarr, bad input."""

import hashlib
import logging

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v05.image import Image as NgffImage
from PIL import Image
from skimage.transform import downscale_local_mean

from conftest import ROOT
from grainflow.io.ome_zarr import pyramid_shapes
from grainflow.stacks.importer import import_stack, plane_groups
from grainflow.stacks.reader import StackError, open_stack, source_files

STEEL = ROOT / "resources" / "nist_steel" / "grain_structures_steel.tif"
SUPERALLOY = ROOT / "resources" / "nasa_superalloy"


def _checksums(path):
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _read_back(store):
    """The image and label nodes of an OME-Zarr store, through the ome-zarr reader."""
    nodes = list(Reader(parse_url(str(store)))())
    image = nodes[0]
    labels = [n for n in nodes if any(type(s).__name__ == "Label" for s in n.specs)]
    return image, labels


def _mean_pyramid_level(a):
    """Reference 2 x 2 mean with the last row / column repeated at odd sizes."""
    pad = ((0, 0), (0, a.shape[1] % 2), (0, a.shape[2] % 2))
    padded = np.pad(a.astype(float), pad, mode="edge")
    return downscale_local_mean(padded, (1, 2, 2))


# ----------------------------------------------------------------------------- shipped examples


def test_import_nist_steel_tiff(tmp_path):
    before = _checksums(STEEL)
    out = tmp_path / "results" / "nist_steel.ome.zarr"
    summary = import_stack(STEEL, out, stack="nist_steel", task="grains", pixel_size_um=0.2252)
    assert _checksums(STEEL) == before  # the input is only read
    assert summary["levels"] == [[600, 800], [300, 400]]

    image, labels = _read_back(out)
    assert labels == []
    source = tifffile.imread(STEEL)
    assert len(image.data) == 2
    np.testing.assert_array_equal(np.asarray(image.data[0]), source[None])
    assert image.data[0].dtype == np.uint8
    level1 = np.asarray(image.data[1])
    expected = np.rint(_mean_pyramid_level(source[None])).astype(np.uint8)
    np.testing.assert_array_equal(level1, expected)
    axes = image.metadata["axes"]
    assert [a["name"] for a in axes] == ["z", "y", "x"]
    assert [a.get("unit") for a in axes] == [None, "micrometer", "micrometer"]
    scale0, scale1 = (t[0]["scale"] for t in image.metadata["coordinateTransformations"])
    np.testing.assert_allclose(scale0, [1, 0.2252, 0.2252])
    np.testing.assert_allclose(scale1, [1, 0.4504, 0.4504])
    # the 2 x 2 mean's pixel centre: half a fine pixel in
    shift = image.metadata["coordinateTransformations"][1][1]["translation"]
    np.testing.assert_allclose(shift, [0, 0.1126, 0.1126])

    group = zarr.open_group(str(out), mode="r")
    NgffImage.from_zarr(group)  # validates against the NGFF 0.5 models
    assert group["s0"].chunks == (1, 512, 512)
    attrs = group.attrs["grainflow"]
    assert attrs["task"] == "grains" and attrs["pixel_size_from"] == "stacks sheet"
    assert attrs["planes"] == [
        {
            "index": 0,
            "file": STEEL.name,
            "page": 0,
            "group": None,
            "min": int(source.min()),
            "max": int(source.max()),
        }
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary left


def test_import_superalloy_folder_with_masks(tmp_path):
    images, masks = SUPERALLOY / "images", SUPERALLOY / "masks"
    before = {**_checksums(images), **_checksums(masks)}
    out = tmp_path / "nasa_superalloy.ome.zarr"
    import_stack(
        images,
        out,
        stack="nasa_superalloy",
        task="phases",
        ground_truth=masks,
        group=r"^(spot\d+)_",
    )
    assert {**_checksums(images), **_checksums(masks)} == before

    image, labels = _read_back(out)
    names = sorted(p.name for p in images.glob("*.png"))
    assert image.data[0].shape == (18, 512, 512)
    for z in (0, 17):
        np.testing.assert_array_equal(
            np.asarray(image.data[0][z]), np.asarray(Image.open(images / names[z]))
        )
    # unknown pixel size: scale 1, no unit
    assert image.metadata["coordinateTransformations"][0][0]["scale"] == [1.0, 1.0, 1.0]
    assert all("unit" not in a for a in image.metadata["axes"])

    (label,) = labels
    assert label.data[0].shape == (18, 512, 512) and label.data[0].dtype == np.uint8
    truth = np.asarray(Image.open(masks / names[5].replace(".png", "_mask.png")))
    np.testing.assert_array_equal(np.asarray(label.data[0][5]), truth.astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(label.data[1][5]), truth[::2, ::2])  # never averaged

    group = zarr.open_group(str(out), mode="r")
    NgffImage.from_zarr(group)
    assert group["labels"].attrs["ome"]["labels"] == ["ground_truth"]
    assert group["labels/ground_truth"].attrs["ome"]["image-label"]["source"] == {"image": "../../"}
    planes = group.attrs["grainflow"]["planes"]
    assert [p["file"] for p in planes] == names
    assert [p["group"] for p in planes] == [n.split("_")[0] for n in names]
    assert planes[5]["ground_truth_file"] == names[5].replace(".png", "_mask.png")
    assert (planes[5]["label_min"], planes[5]["label_max"]) == (0, 1)


# ----------------------------------------------------------------------------- forms and dtypes


def test_colour_png_becomes_grey_with_a_note(tmp_path, caplog):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    out = tmp_path / "out" / "rgb.ome.zarr"
    with caplog.at_level(logging.INFO, logger="grainflow.stacks.importer"):
        summary = import_stack(tmp_path / "rgb.png", out, stack="rgb", pyramid_min_px=64)
    assert summary["colour_converted_to_grey"]
    assert any("colour" in r.getMessage() and "grey" in r.getMessage() for r in caplog.records)
    stored = zarr.open_group(str(out), mode="r")["s0"][0]
    expected = np.rint(rgb.astype(float) @ [0.2125, 0.7154, 0.0721])  # BT.709 luma, by hand
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, expected)


def test_16_bit_rgb_tiff_keeps_its_dtype(tmp_path):
    rgb = np.zeros((30, 20, 3), np.uint16)
    rgb[..., 1] = 60000  # pure green
    rgb[0, 0] = 1  # not constant
    tifffile.imwrite(tmp_path / "g.tif", rgb, photometric="rgb")
    out = tmp_path / "g.ome.zarr"
    import_stack(tmp_path / "g.tif", out, stack="g")
    stored = zarr.open_group(str(out), mode="r")["s0"][0]
    assert stored.dtype == np.uint16 and stored[5, 5] == round(0.7154 * 60000)


def test_multipage_16_bit_tiff_and_blockwise_pyramid(tmp_path):
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 65535, size=(3, 300, 257), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack", tile=(64, 64))
    out = tmp_path / "s.ome.zarr"
    summary = import_stack(
        tmp_path / "s.tif", out, stack="s", chunk=64, block=128, pyramid_min_px=64
    )
    assert summary["levels"] == [[300, 257], [150, 129], [75, 65], [38, 33]]
    group = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(group["s0"][:], stack)
    assert group["s0"].dtype == np.uint16 and group["s0"].chunks == (1, 64, 64)
    reference = stack
    for k in range(1, 4):  # blocks of 128 px agree with the whole-array reference at every level
        reference = np.rint(_mean_pyramid_level(reference)).astype(np.uint16)
        np.testing.assert_array_equal(group[f"s{k}"][:], reference)
    assert [p["page"] for p in group.attrs["grainflow"]["planes"]] == [0, 1, 2]


def test_pages_written_one_by_one_form_one_stack(tmp_path):
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for i in range(3):
            tif.write(np.arange(80, dtype=np.uint8).reshape(8, 10) + i)
    with open_stack(tmp_path / "pages.tif", name="pages") as reader:
        assert reader.shape == (3, 8, 10)
        np.testing.assert_array_equal(
            reader.read(2, slice(1, 3), slice(0, 4)), np.arange(80).reshape(8, 10)[1:3, :4] + 2
        )


def test_float_zarr_and_ome_zarr_sources(tmp_path):
    data = np.random.default_rng(2).normal(size=(2, 40, 30)).astype(np.float32)
    zarr.create_array(str(tmp_path / "plain.zarr"), data=data, chunks=(1, 16, 16))
    out = tmp_path / "plain.ome.zarr"
    import_stack(tmp_path / "plain.zarr", out, stack="plain", pixel_size_um=0.5)
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["s0"][:], data)
    # an OME-Zarr store as source: its pixel size is used when the sheet gives none
    again = tmp_path / "again.ome.zarr"
    summary = import_stack(out, again, stack="again")
    assert summary["pixel_size_um"] == pytest.approx(0.5)
    assert summary["pixel_size_from"] == "file metadata"
    assert summary["file_calibration"]["parser"] == "OME-Zarr"
    np.testing.assert_array_equal(zarr.open_group(str(again), mode="r")["s0"][:], data)


def test_source_files_lists_sorted_images_only(tmp_path):
    for name in ("b.png", "a.TIF", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in source_files(tmp_path)] == ["a.TIF", "b.png"]
    assert source_files(tmp_path / "missing") == []
    assert source_files(STEEL) == [STEEL]


def test_helpers_hand_worked():
    assert pyramid_shapes((1025, 300)) == [(1025, 300), (513, 150), (257, 75)]
    assert plane_groups(["spot1_0d_0.png", "spot12_x.png"], r"^(spot\d+)_", name="s") == [
        "spot1",
        "spot12",
    ]
    assert plane_groups(["a.png"], None, name="s") is None
    with pytest.raises(StackError, match=r"stack 's'.*needs a \(capturing group\)"):
        plane_groups(["a.png"], "spot", name="s")


# ----------------------------------------------------------------------------- bad input


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _nan_tiff(tmp, value=np.nan, plane=2):
    data = np.random.default_rng(0).random((3, 20, 20)).astype(np.float32)
    data[plane, 4, 7] = value
    tifffile.imwrite(tmp / "f.tif", data, photometric="minisblack")
    return dict(path=tmp / "f.tif")


def _constant_png(tmp):
    return dict(path=_write_png(tmp / "c.png", np.full((20, 20), 128, np.uint8)))


def _constant_plane_in_folder(tmp):
    _write_png(tmp / "dir" / "a.png", np.arange(400, dtype=np.uint8).reshape(20, 20))
    _write_png(tmp / "dir" / "b.png", np.zeros((20, 20), np.uint8))
    return dict(path=tmp / "dir")


def _empty_folder(tmp):
    (tmp / "empty").mkdir()
    (tmp / "empty" / "readme.txt").write_text("no images here")
    return dict(path=tmp / "empty")


def _empty_zarr(tmp):
    zarr.create_array(str(tmp / "e.zarr"), shape=(0, 16), dtype="u1")
    return dict(path=tmp / "e.zarr")


def _four_axes_zarr(tmp):
    zarr.create_array(str(tmp / "4d.zarr"), shape=(2, 3, 8, 8), dtype="u1")
    return dict(path=tmp / "4d.zarr")


def _four_axes_tiff(tmp):
    data = np.random.default_rng(0).integers(0, 255, (2, 3, 8, 8), dtype=np.uint8)
    tifffile.imwrite(tmp / "tz.tif", data, photometric="minisblack", metadata={"axes": "TZYX"})
    return dict(path=tmp / "tz.tif")


def _garbage(name):
    def make(tmp):
        (tmp / name).write_bytes(b"this is not an image" * 10)
        return dict(path=tmp / name)

    return make


def _mismatched_truth(tmp):
    path = _write_png(tmp / "i.png", np.arange(400, dtype=np.uint8).reshape(20, 20))
    truth = _write_png(tmp / "t.png", np.zeros((20, 21), np.uint8))
    return dict(path=path, ground_truth=truth)


def _float_truth(tmp):
    path = _write_png(tmp / "i.png", np.arange(400, dtype=np.uint8).reshape(20, 20))
    tifffile.imwrite(tmp / "t.tif", np.zeros((20, 20), np.float32))
    return dict(path=path, ground_truth=tmp / "t.tif")


def _ungrouped(tmp):
    return dict(
        path=_write_png(tmp / "img_1.png", np.arange(400, dtype=np.uint8).reshape(20, 20)),
        group=r"^(spot\d+)_",
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_nan_tiff, r"plane 2 \(f\.tif, page 2\) has NaN values \(first at row 4, col 7\)"),
        (lambda t: _nan_tiff(t, np.inf, 0), "plane 0 .* has infinite values"),
        (_constant_png, r"plane 0 \(c\.png\) is constant \(every pixel is 128\)"),
        (_constant_plane_in_folder, r"plane 1 \(b\.png\) is constant"),
        (_empty_folder, "holds no images"),
        (_empty_zarr, "is empty"),
        (_four_axes_zarr, "wrong number of axes"),
        (_four_axes_tiff, "wrong number of axes"),
        (_garbage("bad.tif"), "cannot read path .*bad.tif"),
        (_garbage("bad.png"), "cannot read path .*bad.png"),
        (_garbage("bad.txt"), "not a supported image file"),
        (lambda t: dict(path=t / "nowhere.tif"), "path .*nowhere.tif does not exist"),
        (lambda t: dict(path=STEEL, ground_truth=t / "gone"), "ground_truth .*gone does not exist"),
        (
            _mismatched_truth,
            r"ground truth .* has shape \(1, 20, 21\) .* images have \(1, 20, 20\)",
        ),
        (_float_truth, "labels must be integers"),
        (_ungrouped, "file name 'img_1.png' does not match group"),
        (lambda t: dict(path=STEEL, pixel_size_um=0.0), "pixel size must be positive"),
    ],
)
def test_bad_input_gives_a_clear_error_and_no_output(tmp_path, make, message):
    inputs = tmp_path / "in"
    inputs.mkdir()
    kwargs = make(inputs)
    results = tmp_path / "results"
    out = results / "bad.ome.zarr"
    with pytest.raises(StackError, match=r"stack 'bad'.*" + message):
        import_stack(out=out, stack="bad", **kwargs)
    assert not out.exists()
    assert not results.exists() or list(results.iterdir()) == []  # no temporary store left


def test_failed_import_keeps_the_previous_output(tmp_path):
    out = tmp_path / "keep.ome.zarr"
    import_stack(STEEL, out, stack="keep", pixel_size_um=0.2252)
    before = _checksums(out)
    kwargs = _nan_tiff(tmp_path)
    with pytest.raises(StackError, match="NaN"):
        import_stack(out=out, stack="keep", **kwargs)
    assert _checksums(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif", "keep.ome.zarr"]


def test_output_inside_the_input_is_refused(tmp_path):
    _write_png(tmp_path / "dir" / "a.png", np.arange(400, dtype=np.uint8).reshape(20, 20))
    with pytest.raises(StackError, match="inputs are never modified"):
        import_stack(tmp_path / "dir", tmp_path / "dir" / "x.ome.zarr", stack="x")


def test_rerun_after_a_killed_import_removes_its_leftovers(tmp_path):
    out = tmp_path / "steel.ome.zarr"
    stale = tmp_path / ".steel.ome.zarr.k1ll3d.tmp"  # what a SIGKILL mid-write leaves
    (stale / "s0").mkdir(parents=True)
    other = tmp_path / ".other.ome.zarr.abc.tmp"  # another output's: not touched
    other.mkdir()
    import_stack(STEEL, out, stack="steel")
    assert not stale.exists() and other.exists() and out.is_dir()


def test_sheet_rows_and_inputs_for_the_workflow(tmp_path):
    from conftest import make_workdir
    from grainflow.stacks.sheet import read_stacks, sheet_inputs, sheet_row

    table = read_stacks(make_workdir(tmp_path) / "config" / "stacks.tsv")
    steel = sheet_row(table, "nist_steel")
    assert steel["pixel_size_um"] == 0.2252 and steel["ground_truth"] is None
    assert steel["group"] is None and steel["task"] == "grains"
    assert sheet_row(table, "nasa_superalloy")["pixel_size_um"] is None  # NaN in the table
    assert sheet_inputs(table, "nist_steel", "path") == [str(STEEL)]
    assert sheet_inputs(table, "nist_steel", "ground_truth") == []
    masks = sheet_inputs(table, "nasa_superalloy", "ground_truth")
    assert len(masks) == 18 and masks == sorted(masks)
    with pytest.raises(StackError, match="'nope' is not in the stacks sheet"):
        sheet_row(table, "nope")


def test_ground_truth_is_paired_by_name_not_by_sort_order(tmp_path):
    # sorted, "a_1.png" < "a_10.png" but "a_10_mask.png" < "a_1_mask.png"
    for i, stem in enumerate(["a_1", "a_10", "b_2"]):
        image = np.arange(400, dtype=np.uint8).reshape(20, 20) + i
        _write_png(tmp_path / "img" / f"{stem}.png", image)
        _write_png(tmp_path / "gt" / f"{stem}_mask.png", np.full((20, 20), i + 1, np.uint8))
    out = tmp_path / "pairs.ome.zarr"
    import_stack(tmp_path / "img", out, stack="pairs", ground_truth=tmp_path / "gt")
    group = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(group["labels/ground_truth/s0"][:, 0, 0], [1, 2, 3])
    planes = group.attrs["grainflow"]["planes"]
    assert [(p["file"], p["ground_truth_file"]) for p in planes] == [
        ("a_1.png", "a_1_mask.png"),
        ("a_10.png", "a_10_mask.png"),
        ("b_2.png", "b_2_mask.png"),
    ]
