"""Diffraction frames as a detector file holds them: one frame, a stack of frames or a scan.

TIFF and Zarr, and through RosettaSciIO Gatan ``.dm3`` / ``.dm4``, Velox and NCEM
``.emd``, HyperSpy ``.hspy`` / ``.zspy`` and Quantum Detectors Merlin ``.mib``. The
frames are opened read-only and lazily (a Dask array), shaped ``(*scan_axes, ky, kx)``,
so that a scan is read a block of its first axis at a time, never whole.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grainflow.io.images import FRAME_RSCIIO_SUFFIXES, FRAME_SUFFIXES, TIFF_SUFFIXES
from grainflow.stacks.calibration import CalibrationError, FrameCalibration, frame_calibration
from grainflow.stacks.reader import StackError

__all__ = ["MIB_HEADER_FIELDS", "FrameStack", "frame_files", "open_frames"]

logger = logging.getLogger(__name__)

#: the first fields of a Merlin frame header, comma-separated, as RosettaSciIO reads them
MIB_HEADER_FIELDS = (
    "MQ1",
    "frame number",
    "header size (00384 or 00768)",
    "chips",
    "width (px)",
    "height (px)",
    "pixel depth (U08, U16, U32)",
)


@dataclass
class FrameStack:
    """Read-only, lazy diffraction frames of one file.

    Attributes
    ----------
    name : str
        The stack's name (for messages).
    path : Path
    kind : str
        "tiff", "zarr", or the RosettaSciIO module that read the file
        ("digitalmicrograph", "emd", "hspy", "zspy", "quantumdetector").
    data : dask.array.Array of shape (*scan_shape, ky, kx)
        The frames; ``scan_shape`` is ``()`` for a single frame.
    scan_axes : tuple of str
        Names of the leading axes (from the file where it names them).
    calibration : FrameCalibration or None
        What the file records of its scales (None for TIFF and Zarr, whose
        diffraction calibrations grainflow does not read).
    reader : str
        Library and version that read the file.
    """

    name: str
    path: Path
    kind: str
    data: object
    scan_axes: tuple
    calibration: FrameCalibration | None
    reader: str
    handles: list = field(default_factory=list)  # files held open for the lazy reads

    def close(self) -> None:
        """Close the files the frames are read through (TIFF); the data is then unreadable."""
        for handle in self.handles:
            handle.close()
        self.handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def scan_shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.data.shape[:-2])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(int(n) for n in self.data.shape[-2:])

    @property
    def n_frames(self) -> int:
        return int(np.prod(self.scan_shape, dtype=np.int64))

    @property
    def is_scan(self) -> bool:
        """Two or more scan axes: a map of probe positions (4D-STEM-like)."""
        return len(self.scan_shape) >= 2

    def frames(self):
        """The frames with at least one leading axis: ``(*scan_shape, ky, kx)`` or ``(1, ky, kx)``."""
        return self.data if self.scan_shape else self.data[None]

    def describe(self) -> dict:
        """What was read, for attributes and logs."""
        return {
            "file": self.path.name,
            "kind": self.kind,
            "reader": self.reader,
            "scan_shape": list(self.scan_shape),
            "scan_axes": list(self.scan_axes),
            "frame_shape": list(self.frame_shape),
            "dtype": str(self.data.dtype),
            "calibration": None if self.calibration is None else self.calibration.as_dict(),
        }


class _Problem(Exception):
    """A problem found in a file, turned into a StackError naming the stack."""


def frame_files(path: str | os.PathLike) -> list[Path]:
    """The files a diffraction stack is read from, for dependency tracking.

    ``[path]`` (a file or a Zarr / ``.zspy`` folder), with a Merlin ``.mib``'s
    ``.hdr`` beside it when there is one; ``[]`` when ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        return []
    files = [path]
    if path.suffix.lower() == ".mib" and path.with_suffix(".hdr").is_file():
        files.append(path.with_suffix(".hdr"))
    return files


def _check_mib_header(path: Path) -> None:
    """Refuse a ``.mib`` whose first header RosettaSciIO would misread, naming the field."""
    with open(path, "rb") as f:
        head = f.read(384)
    text = head.decode("ascii", errors="replace").split(",")
    expected = ", ".join(MIB_HEADER_FIELDS)

    def problem(which: str, got) -> _Problem:
        return _Problem(
            f"{path} is not a readable Merlin file: the header of its first frame has "
            f"{which} {got!r}; a .mib frame starts with a {len(head) if len(head) < 384 else 384}"
            f"-byte ASCII header '{expected}, ...' (Quantum Detectors MIB); export the scan "
            "again from the Merlin software, or convert it (e.g. to .hspy) and point the sheet "
            "at that file"
        )

    if len(head) < 384 or len(text) < 8:
        raise problem("length (bytes)", len(head))
    if text[0] != "MQ1":
        raise problem("field 1 (MQ1)", text[0])
    if text[2] not in ("00384", "00768"):
        raise problem("field 3 (header size)", text[2])
    for i in (4, 5):
        if not text[i].strip().isdigit() or int(text[i]) < 1:
            raise problem(f"field {i + 1} ({MIB_HEADER_FIELDS[i]})", text[i])
    if text[6] not in ("U08", "U16", "U32"):
        raise problem("field 7 (pixel depth)", text[6])
    size = path.stat().st_size
    frame = int(text[2]) + int(text[4]) * int(text[5]) * int(text[6][1:]) // 8
    if size < frame:
        raise _Problem(
            f"{path} holds {size} bytes, less than one frame of {frame} (header "
            f"{int(text[2])} + {text[4]} x {text[5]} px of {text[6]}); the file is truncated: "
            "copy it again from the acquisition computer"
        )


