"""A fold ensemble streamed over a real stack block by block, written as OME-Zarr."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from grainflow import __version__
from grainflow.inference.ensemble import Ensemble, load_ensemble
from grainflow.inference.labels import label_plane
from grainflow.inference.tiling import (
    WEIGHT_FLOOR,
    PlaneView,
    check_integers,
    iter_blocks,
    predict_plane,
    shard_blocks,
)
from grainflow.inference.trust import plane_trust
from grainflow.io.ome_zarr import block_slices, check_ome_zarr, downsample, ngff_writer
from grainflow.io.staging import staged_dir
from grainflow.logs import Progress
from grainflow.normalize import apply_limits, plane_limits, polarity_view
from grainflow.runtime import torch_threads
from grainflow.stacks.importer import plane_particles_dark, plane_shapes
from grainflow.tasks import CLASS_NAMES, LABEL_NAMES, TASKS, segments_particles

__all__ = ["WithTrust", "upsample_probabilities", "infer_stack", "open_inference"]


logger = logging.getLogger(__name__)


def _plane_of_channel(array, channel: int, z: int) -> PlaneView:
    """``array[channel, z]`` of a (C, Z, Y, X) array, read and written lazily."""
    return PlaneView(PlaneView(array, channel, axis=0), z, axis=0)


class _Crop:
    """The top-left (rows, cols) of an array-like of shape (..., Y, X): a padded plane's own part.

    Indices are those of the whole array (the crop starts at 0, 0); slices are
    cut to the crop's rows and cols, so nothing beyond it is read or written.
    """

    def __init__(self, array, rows: int, cols: int):
        *lead, full_rows, full_cols = (int(n) for n in array.shape)
        if not (0 < rows <= full_rows and 0 < cols <= full_cols):
            raise ValueError(
                f"the crop must lie inside the plane {(full_rows, full_cols)}, got {(rows, cols)}"
            )
        self.array, self.shape, self.dtype = array, (*lead, rows, cols), array.dtype
        self.chunks = getattr(array, "chunks", None)

    def _key(self, key) -> tuple:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (len(self.shape) - len(key))
        lead, last = key[: len(self.shape) - 2], key[len(self.shape) - 2 :]
        cut = []
        for k, n in zip(last, self.shape[-2:]):
            if isinstance(k, slice):
                k = slice(*k.indices(n))
            elif not -n <= k < n:
                raise IndexError(f"index {k} out of the crop's {n} pixels")
            cut.append(k % n if not isinstance(k, slice) else k)
        return (*lead, *cut)

    def __getitem__(self, key):
        return self.array[self._key(key)]

    def __setitem__(self, key, value):
        self.array[self._key(key)] = value


class WithTrust:
    """Probabilities (C, Z, Y, X) and a disagreement map (Z, Y, X) seen as one (C + 1, Z, Y, X) array.

    What an :class:`~grainflow.inference.ensemble.Ensemble` with ``disagreement``
    returns per tile (C probabilities, then the disagreement) is written through
    it into two arrays, so that the probability array keeps exactly C channels.
    Keys must take every channel (``[:, ...]``).
    """

    def __init__(self, probs, trust):
        if tuple(probs.shape[1:]) != tuple(trust.shape):
            raise ValueError(
                f"the disagreement map must have the probabilities' plane shape "
                f"{tuple(probs.shape[1:])}, got {tuple(trust.shape)}"
            )
        self.probs, self.trust = probs, trust
        self.shape = (int(probs.shape[0]) + 1, *(int(n) for n in probs.shape[1:]))
        self.dtype = probs.dtype
        self.chunks = getattr(probs, "chunks", None)

    def _rest(self, key) -> tuple:
        key = key if isinstance(key, tuple) else (key,)
        if not key or key[0] != slice(None):
            raise IndexError(f"a key must take every channel ([:, ...]), got {key!r}")
        return key[1:]

    def __getitem__(self, key):
        rest = self._rest(key)
        probs = np.asarray(self.probs[(slice(None), *rest)])
        trust = np.asarray(self.trust[rest])
        return np.concatenate([probs, trust[None]], axis=0)

    def __setitem__(self, key, value):
        rest = self._rest(key)
        value = np.asarray(value)
        self.probs[(slice(None), *rest)] = value[:-1]
        self.trust[rest] = value[-1]


def _own_blocks(shape, own, block: int, indices) -> list[int]:
    """The blocks of a padded plane's own part (its rows, cols) among a whole plane's ``indices``.

    Blocks are numbered in :func:`~grainflow.inference.tiling.iter_blocks` order,
    of the whole plane ``shape`` for ``indices`` and of the own part ``own`` for
    the result; blocks wholly in the padding are dropped. Each own block is part
    of the whole block of the same position, so owners of disjoint whole blocks
    still write disjoint chunks.
    """
    n_cols = -(-int(shape[1]) // block)
    own_rows, own_cols = (-(-int(n) // block) for n in own)
    out = []
    for i in indices:
        row, col = divmod(int(i), n_cols)
        if row < own_rows and col < own_cols:
            out.append(row * own_cols + col)
    return out


def _stack_metadata(group) -> tuple[dict, list[dict], list[dict], dict]:
    """The stack's grainflow attributes, multiscale datasets, axes and level-0 scale."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    if "multiscales" not in ome or "grainflow" not in attrs:
        raise ValueError(
            "not a stack imported by grainflow (no ome multiscales or grainflow "
            "attributes); run the import_stack rule"
        )
    ms = ome["multiscales"][0]
    return attrs["grainflow"], ms["datasets"], ms["axes"], ms


