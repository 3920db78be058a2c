"""Pixel sizes from the files' own metadata: TIFF (OME, ImageJ, FEI, Zeiss SEM), DM, EMD.

Each file is written by its library's own writer where it has one (tifffile,
RosettaSciIO's EMD writer); the instruments' private TIFF tags are written as
the text that tifffile's parsers read, and DigitalMicrograph and Velox files,
for which no writer exists, are laid out byte by byte as RosettaSciIO reads them.
"""

import json
import struct

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from rsciio.emd import file_writer as emd_writer

from grainflow.stacks.importer import import_stack
from grainflow.stacks.reader import MIN_UNNAMED_COLS, StackError, open_stack, source_files

RNG = np.random.default_rng(0)
STACK = RNG.integers(0, 60000, size=(3, 32, 40), dtype=np.uint16)


def _imported(path, tmp_path, **kwargs):
    out = tmp_path / "out.ome.zarr"
    summary = import_stack(path, out, stack="s", pyramid_min_px=64, **kwargs)
    return summary, zarr.open_group(str(out), mode="r")


def _scale(group):
    ms = group.attrs["ome"]["multiscales"][0]
    units = [a.get("unit") for a in ms["axes"]]
    return ms["datasets"][0]["coordinateTransformations"][0]["scale"], units


# ---------------------------------------------------------------------------------- writers


def _write_dm(path, data, scales, units, *, version):
    """A minimal DigitalMicrograph file (DM3 or DM4): one image and its axis calibrations.

    ``scales`` and ``units`` are per axis of ``data`` (C order); DM stores them
    x first. Tags are big-endian, values little-endian, laid out as
    ``rsciio.digitalmicrograph`` parses them.
    """
    n = "q" if version == 4 else "l"  # lengths and counts: 8 bytes in DM4, 4 in DM3

    def header(tag_id, key):
        raw = key.encode("latin-1")
        return struct.pack(">bh", tag_id, len(raw)) + raw

    def value(key, info, payload):
        body = b"%%%%" + struct.pack(f">{len(info) + 1}{n}", len(info), *info) + payload
        return header(21, key) + (struct.pack(">q", len(body)) if version == 4 else b"") + body

    def group(key, tags):
        inner = b"".join(tags)
        size = struct.pack(">q", len(inner) + 8) if version == 4 else b""
        return (
            header(20, key)
            + struct.pack(">bb", 0, 1)
            + size
            + struct.pack(f">{n}", len(tags))
            + inner
        )

    def long(key, v):
        return value(key, [3], struct.pack("<l", v))

    def real(key, v):
        return value(key, [6], struct.pack("<f", v))

    def text(key, s):  # DM strings: arrays of 2-byte characters
        return value(key, [20, 4, len(s)], struct.pack(f"<{len(s)}H", *map(ord, s)))

    # numpy dtype -> (DM image data type, DM element type of the Data array)
    image_type, element = {"uint8": (6, 10), "uint16": (10, 4), "float32": (2, 6)}[data.dtype.name]
    calibrations = [
        group("", [real("Origin", 0.0), real("Scale", s), text("Units", u)])
        for s, u in zip(scales[::-1], units[::-1])
    ]
    image = group(
        "",
        [
            group(
                "ImageData",
                [
                    group(
                        "Calibrations",
                        [
                            group(
                                "Brightness",
                                [real("Origin", 0), real("Scale", 1), text("Units", "")],
                            ),
                            group("Dimension", calibrations),
                        ],
                    ),
                    value(
                        "Data",
                        [20, element, data.size],
                        data.astype(data.dtype.newbyteorder("<")).tobytes(),
                    ),
                    long("DataType", image_type),
                    group("Dimensions", [long("", s) for s in data.shape[::-1]]),
                ],
            ),
            group("ImageTags", []),
            text("Name", "test image"),
        ],
    )
    root = struct.pack(f">bb{n}", 0, 1, 1) + group("ImageList", [image])
    prefix = struct.pack(f">l{n}l", version, len(root) + 16, 1)  # version, size, little-endian
    path.write_bytes(prefix + root + bytes(8))
    return path


def _write_velox(path, frames, pixel_m, *, unit="m"):
    """A minimal Velox EMD file (HDF5): one image series, (y, x, frame), one chunk per frame."""
    with h5py.File(path, "w") as f:
        version = json.dumps({"format": "Velox", "version": "11"}).encode()
        f.create_dataset("Version", data=np.array([version]))
        image = f.create_group("Data/Image/6fdbde41eecc4375b45cd86bd2be17c0")
        data = np.moveaxis(frames, 0, -1)
        image.create_dataset("Data", data=data, chunks=data.shape[:2] + (1,))
        metadata = {
            "BinaryResult": {
                "PixelSize": {"width": str(pixel_m), "height": str(pixel_m)},
                "PixelUnitX": unit,
                "PixelUnitY": unit,
                "Offset": {"x": "0", "y": "0"},
            },
            "Acquisition": {},
            "CustomProperties": {},
            "Scan": {"FrameTime": "0.5"},
        }
        raw = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
        image.create_dataset("Metadata", data=raw[:, None])
    return path