def _signal_axes(signal: dict) -> tuple[list[int], list[int]] | None:
    """(scan axes, frame axes) of a RosettaSciIO signal, in array order; None without a 2-D frame."""
    axes = sorted(signal["axes"], key=lambda a: int(a.get("index_in_array", 0)))
    frame = [i for i, a in enumerate(axes) if not a.get("navigate")]
    if len(frame) != 2:
        if any(a.get("navigate") for a in axes) or len(axes) < 2:
            return None
        frame = [len(axes) - 2, len(axes) - 1]  # no navigation flags (NCEM EMD): the last two
    return [i for i in range(len(axes)) if i not in frame], frame


def _describe(signal: dict) -> str:
    kind = (signal.get("metadata") or {}).get("Signal", {}).get("signal_type") or "signal"
    axes = sorted(signal["axes"], key=lambda a: int(a.get("index_in_array", 0)))
    roles = ", ".join(
        f"{a.get('name') or '?'} ({'navigation' if a.get('navigate') else 'signal'})" for a in axes
    )
    return f"{kind} of shape {tuple(signal['data'].shape)}: {roles}"


def _open_rsciio(path: Path, *, name: str) -> FrameStack:
    import dask.array as da
    import rsciio

    module = FRAME_RSCIIO_SUFFIXES[path.suffix.lower()]
    if module == "quantumdetector":
        _check_mib_header(path)
    reader = importlib.import_module(f"rsciio.{module}").file_reader
    # read-only: RosettaSciIO's zspy reader opens lazy files for writing unless told
    # and Velox files: images only (their spectrum images need the package sparse)
    options = {"zspy": {"mode": "r"}, "hspy": {"mode": "r"}, "emd": {"select_type": "images"}}
    options = options.get(module, {})
    try:
        signals = reader(str(path), lazy=True, **options)
    except AttributeError as exc:
        if module == "zspy":
            import zarr

            raise _Problem(
                f"{path}: RosettaSciIO {rsciio.__version__} cannot read this .zspy store with "
                f"zarr {zarr.__version__} ({exc}); save the scan as .hspy instead"
            ) from None
        raise
    found = [(s, roles) for s in signals for roles in [_signal_axes(s)] if roles is not None]
    if not found:
        held = "; ".join(_describe(s) for s in signals) or "nothing"
        raise _Problem(
            f"{path} holds no 2-D detector frames ({held}); a diffraction stack is one frame "
            "(two signal axes: the detector's rows and columns), a stack of frames or a scan "
            "of them (navigation axes first): in HyperSpy, make the frame the signal "
            "(e.g. s.as_signal2D((0, 1)) or s.T) and save the file again"
        )
    signal, (scan, frame) = found[0]
    if len(found) > 1:
        logger.info(
            "note: %s holds %d signals with 2-D frames; only the first is read",
            path.name,
            len(found),
        )
    axes = sorted(signal["axes"], key=lambda a: int(a.get("index_in_array", 0)))
    data = signal["data"]
    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks="auto")
    order = [*scan, *frame]
    if order != list(range(len(order))):
        data = data.transpose(order)
    version = f"rosettasciio {rsciio.__version__}"
    try:
        calibration = frame_calibration(
            axes[frame[0]],
            axes[frame[1]],
            [axes[i] for i in scan],
            signal.get("metadata"),
            reader=version,
            file=path.name,
        )
    except CalibrationError as exc:
        raise _Problem(str(exc)) from None
    names = tuple(str(axes[i].get("name") or f"scan{k}") for k, i in enumerate(scan))
    return FrameStack(name, path, module, data, names, calibration, version)


def _open_tiff(path: Path, *, name: str) -> FrameStack:
    import dask.array as da
    import tifffile

    from grainflow.stacks.reader import _open_tiff

    tif, array, axes, colour = _open_tiff(path)
    if colour is not None:
        tif.close()
        raise _Problem(
            f"{path} is a colour TIFF (axes {axes!r}); detector frames are one value per "
            "pixel: export the frames as grey (counts)"
        )

    data = da.from_array(array, chunks=array.chunks, lock=True)  # reads through the open file
    scan = tuple(axes[:-2])
    version = f"tifffile {tifffile.__version__}"
    return FrameStack(name, path, "tiff", data, scan, None, version, handles=[tif])


