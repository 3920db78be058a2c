"""Tiled prediction of planes of any size, with bounded memory.

Pure geometry plus chunk-aligned I/O, independent of any model: tile starts
(:func:`tile_starts`), blending weights (:func:`gaussian_weights`), output blocks that own
whole chunks (:func:`iter_blocks`) and the streaming of a plane through any prediction
function (:func:`predict_plane`).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import numpy as np

from grainflow.logs import Progress

__all__ = [
    "check_integers",
    "shard_blocks",
    "tile_starts",
    "tile_grid",
    "gaussian_weights",
    "Block",
    "iter_blocks",
    "PlaneView",
    "predict_plane",
]

logger = logging.getLogger(__name__)

#: smallest blending weight, relative to the tile centre's 1 (no zeros, no subnormals)
WEIGHT_FLOOR = 1e-6


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    else:
        try:
            pair = tuple(int(v) for v in value)
        except TypeError:
            raise ValueError(
                f"{name} must be an int or a pair of ints, got {name}={value!r}"
            ) from None
        if len(pair) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {name}={value!r}")
    return pair


def check_integers(**values: tuple[int, int]) -> None:
    """``name=(value, lowest)``: each value an integer (not a bool) >= lowest."""
    for name, (value, low) in values.items():
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")


def tile_starts(size: int, tile: int, *, overlap: int) -> np.ndarray:
    """Start positions of tiles along one axis (nnU-Net's sliding window).

    The first tile starts at 0 and the last ends at ``size``; the starts are
    evenly spaced (rounded to pixels) with the fewest tiles that keep adjacent
    tiles overlapping by at least ``overlap`` pixels. An axis not longer than a
    tile gets the single start 0 (the caller pads).

    Parameters
    ----------
    size : int
        Length of the axis, in pixels.
    tile : int
        Tile length, in pixels.
    overlap : int
        Smallest overlap of adjacent tiles, in pixels, ``0 <= overlap < tile``.

    Returns
    -------
    starts : ndarray of shape (n,), int64
        Increasing; ``starts[0] == 0`` and ``starts[-1] == max(size - tile, 0)``.

    Examples
    --------
    >>> tile_starts(300, 128, overlap=32)
    array([  0,  86, 172])
    """
    size, tile, overlap = int(size), int(tile), int(overlap)
    if size < 1:
        raise ValueError(f"size must be at least 1 pixel, got {size=}")
    if tile < 1:
        raise ValueError(f"tile must be at least 1 pixel, got {tile=}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must satisfy 0 <= overlap < tile, got {overlap=}, {tile=}")
    if size <= tile:
        return np.zeros(1, dtype=np.int64)
    step = tile - overlap
    n = math.ceil((size - tile) / step) + 1
    return np.round(np.arange(n) * ((size - tile) / (n - 1))).astype(np.int64)


def tile_grid(shape, tile, *, overlap) -> tuple[np.ndarray, np.ndarray]:
    """Tile starts along the rows and the columns of a plane.

    Parameters
    ----------
    shape : (int, int)
        Plane shape (rows, cols).
    tile, overlap : int or (int, int)
        Tile shape and smallest overlap, in pixels.

    Returns
    -------
    row_starts, col_starts : ndarray of int64
    """
    rows, cols = _pair(shape, "shape")
    (th, tw), (oh, ow) = _pair(tile, "tile"), _pair(overlap, "overlap")
    return tile_starts(rows, th, overlap=oh), tile_starts(cols, tw, overlap=ow)


@functools.lru_cache(maxsize=16)
def _gaussian(shape: tuple[int, int], sigma_scale: float) -> np.ndarray:
    def profile(n: int) -> np.ndarray:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2
        return np.exp(-0.5 * (x / (sigma_scale * n)) ** 2)

    weights = np.outer(profile(shape[0]), profile(shape[1]))
    weights = np.maximum(weights / weights.max(), WEIGHT_FLOOR).astype(np.float32)
    weights.setflags(write=False)
    return weights


def gaussian_weights(tile, *, sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weights of a tile: a Gaussian centred on the tile, never zero.

    Parameters
    ----------
    tile : int or (int, int)
        Tile shape, in pixels.
    sigma_scale : float
        Standard deviation as a fraction of the tile side (nnU-Net: 1/8).

    Returns
    -------
    weights : ndarray of shape (th, tw), float32, read-only
        1 at the centre, at least :data:`WEIGHT_FLOOR` everywhere. The same
        (cached) array is returned for the same arguments.
    """
    shape = _pair(tile, "tile")
    if min(shape) < 1:
        raise ValueError(f"tile must be at least 1 pixel, got {tile=}")
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be positive, got {sigma_scale=}")
    return _gaussian(shape, float(sigma_scale))


@dataclass(frozen=True)
class Block:
    """One output block of a plane and the tiles that write into it.

    Attributes
    ----------
    rows, cols : slice
        The block, in plane coordinates (whole output chunks).
    src_rows, src_cols : slice
        The region read: the union of the tiles below, clipped to the plane
        (the block and its halo).
    tile_rows, tile_cols : ndarray of int64
        Starts (plane coordinates) of the whole-plane tiles overlapping the
        block, along rows and along columns.
    """

    rows: slice
    cols: slice
    src_rows: slice
    src_cols: slice
    tile_rows: np.ndarray
    tile_cols: np.ndarray

    @property
    def n_tiles(self) -> int:
        return len(self.tile_rows) * len(self.tile_cols)


def _axis_blocks(size: int, block: int, starts: np.ndarray, tile: int):
    for b0 in range(0, size, block):
        b1 = min(b0 + block, size)
        mine = starts[(starts < b1) & (starts + tile > b0)]
        src = slice(int(mine[0]), int(min(mine[-1] + tile, size)))
        yield slice(b0, b1), src, mine


def iter_blocks(shape, *, block, tile, overlap) -> Iterator[Block]:
    """Cut a plane into blocks, each with the whole-plane tiles that overlap it.

    Parameters
    ----------
    shape : (int, int)
        Plane shape (rows, cols).
    block : int or (int, int)
        Block shape, in pixels; a multiple of the output's chunks, so that each
        block owns whole chunks (the last block of a row or column may be smaller).
    tile, overlap : int or (int, int)
        As in :func:`tile_grid`.

    Yields
    ------
    Block
        In row-major order.
    """
    rows, cols = _pair(shape, "shape")
    bh, bw = _pair(block, "block")
    if min(bh, bw) < 1:
        raise ValueError(f"block must be at least 1 pixel, got {block=}")
    th, tw = _pair(tile, "tile")
    row_starts, col_starts = tile_grid((rows, cols), (th, tw), overlap=overlap)
    col_blocks = list(_axis_blocks(cols, bw, col_starts, tw))
    for rb, rsrc, rtiles in _axis_blocks(rows, bh, row_starts, th):
        for cb, csrc, ctiles in col_blocks:
            yield Block(rb, cb, rsrc, csrc, rtiles, ctiles)


class PlaneView:
    """One plane of a larger array, read and written lazily as a smaller array.

    ``PlaneView(stack, z)`` behaves like ``stack[z]`` of shape (Y, X) and
    ``PlaneView(probs, z, axis=1)`` like ``probs[:, z]`` of shape (C, Y, X),
    without reading anything until sliced.

    Parameters
    ----------
    array : array-like
        A Zarr array, an ndarray, or anything sliceable and assignable.
    index : int
        The plane.
    axis : int
        The axis of ``array`` that ``index`` selects.
    """

    def __init__(self, array, index: int, *, axis: int = 0):
        shape = tuple(int(n) for n in array.shape)
        if not 0 <= axis < len(shape):
            raise ValueError(f"axis must be an axis of an array of shape {shape}, got {axis=}")
        if not 0 <= index < shape[axis]:
            raise ValueError(f"index must be in [0, {shape[axis]}), got {index=}")
        self.array, self.index, self.axis = array, int(index), int(axis)
        self.shape = shape[:axis] + shape[axis + 1 :]
        self.dtype = array.dtype
        chunks = getattr(array, "shards", None) or getattr(array, "chunks", None)
        if chunks is not None and all(isinstance(c, (int, np.integer)) for c in chunks):
            chunks = tuple(int(c) for c in chunks)
            self.chunks = chunks[:axis] + chunks[axis + 1 :]
        else:
            self.chunks = None

    def _key(self, key) -> tuple:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (len(self.shape) - len(key))
        return key[: self.axis] + (self.index,) + key[self.axis :]

    def __getitem__(self, key):
        return self.array[self._key(key)]

    def __setitem__(self, key, value):
        self.array[self._key(key)] = value


def _write_chunks(out) -> tuple[int, int] | None:
    """The (rows, cols) size of the units that one writer must own in ``out``."""
    chunks = getattr(out, "shards", None) or getattr(out, "chunks", None)
    if chunks is None or not all(isinstance(c, (int, np.integer)) for c in chunks):
        return None
    return int(chunks[-2]), int(chunks[-1])


def predict_plane(
    reader,
    predict_fn: Callable[[np.ndarray], np.ndarray],
    *,
    out,
    tile,
    overlap,
    block,
    margin: int = 0,
    batch_size: int = 8,
    sigma_scale: float = 0.125,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool | Progress = False,
    block_indices: Collection[int] | None = None,
) -> dict:
    """Predict class probabilities of a 2-D plane tile by tile, block by block.

    Parameters
    ----------
    reader : array-like of shape (Y, X)
        The plane (a Zarr array, a :class:`PlaneView`, an ndarray); read only in
        blocks with their halo.
    predict_fn : callable
        ``predict_fn(batch)`` with ``batch`` a float32 ndarray of shape
        (N, 1, th, tw) returns probabilities of shape (N, C, th, tw) (an
        ndarray or anything ``np.asarray`` accepts, e.g. a CPU tensor). The
        compute device is its business; the output stays where ``out`` lives.
    out : array-like of shape (C, Y, X)
        Written block by block (``out[:, rows, cols] = ...``), cast to its
        dtype. With chunks (a Zarr array, a :class:`PlaneView`), ``block`` must
        be a multiple of the chunk (or shard) shape, so that blocks never share
        a chunk and may be written by concurrent workers.
    tile : int or (int, int)
        Tile shape, in pixels.
    overlap : int or (int, int)
        Smallest overlap of adjacent tiles, in pixels.
    block : int or (int, int)
        Output block shape, in pixels.
    margin : int
        Pixels at tile sides inside the plane that are not used, with
        ``margin == 0`` or ``2 * margin < overlap``.
    batch_size : int
        Tiles per call of ``predict_fn``.
    sigma_scale : float
        Gaussian blending width as a fraction of the tile (:func:`gaussian_weights`).
    transform : callable, optional
        Applied to each region read (float32 ndarray of shape (h, w)) before
        tiling, e.g. the normalisation of :mod:`grainflow.normalize`.
    progress : bool or Progress
        True: log the blocks done and the time left, a line at most every 30 s
        (:class:`grainflow.logs.Progress`); a ``Progress``: count this plane's
        blocks there (one count over a whole stack).
    block_indices : collection of int, optional
        Compute only these blocks (positions in :func:`iter_blocks` order); the
        others are neither read nor written. Each block's result does not
        depend on which other blocks are computed, so jobs that own disjoint
        sets of blocks (whole chunks) fill one plane without locks, bit for bit
        as one job. Default: every block.

    Returns
    -------
    summary : dict
        ``blocks`` (computed), ``tiles`` (tiles predicted, halos included) and
        ``plane_tiles`` (tiles of the whole-plane tiling).

    Notes
    -----
    Each output block (:func:`iter_blocks`) owns whole chunks of ``out`` and is
    computed from the tiles of the *whole-plane* tiling that overlap it, whose union
    is the block plus a halo; weighted probabilities are accumulated in float32.
    So the result does not depend on the block size: a block edge is not a seam.

    The outer ``margin`` pixels of a tile side that lies inside the plane are not
    used (a network with zero padding is wrong there); where the plane ends, tiles
    are used to their edge. With ``2 * margin < overlap`` every pixel still gets a
    positive weight, and for a model whose receptive-field radius is at most
    ``margin`` the tiled prediction equals the whole-plane prediction. A plane
    smaller than a tile is padded by reflection to the tile size and the prediction
    cropped back.

    Memory per block is about ``(block + 2 * tile)**2 * (C + 2) * 4`` bytes plus
    one batch of tiles, whatever the plane's size.
    """
    if len(reader.shape) != 2:
        raise ValueError(
            f"reader must be a 2-D plane (rows, cols), got shape {tuple(reader.shape)}"
        )
    rows, cols = (int(n) for n in reader.shape)
    if rows < 1 or cols < 1:
        raise ValueError(f"the plane is empty, got shape {(rows, cols)}")
    if len(out.shape) != 3 or tuple(out.shape[1:]) != (rows, cols):
        raise ValueError(
            f"out must have shape (C, {rows}, {cols}) to match the plane, got {tuple(out.shape)}"
        )
    n_classes = int(out.shape[0])
    th, tw = _pair(tile, "tile")
    oh, ow = _pair(overlap, "overlap")
    bh, bw = _pair(block, "block")
    margin = int(margin)
    if margin < 0 or (margin > 0 and not 2 * margin < min(oh, ow)):
        raise ValueError(
            f"margin must be 0 or satisfy 2 * margin < overlap, got {margin=}, {overlap=}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size=}")
    chunks = _write_chunks(out)
    if chunks is not None:
        for size, blk, chunk, axis in (
            (rows, bh, chunks[0], "rows"),
            (cols, bw, chunks[1], "cols"),
        ):
            if blk < size and blk % chunk:
                raise ValueError(
                    f"block must be a multiple of the output chunks ({chunk} px along {axis}) "
                    f"so that no two blocks share a chunk, got {block=}"
                )
    weights = gaussian_weights((th, tw), sigma_scale=sigma_scale)
    row_starts, col_starts = tile_grid((rows, cols), (th, tw), overlap=(oh, ow))
    blocks = list(iter_blocks((rows, cols), block=(bh, bw), tile=(th, tw), overlap=(oh, ow)))
    if block_indices is not None:
        chosen = sorted(set(int(i) for i in block_indices))
        if chosen and not 0 <= chosen[0] <= chosen[-1] < len(blocks):
            raise ValueError(
                f"block_indices must lie in [0, {len(blocks)}) (the plane's blocks), "
                f"got {chosen[0]} to {chosen[-1]}"
            )
        blocks = [blocks[i] for i in chosen]
    total = sum(b.n_tiles for b in blocks)
    if progress is True:
        progress = Progress(len(blocks), what="block", logger=logger, every_s=30.0)

    def trims(start: int, size: int, length: int) -> tuple[int, int]:
        low = margin if start > 0 else 0
        high = margin if start + length < size else 0
        return low, high

    for blk in blocks:
        src = np.asarray(reader[blk.src_rows, blk.src_cols], dtype=np.float32)
        if transform is not None:
            src = np.asarray(transform(src), dtype=np.float32)
        h, w = src.shape
        if h < th or w < tw:  # the plane is smaller than a tile
            src = np.pad(src, ((0, max(th - h, 0)), (0, max(tw - w, 0))), mode="reflect")
        acc = np.zeros((n_classes, *src.shape), dtype=np.float32)
        wsum = np.zeros(src.shape, dtype=np.float32)
        r_off, c_off = blk.src_rows.start, blk.src_cols.start
        positions = [(int(r), int(c)) for r in blk.tile_rows for c in blk.tile_cols]
        for i in range(0, len(positions), batch_size):
            batch_pos = positions[i : i + batch_size]
            batch = np.stack(
                [src[r - r_off : r - r_off + th, c - c_off : c - c_off + tw] for r, c in batch_pos]
            )[:, None]
            probs = np.asarray(predict_fn(batch), dtype=np.float32)
            if probs.shape != (len(batch_pos), n_classes, th, tw):
                raise ValueError(
                    f"predict_fn must return shape {(len(batch_pos), n_classes, th, tw)} for a "
                    f"batch of shape {batch.shape}, got {probs.shape}"
                )
            for (r, c), p in zip(batch_pos, probs):
                top, bottom = trims(r, rows, th)
                left, right = trims(c, cols, tw)
                y, x = r - r_off, c - c_off
                wt = weights[top : th - bottom, left : tw - right]
                acc[:, y + top : y + th - bottom, x + left : x + tw - right] += (
                    p[:, top : th - bottom, left : tw - right] * wt
                )
                wsum[y + top : y + th - bottom, x + left : x + tw - right] += wt
        inner = (
            slice(blk.rows.start - r_off, blk.rows.stop - r_off),
            slice(blk.cols.start - c_off, blk.cols.stop - c_off),
        )
        total_weight = wsum[inner]
        if not (total_weight > 0).all():  # guaranteed by the geometry; a guard against regressions
            raise RuntimeError(f"pixels without tile weight in block {blk.rows}, {blk.cols}")
        out[:, blk.rows, blk.cols] = (acc[(slice(None), *inner)] / total_weight).astype(
            out.dtype, copy=False
        )
        if progress:
            progress.update()
    return {"blocks": len(blocks), "tiles": total, "plane_tiles": len(row_starts) * len(col_starts)}


def shard_blocks(n_planes: int, n_blocks: int, *, shards: int) -> list[dict[int, list[int]]]:
    """Split the output blocks of a stack among ``shards`` jobs.

    The blocks, in order (plane by plane, each plane's blocks in
    :func:`~grainflow.inference.tiling.iter_blocks` order), are cut into ``shards``
    consecutive runs whose lengths differ by at most one; a shard therefore
    touches few planes (each plane's normalisation limits are computed by
    every shard that touches it). Blocks own whole chunks, so the shards
    write disjoint chunks.

    Parameters
    ----------
    n_planes : int
        Planes of the stack.
    n_blocks : int
        Output blocks per plane.
    shards : int
        Number of jobs; more than ``n_planes * n_blocks`` leaves some empty.

    Returns
    -------
    owned : list of dict
        ``owned[k]`` maps each plane that shard ``k`` touches to its block indices.

    Examples
    --------
    >>> shard_blocks(2, 3, shards=4)
    [{0: [0, 1]}, {0: [2], 1: [0]}, {1: [1]}, {1: [2]}]
    """
    check_integers(n_planes=(n_planes, 1), n_blocks=(n_blocks, 1), shards=(shards, 1))
    owned = []
    for part in np.array_split(np.arange(n_planes * n_blocks), shards):
        mine: dict[int, list[int]] = {}
        for z, i in zip(*np.divmod(part, n_blocks)):
            mine.setdefault(int(z), []).append(int(i))
        owned.append(mine)
    return owned
