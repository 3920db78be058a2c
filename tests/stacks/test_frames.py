"""Diffraction frames read back through grainflow from files written by RosettaSciIO itself."""

import hashlib

import h5py
import numpy as np
import pytest
import tifffile
import zarr

from grainflow.stacks.frames import frame_files, open_frames
from grainflow.stacks.reader import StackError

SCAN = np.arange(3 * 4 * 24 * 20, dtype=np.uint16).reshape(3, 4, 24, 20)


def axis(name, size, scale, units, navigate):
    return {
        "name": name,
        "size": size,
        "scale": scale,
        "offset": 0.0,
        "units": units,
        "navigate": navigate,
    }


def signal(data, axes, *, camera_length_mm=None, signal_type="electron_diffraction"):
    """A RosettaSciIO signal dict with what its HyperSpy writers expect."""
    metadata = {"General": {"title": "scan"}, "Signal": {"signal_type": signal_type}}
    if camera_length_mm is not None:
        metadata["Acquisition_instrument"] = {"TEM": {"camera_length": camera_length_mm}}
    return {
        "data": data,
        "axes": axes,
        "metadata": metadata,
        "original_metadata": {},
        "tmp_parameters": {},
        "attributes": {"_lazy": False},
        "models": {},
        "learning_results": {},
        "package_info": {"name": "grainflow-tests", "version": "0"},
    }


def scan_signal(data=SCAN, *, k_units="1/nm", k_scale=(0.05, 0.05), camera_length_mm=120.0):
    sy, sx, ky, kx = data.shape
    return signal(
        data,
        [
            axis("y", sy, 2.5, "nm", True),
            axis("x", sx, 2.5, "nm", True),
            axis("ky", ky, k_scale[0], k_units, False),
            axis("kx", kx, k_scale[1], k_units, False),
        ],
        camera_length_mm=camera_length_mm,
    )


def write_hspy(path, sig):
    from rsciio.hspy import file_writer

    file_writer(str(path), sig)
    return path


def write_zspy(path, hspy):
    """A .zspy store: the .hspy file's tree copied into a Zarr v2 group.

    RosettaSciIO 0.15.0's zspy writer needs zarr 2 (zarr.storage.NestedDirectoryStore),
    which zarr 3 no longer has; its reader reads a Zarr v2 group of HyperSpy's layout
    under zarr 3, which is what this writes.
    """

    def plain(value):
        if isinstance(value, bytes):
            return value.decode()
        return value.item() if np.ndim(value) == 0 and hasattr(value, "item") else value

    def copy(h, z):
        for k, v in h.attrs.items():
            z.attrs[k] = plain(v)
        for k, item in h.items():
            if isinstance(item, h5py.Group):
                copy(item, z.create_group(k))
            else:
                a = z.create_array(
                    k, shape=item.shape, dtype=item.dtype, chunks=item.chunks or item.shape
                )
                a[...] = item[()]
                for kk, vv in item.attrs.items():
                    a.attrs[kk] = plain(vv)

    with h5py.File(hspy, "r") as h:
        copy(h, zarr.open_group(str(path), mode="w", zarr_format=2))
    return path


def write_mib(path, frames, *, scan_width=None, header=None):
    """A Quantum Detectors .mib written by hand: RosettaSciIO reads it but has no writer.

    Each frame is a 384-byte ASCII header (``MQ1,<frame>,00384,01,<width>,<height>,U16,
    1x1,...,<timestamp>,<exposure>ns,0`` padded) then big-endian uint16 counts, rows
    stored bottom up (RosettaSciIO flips them back). With ``scan_width`` an ``.hdr``
    beside it gives the scan's width ("Frames per Trigger").
    """
    n, h, w = frames.shape
    with open(path, "wb") as f:
        for i, frame in enumerate(frames):
            fields = ["MQ1", f"{i + 1:06d}", "00384", "01", f"{w:04d}", f"{h:04d}", "U16"]
            fields += ["   1x1", "01", "2026-01-01", "00:00:00.000", "0.001", "0", "0"]
            fields += ["2026-01-01T00:00:00.000000000Z", "1000000ns", "0", ""]
            text = header if header is not None else ",".join(fields)
            f.write(text.encode().ljust(384, b" ")[:384])
            f.write(frame[::-1].astype(">u2").tobytes())
    if scan_width is not None:
        lines = [
            "HDR,",
            f"Frames in Acquisition (Number):\t{n}",
            f"Frames per Trigger (Number):\t{scan_width}",
            "End\t",
        ]
        path.with_suffix(".hdr").write_text("\n".join(lines) + "\n")
    return path