def _level0_scale(datasets: list[dict]) -> list[float]:
    scale = [1.0, 1.0, 1.0]
    for t in datasets[0].get("coordinateTransformations") or []:
        if t.get("type") == "scale":
            scale = [float(s) for s in t["scale"]]
    return scale


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
    level: int = 0  # the stack's pyramid level that levels[0] is

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.levels[0].shape)

    @property
    def plane_shapes(self) -> list[tuple[int, int]]:
        """Each plane's own (rows, cols) at this level (smaller than ``shape`` where padded)."""
        n, rows, cols = self.shape
        f = 2**self.level
        return [
            (min(-(-r // f), rows), min(-(-c // f), cols))
            for r, c in plane_shapes(self.info, (n, rows * f, cols * f))
        ]

    def particles_dark(self, *, required: bool = False) -> list[bool | None]:
        """Whether each plane's particles are dark (:func:`plane_particles_dark`)."""
        return plane_particles_dark(
            self.info, self.shape[0], required=required, where=str(self.path)
        )

    def blocks(self, *, tile: int, overlap: int) -> list:
        """The output blocks of a plane (:func:`~grainflow.inference.tiling.iter_blocks` order)."""
        return list(iter_blocks(self.shape[1:], block=self.block, tile=tile, overlap=overlap))


def open_source(stack: str | os.PathLike, *, task: str | None, block_px: int) -> _Stack:
    import zarr

    stack = Path(stack)
    if not (stack / "zarr.json").is_file():
        raise FileNotFoundError(f"stack store {stack} does not exist; run the import_stack rule")
    source = zarr.open_group(str(stack), mode="r")
    info, datasets, axes, _ = _stack_metadata(source)
    name = info.get("stack") or stack.name.removesuffix(".ome.zarr")
    task = task or info.get("task")
    if task not in LABEL_NAMES:
        raise ValueError(
            f"stack {name!r}: task must be one of {sorted(LABEL_NAMES)}, got "
            f"{task=}; give task= or set it in the stacks sheet"
        )
    levels = [source[d["path"]] for d in datasets]
    s0 = levels[0]
    if len(s0.shape) != 3:
        raise ValueError(f"stack {name!r}: images must be (planes, rows, cols), got {s0.shape}")
    # chunks are (1, min(c, rows), min(c, cols)): the larger side is c, or the plane fits one
    chunk = max(int(s0.chunks[1]), int(s0.chunks[2]))
    block = max(chunk, block_px // chunk * chunk)
    if block != block_px:
        logger.info(
            "block_px %d rounded to %d, a multiple of the stack's %d px chunks",
            block_px,
            block,
            chunk,
        )
    return _Stack(
        path=stack,
        name=name,
        task=task,
        info=info,
        datasets=datasets,
        axes=axes,
        levels=levels,
        block=block,
    )


def load_checked_ensemble(
    source: _Stack, checkpoints, *, tile_px: int, device: str, flips: bool
) -> Ensemble:
    ensemble = load_ensemble(checkpoints, task=source.task, device=device, flips=flips)
    if ensemble.n_classes != len(CLASS_NAMES[source.task]):
        raise ValueError(
            f"the checkpoints predict {ensemble.n_classes} classes; task "
            f"{source.task!r} needs {len(CLASS_NAMES[source.task])}"
        )
    source.particles_dark(required=ensemble.polarity == "given")
    multiple = max(getattr(m, "size_multiple", 1) for m in ensemble.models)
    if tile_px % multiple:
        raise ValueError(
            f"tile_px must be a multiple of {multiple} for these models (a U-Net "
            f"of depth d needs 2**d), got {tile_px=}"
        )
    return ensemble


def prediction_record(
    ensemble: Ensemble,
    *,
    block: int,
    tile_px: int,
    overlap_px: int,
    margin_px: int,
    batch_size: int,
    sigma_scale: float,
    flips: bool,
    trust: bool = False,
) -> dict:
    """Provenance of the probabilities: models, tiling, blending, normalisation, device.

    With ``trust``, also that of the disagreement map (``trust``: the array, the
    measure and the number of members).
    """
    import torch

    record = {
        "checkpoints": ensemble.checkpoints,
        "ensemble": f"mean of the softmax probabilities of {len(ensemble.models)} fold model(s)",
        "test_time_flips": bool(flips),
        "tile_px": int(tile_px),
        "overlap_px": int(overlap_px),
        "margin_px": int(margin_px),
        "block_px": int(block),
        "batch_size": int(batch_size),
        "blend": {
            "window": "gaussian",
            "sigma_scale": float(sigma_scale),
            "weight_floor": WEIGHT_FLOOR,
            "accumulator": "float32",
        },
        "normalization": {
            "method": "per-plane percentiles mapped to 0 and 1",
            "percentiles": list(ensemble.norm_percentiles),
            "polarity": ensemble.polarity,
            **(
                {"inverted": "planes whose particles are dark (planes[z].inverted), 1 - image"}
                if ensemble.polarity == "given"
                else {}
            ),
        },
        "device": str(ensemble.device),
        "torch": torch.__version__,
    }
    if trust:
        record["trust"] = {
            "array": "disagreement",
            "measure": (
                "mean over the members (fold models x test-time flips) of the total-variation "
                "distance of a member's probabilities from the ensemble mean, in [0, 1 - 1/members]; "
                "Gaussian-blended across tiles like the probabilities"
            ),
            "members": ensemble.n_members,
        }
    return record


def predict_blocks(
    source: _Stack,
    ensemble: Ensemble,
    probs,
    owned: Mapping[int, Sequence[int]],
    *,
    tile_px: int,
    overlap_px: int,
    margin_px: int,
    batch_size: int,
    sigma_scale: float,
    threads: int,
    progress: bool,
) -> dict[int, dict]:
    """Probabilities of the blocks ``owned`` ({plane: block indices}) into ``probs`` (C, Z, Y, X).

    Returns per plane its intensity limits, the tiling summary of
    :func:`~grainflow.inference.tiling.predict_plane` and ``predict_s``. With
    ``progress``, the blocks done of all planes and the time left are logged,
    a line at most every 30 s (:class:`grainflow.logs.Progress`).

    A padded plane (:attr:`_Stack.plane_shapes`) is normalised, tiled and
    predicted on its own part only, exactly as if it were alone: its tiles end at
    its own edge, and blocks wholly in the padding are skipped; the padding's
    probabilities stay 0.
    """
    s0 = source.levels[0]
    shapes = source.plane_shapes
    polarities = source.particles_dark()
    plan = {  # a padded plane's own blocks
        z: (
            indices
            if shapes[z] == source.shape[1:]
            else _own_blocks(source.shape[1:], shapes[z], source.block, indices)
        )
        for z, indices in owned.items()
    }
    meter = None
    if progress:
        total = sum(len(set(int(i) for i in indices)) for indices in plan.values())
        meter = Progress(total, what=f"stack {source.name!r}: block", logger=logger, every_s=30.0)
    records = {}
    with torch_threads(threads):
        for z, indices in plan.items():
            t0 = time.perf_counter()
            rows, cols = shapes[z]
            reader = _Crop(PlaneView(s0, z), rows, cols)
            low, high = plane_limits(
                reader, percentiles=ensemble.norm_percentiles, block=source.block
            )
            dark = polarities[z]
            tiles = predict_plane(
                reader,
                ensemble,
                out=_Crop(PlaneView(probs, z, axis=1), rows, cols),
                tile=tile_px,
                overlap=overlap_px,
                block=source.block,
                margin=margin_px,
                batch_size=batch_size,
                sigma_scale=sigma_scale,
                transform=lambda region, lo=low, hi=high, dark=dark: polarity_view(
                    apply_limits(region, lo, hi), particles_dark=dark, polarity=ensemble.polarity
                ),
                progress=meter or False,
                block_indices=indices,
            )
            seconds = time.perf_counter() - t0
            records[z] = {
                "norm_low": low,
                "norm_high": high,
                **({"inverted": bool(dark)} if ensemble.polarity == "given" else {}),
                **tiles,
                "predict_s": round(seconds, 3),
            }
            logger.info(
                "plane %d/%d: %d block(s), %d tiles in %.1f s",
                z + 1,
                source.shape[0],
                tiles["blocks"],
                tiles["tiles"],
                seconds,
            )
    return records


def create_output(root, source: _Stack, n_classes: int) -> tuple[list, dict[str, list]]:
    """The probability levels (C, Z, Y, X) and label levels (Z, Y, X) of an inference store."""
    probs = [
        root.create_array(
            f"s{k}",
            shape=(n_classes, *lv.shape),
            dtype=np.float32,
            chunks=(n_classes, *lv.chunks),
            fill_value=0.0,
            dimension_names=["c", "z", "y", "x"],
        )
        for k, lv in enumerate(source.levels)
    ]
    label_root = root.create_group("labels")
    label_levels = {}
    for label_name, dtype in zip(LABEL_NAMES[source.task], (np.uint8, np.uint32)):
        group = label_root.create_group(label_name)
        label_levels[label_name] = [
            group.create_array(
                f"s{k}",
                shape=lv.shape,
                dtype=dtype,
                chunks=lv.chunks,
                fill_value=0,
                dimension_names=["z", "y", "x"],
            )
            for k, lv in enumerate(source.levels)
        ]
    return probs, label_levels


def check_uncertain_above(value: float) -> None:
    """``uncertain_above`` must lie in [0, 1): a disagreement is below 1."""
    if not 0 <= value < 1:
        raise ValueError(f"uncertain_above must be in [0, 1), got {value=}")


def create_trust(root, source: _Stack) -> list:
    """The disagreement levels (Z, Y, X) of an inference store: ``disagreement/s0, s1, ...``."""
    group = root.create_group("disagreement")
    return [
        group.create_array(
            f"s{k}",
            shape=lv.shape,
            dtype=np.float32,
            chunks=lv.chunks,
            fill_value=0.0,
            dimension_names=["z", "y", "x"],
        )
        for k, lv in enumerate(source.levels)
    ]


def finish_store(
    root,
    source: _Stack,
    probs: list,
    label_levels: dict[str, list],
    *,
    predicted: Mapping[int, dict],
    prediction: dict,
    model: str | None,
    threshold: float,
    min_grain_px: int,
    whole_plane_max_px: int,
    labels_halo_px: int,
    labels_split_px: float | Mapping[str, float] = 0.0,
    labels_fill_holes: bool = False,
    labels_min_particle_px: int = 0,
    scale: Mapping | None = None,
    trust_levels: list | None = None,
    uncertain_above: float = 0.1,
) -> dict:
    """Label every plane from ``probs[0]``, fill the pyramids, write metadata and provenance.

    ``predicted`` holds each plane's prediction record (:func:`predict_blocks`),
    ``prediction`` the provenance of the probabilities (:func:`prediction_record`).
    With ``trust_levels`` (:func:`create_trust`, level 0 filled), each plane's
    record gets its ``disagreement_mean`` and ``uncertain_fraction`` (disagreement
    above ``uncertain_above``; :func:`grainflow.inference.trust.plane_trust`) over its
    own part, and the disagreement gets its pyramid. ``labels_min_particle_px`` counts
    pixels of the level the networks read (``scale["level"]``): at full resolution
    it is that times 4 per level.
    Returns the ``grainflow`` attributes written, without the timings.
    """
    fmt, write_multiscales_metadata, write_label_metadata = ngff_writer()

    task, (n_planes, rows, cols) = source.task, source.shape
    split_px = float(
        labels_split_px.get(task, 0.0) if isinstance(labels_split_px, Mapping) else labels_split_px
    )
    level = int((scale or {}).get("level", 0))
    min_particle_px = int(labels_min_particle_px) * 4**level if segments_particles(task) else 0
    s0 = source.levels[0]
    shapes = source.plane_shapes
    scratch = None
    if rows * cols > whole_plane_max_px:
        scratch = root.create_array(
            "scratch", shape=(rows, cols), dtype=np.uint64, chunks=s0.chunks[1:], fill_value=0
        )
    planes = []
    plane_meta = source.info.get("planes") or [{} for _ in range(n_planes)]
    for z in range(n_planes):
        t0 = time.perf_counter()
        own = shapes[z]  # a padded plane is labelled on its own part; the padding stays 0
        labelled = label_plane(
            task,
            _Crop(_plane_of_channel(probs[0], 1, z), *own),
            {n: _Crop(PlaneView(lv[0], z), *own) for n, lv in label_levels.items()},
            block=source.block,
            halo=labels_halo_px,
            threshold=threshold,
            min_grain_px=min_grain_px,
            split_px=split_px,
            fill_holes=labels_fill_holes,
            min_particle_px=min_particle_px,
            whole_plane_max_px=whole_plane_max_px,
            scratch=None if scratch is None else _Crop(scratch, *own),
        )
        seconds = time.perf_counter() - t0
        meta = plane_meta[z] if z < len(plane_meta) else {}
        trusted = {}
        if trust_levels is not None:
            trusted = plane_trust(
                _Crop(PlaneView(trust_levels[0], z), *own),
                uncertain_above=uncertain_above,
                block=source.block,
            )
        planes.append(
            {
                "index": z,
                "file": meta.get("file"),
                "group": meta.get("group"),
                **({"shape": meta["shape"]} if meta.get("shape") else {}),
                **predicted[z],
                "labelling": labelled["mode"],
                "n_objects": labelled["n_objects"],
                "label_s": round(seconds, 3),
                **trusted,
            }
        )
        logger.info(
            "plane %d/%d: %s labelling, %d %s in %.1f s",
            z + 1,
            n_planes,
            labelled["mode"],
            labelled["n_objects"],
            TASKS[task].objects,
            seconds,
        )
    if scratch is not None:
        del root["scratch"]
    chunk = max(int(s0.chunks[1]), int(s0.chunks[2]))
    half = max(chunk, source.block // 2 // chunk * chunk)
    for k in range(1, len(probs)):
        for c in range(probs[0].shape[0]):
            downsample(PlaneView(probs[k - 1], c), PlaneView(probs[k], c), step=half, mean=True)
        for lv in label_levels.values():
            downsample(lv[k - 1], lv[k], step=half, mean=False)
        if trust_levels is not None:
            downsample(trust_levels[k - 1], trust_levels[k], step=half, mean=True)

    scale0 = _level0_scale(source.datasets)
    axes = [
        {"name": "c", "type": "channel"},
        *[
            {
                "name": a["name"],
                "type": a.get("type", "space"),
                **({"unit": a["unit"]} if a.get("unit") else {}),
            }
            for a in source.axes
        ],
    ]
    write_multiscales_metadata(
        root,
        datasets=[
            {
                "path": f"s{k}",
                "coordinateTransformations": [
                    {**t, t["type"]: [0.0 if t["type"] == "translation" else 1.0, *t[t["type"]]]}
                    for t in d["coordinateTransformations"]
                ],
            }
            for k, d in enumerate(source.datasets)
        ],
        fmt=fmt,
        axes=axes,
        name=f"{source.name} ({model or 'ensemble'})",
    )
    root.attrs["ome"] = {
        **root.attrs["ome"],
        "omero": {
            "channels": [
                {
                    "label": f"P({c})",
                    "color": colour,
                    "active": True,
                    "window": {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0},
                }
                for c, colour in zip(CLASS_NAMES[task], ("808080", "FF00FF"))
            ]
        },
    }
    label_root = root["labels"]
    for label_name, lv in label_levels.items():
        write_multiscales_metadata(
            label_root[label_name],
            datasets=[
                {
                    "path": f"s{k}",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [scale0[0], scale0[1] * 2**k, scale0[2] * 2**k]}
                    ],
                }
                for k in range(len(lv))
            ],
            fmt=fmt,
            axes=list(source.axes),
            name=label_name,
        )
        write_label_metadata(label_root, label_name, fmt=fmt, source={"image": "../../"})
    label_root.attrs["ome"] = {**label_root.attrs["ome"], "version": fmt.version}
    trust = None
    if trust_levels is not None:
        write_multiscales_metadata(
            root["disagreement"],
            datasets=[
                {
                    "path": f"s{k}",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [scale0[0], scale0[1] * 2**k, scale0[2] * 2**k]}
                    ],
                }
                for k in range(len(trust_levels))
            ],
            fmt=fmt,
            axes=list(source.axes),
            name="disagreement",
        )
        trust = {**prediction.get("trust", {}), "uncertain_above": float(uncertain_above)}
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
            LABEL_NAMES[task][1]: (
                "watershed of P(boundary) from the connected interiors "
                f"(P <= {threshold}) of at least {min_grain_px} px"
                + (f", split at necks {split_px} px deep (gaps closed)" if split_px else "")
                if task == "grains"
                else "4-connected components of the phase mask"
                + (f" of at least {min_particle_px} px" if min_particle_px > 1 else "")
                + (f", split at necks {split_px} px deep" if split_px else "")
            ),
            "split_px": split_px,
            "fill_holes": bool(labels_fill_holes) and segments_particles(task),
            "min_particle_px": min_particle_px,
            "whole_plane_max_px": int(whole_plane_max_px),
            "halo_px": int(labels_halo_px),
        },
        **prediction,
        "pixel_size_um": source.info.get("pixel_size_um"),
        "unit": units.get("x"),
        "scale": {"level": 0, "factor": 1, **dict(scale or {})},
        **({"trust": trust} if trust else {}),
        "planes": planes,
    }


