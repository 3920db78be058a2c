"""Image stacks read plane by plane from files, TIFF pages, microscope files or Zarr arrays."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from grainflow.io.images import IMAGE_SUFFIXES, PILLOW_SUFFIXES, RSCIIO_SUFFIXES, TIFF_SUFFIXES
from grainflow.stacks.calibration import (
    REL_TOLERANCE,
    Calibration,
    CalibrationError,
    axes_calibration,
    ome_zarr_calibration,
    tiff_calibration,
)

__all__ = ["StackError", "source_files", "StackReader", "open_stack"]


logger = logging.getLogger(__name__)

#: a 3-D Zarr array without axis names is read as (planes, rows, cols) only with at least
#: this many columns; a shorter last axis may hold colour samples or planes (ambiguous)
MIN_UNNAMED_COLS = 16


class StackError(ValueError):
    """A stack that grainflow cannot read; the message names the stack and the problem."""


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
        in sorted order, the box files of a folder of box labels
        (:func:`grainflow.stacks.boxes.box_files`), ``[]`` when ``path`` does
        not exist.
    """
    from grainflow.stacks.boxes import box_files

    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir() and not _is_zarr(path):
        return _image_files(path) or box_files(path)
    return [path]


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


class _Source:
    """Planes of one file or store, in the source's axes (colour last)."""

    name: str  # file name recorded in the attributes
    n_planes: int
    shape: tuple[int, int]  # (Y, X)
    channels: int  # 0 for grey, else the colour samples per pixel (2: grey + alpha, 3, 4)
    dtype: np.dtype
    calibration: Calibration | None = None  # the pixel size the file records
    calibration_problem: str | None = None  # why that calibration is refused

    def calibrate(self, read) -> None:
        """Set :attr:`calibration` from ``read()``, or keep why it is refused."""
        try:
            self.calibration = read()
        except CalibrationError as exc:
            self.calibration_problem = str(exc)

    def read(self, k: int, rows: slice, cols: slice) -> np.ndarray:  # (h, w) or (h, w, S)
        raise NotImplementedError

    def close(self) -> None:
        pass


def _layout(
    axes: Sequence[str], shape: Sequence[int], colour_axis: str | None, *, what: str
) -> str:
    """Roles of the source's axes (one name each): P (plane), Y, X, S (colour), 1 (singleton)."""
    roles = []
    for ax, n in zip(axes, shape):
        if ax in ("Y", "X"):
            roles.append(ax)
        elif ax == colour_axis:
            roles.append("S")
        elif n == 1:
            roles.append("1")
        else:
            roles.append("P")
    if roles.count("Y") != 1 or roles.count("X") != 1 or roles.count("P") > 1:
        raise _Problem(
            f"{what} has axes {_axes_text(axes)} with shape {tuple(shape)}; grainflow reads a "
            "2-D image (rows, cols), optionally with colour, or one stack of such planes "
            "(wrong number of axes)"
        )
    return "".join(roles)


def _axes_text(axes: Sequence[str]) -> str:
    return repr(axes) if isinstance(axes, str) else repr(list(axes))


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
                if handle is not None:
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
            logger.info(
                "note: %s holds %d image series; only the first is read", path.name, len(tif.series)
            )
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
        try:
            roles = _layout(axes, array.shape, colour, what=what)
            self.calibrate(lambda: tiff_calibration(tif, file=path.name))
        except BaseException:
            tif.close()
            raise
        if keep_open:
            super().__init__(array, roles, name=path.name, handle=tif)
        else:
            tif.close()

            def opener():
                tif, array, _, _ = _open_tiff(path)
                return tif, array

            super().__init__(array, roles, name=path.name, opener=opener)


