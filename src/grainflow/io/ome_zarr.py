"""OME-Zarr stores: the NGFF writer, pyramid levels and their downsampling."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["check_ome_zarr", "ngff_writer", "block_slices", "pyramid_shapes", "downsample"]


def ngff_writer():
    """The OME-NGFF 0.5 format and ome-zarr's two metadata writers.

    Returns
    -------
    fmt : ome_zarr.format.FormatV05
    write_multiscales_metadata, write_label_metadata : callable
        From :mod:`ome_zarr.writer`, imported with its deprecation warnings
        about its own default arguments silenced.
    """
    from ome_zarr.format import FormatV05

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_label_metadata, write_multiscales_metadata
    return FormatV05(), write_multiscales_metadata, write_label_metadata


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


def block_slices(rows: int, cols: int, step: int):
    """Row and column slices of the blocks of side ``step`` that tile a (rows, cols) plane."""
    for r0 in range(0, rows, step):
        for c0 in range(0, cols, step):
            yield slice(r0, min(r0 + step, rows)), slice(c0, min(c0 + step, cols))


def create_levels(group, shapes, n_planes, dtype, chunk) -> list:
    return [
        group.create_array(
            f"s{k}",
            shape=(n_planes, *s),
            dtype=dtype,
            chunks=(1, min(chunk, s[0]), min(chunk, s[1])),
            fill_value=0,
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
        for rs, cs in block_slices(rows, cols, step):
            region = src[
                z,
                2 * rs.start : min(2 * rs.stop, src_rows),
                2 * cs.start : min(2 * cs.stop, src_cols),
            ]
            if mean:
                region = region.astype(work)
                pad = (
                    (0, 2 * (rs.stop - rs.start) - region.shape[0]),
                    (0, 2 * (cs.stop - cs.start) - region.shape[1]),
                )
                if any(p[1] for p in pad):  # odd size: repeat the last row / column
                    region = np.pad(region, pad, mode="edge")
                region = downscale_local_mean(region, (2, 2))
                if np.issubdtype(dst.dtype, np.integer):
                    region = np.rint(region)
                dst[z, rs, cs] = region.astype(dst.dtype)
            else:
                dst[z, rs, cs] = region[::2, ::2]


def check_ome_zarr(path: str | os.PathLike) -> None:
    """Raise ValueError unless the OME-Zarr image at ``path`` is complete.

    Complete: the group's ``ome`` attributes name multiscale datasets, and every
    dataset of the image and of each label image it lists is an array in the store.
    Used before a staged store takes its final name (:func:`grainflow.io.staging.staged_dir`).
    """
    import zarr

    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a missing or broken group
        raise ValueError(f"{path} is not a readable Zarr group: {exc}") from exc

    def datasets(group, where: str) -> list[str]:
        ome = dict(group.attrs).get("ome") or {}
        multiscales = ome.get("multiscales") or []
        if not multiscales:
            raise ValueError(f"{path}: {where} has no OME multiscales metadata")
        return [d["path"] for d in multiscales[0]["datasets"]]

    missing = [f"/{name}" for name in datasets(root, "the image") if name not in root]
    labels = (
        (dict(root["labels"].attrs).get("ome") or {}).get("labels", []) if "labels" in root else []
    )
    for label in labels:
        if label not in root["labels"]:
            missing.append(f"/labels/{label}")
            continue
        group = root["labels"][label]
        missing += [
            f"/labels/{label}/{n}" for n in datasets(group, f"label {label}") if n not in group
        ]
    if missing:
        raise ValueError(f"{path} is incomplete: no array {', '.join(missing)}")
