"""Pixel sizes that microscope files record about themselves, in micrometres.

TIFF tags through tifffile's parsers (OME-XML, ImageJ, FEI / Thermo Fisher,
Zeiss SEM), axis calibrations of RosettaSciIO signals (DigitalMicrograph,
EMD) and OME-Zarr scales; for diffraction frames, the reciprocal-space pixel
size (1/Å), the camera length and the scan step (:func:`frame_calibration`).
"""

from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

__all__ = [
    "REL_TOLERANCE",
    "Calibration",
    "CalibrationError",
    "length_um",
    "tiff_calibration",
    "axes_calibration",
    "ome_zarr_calibration",
    "FrameCalibration",
    "inverse_angstrom",
    "frame_calibration",
]

logger = logging.getLogger(__name__)

#: relative difference above which two pixel sizes disagree (x and y, two files, sheet and file)
REL_TOLERANCE = 0.01

# micrometres per unit, for unit names lower-cased with the micro sign written "u"
_UM_PER_UNIT = {
    "pm": 1e-6,
    "picometer": 1e-6,
    "picometre": 1e-6,
    "å": 1e-4,
    "angstrom": 1e-4,
    "ångström": 1e-4,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "um": 1.0,
    "micron": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "centimetre": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "metre": 1e6,
}

# no calibration: the axis is in pixels, or has no unit
_NO_UNIT = {"", "px", "pixel", "pixels", "[]", "<undefined>", "undefined", "none", "unknown"}

_RECIPROCAL = re.compile(r"^1\s*/|\^\s*-\s*1|⁻¹|-1$|^per\s")


class CalibrationError(ValueError):
    """A file's calibration that grainflow refuses (reciprocal space, pixels not square)."""


@dataclass(frozen=True)
class Calibration:
    """A pixel size read from a file, and where it was read.

    Attributes
    ----------
    pixel_size_um : float
        The side of a (square) pixel in micrometres.
    parser : str
        The metadata it came from: "OME-TIFF", "ImageJ", "FEI", "Zeiss SEM",
        "DigitalMicrograph", "EMD" or "OME-Zarr".
    field : str
        The field(s) read, with the unit the file gave.
    reader : str
        The library and version that parsed the file.
    file : str
        The file's name.
    """

    pixel_size_um: float
    parser: str
    field: str
    reader: str
    file: str

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.file} ({self.parser} {self.field}, read with {self.reader})"


def _normalise(unit) -> str:
    text = str(unit).strip()
    for micro in ("\\u00b5", "\\u00B5", "\u00b5", "\u03bc"):
        text = text.replace(micro, "u")
    return text.lower()


def length_um(value, unit, *, what: str) -> float | None:
    """``value`` in ``unit`` as micrometres, or None when the unit is not a length.

    Parameters
    ----------
    value : float or str
        A length.
    unit : str
        Its unit: "pm", "Å", "nm", "µm" (also "um", "micron", ImageJ's
        "\\u00B5m"), "mm", "cm", "m" or their names.
    what : str
        The file and field, for messages.

    Raises
    ------
    CalibrationError
        For a reciprocal length ("1/nm", "nm^-1"): the file holds a diffraction
        pattern or a Fourier transform, not an image of the specimen.
    """
    u = _normalise(unit)
    if _RECIPROCAL.search(u):
        raise CalibrationError(
            f"{what} is calibrated in {unit!r}, a reciprocal length: the file holds a "
            "diffraction pattern or a Fourier transform, not an image of the specimen; "
            "grainflow's real stacks are images in real space (export the image itself)"
        )
    if u in _NO_UNIT:
        return None
    factor = _UM_PER_UNIT.get(u)
    if factor is None and u.endswith("s"):  # "nanometers", "microns"
        factor = _UM_PER_UNIT.get(u[:-1]) if len(u) > 3 else None
    if factor is None:
        logger.warning(
            "note: %s has the unit %r, which is not a length grainflow converts; its "
            "calibration is not used",
            what,
            unit,
        )
        return None
    try:
        size = float(value) * factor
    except (TypeError, ValueError):
        return None
    return size if math.isfinite(size) and size > 0 else None