def digest(path):
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update(p.read_bytes())
    return h.hexdigest()


def test_a_hspy_scan_round_trips_with_its_calibration(tmp_path):
    path = write_hspy(tmp_path / "scan.hspy", scan_signal())
    before = digest(path)
    stack = open_frames(path, name="s")
    assert stack.kind == "hspy" and stack.is_scan
    assert stack.scan_shape == (3, 4) and stack.frame_shape == (24, 20)
    assert stack.scan_axes == ("y", "x")
    np.testing.assert_array_equal(np.asarray(stack.data), SCAN)
    cal = stack.calibration
    assert cal.reciprocal_px_inv_A == pytest.approx(0.005)  # 0.05 1/nm
    assert cal.camera_length_mm == pytest.approx(120.0)
    assert cal.scan_step_um == pytest.approx(0.0025)
    assert set(cal.fields) == {"reciprocal_px_inv_A", "camera_length_mm", "scan_step_um"}
    assert digest(path) == before  # only read


def test_a_zspy_scan_reads_back_read_only(tmp_path):
    hspy = write_hspy(tmp_path / "scan.hspy", scan_signal(k_units="1/Å", k_scale=(0.02, 0.02)))
    path = write_zspy(tmp_path / "scan.zspy", hspy)
    before = digest(path)
    stack = open_frames(path, name="s")
    assert stack.kind == "zspy" and stack.scan_shape == (3, 4)
    np.testing.assert_array_equal(np.asarray(stack.frames()[1:3]), SCAN[1:3])
    assert stack.calibration.reciprocal_px_inv_A == pytest.approx(0.02)
    assert stack.calibration.camera_length_mm == pytest.approx(120.0)
    assert digest(path) == before
    assert frame_files(path) == [path]


def test_an_emd_scan_round_trips_and_an_absent_camera_length_stays_unknown(tmp_path):
    from rsciio.emd import file_writer

    path = tmp_path / "scan.emd"
    file_writer(str(path), scan_signal(k_units="nm^-1"))  # NCEM EMD: no camera length
    stack = open_frames(path, name="s")
    assert stack.kind == "emd" and stack.scan_shape == (3, 4) and stack.frame_shape == (24, 20)
    np.testing.assert_array_equal(np.asarray(stack.data), SCAN)
    assert stack.calibration.reciprocal_px_inv_A == pytest.approx(0.005)
    assert stack.calibration.camera_length_mm is None
    assert "camera_length_mm" not in stack.calibration.fields


def test_a_single_frame_and_a_stack_of_frames(tmp_path):
    frame = SCAN[0, 0]
    one = signal(frame, [axis("ky", 24, 1.0, "", False), axis("kx", 20, 1.0, "", False)])
    stack = open_frames(write_hspy(tmp_path / "one.hspy", one), name="s")
    assert stack.scan_shape == () and not stack.is_scan and stack.n_frames == 1
    assert stack.frames().shape == (1, 24, 20)
    np.testing.assert_array_equal(np.asarray(stack.frames()[0]), frame)
    # pixels: no calibration, nothing invented
    assert stack.calibration.reciprocal_px_inv_A is None
    assert stack.calibration.camera_length_mm is None and stack.calibration.scan_step_um is None
    frames = SCAN[0]
    series = signal(
        frames,
        [
            axis("time", 4, 1.0, "s", True),
            axis("ky", 24, 0.01, "1/Å", False),
            axis("kx", 20, 0.01, "1/Å", False),
        ],
    )
    stack = open_frames(write_hspy(tmp_path / "series.hspy", series), name="s")
    assert stack.scan_shape == (4,) and not stack.is_scan and stack.scan_axes == ("time",)
    assert stack.calibration.scan_step_um is None  # seconds are not a length


def test_a_hand_written_mib_scan_reads_with_its_hdr(tmp_path):
    frames = SCAN.reshape(12, 24, 20)
    path = write_mib(tmp_path / "scan.mib", frames, scan_width=4)
    stack = open_frames(path, name="s")
    assert stack.kind == "quantumdetector" and stack.scan_shape == (3, 4)
    np.testing.assert_array_equal(np.asarray(stack.data), SCAN)
    assert stack.calibration.reciprocal_px_inv_A is None  # a .mib records no calibration
    assert frame_files(path) == [path, path.with_suffix(".hdr")]
    # without the .hdr: one stack of frames
    alone = write_mib(tmp_path / "alone.mib", frames[:5])
    assert open_frames(alone, name="s").scan_shape == (5,)