def _open_zarr(path: Path, *, name: str) -> FrameStack:
    import dask.array as da
    import zarr

    node = zarr.open(str(path), mode="r")
    if not hasattr(node, "shape"):
        attrs = dict(node.attrs)
        multiscales = attrs.get("ome", attrs).get("multiscales")
        keys = sorted(node.array_keys())
        if "patterns" in keys:  # grainflow's own scans (diffraction.scan.write_scan)
            node = node["patterns"]
        elif multiscales:
            node = node[multiscales[0]["datasets"][0]["path"]]
        elif len(keys) == 1:
            node = node[keys[0]]
        else:
            raise _Problem(
                f"{path} is a Zarr group holding the arrays {keys}; point the sheet's path at "
                "the array of frames inside it (e.g. {path}/{name}), or name it 'patterns'"
            )
    data = da.from_array(node, chunks=node.chunks)
    names = getattr(getattr(node, "metadata", None), "dimension_names", None)
    scan = tuple(str(n) for n in names[:-2]) if names and all(names) else ()
    if not scan:
        scan = tuple(f"scan{k}" for k in range(data.ndim - 2))
    return FrameStack(name, path, "zarr", data, scan, None, f"zarr {zarr.__version__}")


def open_frames(path: str | os.PathLike, *, name: str) -> FrameStack:
    """Open a file of diffraction frames read-only and lazily.

    Parameters
    ----------
    path : path-like
        A TIFF, a Zarr store (an array, a group with ``patterns`` or one
        array, an OME-Zarr image), or a ``.dm3``, ``.dm4``, ``.emd``,
        ``.hspy``, ``.zspy`` or ``.mib`` file (read with RosettaSciIO).
    name : str
        The stack's name, for messages.

    Returns
    -------
    FrameStack
        Frames shaped ``(*scan_shape, ky, kx)``: the last two axes are the
        detector's (a RosettaSciIO signal's two signal axes, put last), the
        others the scan (its navigation axes, in the file's order).

    Raises
    ------
    StackError
        Naming the stack, the file, what is wrong and the fix: a path that
        does not exist, a file without 2-D frames, a damaged Merlin header,
        frames smaller than 16 × 16 px, non-square reciprocal pixels.

    Notes
    -----
    The reciprocal-space pixel size, camera length and scan step come from the
    file where it records them (:func:`grainflow.stacks.calibration.frame_calibration`);
    a Merlin ``.mib`` records none of them (its ``.hdr`` beside it gives the scan's
    width, "Frames per Trigger"), nor do TIFF and Zarr as grainflow reads them.
    A ``.mib`` is checked before RosettaSciIO reads it, so that a broken header is
    named rather than misread.
    """
    path = Path(path)
    if not path.exists():
        raise StackError(
            f"stack {name!r}: path {path} does not exist; check the 'path' column of the "
            "stacks sheet (relative paths are relative to the workflow's directory)"
        )
    suffix = path.suffix.lower()
    try:
        if suffix in FRAME_RSCIIO_SUFFIXES:
            stack = _open_rsciio(path, name=name)
        elif suffix in TIFF_SUFFIXES:
            stack = _open_tiff(path, name=name)
        elif path.is_dir():
            stack = _open_zarr(path, name=name)
        else:
            raise _Problem(
                f"{path} is not a file of diffraction frames grainflow reads (names ending in "
                f"{', '.join(FRAME_SUFFIXES)}, or a Zarr store)"
            )
    except _Problem as exc:
        raise StackError(f"stack {name!r}: {exc}") from None
    except StackError:
        raise
    except Exception as exc:
        raise StackError(
            f"stack {name!r}: cannot read path {path} as diffraction frames "
            f"({type(exc).__name__}: {exc}); is it a {', '.join(FRAME_SUFFIXES)} file or a "
            "Zarr store, and complete?"
        ) from exc
    if stack.data.ndim < 2 or min(stack.frame_shape) < 16:
        stack.close()
        raise StackError(
            f"stack {name!r}: {path} holds frames of {stack.frame_shape} px (shape "
            f"{tuple(stack.data.shape)}); a diffraction frame is at least 16 x 16 px: check "
            "which axes are the detector's (signal axes) in the file"
        )
    if not np.issubdtype(stack.data.dtype, np.number) or np.issubdtype(
        stack.data.dtype, np.complexfloating
    ):
        stack.close()
        raise StackError(
            f"stack {name!r}: {path} holds {stack.data.dtype} values; detector frames are "
            "real counts or intensities"
        )
    return stack