def _rsciio_roles(signal: dict) -> list | None:
    """Axes (Y, X, Q for others) of a RosettaSciIO signal when it is an image, else None.

    The image's axes are its two signal axes; or, in a signal with no navigation
    axes (EMD files of the NCEM kind), its last two when they are named y and x.
    Spectra and spectrum images (any ``signal_type``) are not images.
    """
    if (signal.get("metadata") or {}).get("Signal", {}).get("signal_type"):
        return None
    axes = sorted(signal["axes"], key=lambda a: int(a.get("index_in_array", 0)))
    flat = [bool(a.get("navigate")) for a in axes]
    image = [i for i, nav in enumerate(flat) if not nav]
    if len(image) != 2:
        names = [str(a.get("name", "")).lower() for a in axes]
        if any(flat) or len(axes) < 3 or names[-2:] != ["y", "x"]:
            return None
        image = [len(axes) - 2, len(axes) - 1]
    roles = ["Q"] * len(axes)
    roles[image[0]], roles[image[1]] = "Y", "X"
    return roles


def _describe_signal(signal: dict) -> str:
    kind = (signal.get("metadata") or {}).get("Signal", {}).get("signal_type") or "signal"
    axes = sorted(signal["axes"], key=lambda a: int(a.get("index_in_array", 0)))
    units = ", ".join(f"{a.get('name')} {a.get('units') or '-'}" for a in axes)
    return f"{kind} of shape {tuple(signal['data'].shape)} ({units})"


def _open_rsciio(path: Path, *, what: str):
    """The first image of a RosettaSciIO file: (lazy array, axes, signal, number of images)."""
    module = RSCIIO_SUFFIXES[path.suffix.lower()]
    reader = importlib.import_module(f"rsciio.{module}").file_reader
    options = {"select_type": "images"} if module == "emd" else {}  # Velox: skip spectra
    try:
        signals = reader(str(path), lazy=True, **options)
    except ModuleNotFoundError as exc:
        raise _Problem(
            f"{what}: RosettaSciIO needs the package {exc.name!r} to open this file (a Velox "
            f"file with a spectrum image); install it (pip install {exc.name}) or export the "
            "image as TIFF"
        ) from None
    images = [(s, roles) for s in signals for roles in [_rsciio_roles(s)] if roles is not None]
    if not images:
        held = "; ".join(_describe_signal(s) for s in signals) or "nothing"
        raise _Problem(
            f"{what} holds no image that grainflow reads ({held}); grainflow reads 2-D images "
            "and stacks of them, not spectra or spectrum images (wrong number of axes)"
        )
    signal, roles = images[0]
    return signal["data"], roles, signal, len(images)


class _RsciioSource(_ArraySource):
    """The first image of a DigitalMicrograph (.dm3, .dm4) or EMD (.emd) file, via RosettaSciIO."""

    def __init__(self, path: Path, *, keep_open: bool, what: str):
        import rsciio

        array, axes, signal, n_images = _open_rsciio(path, what=what)
        if n_images > 1:
            title = (signal.get("metadata") or {}).get("General", {}).get("title") or "untitled"
            logger.info(
                "note: %s holds %d images; only the first (%s) is read", path.name, n_images, title
            )
        roles = _layout(axes, array.shape, None, what=what)
        ordered = sorted(signal["axes"], key=lambda a: int(a.get("index_in_array", 0)))
        y_axis, x_axis = ordered[axes.index("Y")], ordered[axes.index("X")]
        parser = {"digitalmicrograph": "DigitalMicrograph", "emd": "EMD"}[
            RSCIIO_SUFFIXES[path.suffix.lower()]
        ]
        self.calibrate(
            lambda: axes_calibration(
                y_axis,
                x_axis,
                parser=parser,
                reader=f"rosettasciio {rsciio.__version__}",
                file=path.name,
            )
        )
        if keep_open:
            super().__init__(array, roles, name=path.name)
        else:

            def opener():
                return None, _open_rsciio(path, what=what)[0]

            super().__init__(array, roles, name=path.name, opener=opener)
            self.array = None  # let go of the file until a plane is read

    def close(self):
        self.array = None  # RosettaSciIO's lazy arrays hold their files; released with them