def _ncem_signal(data, scale, unit, names):
    axes = [
        {"name": name, "scale": s, "units": u, "size": k, "offset": 0.0, "navigate": False}
        for name, s, u, k in zip(names, scale, unit, data.shape)
    ]
    meta = {"General": {"title": "image"}, "Signal": {"signal_type": ""}}
    return {"data": data, "axes": axes, "metadata": meta, "original_metadata": {}}


# ------------------------------------------------------------------------------ TIFF metadata


def test_ome_tiff_physical_size_with_its_unit(tmp_path):
    path = tmp_path / "ome.ome.tif"
    meta = {"axes": "ZYX", "PhysicalSizeX": 250, "PhysicalSizeXUnit": "nm"}
    meta.update(PhysicalSizeY=250, PhysicalSizeYUnit="nm")
    tifffile.imwrite(path, STACK, ome=True, metadata=meta)
    summary, group = _imported(path, tmp_path)
    assert summary["pixel_size_um"] == pytest.approx(0.25)
    assert summary["pixel_size_from"] == "file metadata"
    cal = summary["file_calibration"]
    assert cal["parser"] == "OME-TIFF" and cal["file"] == "ome.ome.tif" and "nm" in cal["field"]
    assert cal["reader"] == f"tifffile {tifffile.__version__}"
    assert group.attrs["grainflow"]["file_calibration"] == cal
    scale, units = _scale(group)
    assert scale == pytest.approx([1.0, 0.25, 0.25]) and units == [None, "micrometer", "micrometer"]
    np.testing.assert_array_equal(group["s0"][:], STACK)


@pytest.mark.parametrize("unit", ["um", "micron", "\\u00B5m", "nm"])
def test_imagej_resolution_and_unit(tmp_path, unit):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        STACK,
        imagej=True,
        resolution=(1 / 0.4, 1 / 0.4),
        metadata={"axes": "ZYX", "unit": unit},
    )
    summary, _ = _imported(path, tmp_path)
    expected = 0.4e-3 if unit == "nm" else 0.4
    assert summary["pixel_size_um"] == pytest.approx(expected, rel=1e-6)
    assert summary["file_calibration"]["parser"] == "ImageJ"


def test_a_tiff_without_calibration_keeps_the_pixel_size_unknown(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, STACK[0], resolution=(72, 72), resolutionunit="inch")  # 72 dpi
    summary, group = _imported(path, tmp_path)
    assert summary["pixel_size_um"] is None and summary["pixel_size_from"] == "unknown"
    assert summary["file_calibration"] is None
    assert _scale(group) == ([1.0, 1.0, 1.0], [None, None, None])


@pytest.mark.parametrize("tag", [34682, 34680])  # FEI_HELIOS, FEI_SFEG
def test_fei_scan_pixel_width(tmp_path, tag):
    ini = "[User]\r\nDate=01/02/2024\r\n[Scan]\r\nPixelWidth=3.2e-09\r\nPixelHeight=3.2e-09\r\n"
    path = tmp_path / "fei.tif"
    tifffile.imwrite(path, STACK[0], extratags=[(tag, "s", 0, ini, True)])
    with tifffile.TiffFile(path) as tif:  # the tag is what tifffile's FEI parser reads
        assert tif.fei_metadata["Scan"]["PixelWidth"] == 3.2e-09
    summary, _ = _imported(path, tmp_path)
    assert summary["pixel_size_um"] == pytest.approx(3.2e-3)
    assert summary["file_calibration"]["parser"] == "FEI"
    assert summary["file_calibration"]["field"].startswith("[Scan] PixelWidth")


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("AP_IMAGE_PIXEL_SIZE", "Image Pixel Size = 3.166 nm", 3.166e-3),
        ("AP_PIXEL_SIZE", "Pixel Size = 1.25 µm", 1.25),
    ],
)
def test_zeiss_sem_image_pixel_size(tmp_path, key, text, expected):
    tag = f"0\r\n{key}\r\n{text}\r\n".encode("latin-1") + b"\0"
    path = tmp_path / "zeiss.tif"
    tifffile.imwrite(path, STACK[0], extratags=[(34118, "B", len(tag), tag, True)])  # CZ_SEM
    with tifffile.TiffFile(path) as tif:
        assert tif.sem_metadata[key.lower()][1] == pytest.approx(float(text.split()[-2]))
    summary, _ = _imported(path, tmp_path)
    assert summary["pixel_size_um"] == pytest.approx(expected)
    assert summary["file_calibration"]["parser"] == "Zeiss SEM"


