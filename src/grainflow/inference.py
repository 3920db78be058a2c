"""A fold ensemble applied to a real stack, streamed block by block, written as OME-Zarr.

:func:`infer_stack` reads an image stack imported by :func:`grainflow.stacks.import_stack`
(``results/stacks/{stack}.ome.zarr``) plane by plane and writes
``results/inference/{stack}/{arch}.ome.zarr``::

    {arch}.ome.zarr/
        zarr.json        ome: multiscales (axes c, z, y, x; the stack's scale in µm),
                         omero (channel names); grainflow: provenance (below)
        s0, s1, ...      (C, Z, Y, X) float32 class probabilities, chunks (C, 1, chunk, chunk),
                         the stack's pyramid (s{k+1} = 2 x 2 mean of s{k})
        labels/zarr.json ome: labels, e.g. ["boundaries", "grain_ids"]
        labels/{name}/s0, s1, ...
                         (Z, Y, X) label images (axes z, y, x), s{k+1} = s{k}[::2, ::2]

Labels per task: ``grains`` -> ``boundaries`` (uint8, 1 where P(boundary) > 0.5)
and ``grain_ids`` (uint32 grain instances 1..n; 0 only where no grain seed lies
within the labelling halo, see below); ``phases`` -> ``phase`` (uint8, 1 where
P(particle) > 0.5) and ``particle_ids`` (uint32, 0 = matrix). They are those of
:func:`grainflow.predict.labels_from_probability`, as in the cross-validated evaluation.

How a plane is predicted
------------------------
- **Normalisation** as in training: the plane's own low and high percentiles
  (stored in the checkpoints' configs) mapped to 0 and 1, the limits from a
  regular subsample of at most 4 Mpx (:func:`grainflow.normalize.plane_limits`)
  and applied block by block.
- **Ensemble**: the mean of the folds' softmax probabilities (and, with
  ``flips``, of the 4 flips of each tile, each flipped back), on the compute
  device (CUDA when present with ``device="auto"``); the output stays in the
  store.
- **Tiling** by :func:`grainflow.tiling.predict_plane`: tiles with overlap,
  Gaussian blending without zero weights, float32 accumulation, output blocks
  aligned to the store's chunks, each block computed with the tiles of the
  whole-plane tiling (a block edge is not a seam). Memory per block is about
  ``(block + 2 tile)**2 (C + 2) 4`` bytes, whatever the plane's size.

How a plane is labelled (:func:`label_plane`)
---------------------------------------------
A plane of at most ``whole_plane_max_px`` pixels is read whole and labelled
by :func:`~grainflow.predict.labels_from_probability`. A larger plane is
labelled block by block, with the same result and bounded memory:

1. connected components of the mask (grain interiors ``P <= 0.5`` for grains,
   particles ``P > 0.5`` for phases) are labelled in each block and written
   to a scratch array; components that touch across a block edge are joined
   (a graph of the label pairs across edges, :func:`scipy.sparse.csgraph.connected_components`);
   each joined component gets its size and its first pixel in raster order;
2. components are numbered 1..n in raster order of their first pixel, which is
   skimage's numbering of the whole plane (for grains, seeds smaller than
   ``min_grain_px`` are dropped first, as in the whole-plane labelling); so a
   particle or a grain seed crossing block edges has one number;
3. phases: the numbers are written; grains: each block is flooded by a
   watershed of P(boundary) from the numbered seeds of the block and a halo of
   ``halo`` pixels around it (only the unlabelled pixels and the seed pixels
   touching them take part, which gives the same flooding several times
   faster), and the block's own pixels kept.

The block-wise grain labels equal the whole-plane ones wherever the flooding
that assigns a boundary pixel stays within the halo (boundary ribbons a few
pixels wide: everywhere), up to ties between exactly equal probabilities
(e.g. saturated at 1.0), which the watershed breaks in heap order: such a
boundary pixel may then go to the other grain beside it. A pixel whose block
and halo hold no seed at all stays 0.

Sharded inference
-----------------
A large stack can be shared among several jobs (a cluster's GPUs):
:func:`shard_blocks` cuts the output blocks of all planes into ``n`` runs,
:func:`infer_shard` predicts run ``k`` into a store of its own (only whole
chunks that no other shard writes, so no locks), and :func:`merge_shards`
checks that the shards cover every block once, copies their probabilities
into one store and labels, builds the pyramids and writes the metadata as
:func:`infer_stack` does. Each block's probabilities do not depend on the
other blocks, and the labelling runs once on the assembled planes (grains and
particles across shard edges are joined by the block-wise merge above), so
the result equals :func:`infer_stack`'s bit for bit.

Provenance in ``attrs["grainflow"]``: version, stack, task, source store,
checkpoints (path, SHA-256, fold, epoch), ensemble, test-time flips, tile,
overlap, margin, block, batch size, blend, normalisation, device, labelling
options, and per plane its intensity limits, tiles and labelling mode; a
merged store also lists its shards (blocks and seconds of each).

The store is written into a temporary folder beside the target and renamed
onto it only when complete; folders left by a killed run are removed when the
next run starts, so no partial output is ever taken for a result.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grainflow import __version__
from grainflow.normalize import apply_limits, plane_limits
from grainflow.predict import FLIPS, labels_from_probability
from grainflow.io import replace_dir
from grainflow.stacks import downsample, remove_stale
from grainflow.tiling import WEIGHT_FLOOR, PlaneView, iter_blocks, predict_plane

__all__ = [
    "CLASS_NAMES",
    "LABEL_NAMES",
    "Ensemble",
    "load_ensemble",
    "label_plane",
    "infer_stack",
    "shard_blocks",
    "infer_shard",
    "merge_shards",
    "open_inference",
]

logger = logging.getLogger(__name__)

#: names of the probability channels of each task
CLASS_NAMES = {"grains": ("interior", "boundary"), "phases": ("matrix", "particle")}
#: label images of each task: (foreground mask, instances)
LABEL_NAMES = {"grains": ("boundaries", "grain_ids"), "phases": ("phase", "particle_ids")}
_NGFF_VERSION = "0.5"
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)  # 4-connectivity


# --------------------------------------------------------------------------- ensemble


def _resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device=}")
    return torch.device(device)


@dataclass
class Ensemble:
    """Fold models whose softmax probabilities are averaged; callable on tile batches.

    ``ensemble(batch)`` maps a float32 ndarray of shape (N, 1, h, w) to the mean
    probabilities (N, C, h, w), float32, on the CPU (the models run on ``device``).

    Attributes
    ----------
    models : list of Module
        In eval mode, on ``device``.
    task : str
    n_classes : int
    norm_percentiles : (float, float)
        Per-image percentiles the models were trained with.
    flips : bool
        Also average over the 4 flips of each tile (test-time augmentation).
    device : torch.device
    checkpoints : list of dict
        Provenance: path, sha256, fold, epoch, model_name, version.
    """

    models: list
    task: str
    n_classes: int
    norm_percentiles: tuple[float, float]
    flips: bool
    device: object
    checkpoints: list[dict] = field(default_factory=list)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            x = x.contiguous(memory_format=torch.channels_last)
            total = None
            flips = FLIPS if self.flips else FLIPS[:1]
            for model in self.models:
                for dims in flips:
                    xi = torch.flip(x, dims) if dims else x
                    p = torch.softmax(model(xi).float(), dim=1)
                    p = torch.flip(p, dims) if dims else p
                    total = p if total is None else total + p
            mean = total / (len(self.models) * len(flips))
            return mean.contiguous().cpu().numpy()


def load_ensemble(
    checkpoints: Sequence[str | os.PathLike],
    *,
    task: str | None = None,
    device: str = "auto",
    flips: bool = False,
) -> Ensemble:
    """Load the fold checkpoints of one architecture as an :class:`Ensemble`.

    Parameters
    ----------
    checkpoints : sequence of path-like
        ``best.pt`` files (:mod:`grainflow.checkpoint`), one per fold.
    task : str, optional
        Checked against the task each checkpoint was trained on.
    device : {"auto", "cpu", "cuda"}
        Where the models run; "auto" picks CUDA when present.
    flips : bool
        Test-time flips.

    Raises
    ------
    ValueError
        No checkpoint, or checkpoints of another task, with other class counts
        or other normalisation percentiles.
    """
    import torch

    from grainflow.checkpoint import load_checkpoint, model_from_checkpoint, sha256_file
    from grainflow.models import fold_batch_norm

    if not checkpoints:
        raise ValueError("need at least one checkpoint, got none")
    dev = _resolve_device(device)
    models, info, tasks, percentiles, classes = [], [], set(), set(), set()
    for path in checkpoints:
        ckpt = load_checkpoint(path, map_location="cpu")
        extra, config = ckpt.get("extra") or {}, ckpt.get("config") or {}
        ckpt_task = extra.get("task")
        if task is not None and ckpt_task is not None and ckpt_task != task:
            raise ValueError(f"checkpoint {path} was trained on task {ckpt_task!r}, but the "
                             f"stack is a {task!r} stack; use the models of task {task!r}")
        tasks.add(ckpt_task)
        percentiles.add(tuple(float(p) for p in config.get("norm_percentiles", (1.0, 99.0))))
        # batch norm folded into the convolutions, channels_last: the trained model's function
        # to ~1e-5, and on the CPU twice as fast as the plain model (benchmarks/infer_vs_monai.py)
        model = fold_batch_norm(model_from_checkpoint(ckpt).eval())
        model = model.to(dev, memory_format=torch.channels_last)
        out_channels = ckpt["model_kwargs"].get("out_channels")
        if out_channels is None:
            with torch.inference_mode():
                out_channels = int(model(torch.zeros(1, 1, 64, 64, device=dev)).shape[1])
        classes.add(int(out_channels))
        models.append(model)
        info.append({"path": str(path), "sha256": sha256_file(path), "fold": extra.get("fold"),
                     "epoch": int(ckpt.get("epoch", 0)), "model_name": ckpt["model_name"],
                     "version": ckpt.get("version")})
    if len(percentiles) != 1:
        raise ValueError(f"the checkpoints were trained with different normalisations "
                         f"(norm_percentiles {sorted(percentiles)}); an ensemble needs one")
    if len(classes) != 1:
        raise ValueError(f"the checkpoints predict different numbers of classes {sorted(classes)}")
    tasks.discard(None)
    if task is None:
        if len(tasks) != 1:
            raise ValueError(f"give task=; the checkpoints name the tasks {sorted(tasks)}")
        task = tasks.pop()
    return Ensemble(models=models, task=task, n_classes=classes.pop(),
                    norm_percentiles=percentiles.pop(), flips=bool(flips), device=dev,
                    checkpoints=info)


@contextlib.contextmanager
def _torch_threads(threads: int):
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


# --------------------------------------------------------------------------- labelling


def _blocks(rows: int, cols: int, block: int):
    for r0 in range(0, rows, block):
        for c0 in range(0, cols, block):
            yield slice(r0, min(r0 + block, rows)), slice(c0, min(c0 + block, cols))


def _components(
    read_mask: Callable[[slice, slice], np.ndarray],
    shape: tuple[int, int],
    *,
    block: int,
    scratch,
    min_size: int = 0,
) -> tuple[np.ndarray, int]:
    """Connected components (4-connected) of a mask, block by block.

    Writes provisional labels into ``scratch`` (2-D, uint64) and returns the
    lookup table provisional -> final label (uint32, 0 = background or dropped)
    and the number of final labels. Final labels are 1..n in raster order of
    each component's first pixel (skimage's numbering of the whole plane);
    components smaller than ``min_size`` pixels are dropped.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from skimage.measure import label

    rows, cols = shape
    sizes, firsts, pairs = [np.zeros(1, np.int64)], [np.full(1, -1, np.int64)], []
    offset = 0
    for rs, cs in _blocks(rows, cols, block):
        mask = np.asarray(read_mask(rs, cs), dtype=bool)
        local, n = label(mask, connectivity=1, return_num=True)
        prov = local.astype(np.uint64)
        prov[local > 0] += np.uint64(offset)
        scratch[rs, cs] = prov
        ids, first, counts = np.unique(local, return_index=True, return_counts=True)
        keep = ids > 0
        fr, fc = np.divmod(first[keep].astype(np.int64), local.shape[1])
        firsts.append((rs.start + fr) * cols + cs.start + fc)
        sizes.append(counts[keep].astype(np.int64))
        if rs.start > 0:  # pairs across the edge with the block above
            above = np.asarray(scratch[rs.start - 1, cs])
            both = (above > 0) & (prov[0] > 0)
            pairs.append(np.stack([above[both], prov[0][both]], axis=1))
        if cs.start > 0:  # and with the block to the left
            left = np.asarray(scratch[rs, cs.start - 1])
            both = (left > 0) & (prov[:, 0] > 0)
            pairs.append(np.stack([left[both], prov[:, 0][both]], axis=1))
        offset += n
    sizes, firsts = np.concatenate(sizes), np.concatenate(firsts)
    edges = (np.unique(np.concatenate(pairs), axis=0).astype(np.int64) if pairs
             else np.zeros((0, 2), np.int64))
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])),
                       shape=(offset + 1, offset + 1))
    n_comp, comp = connected_components(graph, directed=False)
    comp_size = np.bincount(comp, weights=sizes, minlength=n_comp)
    comp_first = np.full(n_comp, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(comp_first, comp[1:], firsts[1:])
    kept = np.flatnonzero((comp_size >= max(min_size, 1)) & (np.arange(n_comp) != comp[0]))
    if len(kept) >= np.iinfo(np.uint32).max:
        raise ValueError(f"{len(kept)} objects in one plane do not fit uint32 labels")
    number = np.zeros(n_comp, np.uint32)
    number[kept[np.argsort(comp_first[kept], kind="stable")]] = np.arange(
        1, len(kept) + 1, dtype=np.uint32)
    lut = number[comp]
    lut[0] = 0
    return lut, len(kept)


def label_plane(
    task: str,
    probability,
    out: Mapping[str, object],
    *,
    block: int = 2048,
    halo: int = 64,
    threshold: float = 0.5,
    min_grain_px: int = 4,
    whole_plane_max_px: int = 2048 * 2048,
    scratch=None,
) -> dict:
    """Label maps of one plane from its foreground probability, whole or block by block.

    Parameters
    ----------
    task : {"grains", "phases"}
    probability : array-like of shape (Y, X)
        P(boundary) for grains, P(particle) for phases; read in blocks (a Zarr
        array, a :class:`~grainflow.tiling.PlaneView`, an ndarray).
    out : mapping of str -> array-like of shape (Y, X)
        Writable label images named as in :data:`LABEL_NAMES` ``[task]``.
    block : int
        Block side, in pixels (a multiple of the outputs' chunks).
    halo : int
        Pixels around a block read for the grains' watershed.
    threshold, min_grain_px
        As in :func:`grainflow.predict.labels_from_probability`.
    whole_plane_max_px : int
        Planes with at most this many pixels are labelled whole.
    scratch : array-like of shape (Y, X), uint64, optional
        Working array for the block-wise labelling (needed only then; an
        in-memory array is made when None).

    Returns
    -------
    summary : dict
        ``mode`` ("whole plane" or "block-wise") and ``n_objects``.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    if task not in LABEL_NAMES:
        raise ValueError(f"task must be one of {sorted(LABEL_NAMES)}, got {task=}")
    mask_name, ids_name = LABEL_NAMES[task]
    missing = [n for n in (mask_name, ids_name) if n not in out]
    if missing:
        raise ValueError(f"out lacks the label images {missing} of task {task!r}")
    if len(probability.shape) != 2:
        raise ValueError(f"probability must be 2-D (rows, cols), got shape {probability.shape}")
    if block < 1 or halo < 0:
        raise ValueError(f"block must be positive and halo not negative, got {block=}, {halo=}")
    rows, cols = (int(n) for n in probability.shape)
    if rows * cols <= whole_plane_max_px:
        labels = labels_from_probability(task, np.asarray(probability[:, :], dtype=np.float32),
                                         threshold=threshold, min_grain_px=min_grain_px)
        out[mask_name][:, :] = labels[mask_name]
        out[ids_name][:, :] = labels[ids_name]
        return {"mode": "whole plane", "n_objects": int(labels[ids_name].max())}

    if scratch is None:
        scratch = np.zeros((rows, cols), np.uint64)

    def read_mask(rs, cs):
        fg = np.asarray(probability[rs, cs], dtype=np.float32) > threshold
        out[mask_name][rs, cs] = fg.astype(np.uint8)
        return ~fg if task == "grains" else fg

    lut, n = _components(read_mask, (rows, cols), block=block, scratch=scratch,
                         min_size=min_grain_px if task == "grains" else 0)
    for rs, cs in _blocks(rows, cols, block):
        if task == "phases":
            out[ids_name][rs, cs] = lut[np.asarray(scratch[rs, cs])]
            continue
        if n == 0:  # no seed in the plane: one grain, as for a whole plane
            out[ids_name][rs, cs] = np.ones((rs.stop - rs.start, cs.stop - cs.start), np.uint32)
            continue
        hr = slice(max(rs.start - halo, 0), min(rs.stop + halo, rows))
        hc = slice(max(cs.start - halo, 0), min(cs.stop + halo, cols))
        seeds = lut[np.asarray(scratch[hr, hc])].astype(np.int64)
        grains = seeds
        if seeds.any():
            # flood only the unlabelled pixels and the seed pixels next to them: seed pixels
            # deeper inside never label a neighbour, and the visiting order of the others is
            # kept, so the result is that of the full watershed, several times faster
            flood = ndimage.binary_dilation(seeds == 0, structure=_CROSS)
            p = np.asarray(probability[hr, hc], dtype=np.float32)
            grains = np.where(flood, watershed(p, markers=seeds, connectivity=1, mask=flood),
                              seeds)
        inner = (slice(rs.start - hr.start, rs.stop - hr.start),
                 slice(cs.start - hc.start, cs.stop - hc.start))
        out[ids_name][rs, cs] = grains[inner].astype(np.uint32)
    return {"mode": "block-wise", "n_objects": int(n)}


# --------------------------------------------------------------------------- the stack


def _plane_of_channel(array, channel: int, z: int) -> PlaneView:
    """``array[channel, z]`` of a (C, Z, Y, X) array, read and written lazily."""
    return PlaneView(PlaneView(array, channel, axis=0), z, axis=0)


def _stack_metadata(group) -> tuple[dict, list[dict], list[dict], dict]:
    """The stack's grainflow attributes, multiscale datasets, axes and level-0 scale."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    if "multiscales" not in ome or "grainflow" not in attrs:
        raise ValueError("not a stack imported by grainflow (no ome multiscales or grainflow "
                         "attributes); run the import_stack rule")
    ms = ome["multiscales"][0]
    return attrs["grainflow"], ms["datasets"], ms["axes"], ms


def _level0_scale(datasets: list[dict]) -> list[float]:
    scale = [1.0, 1.0, 1.0]
    for t in datasets[0].get("coordinateTransformations") or []:
        if t.get("type") == "scale":
            scale = [float(s) for s in t["scale"]]
    return scale


def _check_integers(**values: tuple[int, int]) -> None:
    """``name=(value, lowest)``: each value an integer (not a bool) >= lowest."""
    for name, (value, low) in values.items():
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")


@dataclass
class _Stack:
    """An imported stack opened for inference, with the output blocks' side."""

    path: Path
    name: str
    task: str
    info: dict  # the stack's grainflow attributes
    datasets: list[dict]  # its multiscale datasets
    axes: list[dict]
    levels: list  # s0, s1, ... (Z, Y, X)
    block: int  # output block side: block_px rounded down to whole chunks

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.levels[0].shape)

    def blocks(self, *, tile: int, overlap: int) -> list:
        """The output blocks of a plane (:func:`~grainflow.tiling.iter_blocks` order)."""
        return list(iter_blocks(self.shape[1:], block=self.block, tile=tile, overlap=overlap))