def upsample_probabilities(coarse, fine, *, factor: int, block: int, shapes=None) -> None:
    """Fill ``fine`` (C, Z, Y, X) from ``coarse`` (C, Z, ~Y/f, ~X/f) by bilinear interpolation.

    Parameters
    ----------
    coarse, fine : array-like
        Zarr arrays or ndarrays; ``coarse`` is a pyramid level ``factor`` times
        coarser than ``fine`` (each of its pixels the mean of ``factor`` x
        ``factor`` fine pixels, as :func:`grainflow.io.ome_zarr.downsample` makes them).
    factor : int
        A power of two.
    block : int
        Side of the fine blocks written at a time, pixels (a multiple of the chunks).
    shapes : sequence of (int, int), optional
        Each plane's own (rows, cols) in ``fine`` where planes are padded; only
        that part is filled (from the coarse plane's own part, ``ceil(rows /
        factor)`` x ``ceil(cols / factor)``), the padding is left as it is.

    Notes
    -----
    Fine pixel ``i`` has its centre at coarse coordinate ``(i + 0.5) / factor - 0.5``;
    values beyond the outermost coarse centres repeat the edge.
    """
    n_classes, n_planes, rows, cols = fine.shape
    for z in range(n_planes):
        c_rows, c_cols = coarse.shape[2:]
        if shapes is not None:
            rows, cols = shapes[z]
            c_rows, c_cols = min(-(-rows // factor), c_rows), min(-(-cols // factor), c_cols)
        for rs, cs in block_slices(rows, cols, block):
            y = np.clip((np.arange(rs.start, rs.stop) + 0.5) / factor - 0.5, 0, c_rows - 1)
            x = np.clip((np.arange(cs.start, cs.stop) + 0.5) / factor - 0.5, 0, c_cols - 1)
            y0, x0 = int(np.floor(y[0])), int(np.floor(x[0]))
            y1, x1 = min(int(np.floor(y[-1])) + 2, c_rows), min(int(np.floor(x[-1])) + 2, c_cols)
            region = np.asarray(coarse[:, z, y0:y1, x0:x1], dtype=np.float32)
            yy, xx = np.meshgrid(y - y0, x - x0, indexing="ij")
            fine[:, z, rs, cs] = np.stack(
                [ndi.map_coordinates(c, [yy, xx], order=1, mode="nearest") for c in region]
            )


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
    labels_split_px: float | Mapping[str, float] = 0.0,
    labels_fill_holes: bool = False,
    labels_min_particle_px: int = 0,
    level: int = 0,
    scale: Mapping | None = None,
    trust: bool = False,
    uncertain_above: float = 0.1,
    progress: bool = True,
) -> dict:
    """Predict a stack with a fold ensemble and write probabilities and labels as OME-Zarr.

    Parameters
    ----------
    stack : path-like
        An OME-Zarr store written by :func:`grainflow.stacks.importer.import_stack`
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
        pixels (:func:`grainflow.inference.tiling.predict_plane`).
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
        As in :func:`grainflow.inference.labels.labels_from_probability`.
    whole_plane_max_px : int
        Planes with at most this many pixels are labelled whole, larger ones
        block by block (:func:`label_plane`).
    labels_halo_px : int
        Halo of the block-wise grain watershed, pixels.
    labels_split_px : float or mapping of task -> float
        ``split_px`` of :func:`grainflow.inference.labels.labels_from_probability`
        (grains: closes gaps in the boundary network; phases: splits touching
        particles), one value or one per task.
    labels_fill_holes : bool
        Phases: fill the matrix pockets the particle phase encloses
        (``fill_holes`` of :func:`~grainflow.inference.labels.labels_from_probability`).
    labels_min_particle_px : int
        Phases: particles smaller than this many pixels of the level read are
        matrix (``min_particle_px`` of
        :func:`~grainflow.inference.labels.labels_from_probability`, times 4 per
        level at full resolution).
    level : int
        The pyramid level the networks read (0: full resolution; each level halves
        it), so that the stack's features meet them at the scale they were trained
        at (:func:`grainflow.inference.scale.scale_level`). The probabilities are
        mapped back onto the full-resolution grid (bilinear) before labelling.
    scale : mapping, optional
        How ``level`` was chosen (feature lengths, factor), recorded with it in the
        output's attributes.
    trust : bool
        Also write the trust map: the disagreement of the ensemble's members
        (:func:`grainflow.inference.trust.disagreement`), blended in the same pass
        as the probabilities (which it leaves unchanged, bit for bit), with each
        plane's mean disagreement and uncertain fraction.
    uncertain_above : float
        A pixel is uncertain when its disagreement exceeds this.
    progress : bool
        Log the blocks done and the time left, a line at most every 30 s.

    Returns
    -------
    summary : dict
        The ``grainflow`` attributes written (provenance, per-plane records)
        plus ``seconds`` and ``megapixels_per_s``.

    See Also
    --------
    infer_shard, merge_shards : the same store from several jobs.

    Notes
    -----
    The store ``out``::

        {arch}.ome.zarr/
            zarr.json        ome: multiscales (axes c, z, y, x; the stack's scale in µm),
                             omero (channel names); grainflow: provenance (below)
            s0, s1, ...      (C, Z, Y, X) float32 class probabilities, chunks (C, 1, chunk, chunk),
                             the stack's pyramid (s{k+1} = 2 x 2 mean of s{k})
            labels/zarr.json ome: labels, e.g. ["boundaries", "grain_ids"]
            labels/{name}/s0, s1, ...
                             (Z, Y, X) label images (axes z, y, x), s{k+1} = s{k}[::2, ::2]
            disagreement/s0, s1, ...
                             with ``trust``: (Z, Y, X) float32 disagreement of the members,
                             the probabilities' chunks and pyramid (2 x 2 mean)

    Labels per task are those of
    :func:`~grainflow.inference.labels.labels_from_probability`, as in the
    cross-validated evaluation: ``grains`` -> ``boundaries`` (uint8, 1 where
    P(boundary) > 0.5) and ``grain_ids`` (uint32 grain instances 1..n; 0 only where
    no grain seed lies within the labelling halo); ``phases`` -> ``phase`` (uint8, 1
    where P(particle) > 0.5) and ``particle_ids`` (uint32, 0 = matrix).

    Each plane is normalised as in training, by its own low and high percentiles
    (stored in the checkpoints' configs), with limits from a regular subsample of at
    most 4 Mpx (:func:`grainflow.normalize.plane_limits`) applied block by block. The
    ensemble is the mean of the folds' softmax probabilities (and, with ``flips``, of
    the 4 flips of each tile, each flipped back) on the compute device; the output
    stays in the store. Tiling is that of
    :func:`grainflow.inference.tiling.predict_plane`. The planes are then labelled by
    :func:`~grainflow.inference.labels.label_plane`.

    A plane padded to the stack's size (images of different sizes,
    :func:`grainflow.stacks.importer.plane_shapes`) is normalised, predicted and
    labelled on its own part only, as if it were alone (blocks wholly in the padding
    are skipped); its padding holds probability 0 and label 0.

    Provenance in ``attrs["grainflow"]``: version, stack, task, source store,
    checkpoints (path, SHA-256, fold, epoch), ensemble, test-time flips, tile,
    overlap, margin, block, batch size, blend, normalisation, device, labelling
    options, and per plane its intensity limits, tiles and labelling mode (with ``trust``
    also ``trust``: the measure, members and threshold, and per plane its
    ``disagreement_mean`` and ``uncertain_fraction``); a merged
    store (:func:`~grainflow.inference.shards.merge_shards`) also lists its shards.
    The store is written into a temporary folder beside ``out`` and renamed onto it
    only when complete (:func:`grainflow.io.staging.staged_dir`), so no partial
    output is ever taken for a result.
    """
    import zarr

    check_integers(
        tile_px=(tile_px, 8),
        block_px=(block_px, 1),
        batch_size=(batch_size, 1),
        threads=(threads, 1),
        labels_halo_px=(labels_halo_px, 0),
        overlap_px=(overlap_px, 0),
        margin_px=(margin_px, 0),
        whole_plane_max_px=(whole_plane_max_px, 0),
        labels_min_particle_px=(labels_min_particle_px, 0),
    )
    check_integers(level=(level, 0))
    check_uncertain_above(uncertain_above)
    source = open_source(stack, task=task, block_px=block_px)
    if level >= len(source.levels):
        raise ValueError(
            f"stack {source.name!r} has {len(source.levels)} pyramid level(s); level must "
            f"be below that, got {level=}"
        )
    ensemble = load_checked_ensemble(
        source, checkpoints, tile_px=tile_px, device=device, flips=flips
    )
    n_planes, rows, cols = source.shape
    logger.info(
        "stack %r (%s): %d plane(s) of %d x %d px, %d fold model(s) on %s, tile %d, "
        "overlap %d, margin %d, block %d, flips %s",
        source.name,
        source.task,
        n_planes,
        rows,
        cols,
        len(ensemble.models),
        ensemble.device,
        tile_px,
        overlap_px,
        margin_px,
        source.block,
        flips,
    )
    tiling = dict(
        tile_px=tile_px,
        overlap_px=overlap_px,
        margin_px=margin_px,
        batch_size=batch_size,
        sigma_scale=sigma_scale,
    )
    # what the networks see
    read = dataclasses.replace(source, levels=source.levels[level:], level=level)
    n_blocks = len(read.blocks(tile=tile_px, overlap=overlap_px))
    every_block = shard_blocks(n_planes, n_blocks, shards=1)[0]
    out = Path(out)
    start = time.perf_counter()
    with staged_dir(out, check=check_ome_zarr) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        probs, label_levels = create_output(root, source, ensemble.n_classes)
        trust_levels = create_trust(root, source) if trust else None
        target = WithTrust(probs[0], trust_levels[0]) if trust else probs[0]
        channels = ensemble.n_classes + bool(trust)  # the disagreement last
        members = ensemble.with_disagreement(trust)
        if level == 0:
            predicted = predict_blocks(
                read, members, target, every_block, threads=threads, progress=progress, **tiling
            )
        else:
            coarse = root.create_array(
                "scratch_probabilities",
                shape=(channels, *read.shape),
                dtype=np.float32,
                chunks=(channels, *read.levels[0].chunks),
                fill_value=0.0,
            )
            predicted = predict_blocks(
                read, members, coarse, every_block, threads=threads, progress=progress, **tiling
            )
            upsample_probabilities(
                coarse,
                target,
                factor=2**level,
                block=source.block,
                shapes=source.plane_shapes,
            )
            del root["scratch_probabilities"]
        summary = finish_store(
            root,
            source,
            probs,
            label_levels,
            predicted=predicted,
            model=model,
            prediction=prediction_record(
                ensemble, block=source.block, flips=flips, trust=trust, **tiling
            ),
            threshold=threshold,
            min_grain_px=min_grain_px,
            whole_plane_max_px=whole_plane_max_px,
            labels_halo_px=labels_halo_px,
            labels_split_px=labels_split_px,
            labels_fill_holes=labels_fill_holes,
            labels_min_particle_px=labels_min_particle_px,
            scale={**dict(scale or {}), "level": int(level), "factor": 2**level},
            trust_levels=trust_levels,
            uncertain_above=uncertain_above,
        )
        seconds = time.perf_counter() - start
        megapixels = sum(r * c for r, c in source.plane_shapes) / 1e6  # padding left out
        summary["seconds"] = round(seconds, 3)
        summary["megapixels_per_s"] = round(megapixels / seconds, 3)
        root.attrs["grainflow"] = summary
    logger.info(
        "stack %r: %.1f Mpx in %.1f s (%.2f Mpx/s) -> %s",
        source.name,
        megapixels,
        seconds,
        summary["megapixels_per_s"],
        out,
    )
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