# --------------------------------------------------------------------- DigitalMicrograph, EMD


@pytest.mark.parametrize("version", [3, 4])
def test_digitalmicrograph_image_and_stack(tmp_path, version):
    image = _write_dm(
        tmp_path / f"im.dm{version}",
        STACK[0].astype(np.float32),
        [0.5, 0.5],
        ["nm", "nm"],
        version=version,
    )
    summary, group = _imported(image, tmp_path)
    assert summary["pixel_size_um"] == pytest.approx(5e-4)
    assert summary["source_kind"] == "digitalmicrograph"
    assert summary["file_calibration"]["parser"] == "DigitalMicrograph"
    assert summary["file_calibration"]["reader"].startswith("rosettasciio ")
    np.testing.assert_array_equal(group["s0"][0], STACK[0].astype(np.float32))

    stack = _write_dm(
        tmp_path / f"st.dm{version}", STACK, [1.0, 0.02, 0.02], ["", "µm", "µm"], version=version
    )
    summary, group = _imported(stack, tmp_path / "again")
    assert summary["pixel_size_um"] == pytest.approx(0.02)
    assert [p["page"] for p in summary["planes"]] == [0, 1, 2]
    np.testing.assert_array_equal(group["s0"][:], STACK)


def test_uncalibrated_digitalmicrograph_image(tmp_path):
    path = _write_dm(tmp_path / "raw.dm3", STACK[0], [1.0, 1.0], ["", ""], version=3)
    summary, _ = _imported(path, tmp_path)
    assert summary["pixel_size_um"] is None and summary["file_calibration"] is None


