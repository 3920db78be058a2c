"""Image files grainflow reads, by the library that reads them."""

from __future__ import annotations

__all__ = [
    "TIFF_SUFFIXES",
    "RSCIIO_SUFFIXES",
    "PILLOW_SUFFIXES",
    "IMAGE_SUFFIXES",
    "FRAME_RSCIIO_SUFFIXES",
    "FRAME_SUFFIXES",
]


#: read with tifffile (with their OME, ImageJ, FEI and Zeiss SEM metadata)
TIFF_SUFFIXES = (".tif", ".tiff")

#: read with RosettaSciIO: suffix -> the ``rsciio`` module that reads it
RSCIIO_SUFFIXES = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".emd": "emd"}

#: read with Pillow
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg")

#: file name endings read as images (case-insensitive)
IMAGE_SUFFIXES = TIFF_SUFFIXES + tuple(RSCIIO_SUFFIXES) + PILLOW_SUFFIXES

#: diffraction frames and scans read with RosettaSciIO: suffix -> the ``rsciio`` module
#: (the microscope image files above, HyperSpy's HDF5 and Zarr files, Quantum Detectors Merlin)
FRAME_RSCIIO_SUFFIXES = {
    **RSCIIO_SUFFIXES,
    ".hspy": "hspy",
    ".zspy": "zspy",
    ".mib": "quantumdetector",
}

#: file name endings read as diffraction frames (besides Zarr stores; case-insensitive)
FRAME_SUFFIXES = TIFF_SUFFIXES + tuple(FRAME_RSCIIO_SUFFIXES)
