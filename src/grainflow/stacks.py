"""Real image stacks: lazy, read-only reading and import as OME-Zarr.

A *stack* is one row of the stacks sheet: a TIFF (multi-page allowed), a
PNG / TIFF / JPEG file, a folder of such files (read in sorted name order, one
plane per file), or an existing Zarr / OME-Zarr store. :func:`open_stack`
gives a :class:`StackReader` that reads any plane, or any rectangle of it, on
demand and in grey; nothing is read before it is asked for, and TIFF and Zarr
sources are read by region (tiles or strips), so a plane larger than memory
can be streamed. Sources are only ever opened for reading.

:func:`import_stack` streams a stack, block by block, into an OME-Zarr (NGFF
0.5, Zarr v3) store::

    {stack}.ome.zarr/
        zarr.json          ome: multiscales (axes z, y, x; scale in micrometre),
                           grainflow: stack, task, source, planes (file, page,
                           group, intensity range), pixel size, version
        s0, s1, ...        (Z, Y, X) images, source dtype, chunks (1, chunk, chunk);
                           s{k+1} is s{k} averaged over 2 x 2 pixels, down to < pyramid_min_px
        labels/zarr.json   ome: labels ["ground_truth"] (only with ground truth)
        labels/ground_truth/
            zarr.json      ome: multiscales, image-label (source ../../)
            s0, s1, ...    (Z, Y, X) integer labels; s{k+1} = s{k}[::2, ::2]

Colour is converted to grey (ITU-R BT.709 luma, :func:`skimage.color.rgb2gray`)
in the source's dtype, with a note in the log; 8-bit, 16-bit and float
intensities are stored unchanged (inference normalises each plane, see
:mod:`grainflow.normalize`). When the pixel size is unknown the y and x scale
is 1 and the axes have no unit (sizes are then in pixels). The z axis indexes
planes (separate images or sections); its scale is 1, without unit.

Bad input raises :class:`StackError` naming the stack and the problem: a
missing path, an unreadable file, a wrong number of axes, an empty stack, an
image with NaN or infinite values, a constant image, mismatched ground truth.
The store is written to a temporary folder beside the target and renamed onto
it only when complete, so a failure leaves no output.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grainflow import __version__
from grainflow.io import replace_dir

__all__ = [
    "StackError",
    "IMAGE_SUFFIXES",
    "source_files",
    "sheet_row",
    "sheet_inputs",
    "StackReader",
    "open_stack",
    "plane_groups",
    "pyramid_shapes",
    "downsample",
    "remove_stale",
    "import_stack",
    "LABEL_NAME",
]

logger = logging.getLogger(__name__)

#: file name endings read as images (case-insensitive)
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_TIFF_SUFFIXES = (".tif", ".tiff")
#: name of the ground-truth label image under labels/
LABEL_NAME = "ground_truth"
_NGFF_VERSION = "0.5"
# lengths in these units, converted to micrometres (OME-Zarr axis units)
_TO_UM = {"angstrom": 1e-4, "nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3,
          "centimeter": 1e4, "meter": 1e6}


class StackError(ValueError):
    """A stack that grainflow cannot read; the message names the stack and the problem."""


# --------------------------------------------------------------------------- sources


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in ("zarr.json", ".zarray", ".zgroup"))


def source_files(path: str | os.PathLike) -> list[Path]:
    """The files a source is read from, for dependency tracking.

    Parameters
    ----------
    path : path-like
        A file, a folder of images or a Zarr store.

    Returns
    -------
    files : list of Path
        ``[path]`` for a file or a Zarr store (a folder), the images of a
        folder (names ending in :data:`IMAGE_SUFFIXES`, hidden files skipped)
        in sorted order, ``[]`` when ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir() and not _is_zarr(path):
        return sorted(
            p for p in path.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
    return [path]


_SHEET_COLUMNS = ("path", "task", "pixel_size_um", "ground_truth", "group", "description")


def sheet_row(table, stack: str) -> dict:
    """One row of the stacks sheet as a plain dict, empty cells (None or NaN) as None.

    Parameters
    ----------
    table : DataFrame
        The sheet from :func:`grainflow.config.read_stacks`, indexed by stack name.
    stack : str
        The stack's name.
    """
    if stack not in table.index:
        raise StackError(f"stack {stack!r} is not in the stacks sheet; known: {list(table.index)}")
    row = table.loc[stack]
    out = {}
    for key in _SHEET_COLUMNS:
        value = row.get(key)
        empty = value is None or (isinstance(value, float) and math.isnan(value))
        out[key] = None if empty else value
    return out


def sheet_inputs(table, stack: str, column: str) -> list[str]:
    """The files that a stack's ``column`` ("path" or "ground_truth") is read from.

    For a workflow rule's input, so that a change of any source file reruns
    the import. Empty when the cell is empty.
    """
    value = sheet_row(table, stack)[column]
    return [str(p) for p in source_files(value)] if value else []


class _Source:
    """Planes of one file or store, in the source's axes (colour last)."""

    name: str  # file name recorded in the attributes
    n_planes: int
    shape: tuple[int, int]  # (Y, X)
    channels: int  # 0 for grey, else the colour samples per pixel (2: grey + alpha, 3, 4)
    dtype: np.dtype
    pixel_size_um: float | None = None

    def read(self, k: int, rows: slice, cols: slice) -> np.ndarray:  # (h, w) or (h, w, S)
        raise NotImplementedError

    def close(self) -> None:
        pass


def _layout(axes: str, shape: Sequence[int], colour_axis: str | None, *, what: str) -> str:
    """Roles of the source's axes: P (plane), Y, X, S (colour), 1 (singleton, index 0)."""
    roles = []
    for ax, n in zip(axes, shape):
        if ax in "YX":
            roles.append(ax)
        elif ax == colour_axis:
            roles.append("S")
        elif n == 1:
            roles.append("1")
        else:
            roles.append("P")
    if roles.count("Y") != 1 or roles.count("X") != 1 or roles.count("P") > 1:
        raise _Problem(
            f"{what} has axes {axes!r} with shape {tuple(shape)}; grainflow reads a 2-D image "
            "(rows, cols), optionally with colour, or one stack of such planes "
            "(wrong number of axes)"
        )
    return "".join(roles)


class _Problem(Exception):
    """A problem found in a source, turned into a StackError naming the stack."""


class _ArraySource(_Source):
    """A region-readable array (Zarr, or a TIFF seen as Zarr) with known axis roles."""

    def __init__(self, array, roles: str, *, name: str, opener=None, handle=None):
        self.array, self.roles, self.name = array, roles, name
        self._opener, self._handle = opener, handle
        shape = tuple(int(n) for n in array.shape)
        self.n_planes = shape[roles.index("P")] if "P" in roles else 1
        self.shape = (shape[roles.index("Y")], shape[roles.index("X")])
        self.channels = shape[roles.index("S")] if "S" in roles else 0
        self.dtype = np.dtype(array.dtype)

    def read(self, k, rows, cols):
        key = tuple({"P": k, "Y": rows, "X": cols, "S": slice(None), "1": 0}[r] for r in self.roles)
        if self._opener is not None:  # reopened per read (many files in a folder)
            handle, array = self._opener()
            try:
                data = np.asarray(array[key])
            finally:
                handle.close()
        else:
            data = np.asarray(self.array[key])
        kept = [r for r in self.roles if r in "YXS"]
        return data.transpose([kept.index(a) for a in "YXS" if a in kept])

    def close(self):
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _open_tiff(path: Path):
    """Open a TIFF read-only: (TiffFile, Zarr view of its first series, axes, colour axis)."""
    import tifffile
    import zarr

    tif = tifffile.TiffFile(path)
    try:
        if len(tif.series) > 1 and tif.is_shaped:  # pages written one by one: one generic series
            generic = tifffile.TiffFile(path, is_shaped=False)
            if len(generic.series) == 1:
                tif.close()
                tif = generic
            else:
                generic.close()
        if len(tif.series) > 1:
            logger.info("note: %s holds %d image series; only the first is read", path.name,
                        len(tif.series))
        series = tif.series[0]
        array = zarr.open(series.aszarr(level=0), mode="r")
        if not hasattr(array, "shape"):  # a group of levels
            array = array["0"]
        photometric = int(series.keyframe.photometric)
        rgb = photometric in (int(tifffile.PHOTOMETRIC.RGB), int(tifffile.PHOTOMETRIC.YCBCR))
        axes = series.axes
        colour = "S" if "S" in axes and (rgb or axes.endswith("S")) else None
        return tif, array, axes, colour
    except BaseException:
        tif.close()
        raise


class _TiffSource(_ArraySource):
    def __init__(self, path: Path, *, keep_open: bool, what: str):
        tif, array, axes, colour = _open_tiff(path)
        roles = _layout(axes, array.shape, colour, what=what)
        if keep_open:
            super().__init__(array, roles, name=path.name, handle=tif)
        else:
            tif.close()

            def opener():
                tif, array, _, _ = _open_tiff(path)
                return tif, array

            super().__init__(array, roles, name=path.name, opener=opener)


# Pillow modes: (colour samples, dtype); colour modes are decoded as RGB(A)
_PIL_MODES = {
    "1": (0, np.bool_), "L": (0, np.uint8), "I;16": (0, np.uint16), "I;16L": (0, np.uint16),
    "I;16B": (0, np.uint16), "I": (0, np.int32), "F": (0, np.float32), "LA": (2, np.uint8),
    "RGB": (3, np.uint8), "RGBA": (4, np.uint8), "P": (3, np.uint8), "PA": (4, np.uint8),
    "CMYK": (3, np.uint8), "YCbCr": (3, np.uint8), "LAB": (3, np.uint8), "HSV": (3, np.uint8),
}


class _PillowSource(_Source):
    """A PNG / JPEG image: no region reads, so the plane is decoded whole (last one cached)."""

    def __init__(self, path: Path):
        from PIL import Image

        self.path, self.name, self.n_planes = path, path.name, 1
        with Image.open(path) as im:
            self.shape = (im.height, im.width)
            self.mode = im.mode
            n_frames = getattr(im, "n_frames", 1)
            if self.mode == "P":
                self._target = "RGBA" if "transparency" in im.info else "RGB"
            elif self.mode in ("CMYK", "YCbCr", "LAB", "HSV", "PA"):
                self._target = "RGBA" if self.mode == "PA" else "RGB"
            else:
                self._target = None
        if n_frames > 1:
            raise _Problem(f"{path.name} holds {n_frames} frames; save the stack as a multi-page "
                           "TIFF or as one file per plane (wrong number of axes)")
        if self.mode not in _PIL_MODES:
            raise _Problem(f"{path.name} has the unsupported pixel mode {self.mode!r}")
        self.channels = 4 if self._target == "RGBA" else _PIL_MODES[self.mode][0]
        self.dtype = np.dtype(_PIL_MODES[self.mode][1])
        self._cache: np.ndarray | None = None

    def read(self, k, rows, cols):
        if self._cache is None:
            from PIL import Image

            with Image.open(self.path) as im:
                if self._target is not None:
                    im = im.convert(self._target)
                self._cache = np.asarray(im)
            if self._cache.dtype != self.dtype:
                self._cache = self._cache.astype(self.dtype)
        return self._cache[rows, cols]

    def release(self):
        self._cache = None


def _ome_pixel_size(multiscale: dict, axes: list[str]) -> float | None:
    """Pixel size (µm) along y and x from OME-Zarr metadata, or None when unknown or unequal."""
    try:
        units = {a["name"]: a.get("unit") for a in multiscale["axes"] if isinstance(a, dict)}
        scale = [1.0] * len(axes)
        for transforms in (multiscale.get("coordinateTransformations") or [],
                           multiscale["datasets"][0].get("coordinateTransformations") or []):
            for t in transforms:
                if t.get("type") == "scale":
                    scale = [s * f for s, f in zip(scale, t["scale"])]
        sizes = {ax: scale[axes.index(ax)] * _TO_UM[units[ax]] for ax in ("y", "x")}
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if not math.isclose(sizes["y"], sizes["x"], rel_tol=1e-6) or not sizes["x"] > 0:
        return None
    return float(sizes["x"])


class _ZarrSource(_ArraySource):
    def __init__(self, path: Path, *, what: str):
        import zarr

        node = zarr.open(str(path), mode="r")
        pixel_size = None
        self.kind = "zarr" if hasattr(node, "shape") else "ome-zarr"
        if hasattr(node, "shape"):  # a plain array
            shape = node.shape
            if len(shape) == 2:
                axes, colour = "YX", None
            elif len(shape) == 3 and shape[-1] in (3, 4) and min(shape[:2]) > 4:
                axes, colour = "YXS", "S"
                logger.info("note: %s has shape %s; its last axis is read as colour", what, shape)
            elif len(shape) == 3:
                axes, colour = "ZYX", None
            else:
                raise _Problem(
                    f"{what} is a Zarr array of shape {tuple(shape)}; grainflow reads 2-D (rows, "
                    "cols) or 3-D (planes, rows, cols) arrays (wrong number of axes)"
                )
            array = node
        else:
            attrs = dict(node.attrs)
            multiscales = attrs.get("ome", attrs).get("multiscales")
            if not multiscales:
                raise _Problem(
                    f"{what} is a Zarr group without OME-Zarr multiscales metadata; point the "
                    "path at an array inside it or at an OME-Zarr image"
                )
            ms = multiscales[0]
            array = node[ms["datasets"][0]["path"]]
            names = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes") or []]
            names = names or ["t", "c", "z", "y", "x"][-len(array.shape):]
            if len(names) != len(array.shape) or "y" not in names or "x" not in names:
                raise _Problem(f"{what} has axes {names} for an array of shape {array.shape} "
                               "(wrong number of axes)")
            channels = array.shape[names.index("c")] if "c" in names else 1
            colour = "c" if channels in (3, 4) else None
            if channels > 1 and colour is None:
                raise _Problem(f"{what} has {channels} channels; grainflow reads grey or RGB(A) "
                               "images (wrong number of axes)")
            axes = "".join({"y": "Y", "x": "X"}.get(n, n) for n in names)
            pixel_size = _ome_pixel_size(ms, names)
        super().__init__(array, _layout(axes, array.shape, colour, what=what), name=path.name)
        self.pixel_size_um = pixel_size


# --------------------------------------------------------------------------- reader


def _grey(data: np.ndarray, channels: int) -> np.ndarray:
    """Colour (h, w, S) to grey (h, w) in the same dtype (BT.709 luma; alpha dropped)."""
    if channels == 0:
        return data
    if channels == 2:  # grey + alpha
        return data[..., 0]
    from skimage.color import rgb2gray

    grey = rgb2gray(data[..., :3].astype(np.float64))  # float input: weights applied as they are
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        return np.clip(np.rint(grey), info.min, info.max).astype(data.dtype)
    return grey.astype(data.dtype)


@dataclass(frozen=True)
class _PlaneRef:
    source: _Source
    index: int  # plane within the source


class StackReader:
    """Read-only, lazy access to the planes of an image stack, in grey.

    Use :func:`open_stack` to make one; close it (or use it as a context
    manager) to release open files.

    Attributes
    ----------
    name : str
        The stack's name (used in error messages).
    path : Path
        The source.
    kind : str
        "tiff", "image" (PNG / JPEG), "folder", "zarr" or "ome-zarr".
    shape : (int, int, int)
        (planes, rows, cols).
    dtype : numpy.dtype
        Of the planes read (the source's; bool becomes uint8).
    colour : bool
        Whether the source is in colour (converted to grey when read).
    files, pages : list
        Per plane, the source file name and the plane's index in that file.
    pixel_size_um : float or None
        From the source's OME-Zarr metadata, when it has one.
    """

    def __init__(self, name: str, path: Path, kind: str, planes: list[_PlaneRef]):
        self.name, self.path, self.kind = name, path, kind
        self._planes = planes
        first = planes[0].source
        rows, cols = first.shape
        self.shape = (len(planes), rows, cols)
        self.colour = first.channels > 0
        self.channels = first.channels
        self.dtype = np.dtype(np.uint8) if first.dtype == np.bool_ else first.dtype
        self.files = [p.source.name for p in planes]
        self.pages = [p.index for p in planes]
        self.pixel_size_um = first.pixel_size_um
        for p in planes:
            s = p.source
            if (s.shape, s.channels, s.dtype) != (first.shape, first.channels, first.dtype):
                raise StackError(
                    f"stack {name!r}: {s.name} has shape {s.shape}, {s.channels or 'no'} colour "
                    f"channels and dtype {s.dtype}, but {first.name} has {first.shape}, "
                    f"{first.channels or 'no'} colour channels and {first.dtype}; all images of a "
                    "stack must agree"
                )
        if self.shape[0] == 0 or rows == 0 or cols == 0:
            raise StackError(f"stack {name!r}: {path} is empty (shape {self.shape})")

    def read(self, z: int, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """Read a rectangle of plane ``z`` in grey.

        Returns
        -------
        region : ndarray of shape (h, w), :attr:`dtype`
        """
        ref = self._planes[z]
        try:
            data = ref.source.read(ref.index, rows, cols)
        except Exception as exc:
            raise StackError(
                f"stack {self.name!r}: cannot read plane {z} from {ref.source.name} "
                f"({type(exc).__name__}: {exc}); the file is damaged or not an image"
            ) from exc
        data = _grey(data, ref.source.channels)
        return data.astype(np.uint8) if data.dtype == np.bool_ else data

    def reorder(self, order: Sequence[int]) -> None:
        """Put plane ``order[z]`` at position ``z`` (a permutation of the planes)."""
        if sorted(order) != list(range(len(self._planes))):
            raise ValueError(f"order must be a permutation of the planes, got {order=}")
        self._planes = [self._planes[j] for j in order]
        self.files = [self.files[j] for j in order]
        self.pages = [self.pages[j] for j in order]

    def release(self, z: int) -> None:
        """Forget any decoded copy of plane ``z`` (PNG / JPEG planes are decoded whole)."""
        release = getattr(self._planes[z].source, "release", None)
        if release is not None:
            release()

    def close(self) -> None:
        for source in {id(p.source): p.source for p in self._planes}.values():
            source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_stack(path: str | os.PathLike, *, name: str, role: str = "path") -> StackReader:
    """Open a stack's source read-only and lazily.

    Parameters
    ----------
    path : path-like
        A TIFF (multi-page allowed), a PNG / JPEG, a folder of such images
        (sorted by name, one plane per file) or a Zarr / OME-Zarr store.
    name : str
        The stack's name, for error messages.
    role : str
        The stacks sheet's column that gave ``path`` ("path" or
        "ground_truth"), for error messages.

    Returns
    -------
    StackReader

    Raises
    ------
    StackError
        When the path does not exist, a file cannot be read, the axes are
        wrong or the stack is empty.
    """
    path = Path(path)
    what = f"{path}"
    if not path.exists():
        raise StackError(
            f"stack {name!r}: {role} {path} does not exist; check the {role!r} column of the "
            "stacks sheet (relative paths are relative to the workflow's directory)"
        )
    sources: list[_Source] = []
    try:
        if _is_zarr(path):
            source = _ZarrSource(path, what=what)
            kind = source.kind
            sources = [source]
        elif path.is_dir():
            files = source_files(path)
            if not files:
                raise _Problem(
                    f"folder {path} holds no images (files ending in {', '.join(IMAGE_SUFFIXES)})"
                )
            kind = "folder"
            for f in files:
                sources.append(_file_source(f, keep_open=False, what=str(f)))
                if sources[-1].n_planes != 1:
                    raise _Problem(f"{f} holds {sources[-1].n_planes} planes; each file of a "
                                   "folder must hold one image (wrong number of axes)")
        else:
            kind = "tiff" if path.suffix.lower() in _TIFF_SUFFIXES else "image"
            sources = [_file_source(path, keep_open=True, what=what)]
    except _Problem as exc:
        for s in sources:
            s.close()
        raise StackError(f"stack {name!r}: {exc}") from None
    except StackError:
        for s in sources:
            s.close()
        raise
    except Exception as exc:
        for s in sources:
            s.close()
        raise StackError(
            f"stack {name!r}: cannot read {role} {path} ({type(exc).__name__}: {exc}); "
            "is it a TIFF, PNG, JPEG, a folder of them or a Zarr store?"
        ) from exc
    planes = [_PlaneRef(s, k) for s in sources for k in range(s.n_planes)]
    if not planes:
        for s in sources:
            s.close()
        raise StackError(f"stack {name!r}: {role} {path} holds no planes (empty)")
    try:
        reader = StackReader(name, path, kind, planes)
    except BaseException:
        for s in sources:
            s.close()
        raise
    if reader.colour:
        logger.info(
            "note: stack %r (%s) is in colour (%d channels); converted to grey with ITU-R BT.709 "
            "weights (skimage.color.rgb2gray)%s, keeping dtype %s",
            name, role, reader.channels, "" if reader.channels != 2 else " (alpha dropped)",
            reader.dtype,
        )
    return reader


def _file_source(path: Path, *, keep_open: bool, what: str) -> _Source:
    suffix = path.suffix.lower()
    if suffix in _TIFF_SUFFIXES:
        return _TiffSource(path, keep_open=keep_open, what=what)
    if suffix in IMAGE_SUFFIXES:
        return _PillowSource(path)
    raise _Problem(f"{path} is not a supported image file (names must end in "
                   f"{', '.join(IMAGE_SUFFIXES)}) or a Zarr store")


# --------------------------------------------------------------------------- import


def plane_groups(files: Sequence[str], pattern: str | None, *, name: str) -> list[str] | None:
    """The group of each plane: the first group of ``pattern`` searched in its file name.

    Returns None without a pattern. Raises :class:`StackError` when the pattern
    is not a regular expression with a group or a file name does not match it.
    """
    if pattern is None or (isinstance(pattern, float) and math.isnan(pattern)) or pattern == "":
        return None
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise StackError(f"stack {name!r}: group {pattern!r} is not a regular expression: {exc}")
    if regex.groups < 1:
        raise StackError(f"stack {name!r}: group {pattern!r} needs a (capturing group), e.g. "
                         r"'^(spot\d+)_'")
    groups = []
    for f in files:
        m = regex.search(f)
        if m is None or m.group(1) is None:
            raise StackError(f"stack {name!r}: file name {f!r} does not match group {pattern!r}; "
                             "fix the pattern or the file name")
        groups.append(m.group(1))
    return groups


def pyramid_shapes(shape, *, min_px: int = 512) -> list[tuple[int, int]]:
    """(rows, cols) of each pyramid level: halved (rounded up) until the largest side < ``min_px``.

    Examples
    --------
    >>> pyramid_shapes((600, 800))
    [(600, 800), (300, 400)]
    >>> pyramid_shapes((100, 100))
    [(100, 100)]
    """
    if min_px < 2:
        raise ValueError(f"min_px must be at least 2, got {min_px=}")
    levels = [tuple(int(n) for n in shape)]
    while max(levels[-1]) >= min_px:
        levels.append(tuple(-(-n // 2) for n in levels[-1]))
    return levels


def _pair_ground_truth(images: list[str], labels: list[str], *, name: str) -> list[int]:
    """For each image plane, the index of its ground-truth plane.

    Label files named like their images (``spot1_0d_0.png`` and
    ``spot1_0d_0_mask.png``: the same stem, or the stem plus one common
    suffix) are paired by name; planes of one file, or files named otherwise,
    are paired in order (with a warning in the second case).
    """
    if len(images) != len(labels):
        raise StackError(f"stack {name!r}: {len(images)} image planes but {len(labels)} ground "
                         "truth planes; give one label image per image")
    in_order = list(range(len(images)))
    if len(set(images)) < len(images) or len(set(labels)) < len(labels):
        return in_order  # pages of multi-page files
    stems = [Path(f).stem for f in images]
    lstems = [Path(f).stem for f in labels]
    suffixes = sorted({lab[len(stems[0]):] for lab in lstems if lab.startswith(stems[0])}, key=len)
    for suffix in suffixes:
        keys = [lab[: len(lab) - len(suffix)] if lab.endswith(suffix) else None for lab in lstems]
        index = {key: j for j, key in enumerate(keys)}
        if sorted(map(str, keys)) == sorted(stems):
            return [index[stem] for stem in stems]
    logger.warning("stack %r: ground truth file names (%s, ...) are not image names (%s, ...) "
                   "plus a suffix; paired in sorted order", name, labels[0], images[0])
    return in_order


def _scale_transforms(levels: int, pixel: float, *, centred: bool) -> list[list[dict]]:
    out = []
    for k in range(levels):
        f = 2.0**k
        transforms = [{"type": "scale", "scale": [1.0, pixel * f, pixel * f]}]
        if centred and k > 0:  # a 2x2 mean's pixel centre lies half a pixel of the finer level in
            shift = pixel * (f - 1.0) / 2.0
            transforms.append({"type": "translation", "translation": [0.0, shift, shift]})
        out.append(transforms)
    return out


def _axes(pixel_known: bool) -> list[dict]:
    axes = [{"name": "z", "type": "space"}]
    for name in ("y", "x"):
        unit = {"unit": "micrometer"} if pixel_known else {}
        axes.append({"name": name, "type": "space", **unit})
    return axes


def _blocks(rows: int, cols: int, step: int):
    for r0 in range(0, rows, step):
        for c0 in range(0, cols, step):
            yield slice(r0, min(r0 + step, rows)), slice(c0, min(c0 + step, cols))


def _create_levels(group, shapes, n_planes, dtype, chunk) -> list:
    return [
        group.create_array(
            f"s{k}", shape=(n_planes, *s), dtype=dtype,
            chunks=(1, min(chunk, s[0]), min(chunk, s[1])), fill_value=0,
            dimension_names=["z", "y", "x"],
        )
        for k, s in enumerate(shapes)
    ]


def downsample(src, dst, *, step: int, mean: bool) -> None:
    """Fill a pyramid level from the next finer one, block by block.

    Parameters
    ----------
    src : array-like of shape (Z, 2 Y or 2 Y - 1, 2 X or 2 X - 1)
        The finer level (a Zarr array or an ndarray), read in blocks.
    dst : array-like of shape (Z, Y, X)
        The level to fill, written in blocks (``dst[z, rows, cols] = ...``).
    step : int
        Side of the blocks of ``dst``, pixels (a multiple of its chunks, so
        that each block writes whole chunks); each reads ``2 * step`` of ``src``.
    mean : bool
        True: 2 x 2 mean (images; an odd last row or column is repeated,
        integers are rounded); False: ``src[::2, ::2]`` (label images).
    """
    from skimage.transform import downscale_local_mean

    n_planes, rows, cols = dst.shape
    src_rows, src_cols = src.shape[1:]
    # exact for the sum of 4 values of up to 16 bits, and for float32
    work = np.float32 if dst.dtype.itemsize <= 2 or dst.dtype == np.float32 else np.float64
    for z in range(n_planes):
        for rs, cs in _blocks(rows, cols, step):
            region = src[z, 2 * rs.start : min(2 * rs.stop, src_rows),
                         2 * cs.start : min(2 * cs.stop, src_cols)]
            if mean:
                region = region.astype(work)
                pad = ((0, 2 * (rs.stop - rs.start) - region.shape[0]),
                       (0, 2 * (cs.stop - cs.start) - region.shape[1]))
                if any(p[1] for p in pad):  # odd size: repeat the last row / column
                    region = np.pad(region, pad, mode="edge")
                region = downscale_local_mean(region, (2, 2))
                if np.issubdtype(dst.dtype, np.integer):
                    region = np.rint(region)
                dst[z, rs, cs] = region.astype(dst.dtype)
            else:
                dst[z, rs, cs] = region[::2, ::2]


def remove_stale(out: Path) -> None:
    """Remove the temporary folders of ``out`` that a killed writer left beside it.

    Writers of ``out`` build it in ``.{out.name}.*.tmp`` beside it and swap an
    old copy through ``.{out.name}.*.old`` (:func:`grainflow.io.replace_dir`);
    with one writer per output (one Snakemake job), any such folder found
    when a writer starts is left by a killed run.

    Parameters
    ----------
    out : Path
        The output folder (e.g. a ``.ome.zarr`` store); it need not exist.
    """
    for stale in out.parent.glob(f".{glob.escape(out.name)}.*"):
        if stale.is_dir() and stale.suffix in (".tmp", ".old"):
            logger.info("removing %s, left by an interrupted run", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _check_paths(inputs: list[Path], out: Path, *, name: str) -> None:
    o = out.resolve()
    for p in inputs:
        p = p.resolve()
        if o == p or p in o.parents or o in p.parents:
            raise StackError(f"stack {name!r}: the output {out} would overwrite or lie inside the "
                             f"input {p}; inputs are never modified")


def import_stack(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    stack: str,
    task: str | None = None,
    pixel_size_um: float | None = None,
    ground_truth: str | os.PathLike | None = None,
    group: str | None = None,
    chunk: int = 512,
    pyramid_min_px: int = 512,
    block: int = 2048,
    description: str | None = None,
) -> dict:
    """Import a stack as an OME-Zarr image, streaming it block by block.

    Parameters
    ----------
    path : path-like
        The source (see :func:`open_stack`); opened read-only.
    out : path-like
        The store to write, e.g. ``results/stacks/{stack}.ome.zarr``;
        replaced atomically (a temporary folder beside it is renamed onto it).
    stack : str
        The stack's name.
    task : str, optional
        What the stack shows ("grains", "phases", ...), stored in the attributes.
    pixel_size_um : float, optional
        Pixel size in micrometres. None (or NaN) when unknown: then the
        source's OME-Zarr scale is used if it has one, else the scale is 1
        pixel without unit.
    ground_truth : path-like, optional
        Integer (or boolean) labels, in any form ``path`` accepts, one plane
        per image plane and of the same size; stored under ``labels/``.
    group : str, optional
        Regular expression whose first group, searched in each plane's file
        name, gives the plane's group (for honest splits).
    chunk : int
        Chunk side in pixels; chunks are (1, chunk, chunk).
    pyramid_min_px : int
        Levels are added, each half the size of the previous one, until the
        largest side is below this.
    block : int
        Side of the blocks streamed, in pixels (rounded down to whole chunks).
    description : str, optional
        Free text, stored in the attributes.

    Returns
    -------
    summary : dict
        shape, dtype, levels, pixel_size_um, colour, planes with ground truth.

    Raises
    ------
    StackError
        For any problem with the input; ``out`` is then left as it was.
    """
    import zarr
    from ome_zarr.format import FormatV05

    with warnings.catch_warnings():  # ome-zarr 0.18 warns about its own default arguments
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_label_metadata, write_multiscales_metadata

    if chunk < 1 or block < 1:
        raise ValueError(f"chunk and block must be positive, got {chunk=}, {block=}")
    if pixel_size_um is not None and not math.isnan(pixel_size_um) and not pixel_size_um > 0:
        raise StackError(f"stack {stack!r}: pixel size must be positive, got {pixel_size_um=}")
    if isinstance(ground_truth, float) and math.isnan(ground_truth) or ground_truth == "":
        ground_truth = None
    out = Path(out)
    _check_paths([Path(p) for p in (path, ground_truth) if p is not None], out, name=stack)
    step = max(chunk, block // chunk * chunk)
    fmt = FormatV05()

    image = open_stack(path, name=stack, role="path")
    labels = None
    try:
        if ground_truth is not None:
            labels = open_stack(ground_truth, name=stack, role="ground_truth")
            if labels.colour:
                raise StackError(f"stack {stack!r}: ground truth {ground_truth} is in colour; "
                                 "labels must be one integer value per pixel")
            if labels.dtype.kind not in "biu":
                raise StackError(f"stack {stack!r}: ground truth {ground_truth} holds "
                                 f"{labels.dtype} values; labels must be integers or booleans")
            if labels.shape != image.shape:
                raise StackError(f"stack {stack!r}: ground truth {ground_truth} has shape "
                                 f"{labels.shape} (planes, rows, cols) but the images have "
                                 f"{image.shape}")
            labels.reorder(_pair_ground_truth(image.files, labels.files, name=stack))
        groups = plane_groups(image.files, group, name=stack)
        if image.dtype.kind not in "biuf":
            raise StackError(f"stack {stack!r}: {path} holds {image.dtype} values; grainflow "
                             "reads integer or floating-point intensities")
        if pixel_size_um is None or math.isnan(pixel_size_um):
            pixel_size_um, pixel_source = image.pixel_size_um, "source metadata"
            if pixel_size_um is None:
                pixel_source = "unknown"
        else:
            pixel_source = "stacks sheet"
            if image.pixel_size_um is not None and not math.isclose(
                image.pixel_size_um, pixel_size_um, rel_tol=1e-3
            ):
                logger.warning("stack %r: the stacks sheet's pixel size %g um differs from the "
                               "source's %g um; using the sheet's", stack, pixel_size_um,
                               image.pixel_size_um)
        n_planes, rows, cols = image.shape
        shapes = pyramid_shapes((rows, cols), min_px=pyramid_min_px)
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            levels = _create_levels(root, shapes, n_planes, image.dtype, chunk)
            planes = []
            for z in range(n_planes):
                lo, hi = math.inf, -math.inf
                where = f"plane {z} ({image.files[z]}" + (
                    f", page {image.pages[z]})" if image.kind in ("tiff", "zarr", "ome-zarr")
                    else ")")
                for rs, cs in _blocks(rows, cols, step):
                    region = image.read(z, rs, cs)
                    if region.dtype.kind == "f":
                        bad = ~np.isfinite(region)
                        if bad.any():
                            r, c = np.argwhere(bad)[0]
                            what = "NaN" if np.isnan(region[r, c]) else "infinite"
                            raise StackError(
                                f"stack {stack!r}: {where} has {what} values (first at row "
                                f"{rs.start + r}, col {cs.start + c}); fix or mask the image"
                            )
                    lo, hi = min(lo, region.min().item()), max(hi, region.max().item())
                    levels[0][z, rs, cs] = region
                image.release(z)
                if lo == hi:
                    raise StackError(f"stack {stack!r}: {where} is constant (every pixel is "
                                     f"{lo}); it holds no image")
                planes.append({"index": z, "file": image.files[z], "page": image.pages[z],
                               "group": None if groups is None else groups[z],
                               "min": lo, "max": hi})
            half = max(chunk, step // 2 // chunk * chunk)  # reads blocks of about step px
            for k in range(1, len(levels)):
                downsample(levels[k - 1], levels[k], step=half, mean=True)
            pixel = 1.0 if pixel_size_um is None else float(pixel_size_um)
            write_multiscales_metadata(
                root,
                datasets=[{"path": f"s{k}", "coordinateTransformations": t} for k, t in
                          enumerate(_scale_transforms(len(shapes), pixel, centred=True))],
                fmt=fmt, axes=_axes(pixel_size_um is not None), name=stack,
            )
            if labels is not None:
                label_root = root.create_group("labels")
                label_group = label_root.create_group(LABEL_NAME)
                label_dtype = np.dtype(np.uint8) if labels.dtype == np.bool_ else labels.dtype
                label_levels = _create_levels(label_group, shapes, n_planes, label_dtype, chunk)
                for z in range(n_planes):
                    lo, hi = math.inf, -math.inf
                    for rs, cs in _blocks(rows, cols, step):
                        region = labels.read(z, rs, cs)
                        lo, hi = min(lo, region.min().item()), max(hi, region.max().item())
                        label_levels[0][z, rs, cs] = region
                    labels.release(z)
                    planes[z].update(ground_truth_file=labels.files[z], label_min=lo, label_max=hi)
                for k in range(1, len(label_levels)):
                    downsample(label_levels[k - 1], label_levels[k], step=half, mean=False)
                write_multiscales_metadata(
                    label_group,
                    datasets=[{"path": f"s{k}", "coordinateTransformations": t} for k, t in
                              enumerate(_scale_transforms(len(shapes), pixel, centred=False))],
                    fmt=fmt, axes=_axes(pixel_size_um is not None), name=LABEL_NAME,
                )
                label_group.attrs["grainflow"] = {
                    "source": str(ground_truth),
                    "files": labels.files,
                    "downsampling": "every second pixel (labels are never interpolated)",
                }
                # through its own handle: attributes are rewritten whole from a handle's copy
                write_label_metadata(label_root, LABEL_NAME, fmt=fmt, source={"image": "../../"})
                label_root.attrs["ome"] = {**label_root.attrs["ome"], "version": fmt.version}
            summary = {
                "version": __version__,
                "stack": stack,
                "task": task,
                "description": description,
                "source": str(path),
                "source_kind": image.kind,
                "ground_truth": None if ground_truth is None else str(ground_truth),
                "pixel_size_um": pixel_size_um,
                "pixel_size_from": pixel_source,
                "source_dtype": str(image.dtype),
                "colour_converted_to_grey": image.colour,
                "group_pattern": group if groups is not None else None,
                "chunk": [1, min(chunk, rows), min(chunk, cols)],
                "levels": [list(s) for s in shapes],
                "downsampling": "2 x 2 mean per level (edge pixels repeated at odd sizes)",
                "z_axis": "plane index (separate images or sections), scale 1 without unit",
                "planes": planes,
            }
            root.attrs["grainflow"] = summary
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        image.close()
        if labels is not None:
            labels.close()
    logger.info(
        "stack %r: %d plane(s) of %d x %d px, %s, %d level(s), pixel size %s, %s -> %s",
        stack, n_planes, rows, cols, image.dtype, len(shapes),
        "unknown" if pixel_size_um is None else f"{pixel_size_um:g} um",
        "with ground truth" if labels is not None else "no ground truth", out,
    )
    return summary