def _open_stack(stack: str | os.PathLike, *, task: str | None, block_px: int) -> _Stack:
    import zarr

    stack = Path(stack)
    if not (stack / "zarr.json").is_file():
        raise FileNotFoundError(f"stack store {stack} does not exist; run the import_stack rule")
    source = zarr.open_group(str(stack), mode="r")
    info, datasets, axes, _ = _stack_metadata(source)
    name = info.get("stack") or stack.name.removesuffix(".ome.zarr")
    task = task or info.get("task")
    if task not in LABEL_NAMES:
        raise ValueError(f"stack {name!r}: task must be one of {sorted(LABEL_NAMES)}, got "
                         f"{task=}; give task= or set it in the stacks sheet")
    levels = [source[d["path"]] for d in datasets]
    s0 = levels[0]
    if len(s0.shape) != 3:
        raise ValueError(f"stack {name!r}: images must be (planes, rows, cols), got {s0.shape}")
    # chunks are (1, min(c, rows), min(c, cols)): the larger side is c, or the plane fits one
    chunk = max(int(s0.chunks[1]), int(s0.chunks[2]))
    block = max(chunk, block_px // chunk * chunk)
    if block != block_px:
        logger.info("block_px %d rounded to %d, a multiple of the stack's %d px chunks",
                    block_px, block, chunk)
    return _Stack(path=stack, name=name, task=task, info=info, datasets=datasets, axes=axes,
                  levels=levels, block=block)


def _load_checked_ensemble(source: _Stack, checkpoints, *, tile_px: int, device: str,
                           flips: bool) -> Ensemble:
    ensemble = load_ensemble(checkpoints, task=source.task, device=device, flips=flips)
    if ensemble.n_classes != len(CLASS_NAMES[source.task]):
        raise ValueError(f"the checkpoints predict {ensemble.n_classes} classes; task "
                         f"{source.task!r} needs {len(CLASS_NAMES[source.task])}")
    multiple = max(getattr(m, "size_multiple", 1) for m in ensemble.models)
    if tile_px % multiple:
        raise ValueError(f"tile_px must be a multiple of {multiple} for these models (a U-Net "
                         f"of depth d needs 2**d), got {tile_px=}")
    return ensemble


def _prediction_record(ensemble: Ensemble, *, block: int, tile_px: int, overlap_px: int,
                       margin_px: int, batch_size: int, sigma_scale: float, flips: bool) -> dict:
    """Provenance of the probabilities: models, tiling, blending, normalisation, device."""
    import torch

    return {
        "checkpoints": ensemble.checkpoints,
        "ensemble": f"mean of the softmax probabilities of {len(ensemble.models)} fold model(s)",
        "test_time_flips": bool(flips),
        "tile_px": int(tile_px),
        "overlap_px": int(overlap_px),
        "margin_px": int(margin_px),
        "block_px": int(block),
        "batch_size": int(batch_size),
        "blend": {"window": "gaussian", "sigma_scale": float(sigma_scale),
                  "weight_floor": WEIGHT_FLOOR, "accumulator": "float32"},
        "normalization": {"method": "per-plane percentiles mapped to 0 and 1",
                          "percentiles": list(ensemble.norm_percentiles)},
        "device": str(ensemble.device),
        "torch": torch.__version__,
    }


def _predict(source: _Stack, ensemble: Ensemble, probs, owned: Mapping[int, Sequence[int]], *,
             tile_px: int, overlap_px: int, margin_px: int, batch_size: int, sigma_scale: float,
             threads: int, progress: bool) -> dict[int, dict]:
    """Probabilities of the blocks ``owned`` ({plane: block indices}) into ``probs`` (C, Z, Y, X).

    Returns per plane its intensity limits, the tiling summary of
    :func:`~grainflow.tiling.predict_plane` and ``predict_s``.
    """
    s0 = source.levels[0]
    records = {}
    with _torch_threads(threads):
        for z, indices in owned.items():
            t0 = time.perf_counter()
            reader = PlaneView(s0, z)
            low, high = plane_limits(reader, percentiles=ensemble.norm_percentiles,
                                     block=source.block)
            tiles = predict_plane(
                reader, ensemble, out=PlaneView(probs, z, axis=1), tile=tile_px,
                overlap=overlap_px, block=source.block, margin=margin_px, batch_size=batch_size,
                sigma_scale=sigma_scale,
                transform=lambda region, lo=low, hi=high: apply_limits(region, lo, hi),
                progress=progress, block_indices=indices,
            )
            seconds = time.perf_counter() - t0
            records[z] = {"norm_low": low, "norm_high": high, **tiles,
                          "predict_s": round(seconds, 3)}
            logger.info("plane %d/%d: %d block(s), %d tiles in %.1f s", z + 1, source.shape[0],
                        tiles["blocks"], tiles["tiles"], seconds)
    return records


@contextlib.contextmanager
def _staged(out: Path):
    """A temporary folder beside ``out``, moved onto it if the block succeeds, removed if not.

    Folders left beside ``out`` by a killed run are removed first.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _create_output(root, source: _Stack, n_classes: int) -> tuple[list, dict[str, list]]:
    """The probability levels (C, Z, Y, X) and label levels (Z, Y, X) of an inference store."""
    probs = [
        root.create_array(f"s{k}", shape=(n_classes, *lv.shape), dtype=np.float32,
                          chunks=(n_classes, *lv.chunks), fill_value=0.0,
                          dimension_names=["c", "z", "y", "x"])
        for k, lv in enumerate(source.levels)
    ]
    label_root = root.create_group("labels")
    label_levels = {}
    for label_name, dtype in zip(LABEL_NAMES[source.task], (np.uint8, np.uint32)):
        group = label_root.create_group(label_name)
        label_levels[label_name] = [
            group.create_array(f"s{k}", shape=lv.shape, dtype=dtype, chunks=lv.chunks,
                               fill_value=0, dimension_names=["z", "y", "x"])
            for k, lv in enumerate(source.levels)
        ]
    return probs, label_levels


def _finish(root, source: _Stack, probs: list, label_levels: dict[str, list], *,
            predicted: Mapping[int, dict], prediction: dict, model: str | None,
            threshold: float, min_grain_px: int, whole_plane_max_px: int,
            labels_halo_px: int) -> dict:
    """Label every plane from ``probs[0]``, fill the pyramids, write metadata and provenance.

    ``predicted`` holds each plane's prediction record (:func:`_predict`),
    ``prediction`` the provenance of the probabilities (:func:`_prediction_record`).
    Returns the ``grainflow`` attributes written, without the timings.
    """
    from ome_zarr.format import FormatV05

    with warnings.catch_warnings():  # ome-zarr 0.18 warns about its own default arguments
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_label_metadata, write_multiscales_metadata

    task, (n_planes, rows, cols) = source.task, source.shape
    s0 = source.levels[0]
    scratch = None
    if rows * cols > whole_plane_max_px:
        scratch = root.create_array("scratch", shape=(rows, cols), dtype=np.uint64,
                                    chunks=s0.chunks[1:], fill_value=0)
    planes = []
    plane_meta = source.info.get("planes") or [{} for _ in range(n_planes)]
    for z in range(n_planes):
        t0 = time.perf_counter()
        labelled = label_plane(
            task, _plane_of_channel(probs[0], 1, z),
            {n: PlaneView(lv[0], z) for n, lv in label_levels.items()},
            block=source.block, halo=labels_halo_px, threshold=threshold,
            min_grain_px=min_grain_px, whole_plane_max_px=whole_plane_max_px, scratch=scratch,
        )
        seconds = time.perf_counter() - t0
        meta = plane_meta[z] if z < len(plane_meta) else {}
        planes.append({"index": z, "file": meta.get("file"), "group": meta.get("group"),
                       **predicted[z], "labelling": labelled["mode"],
                       "n_objects": labelled["n_objects"], "label_s": round(seconds, 3)})
        logger.info("plane %d/%d: %s labelling, %d %s in %.1f s", z + 1, n_planes,
                    labelled["mode"], labelled["n_objects"],
                    "grains" if task == "grains" else "particles", seconds)
    if scratch is not None:
        del root["scratch"]
    chunk = max(int(s0.chunks[1]), int(s0.chunks[2]))
    half = max(chunk, source.block // 2 // chunk * chunk)
    for k in range(1, len(probs)):
        for c in range(probs[0].shape[0]):
            downsample(PlaneView(probs[k - 1], c), PlaneView(probs[k], c), step=half, mean=True)
        for lv in label_levels.values():
            downsample(lv[k - 1], lv[k], step=half, mean=False)

    fmt = FormatV05()
    scale0 = _level0_scale(source.datasets)
    axes = [{"name": "c", "type": "channel"},
            *[{"name": a["name"], "type": a.get("type", "space"),
               **({"unit": a["unit"]} if a.get("unit") else {})} for a in source.axes]]
    write_multiscales_metadata(
        root,
        datasets=[{"path": f"s{k}", "coordinateTransformations": [
            {**t, t["type"]: [0.0 if t["type"] == "translation" else 1.0, *t[t["type"]]]}
            for t in d["coordinateTransformations"]]} for k, d in enumerate(source.datasets)],
        fmt=fmt, axes=axes, name=f"{source.name} ({model or 'ensemble'})",
    )
    root.attrs["ome"] = {**root.attrs["ome"], "omero": {
        "channels": [{"label": f"P({c})", "color": colour, "active": True,
                      "window": {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}}
                     for c, colour in zip(CLASS_NAMES[task], ("808080", "FF00FF"))]}}
    label_root = root["labels"]
    for label_name, lv in label_levels.items():
        write_multiscales_metadata(
            label_root[label_name],
            datasets=[{"path": f"s{k}", "coordinateTransformations": [
                {"type": "scale", "scale": [scale0[0], scale0[1] * 2**k, scale0[2] * 2**k]}]}
                for k in range(len(lv))],
            fmt=fmt, axes=list(source.axes), name=label_name,
        )
        write_label_metadata(label_root, label_name, fmt=fmt, source={"image": "../../"})
    label_root.attrs["ome"] = {**label_root.attrs["ome"], "version": fmt.version}
    units = {a["name"]: a.get("unit") for a in source.axes if isinstance(a, dict)}
    return {
        "version": __version__,
        "stack": source.name,
        "task": task,
        "model": model,
        "source": str(source.path),
        "classes": list(CLASS_NAMES[task]),
        "labels": {
            LABEL_NAMES[task][0]: f"P({CLASS_NAMES[task][1]}) > {threshold}",
            LABEL_NAMES[task][1]: ("watershed of P(boundary) from the connected interiors "
                                   f"(P <= {threshold}) of at least {min_grain_px} px"
                                   if task == "grains" else
                                   "4-connected components of the phase mask"),
            "whole_plane_max_px": int(whole_plane_max_px),
            "halo_px": int(labels_halo_px),
        },
        **prediction,
        "pixel_size_um": source.info.get("pixel_size_um"),
        "unit": units.get("x"),
        "planes": planes,
    }


def infer_stack(
    stack: str | os.PathLike,
    checkpoints: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    model: str | None = None,
    task: str | None = None,
    tile_px: int = 256,
    overlap_px: int = 64,
    margin_px: int = 16,
    block_px: int = 2048,
    batch_size: int = 8,
    sigma_scale: float = 0.125,
    flips: bool = False,
    device: str = "auto",
    threads: int = 1,
    threshold: float = 0.5,
    min_grain_px: int = 4,
    whole_plane_max_px: int = 2048 * 2048,
    labels_halo_px: int = 64,
    progress: bool = True,
) -> dict:
    """Predict a stack with a fold ensemble and write probabilities and labels as OME-Zarr.

    Parameters
    ----------
    stack : path-like
        An OME-Zarr store written by :func:`grainflow.stacks.import_stack`
        (images of shape (Z, Y, X)); only read.
    checkpoints : sequence of path-like
        The folds' ``best.pt`` files of one architecture.
    out : path-like
        The store to write, e.g. ``results/inference/{stack}/{arch}.ome.zarr``;
        replaced atomically.
    model : str, optional
        Name of the architecture, stored in the attributes.
    task : str, optional
        The stack's task; by default the one stored in the stack.
    tile_px, overlap_px, margin_px : int
        Tile side, smallest overlap of adjacent tiles and unused tile margin,
        pixels (:func:`grainflow.tiling.predict_plane`).
    block_px : int
        Output block side, pixels; rounded down to whole chunks of the stack
        (at least one chunk).
    batch_size : int
        Tiles per network call.
    sigma_scale : float
        Gaussian blending width as a fraction of the tile side.
    flips : bool
        Average the 4 flips of each tile too (test-time augmentation; 4x slower).
    device : {"auto", "cpu", "cuda"}
    threads : int
        CPU threads for torch.
    threshold, min_grain_px
        As in :func:`grainflow.predict.labels_from_probability`.
    whole_plane_max_px : int
        Planes with at most this many pixels are labelled whole, larger ones
        block by block (:func:`label_plane`).
    labels_halo_px : int
        Halo of the block-wise grain watershed, pixels.
    progress : bool
        Progress bar (tiles) on stderr.

    Returns
    -------
    summary : dict
        The ``grainflow`` attributes written (provenance, per-plane records)
        plus ``seconds`` and ``megapixels_per_s``.

    See Also
    --------
    infer_shard, merge_shards : the same store from several jobs.
    """
    import zarr

    _check_integers(tile_px=(tile_px, 8), block_px=(block_px, 1), batch_size=(batch_size, 1),
                    threads=(threads, 1), labels_halo_px=(labels_halo_px, 0),
                    overlap_px=(overlap_px, 0), margin_px=(margin_px, 0),
                    whole_plane_max_px=(whole_plane_max_px, 0))
    source = _open_stack(stack, task=task, block_px=block_px)
    ensemble = _load_checked_ensemble(source, checkpoints, tile_px=tile_px, device=device,
                                      flips=flips)
    n_planes, rows, cols = source.shape
    logger.info("stack %r (%s): %d plane(s) of %d x %d px, %d fold model(s) on %s, tile %d, "
                "overlap %d, margin %d, block %d, flips %s", source.name, source.task, n_planes,
                rows, cols, len(ensemble.models), ensemble.device, tile_px, overlap_px,
                margin_px, source.block, flips)
    tiling = dict(tile_px=tile_px, overlap_px=overlap_px, margin_px=margin_px,
                  batch_size=batch_size, sigma_scale=sigma_scale)
    n_blocks = len(source.blocks(tile=tile_px, overlap=overlap_px))
    every_block = shard_blocks(n_planes, n_blocks, shards=1)[0]
    out = Path(out)
    start = time.perf_counter()
    with _staged(out) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        probs, label_levels = _create_output(root, source, ensemble.n_classes)
        predicted = _predict(source, ensemble, probs[0], every_block, threads=threads,
                             progress=progress, **tiling)
        summary = _finish(
            root, source, probs, label_levels, predicted=predicted, model=model,
            prediction=_prediction_record(ensemble, block=source.block, flips=flips, **tiling),
            threshold=threshold, min_grain_px=min_grain_px,
            whole_plane_max_px=whole_plane_max_px, labels_halo_px=labels_halo_px,
        )
        seconds = time.perf_counter() - start
        summary["seconds"] = round(seconds, 3)
        summary["megapixels_per_s"] = round(n_planes * rows * cols / 1e6 / seconds, 3)
        root.attrs["grainflow"] = summary
    logger.info("stack %r: %.1f Mpx in %.1f s (%.2f Mpx/s) -> %s", source.name,
                n_planes * rows * cols / 1e6, seconds, summary["megapixels_per_s"], out)
    return summary


# --------------------------------------------------------------------------- sharded


def shard_blocks(n_planes: int, n_blocks: int, *, shards: int) -> list[dict[int, list[int]]]:
    """Split the output blocks of a stack among ``shards`` jobs.

    The blocks, in order (plane by plane, each plane's blocks in
    :func:`~grainflow.tiling.iter_blocks` order), are cut into ``shards``
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
    _check_integers(n_planes=(n_planes, 1), n_blocks=(n_blocks, 1), shards=(shards, 1))
    owned = []
    for part in np.array_split(np.arange(n_planes * n_blocks), shards):
        mine: dict[int, list[int]] = {}
        for z, i in zip(*np.divmod(part, n_blocks)):
            mine.setdefault(int(z), []).append(int(i))
        owned.append(mine)
    return owned


def infer_shard(
    stack: str | os.PathLike,
    checkpoints: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    shard: int,
    shards: int,
    model: str | None = None,
    task: str | None = None,
    tile_px: int = 256,
    overlap_px: int = 64,
    margin_px: int = 16,
    block_px: int = 2048,
    batch_size: int = 8,
    sigma_scale: float = 0.125,
    flips: bool = False,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
) -> dict:
    """Predict shard ``shard`` of ``shards`` of a stack: the probabilities of its blocks.

    One of several jobs that share a large stack (:func:`shard_blocks`);
    :func:`merge_shards` then assembles the probabilities, labels the planes
    and writes the store that :func:`infer_stack` writes, bit for bit the same
    probabilities and labels. Arguments as in :func:`infer_stack`.

    ``out`` (written atomically) is a Zarr store::

        zarr.json    grainflow_shard: stack, source, task, model, shard, shards,
                     prediction (provenance, as in infer_stack), blocks (plane,
                     rows, cols of each block), planes (per plane touched: limits,
                     tiles, predict_s), seconds
        s0           (C, Z, Y, X) float32 probabilities, the stack's shape and
                     chunks; only the shard's chunks are stored

    Returns
    -------
    record : dict
        The ``grainflow_shard`` attributes.
    """
    import zarr

    _check_integers(tile_px=(tile_px, 8), block_px=(block_px, 1), batch_size=(batch_size, 1),
                    threads=(threads, 1), overlap_px=(overlap_px, 0), margin_px=(margin_px, 0),
                    shards=(shards, 1), shard=(shard, 0))
    if shard >= shards:
        raise ValueError(f"shard must be in [0, {shards}), got {shard=}")
    source = _open_stack(stack, task=task, block_px=block_px)
    ensemble = _load_checked_ensemble(source, checkpoints, tile_px=tile_px, device=device,
                                      flips=flips)
    blocks = source.blocks(tile=tile_px, overlap=overlap_px)
    owned = shard_blocks(source.shape[0], len(blocks), shards=shards)[shard]
    logger.info("stack %r, shard %d of %d: %d of %d blocks, on %s", source.name, shard, shards,
                sum(map(len, owned.values())), source.shape[0] * len(blocks), ensemble.device)
    tiling = dict(tile_px=tile_px, overlap_px=overlap_px, margin_px=margin_px,
                  batch_size=batch_size, sigma_scale=sigma_scale)
    out = Path(out)
    start = time.perf_counter()
    with _staged(out) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        s0 = source.levels[0]
        probs = root.create_array("s0", shape=(ensemble.n_classes, *s0.shape), dtype=np.float32,
                                  chunks=(ensemble.n_classes, *s0.chunks), fill_value=0.0,
                                  dimension_names=["c", "z", "y", "x"])
        predicted = _predict(source, ensemble, probs, owned, threads=threads, progress=progress,
                             **tiling)
        record = {
            "version": __version__,
            "stack": source.name,
            "source": str(source.path),
            "task": source.task,
            "model": model,
            "shard": int(shard),
            "shards": int(shards),
            "prediction": _prediction_record(ensemble, block=source.block, flips=flips,
                                             **tiling),
            "blocks": [[z, b.rows.start, b.rows.stop, b.cols.start, b.cols.stop]
                       for z, indices in owned.items() for b in (blocks[i] for i in indices)],
            "planes": {str(z): r for z, r in predicted.items()},
            "seconds": round(time.perf_counter() - start, 3),
        }
        root.attrs["grainflow_shard"] = record
    return record


def merge_shards(
    stack: str | os.PathLike,
    shards: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    threshold: float = 0.5,
    min_grain_px: int = 4,
    whole_plane_max_px: int = 2048 * 2048,
    labels_halo_px: int = 64,
) -> dict:
    """Assemble the shards of :func:`infer_shard` into the store of :func:`infer_stack`.

    Checks that the shards belong together (same stack, models and settings,
    shards 0..n-1 of n) and that their blocks cover every block of every
    plane exactly once; copies their probabilities into one store, labels
    every plane across block and shard edges with :func:`label_plane` (as
    :func:`infer_stack` does), builds the pyramids and the metadata, and
    writes ``out`` atomically. Probabilities and labels are those of
    :func:`infer_stack` with the same settings, bit for bit.

    Parameters
    ----------
    stack : path-like
        The imported stack the shards were predicted from (only read).
    shards : sequence of path-like
        The shard stores, in any order.
    out : path-like
        The inference store, e.g. ``results/inference/{stack}/{arch}.ome.zarr``.
    threshold, min_grain_px, whole_plane_max_px, labels_halo_px
        The labelling, as in :func:`infer_stack`.

    Returns
    -------
    summary : dict
        The ``grainflow`` attributes written: those of :func:`infer_stack`,
        with ``seconds`` the sum of the shards' and the merge's wall times and
        ``shards`` the count, blocks and seconds of each shard.
    """
    import zarr

    _check_integers(labels_halo_px=(labels_halo_px, 0), whole_plane_max_px=(whole_plane_max_px, 0))
    if not shards:
        raise ValueError("need at least one shard store, got none")
    records, arrays = [], []
    for path in shards:
        if not (Path(path) / "zarr.json").is_file():
            raise FileNotFoundError(f"shard store {path} does not exist; run rule infer_shard")
        group = zarr.open_group(str(path), mode="r")
        if "grainflow_shard" not in group.attrs:
            raise ValueError(f"{path} is not a shard store written by infer_shard")
        records.append(dict(group.attrs["grainflow_shard"]))
        arrays.append(group["s0"])
    order = np.argsort([r["shard"] for r in records])
    records, arrays = [records[i] for i in order], [arrays[i] for i in order]
    first = records[0]
    same = ("stack", "task", "model", "shards", "prediction")
    for path, record in zip(shards, records):
        differ = [k for k in same if record[k] != first[k]]
        if differ:
            raise ValueError(f"shard store {path} differs from the others in {differ}; rerun "
                             "the shards of one inference together")
    if [r["shard"] for r in records] != list(range(first["shards"])):
        raise ValueError(f"need shards 0 to {first['shards'] - 1}, got "
                         f"{sorted(r['shard'] for r in records)}")
    prediction = first["prediction"]
    source = _open_stack(stack, task=first["task"], block_px=prediction["block_px"])
    if source.name != first["stack"]:
        raise ValueError(f"the shards were predicted from stack {first['stack']!r}, not "
                         f"{source.name!r}")
    n_planes, rows, cols = source.shape
    expected = sorted([z, b.rows.start, b.rows.stop, b.cols.start, b.cols.stop]
                      for z in range(n_planes)
                      for b in source.blocks(tile=prediction["tile_px"],
                                             overlap=prediction["overlap_px"]))
    got = sorted(block for r in records for block in r["blocks"])
    if got != expected:
        raise ValueError(f"the shards' blocks must cover each of the {len(expected)} blocks "
                         f"once, got {len(got)} blocks ({len(set(map(tuple, got)))} distinct)")
    predicted: dict[int, dict] = {}
    for record in records:
        for z, part in record["planes"].items():
            z = int(z)
            if z not in predicted:
                predicted[z] = dict(part)
                continue
            whole = predicted[z]
            if (part["norm_low"], part["norm_high"]) != (whole["norm_low"], whole["norm_high"]):
                raise ValueError(f"the shards normalised plane {z} differently; rerun them")
            for key in ("blocks", "tiles", "predict_s"):
                whole[key] += part[key]
    logger.info("stack %r: merging %d shard(s) of %d blocks", source.name, len(records),
                len(expected))
    out = Path(out)
    start = time.perf_counter()
    with _staged(out) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        n_classes = len(CLASS_NAMES[source.task])
        probs, label_levels = _create_output(root, source, n_classes)
        if tuple(arrays[0].shape) != tuple(probs[0].shape):
            raise ValueError(f"the shards hold probabilities of shape {arrays[0].shape}, the "
                             f"stack needs {probs[0].shape}")
        for record, array in zip(records, arrays):
            for z, r0, r1, c0, c1 in record["blocks"]:
                probs[0][:, z, r0:r1, c0:c1] = array[:, z, r0:r1, c0:c1]
        summary = _finish(
            root, source, probs, label_levels, predicted=predicted, model=first["model"],
            prediction=prediction, threshold=threshold, min_grain_px=min_grain_px,
            whole_plane_max_px=whole_plane_max_px, labels_halo_px=labels_halo_px,
        )
        seconds = time.perf_counter() - start + sum(r["seconds"] for r in records)
        summary["seconds"] = round(seconds, 3)
        summary["megapixels_per_s"] = round(n_planes * rows * cols / 1e6 / seconds, 3)
        summary["shards"] = [{"shard": r["shard"], "blocks": len(r["blocks"]),
                              "seconds": r["seconds"]} for r in records]
        root.attrs["grainflow"] = summary
    logger.info("stack %r: %d shard(s) merged in %.1f s -> %s", source.name, len(records),
                time.perf_counter() - start, out)
    return summary


def open_inference(path: str | os.PathLike) -> tuple[dict, object, dict[str, object]]:
    """Open an inference store read-only.

    Returns
    -------
    attrs : dict
        The ``grainflow`` attributes.
    probability : zarr.Array of shape (C, Z, Y, X)
        Level s0.
    labels : dict of str -> zarr.Array of shape (Z, Y, X)
        Level s0 of each label image.
    """
    import zarr

    root = zarr.open_group(str(path), mode="r")
    attrs = dict(root.attrs)
    if "grainflow" not in attrs:
        raise ValueError(f"{path} is not an inference store written by grainflow; rerun infer")
    labels = {name: root["labels"][name]["s0"] for name in LABEL_NAMES[attrs["grainflow"]["task"]]}
    return attrs["grainflow"], root["s0"], labels