def _square(
    x_um: float | None, y_um: float | None, *, parser: str, field: str, reader: str, file: str
) -> Calibration | None:
    """One calibration from the sizes along x and y; refused when the pixels are not square."""
    if x_um is None:
        return None
    if y_um is not None and abs(x_um - y_um) > REL_TOLERANCE * max(x_um, y_um):
        raise CalibrationError(
            f"{file}: its {parser} metadata ({field}) gives pixels of {x_um:.6g} um along x but "
            f"{y_um:.6g} um along y; grainflow measures in square pixels: resample the image "
            "to square pixels first"
        )
    return Calibration(float(x_um), parser, field, reader, file)


# ------------------------------------------------------------------------------------- TIFF


def _ome_tiff(tif, reader: str, file: str) -> Calibration | None:
    xml = tif.ome_metadata
    if not xml:
        return None
    root = ET.fromstring(xml)
    pixels = root.find("{*}Image/{*}Pixels")
    if pixels is None or pixels.get("PhysicalSizeX") is None:
        return None
    sizes = {}
    for ax in ("X", "Y"):
        value = pixels.get(f"PhysicalSize{ax}")
        unit = pixels.get(f"PhysicalSize{ax}Unit", "µm")  # the OME schema's default
        where = f"{file}: OME-XML PhysicalSize{ax}"
        sizes[ax] = None if value is None else length_um(value, unit, what=where)
    unit = pixels.get("PhysicalSizeXUnit", "µm")
    field = f"Pixels PhysicalSizeX/Y ({unit})"
    return _square(sizes["X"], sizes["Y"], parser="OME-TIFF", field=field, reader=reader, file=file)


def _imagej(tif, reader: str, file: str) -> Calibration | None:
    meta = tif.imagej_metadata
    if not meta or not meta.get("unit"):
        return None
    unit = meta["unit"]
    tags = tif.pages.first.tags
    sizes = {}
    for ax, code in (("X", 282), ("Y", 283)):  # XResolution, YResolution: pixels per unit
        value = tags.valueof(code)
        if not value or not value[0]:
            sizes[ax] = None
            continue
        per_pixel = value[1] / value[0]
        sizes[ax] = length_um(per_pixel, unit, what=f"{file}: ImageJ unit")
    field = f"1 / XResolution, 1 / YResolution ({unit})"
    return _square(sizes["X"], sizes["Y"], parser="ImageJ", field=field, reader=reader, file=file)


def _fei(tif, reader: str, file: str) -> Calibration | None:
    meta = tif.fei_metadata
    if not meta:
        return None
    for section in ("Scan", "EScan", "IScan"):
        values = meta.get(section) or {}
        width = values.get("PixelWidth")
        if isinstance(width, int | float) and width > 0:
            height = values.get("PixelHeight")
            where = f"{file}: FEI [{section}]"
            x = length_um(width, "m", what=where)
            y = length_um(height, "m", what=where) if isinstance(height, int | float) else None
            field = f"[{section}] PixelWidth, PixelHeight (m)"
            return _square(x, y, parser="FEI", field=field, reader=reader, file=file)
    return None


def _zeiss_sem(tif, reader: str, file: str) -> Calibration | None:
    meta = tif.sem_metadata
    if not meta:
        return None
    for key in ("ap_image_pixel_size", "ap_pixel_size"):
        value = meta.get(key)
        if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], int | float):
            size = length_um(value[1], value[2], what=f"{file}: Zeiss SEM {key}")
            field = f"{key.upper()} ({value[2]})"
            return _square(size, None, parser="Zeiss SEM", field=field, reader=reader, file=file)
    return None


_TIFF_PARSERS = (_ome_tiff, _imagej, _fei, _zeiss_sem)