def test_a_folder_of_dm4_files_imports_with_their_pixel_size(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for z in range(3):
        _write_dm(folder / f"a{z}.dm4", STACK[z], [0.8, 0.8], ["nm", "nm"], version=4)
    (folder / "notes.txt").write_text("not an image")
    assert [p.name for p in source_files(folder)] == ["a0.dm4", "a1.dm4", "a2.dm4"]
    summary, group = _imported(folder, tmp_path)
    assert summary["source_kind"] == "folder" and summary["pixel_size_um"] == pytest.approx(8e-4)
    np.testing.assert_array_equal(group["s0"][:], STACK)


def test_velox_emd_frame_series(tmp_path):
    path = _write_velox(tmp_path / "haadf.emd", STACK, 2.5e-10)
    summary, group = _imported(path, tmp_path)
    assert summary["source_kind"] == "emd" and summary["file_calibration"]["parser"] == "EMD"
    assert summary["pixel_size_um"] == pytest.approx(2.5e-4)
    np.testing.assert_array_equal(group["s0"][:], STACK)


def test_ncem_emd_written_by_rosettasciio(tmp_path):
    image = tmp_path / "image.emd"
    emd_writer(str(image), _ncem_signal(STACK[0], [0.1, 0.1], ["µm", "µm"], ["y", "x"]))
    summary, group = _imported(image, tmp_path)
    assert summary["pixel_size_um"] == pytest.approx(0.1)
    np.testing.assert_array_equal(group["s0"][0], STACK[0])
    # a stack: every axis is a signal axis in NCEM files, so the names say which are y and x
    stack = tmp_path / "stack.emd"
    emd_writer(str(stack), _ncem_signal(STACK, [1, 2, 2], ["", "nm", "nm"], ["z", "y", "x"]))
    summary, group = _imported(stack, tmp_path / "again")
    assert summary["pixel_size_um"] == pytest.approx(2e-3)
    np.testing.assert_array_equal(group["s0"][:], STACK)


# ---------------------------------------------------------------------------- refusals


def test_a_sheet_value_within_one_percent_is_kept(tmp_path):
    path = _write_dm(tmp_path / "im.dm3", STACK[0], [0.5, 0.5], ["µm", "µm"], version=3)
    summary, _ = _imported(path, tmp_path, pixel_size_um=0.504)
    assert summary["pixel_size_um"] == 0.504 and summary["pixel_size_from"] == "stacks sheet"
    assert summary["file_calibration"]["pixel_size_um"] == pytest.approx(0.5)


def test_a_sheet_value_that_disagrees_with_the_file_is_refused(tmp_path):
    path = tmp_path / "ome.tif"
    tifffile.imwrite(
        path, STACK[0], ome=True, metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
    )
    out = tmp_path / "out.ome.zarr"
    with pytest.raises(StackError) as caught:
        import_stack(path, out, stack="s", pixel_size_um=0.51)
    message = str(caught.value)
    assert "stack 's'" in message and "pixel_size_um 0.51 um" in message
    assert "0.5 um that ome.tif (OME-TIFF" in message and "by 2.0 %" in message
    assert "leave the cell empty" in message
    assert not out.exists()


def test_files_of_one_stack_with_different_pixel_sizes_are_refused(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _write_dm(folder / "a.dm3", STACK[0], [1.0, 1.0], ["nm", "nm"], version=3)
    _write_dm(folder / "b.dm3", STACK[1], [2.0, 2.0], ["nm", "nm"], version=3)
    with pytest.raises(StackError, match=r"record different pixel sizes: 0\.001 um in a\.dm3"):
        import_stack(folder, tmp_path / "out.ome.zarr", stack="s")


@pytest.mark.parametrize("unit", ["1/nm", "nm^-1"])
def test_reciprocal_space_calibration_is_refused(tmp_path, unit):
    path = _write_dm(tmp_path / "dp.dm3", STACK[0], [0.1, 0.1], [unit, unit], version=3)
    with pytest.raises(StackError, match="reciprocal length: the file holds a diffraction"):
        import_stack(path, tmp_path / "out.ome.zarr", stack="s", pixel_size_um=0.1)


def test_pixels_that_are_not_square_are_refused(tmp_path):
    path = tmp_path / "ome.tif"
    tifffile.imwrite(
        path, STACK[0], ome=True, metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.6}
    )
    with pytest.raises(StackError, match=r"0\.5 um along x but 0\.6 um along y.*square pixels"):
        import_stack(path, tmp_path / "out.ome.zarr", stack="s")


def test_a_spectrum_is_not_an_image(tmp_path):
    path = tmp_path / "spectrum.emd"
    spectrum = _ncem_signal(np.arange(100.0), [0.01], ["keV"], ["Energy"])
    emd_writer(str(path), spectrum)
    with pytest.raises(StackError, match="holds no image that grainflow reads"):
        open_stack(path, name="s")


# ------------------------------------------------------------------------- ambiguous axes


@pytest.mark.parametrize("shape", [(64, 64, 5), (64, 64, 3), (20, 64, MIN_UNNAMED_COLS - 1)])
def test_an_unnamed_array_with_a_short_last_axis_is_refused(tmp_path, shape):
    zarr.create_array(str(tmp_path / "a.zarr"), data=RNG.random(shape, dtype=np.float32))
    with pytest.raises(StackError) as caught:
        open_stack(tmp_path / "a.zarr", name="s")
    message = str(caught.value)
    assert f"a.zarr is a Zarr array of shape {shape} without axis names" in message
    assert "ambiguous axes" in message and "dimension_names" in message and "OME-Zarr" in message


@pytest.mark.parametrize(
    ("names", "shape", "planes"),
    [
        (["y", "x", "z"], (64, 64, 5), 5),  # planes stored last
        (["y", "x", "c"], (64, 64, 3), 1),  # colour
        (["z", "y", "x"], (64, 64, 5), 64),  # as named: 64 planes of 64 x 5 px
    ],
)
def test_dimension_names_say_what_the_axes_are(tmp_path, names, shape, planes):
    data = RNG.integers(0, 255, shape, dtype=np.uint8)
    zarr.create_array(str(tmp_path / "a.zarr"), data=data, dimension_names=names)
    with open_stack(tmp_path / "a.zarr", name="s") as reader:
        assert reader.shape[0] == planes and reader.colour == ("c" in names)
        if names[-1] == "z":
            np.testing.assert_array_equal(reader.read(4), data[:, :, 4])


def test_ome_axes_say_what_a_short_last_axis_is(tmp_path):
    data = RNG.integers(1, 255, (64, 64, 5), dtype=np.uint8)
    out = tmp_path / "plain.ome.zarr"
    zarr.create_array(str(tmp_path / "a.zarr"), data=data, dimension_names=["z", "y", "x"])
    import_stack(tmp_path / "a.zarr", out, stack="s", pyramid_min_px=4)
    with open_stack(out, name="s") as reader:  # OME axes z, y, x: no ambiguity
        assert reader.shape == (64, 64, 5)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (0.05, "1/nm", 0.005),
        (0.05, "1 / nm", 0.005),
        (0.05, "nm^-1", 0.005),
        (0.05, "nm-1", 0.005),
        (0.005, "1/Å", 0.005),
        (0.005, "1/A", 0.005),
        (0.005, "Å^-1", 0.005),
        (5e7, "1/m", 0.005),
        (2.0, "mrad", None),  # an angle: needs the wavelength, not converted
        (1.0, "px", None),
        (1.0, "", None),
        (1.0, "nm", None),  # a length, not a reciprocal one
        (-0.05, "1/nm", None),
    ],
)
def test_reciprocal_pixel_sizes_convert_to_inverse_angstrom(value, unit, expected):
    from grainflow.stacks.calibration import inverse_angstrom

    got = inverse_angstrom(value, unit, what="f: axis")
    assert got == (None if expected is None else pytest.approx(expected))