def test_tiff_and_zarr_frames(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", SCAN[0], photometric="minisblack")
    stack = open_frames(tmp_path / "f.tif", name="s")
    assert stack.scan_shape == (4,) and stack.calibration is None
    np.testing.assert_array_equal(np.asarray(stack.frames()[2:4]), SCAN[0, 2:4])
    group = zarr.open_group(str(tmp_path / "scan.zarr"), mode="w")
    group.create_array("patterns", data=SCAN, chunks=(1, 4, 24, 20))
    stack = open_frames(tmp_path / "scan.zarr", name="s")
    assert stack.kind == "zarr" and stack.scan_shape == (3, 4)
    np.testing.assert_array_equal(np.asarray(stack.data), SCAN)


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("XQ1,000001,00384,01,0020,0024,U16,   1x1,0", "field 1 (MQ1) 'XQ1'"),
        ("MQ1,000001,00999,01,0020,0024,U16,   1x1,0", "field 3 (header size) '00999'"),
        ("MQ1,000001,00384,01,twenty,0024,U16,   1x1,0", "field 5 (width (px)) 'twenty'"),
        ("MQ1,000001,00384,01,0020,0024,F64,   1x1,0", "field 7 (pixel depth) 'F64'"),
    ],
)
def test_a_broken_mib_header_is_named(tmp_path, header, field):
    path = write_mib(tmp_path / "bad.mib", SCAN[0], header=header)
    with pytest.raises(StackError) as info:
        open_frames(path, name="scan1")
    message = str(info.value)
    assert "stack 'scan1'" in message and str(path) in message and field in message
    assert "export the scan again" in message


def test_a_truncated_mib_is_named(tmp_path):
    path = write_mib(tmp_path / "cut.mib", SCAN[0, :1])
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(StackError, match=r"less than one frame .* truncated"):
        open_frames(path, name="s")


def test_a_file_without_2d_frames_is_refused_naming_it(tmp_path):
    spectra = signal(
        np.ones((3, 50), np.float32),
        [axis("x", 3, 1.0, "nm", True), axis("E", 50, 1.0, "eV", False)],
        signal_type="EELS",
    )
    path = write_hspy(tmp_path / "eels.hspy", spectra)
    with pytest.raises(StackError) as info:
        open_frames(path, name="s")
    message = str(info.value)
    assert str(path) in message and "holds no 2-D detector frames" in message
    assert "EELS of shape (3, 50)" in message and "as_signal2D" in message


def test_bad_paths_and_calibrations_are_refused(tmp_path):
    with pytest.raises(StackError, match="does not exist; check the 'path' column"):
        open_frames(tmp_path / "nope.hspy", name="s")
    (tmp_path / "frames.txt").write_text("1 2 3")
    with pytest.raises(StackError, match="not a file of diffraction frames"):
        open_frames(tmp_path / "frames.txt", name="s")
    skew = write_hspy(tmp_path / "skew.hspy", scan_signal(k_scale=(0.05, 0.06)))
    with pytest.raises(StackError, match="not square|square pixels"):
        open_frames(skew, name="s")
    tiny = write_hspy(tmp_path / "tiny.hspy", scan_signal(SCAN[:, :, :8, :8]))
    with pytest.raises(StackError, match=r"frames of \(8, 8\) px.*at least 16 x 16"):
        open_frames(tiny, name="s")


@pytest.mark.parametrize("version", [3, 4])
def test_digitalmicrograph_and_velox_diffraction_frames(tmp_path, version):
    from test_calibration import _write_dm, _write_velox  # byte-level writers: no rsciio writer

    frames = SCAN[0].astype(np.float32)
    dm = _write_dm(
        tmp_path / f"f.dm{version}",
        frames,
        [1.0, 0.04, 0.04],
        ["", "1/nm", "1/nm"],
        version=version,
    )
    stack = open_frames(dm, name="s")
    assert stack.kind == "digitalmicrograph" and stack.scan_shape == (4,)
    np.testing.assert_array_equal(np.asarray(stack.data), frames)
    assert stack.calibration.reciprocal_px_inv_A == pytest.approx(0.004)
    velox = _write_velox(tmp_path / "f.emd", SCAN[0], 4e7, unit="1/m")
    stack = open_frames(velox, name="s")
    assert stack.kind == "emd" and stack.scan_shape == (4,) and stack.frame_shape == (24, 20)
    np.testing.assert_array_equal(np.asarray(stack.data), SCAN[0])
    assert stack.calibration.reciprocal_px_inv_A == pytest.approx(0.004)  # 4e7 1/m