def tiff_calibration(tif, *, file: str) -> Calibration | None:
    """The pixel size a TIFF records, from the first of its parsers that has one.

    Parameters
    ----------
    tif : tifffile.TiffFile
        The open file.
    file : str
        Its name, for messages.

    Returns
    -------
    Calibration or None
        From, in this order: OME-XML ``Pixels`` ``PhysicalSizeX/Y`` (with their
        units, µm by default); ImageJ's ``unit`` with the ``XResolution`` and
        ``YResolution`` tags (pixels per unit); FEI / Thermo Fisher ``[Scan]``
        (or ``[EScan]``, ``[IScan]``) ``PixelWidth`` / ``PixelHeight`` in metres
        (tags FEI_HELIOS, FEI_SFEG); Zeiss SEM ``AP_IMAGE_PIXEL_SIZE`` or
        ``AP_PIXEL_SIZE`` with its unit (tag CZ_SEM). None when none of them
        gives a length; a TIFF's plain resolution tags (often 72 dpi) are not
        read as a calibration.

    Raises
    ------
    CalibrationError
        When the pixels are not square (x and y differ by more than
        :data:`REL_TOLERANCE`) or the unit is a reciprocal length.

    Notes
    -----
    Metadata that a parser cannot read is skipped with a warning rather than
    stopping the import: the file's own calibration is a convenience, and the
    stacks sheet can always give the pixel size.
    """
    import tifffile

    reader = f"tifffile {tifffile.__version__}"
    for parse in _TIFF_PARSERS:
        try:
            found = parse(tif, reader, file)
        except CalibrationError:
            raise
        except Exception as exc:  # damaged or unusual metadata: not a reason to refuse the image
            logger.warning(
                "note: %s: cannot read its %s metadata (%s: %s); skipped",
                file,
                parse.__name__.strip("_"),
                type(exc).__name__,
                exc,
            )
            continue
        if found is not None:
            return found
    return None


# ------------------------------------------------------------------------- RosettaSciIO, Zarr


def axes_calibration(
    y_axis: Mapping, x_axis: Mapping, *, parser: str, reader: str, file: str
) -> Calibration | None:
    """The pixel size of a RosettaSciIO signal's image axes (dicts with ``scale`` and ``units``).

    None when the axes have no length unit (an uncalibrated image has scale 1
    and no unit). Raises :class:`CalibrationError` as :func:`tiff_calibration`.
    """
    sizes = []
    for axis in (x_axis, y_axis):
        name = axis.get("name") or "?"
        sizes.append(
            length_um(
                axis.get("scale", 1.0),
                axis.get("units") or "",
                what=f"{file}: {parser} axis {name!r}",
            )
        )
    units = x_axis.get("units") or ""
    field = f"axes {y_axis.get('name')!r}, {x_axis.get('name')!r} scale ({units})"
    return _square(sizes[0], sizes[1], parser=parser, field=field, reader=reader, file=file)


def ome_zarr_calibration(multiscale: Mapping, axes: Sequence[str], *, file: str):
    """The pixel size along y and x of an OME-Zarr image's first level, or None when unknown.

    The scales of the multiscale's and the first dataset's
    ``coordinateTransformations`` multiply; the axes' units convert to µm.
    Raises :class:`CalibrationError` as :func:`tiff_calibration`.
    """
    try:
        units = {a["name"]: a.get("unit") for a in multiscale["axes"] if isinstance(a, dict)}
        scale = [1.0] * len(axes)
        for transforms in (
            multiscale.get("coordinateTransformations") or [],
            multiscale["datasets"][0].get("coordinateTransformations") or [],
        ):
            for t in transforms:
                if t.get("type") == "scale":
                    scale = [s * f for s, f in zip(scale, t["scale"])]
        sizes = {
            ax: length_um(scale[axes.index(ax)], units.get(ax) or "", what=f"{file}: axis {ax!r}")
            for ax in ("y", "x")
        }
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, CalibrationError):
            raise
        return None
    field = f"multiscales scale ({units.get('x')})"
    return _square(sizes["x"], sizes["y"], parser="OME-Zarr", field=field, reader="zarr", file=file)


# ------------------------------------------------------------------------ diffraction frames


@dataclass(frozen=True)
class FrameCalibration:
    """What a file of diffraction frames records about its scales; None where it records nothing.

    Attributes
    ----------
    reciprocal_px_inv_A : float or None
        The side of a detector pixel in reciprocal space, 1/Å.
    camera_length_mm : float or None
        The camera length, millimetres.
    scan_step_um : float or None
        The step between probe positions of a scan, micrometres.
    fields : dict
        For each value found, the metadata field it came from, with its unit.
    reader : str
        The library and version that parsed the file.
    file : str
        The file's name.
    """

    reciprocal_px_inv_A: float | None
    camera_length_mm: float | None
    scan_step_um: float | None
    fields: dict
    reader: str
    file: str

    def as_dict(self) -> dict:
        return asdict(self)