# Pillow modes: (colour samples, dtype); colour modes are decoded as RGB(A)
_PIL_MODES = {
    "1": (0, np.bool_),
    "L": (0, np.uint8),
    "I;16": (0, np.uint16),
    "I;16L": (0, np.uint16),
    "I;16B": (0, np.uint16),
    "I": (0, np.int32),
    "F": (0, np.float32),
    "LA": (2, np.uint8),
    "RGB": (3, np.uint8),
    "RGBA": (4, np.uint8),
    "P": (3, np.uint8),
    "PA": (4, np.uint8),
    "CMYK": (3, np.uint8),
    "YCbCr": (3, np.uint8),
    "LAB": (3, np.uint8),
    "HSV": (3, np.uint8),
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
            raise _Problem(
                f"{path.name} holds {n_frames} frames; save the stack as a multi-page "
                "TIFF or as one file per plane (wrong number of axes)"
            )
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


def _named_axes(
    names: Sequence[str], shape: Sequence[int], *, what: str
) -> tuple[list, str | None]:
    """Axes (Y, X, c or other names) and the colour axis, from OME or Zarr dimension names."""
    names = [str(n).lower() for n in names]
    if len(names) != len(shape) or names.count("y") != 1 or names.count("x") != 1:
        raise _Problem(
            f"{what} has axes {names} for an array of shape {tuple(shape)}; an image needs one "
            "'y' and one 'x' axis (wrong number of axes)"
        )
    colour = None
    for c in ("c", "channel"):
        if c in names:
            channels = shape[names.index(c)]
            if channels in (3, 4):
                colour = c
            elif channels > 1:
                raise _Problem(
                    f"{what} has {channels} channels; grainflow reads grey or RGB(A) "
                    "images (wrong number of axes)"
                )
    return [{"y": "Y", "x": "X"}.get(n, n) for n in names], colour


def _dimension_names(array) -> list | None:
    """The names of a plain Zarr array's axes: Zarr v3 ``dimension_names`` or xarray's attribute."""
    names = getattr(getattr(array, "metadata", None), "dimension_names", None)
    if not names:
        names = dict(array.attrs).get("_ARRAY_DIMENSIONS")
    if not names or any(n is None for n in names):
        return None
    return list(names)


def _plain_array_axes(array, *, what: str) -> tuple[list, str | None]:
    """Axes of a plain Zarr array: its dimension names, else (rows, cols) or (planes, rows, cols).

    A 3-D array without names whose last axis is shorter than
    :data:`MIN_UNNAMED_COLS` is refused: it may be an RGB image (rows, cols,
    colour) or planes stored last, and reading it as planes of a few columns
    would be silently wrong.
    """
    shape = tuple(int(n) for n in array.shape)
    names = _dimension_names(array)
    if names is not None:
        return _named_axes(names, shape, what=what)
    if len(shape) == 2:
        return ["Y", "X"], None
    if len(shape) == 3 and shape[-1] >= MIN_UNNAMED_COLS:
        return ["Z", "Y", "X"], None
    if len(shape) == 3:
        raise _Problem(
            f"{what} is a Zarr array of shape {shape} without axis names: its last axis "
            f"({shape[-1]}) is too short to be the image's columns (fewer than "
            f"{MIN_UNNAMED_COLS}) and may hold colour samples or planes (ambiguous axes); say "
            "what the axes are: store the array with dimension_names (Zarr v3), e.g. "
            "['y', 'x', 'c'] for colour or ['y', 'x', 'z'] for planes last, or as an OME-Zarr "
            "image whose axes name them, or as (planes, rows, cols)"
        )
    raise _Problem(
        f"{what} is a Zarr array of shape {shape}; grainflow reads 2-D (rows, cols) or 3-D "
        "(planes, rows, cols) arrays, or arrays whose dimension_names say which axes are "
        "'y', 'x' and colour 'c' (wrong number of axes)"
    )


class _ZarrSource(_ArraySource):
    def __init__(self, path: Path, *, what: str):
        import zarr

        node = zarr.open(str(path), mode="r")
        calibrate = None
        self.kind = "zarr" if hasattr(node, "shape") else "ome-zarr"
        if hasattr(node, "shape"):  # a plain array
            array = node
            axes, colour = _plain_array_axes(array, what=what)
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
            names = names or ["t", "c", "z", "y", "x"][-len(array.shape) :]  # NGFF 0.1, 0.2
            axes, colour = _named_axes(names, array.shape, what=what)

            def calibrate():
                return ome_zarr_calibration(ms, [str(n).lower() for n in names], file=path.name)

        super().__init__(array, _layout(axes, array.shape, colour, what=what), name=path.name)
        if calibrate is not None:
            self.calibrate(calibrate)


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
        "tiff", "digitalmicrograph" (.dm3, .dm4), "emd", "image" (PNG / JPEG),
        "folder", "zarr" or "ome-zarr".
    shape : (int, int, int)
        (planes, rows, cols): the largest rows and cols of any plane.
    plane_shapes : list of (int, int)
        Each plane's own (rows, cols). The images of a folder may differ in size
        (and in colour mode); a plane then reads only its own rectangle and is
        padded to ``shape`` where it is stored.
    dtype : numpy.dtype
        Of the planes read (the source's; bool becomes uint8); one for all planes.
    colour : bool
        Whether any plane is in colour (converted to grey when read).
    files, pages : list
        Per plane, the source file name and the plane's index in that file.
    calibration : Calibration or None
        The pixel size the source's files record, and where (see
        :mod:`grainflow.stacks.calibration`); raises :class:`StackError` when
        it is refused.
    pixel_size_um : float or None
        ``calibration.pixel_size_um``, None when the files record none.
    """

    def __init__(self, name: str, path: Path, kind: str, planes: list[_PlaneRef]):
        self.name, self.path, self.kind = name, path, kind
        self._planes = planes
        first = planes[0].source
        rows = max(p.source.shape[0] for p in planes)
        cols = max(p.source.shape[1] for p in planes)
        self.shape = (len(planes), rows, cols)
        self.colour = any(p.source.channels > 0 for p in planes)
        self.channels = max(p.source.channels for p in planes)
        self.dtype = np.dtype(np.uint8) if first.dtype == np.bool_ else first.dtype
        self.files = [p.source.name for p in planes]
        self.pages = [p.index for p in planes]
        for p in planes:
            s = p.source
            if s.dtype != first.dtype:
                raise StackError(
                    f"stack {name!r}: {s.name} holds {s.dtype} values but {first.name} "
                    f"{first.dtype}; all images of a stack must have one dtype (bit depth)"
                )
        if self.shape[0] == 0 or min(min(p.source.shape) for p in planes) == 0:
            raise StackError(f"stack {name!r}: {path} is empty (shape {self.shape})")

    @cached_property
    def calibration(self) -> Calibration | None:
        """The pixel size the files record: one for the whole stack, or a :class:`StackError`."""
        sources = list({id(p.source): p.source for p in self._planes}.values())
        for s in sources:
            if s.calibration_problem is not None:
                raise StackError(f"stack {self.name!r}: {s.calibration_problem}")
        found = [s.calibration for s in sources if s.calibration is not None]
        if not found:
            return None
        first = found[0]
        for other in found[1:]:
            if abs(other.pixel_size_um - first.pixel_size_um) > REL_TOLERANCE * min(
                other.pixel_size_um, first.pixel_size_um
            ):
                raise StackError(
                    f"stack {self.name!r}: its files record different pixel sizes: "
                    f"{first.pixel_size_um:.6g} um in {first.describe()} but "
                    f"{other.pixel_size_um:.6g} um in {other.describe()}; the images of a stack "
                    "share one pixel size: make one stack (sheet row) per magnification"
                )
        if len(found) < len(sources):
            logger.warning(
                "note: stack %r: %d of %d files record no pixel size; the %d that do record "
                "%.6g um (%s)",
                self.name,
                len(sources) - len(found),
                len(sources),
                len(found),
                first.pixel_size_um,
                first.describe(),
            )
        return first

    @property
    def pixel_size_um(self) -> float | None:
        """The pixel size (µm) the files record, None when they record none."""
        calibration = self.calibration
        return None if calibration is None else calibration.pixel_size_um

    @property
    def plane_shapes(self) -> list[tuple[int, int]]:
        """Each plane's own (rows, cols); smaller than :attr:`shape` where padded."""
        return [tuple(p.source.shape) for p in self._planes]

    @property
    def padded(self) -> bool:
        """Whether the planes differ in size (each is then padded to :attr:`shape`)."""
        return any(s != self.shape[1:] for s in self.plane_shapes)

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
        A TIFF (multi-page allowed), a DigitalMicrograph (.dm3, .dm4) or EMD
        (.emd, Velox or NCEM) file (an image or a stack of them), a PNG /
        JPEG, a folder of such images (sorted by name, one plane per file) or
        a Zarr / OME-Zarr store.
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
        wrong or ambiguous or the stack is empty.

    Notes
    -----
    Nothing is read before it is asked for: the reader gives any plane, or any
    rectangle of it, on demand and in grey, and TIFF and Zarr sources are read by
    region (tiles or strips), so a plane larger than memory can be streamed.
    Sources are only ever opened for reading.

    Axes: a TIFF's come from tifffile (its series axes and photometric), a
    DigitalMicrograph or EMD file's from RosettaSciIO (the two signal axes are
    the image; one navigation axis, such as a Velox frame series, gives the
    planes; spectra and spectrum images are refused, and of several images in
    one file the first is read, with a note), an OME-Zarr image's from its
    ``axes``. A plain Zarr array's come from its ``dimension_names`` (Zarr v3)
    or xarray's ``_ARRAY_DIMENSIONS`` attribute, naming ``y``, ``x`` and a
    colour axis ``c``; without names it is (rows, cols) or (planes, rows,
    cols), and a 3-D array whose last axis is shorter than
    :data:`MIN_UNNAMED_COLS` is refused as ambiguous (colour samples or planes
    stored last).

    The pixel size the files record is read as the sources are opened (see
    :attr:`StackReader.calibration`).
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
            files = _image_files(path)
            if not files:
                raise _Problem(
                    f"folder {path} holds no images (files ending in {', '.join(IMAGE_SUFFIXES)})"
                )
            kind = "folder"
            for f in files:
                sources.append(_file_source(f, keep_open=False, what=str(f)))
                if sources[-1].n_planes != 1:
                    raise _Problem(
                        f"{f} holds {sources[-1].n_planes} planes; each file of a "
                        "folder must hold one image (wrong number of axes)"
                    )
        else:
            suffix = path.suffix.lower()
            kind = "tiff" if suffix in TIFF_SUFFIXES else RSCIIO_SUFFIXES.get(suffix, "image")
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
            "is it a TIFF, DM3, DM4, EMD, PNG or JPEG file, a folder of them or a Zarr store?"
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
        n_colour = sum(p.source.channels > 0 for p in planes)
        logger.info(
            "note: stack %r (%s) is in colour (%d channels%s); converted to grey with ITU-R "
            "BT.709 weights (skimage.color.rgb2gray)%s, keeping dtype %s",
            name,
            role,
            reader.channels,
            "" if n_colour == len(planes) else f", {n_colour} of {len(planes)} planes",
            "" if reader.channels != 2 else " (alpha dropped)",
            reader.dtype,
        )
    if reader.padded:
        logger.info(
            "note: stack %r (%s): the images have %d different sizes (rows, cols); each is "
            "stored padded at the bottom and right to %s, its own size recorded",
            name,
            role,
            len(set(reader.plane_shapes)),
            reader.shape[1:],
        )
    return reader


def _file_source(path: Path, *, keep_open: bool, what: str) -> _Source:
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return _TiffSource(path, keep_open=keep_open, what=what)
    if suffix in RSCIIO_SUFFIXES:
        return _RsciioSource(path, keep_open=keep_open, what=what)
    if suffix in PILLOW_SUFFIXES:
        return _PillowSource(path)
    raise _Problem(
        f"{path} is not a supported image file (names must end in "
        f"{', '.join(IMAGE_SUFFIXES)}) or a Zarr store"
    )