_RECIPROCAL_MARKS = re.compile(r"^1\s*/\s*|\^\s*-\s*1$|⁻¹$|-1$")


def inverse_angstrom(value, unit, *, what: str) -> float | None:
    """``value`` in the reciprocal length ``unit`` as 1/Å, or None when it is not one.

    Parameters
    ----------
    value : float or str
    unit : str
        "1/nm", "nm^-1", "nm-1", "1/Å", "1/A", "Å^-1", "1/pm", "1/m", ...
    what : str
        The file and field, for messages.

    Returns
    -------
    float or None
        None for a unit that is not a reciprocal length (pixels, an angle such
        as "mrad", a length), or a value that is not a positive finite number.
    """
    u = _normalise(unit)
    if not _RECIPROCAL.search(u):
        return None
    length = _RECIPROCAL_MARKS.sub("", u).strip()
    if length in ("a", "å"):
        length = "angstrom"
    um = length_um(1.0, length, what=what) if length else None
    try:
        size = float(value) / (um * 1e4) if um else math.nan  # per Å: value / (Å per unit)
    except (TypeError, ValueError):
        return None
    return size if math.isfinite(size) and size > 0 else None


def _metadata_value(metadata: Mapping, path: Sequence[str]):
    node = metadata
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def frame_calibration(
    ky_axis: Mapping,
    kx_axis: Mapping,
    scan_axes: Sequence[Mapping],
    metadata: Mapping | None,
    *,
    reader: str,
    file: str,
) -> FrameCalibration:
    """The scales a RosettaSciIO signal of diffraction frames records (axis dicts and metadata).

    The reciprocal-space pixel size comes from the frame's two signal axes when
    their unit is a reciprocal length (converted to 1/Å; refused when they
    differ by more than :data:`REL_TOLERANCE`); the camera length from HyperSpy's
    ``Acquisition_instrument.TEM.camera_length`` (millimetres); the scan step
    from the last navigation axis when its unit is a length. A value the file
    does not hold stays None: nothing is guessed.

    Raises
    ------
    CalibrationError
        When the frame's pixels are not square in reciprocal space.
    """
    fields = {}
    sizes = []
    for axis in (kx_axis, ky_axis):
        name = axis.get("name") or "?"
        sizes.append(
            inverse_angstrom(
                axis.get("scale", 1.0), axis.get("units") or "", what=f"{file}: axis {name!r}"
            )
        )
    k = sizes[0]
    if k is not None:
        if sizes[1] is not None and abs(sizes[0] - sizes[1]) > REL_TOLERANCE * max(sizes):
            raise CalibrationError(
                f"{file}: its axes {ky_axis.get('name')!r}, {kx_axis.get('name')!r} give "
                f"detector pixels of {sizes[1]:.6g} 1/A along y but {sizes[0]:.6g} 1/A along x; "
                "grainflow prepares frames in square pixels: resample the frames first"
            )
        fields["reciprocal_px_inv_A"] = (
            f"axes {ky_axis.get('name')!r}, {kx_axis.get('name')!r} scale ({kx_axis.get('units')})"
        )
    camera = _metadata_value(metadata or {}, ("Acquisition_instrument", "TEM", "camera_length"))
    try:
        camera = float(camera) if camera is not None else None
    except (TypeError, ValueError):
        camera = None
    if camera is not None and not (math.isfinite(camera) and camera > 0):
        camera = None
    if camera is not None:
        fields["camera_length_mm"] = "Acquisition_instrument.TEM.camera_length (mm)"
    step = None
    if scan_axes:
        axis = scan_axes[-1]
        try:
            step = length_um(
                axis.get("scale", 1.0),
                axis.get("units") or "",
                what=f"{file}: scan axis {axis.get('name')!r}",
            )
        except CalibrationError:
            step = None
        if step is not None:
            fields["scan_step_um"] = f"axis {axis.get('name')!r} scale ({axis.get('units')})"
    return FrameCalibration(k, camera, step, fields, reader, file)
