"""One stack predicted by several jobs that own disjoint chunks, then merged."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from grainflow import __version__
from grainflow.inference.stack import (
    WithTrust,
    check_uncertain_above,
    create_output,
    create_trust,
    finish_store,
    load_checked_ensemble,
    open_source,
    predict_blocks,
    prediction_record,
)
from grainflow.inference.tiling import check_integers, shard_blocks
from grainflow.io.ome_zarr import check_ome_zarr
from grainflow.io.staging import staged_dir
from grainflow.tasks import CLASS_NAMES

__all__ = ["infer_shard", "merge_shards"]

logger = logging.getLogger(__name__)


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
    trust: bool = False,
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
        disagreement with ``trust``: (Z, Y, X) float32 disagreement of the members,
                     likewise

    Returns
    -------
    record : dict
        The ``grainflow_shard`` attributes.
    """
    import zarr

    check_integers(
        tile_px=(tile_px, 8),
        block_px=(block_px, 1),
        batch_size=(batch_size, 1),
        threads=(threads, 1),
        overlap_px=(overlap_px, 0),
        margin_px=(margin_px, 0),
        shards=(shards, 1),
        shard=(shard, 0),
    )
    if shard >= shards:
        raise ValueError(f"shard must be in [0, {shards}), got {shard=}")
    source = open_source(stack, task=task, block_px=block_px)
    ensemble = load_checked_ensemble(
        source, checkpoints, tile_px=tile_px, device=device, flips=flips
    )
    blocks = source.blocks(tile=tile_px, overlap=overlap_px)
    owned = shard_blocks(source.shape[0], len(blocks), shards=shards)[shard]
    logger.info(
        "stack %r, shard %d of %d: %d of %d blocks, on %s",
        source.name,
        shard,
        shards,
        sum(map(len, owned.values())),
        source.shape[0] * len(blocks),
        ensemble.device,
    )
    tiling = dict(
        tile_px=tile_px,
        overlap_px=overlap_px,
        margin_px=margin_px,
        batch_size=batch_size,
        sigma_scale=sigma_scale,
    )
    out = Path(out)
    start = time.perf_counter()
    with staged_dir(out) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        s0 = source.levels[0]
        probs = root.create_array(
            "s0",
            shape=(ensemble.n_classes, *s0.shape),
            dtype=np.float32,
            chunks=(ensemble.n_classes, *s0.chunks),
            fill_value=0.0,
            dimension_names=["c", "z", "y", "x"],
        )
        target = probs
        if trust:
            target = WithTrust(
                probs,
                root.create_array(
                    "disagreement",
                    shape=s0.shape,
                    dtype=np.float32,
                    chunks=s0.chunks,
                    fill_value=0.0,
                    dimension_names=["z", "y", "x"],
                ),
            )
        predicted = predict_blocks(
            source,
            ensemble.with_disagreement(trust),
            target,
            owned,
            threads=threads,
            progress=progress,
            **tiling,
        )
        record = {
            "version": __version__,
            "stack": source.name,
            "source": str(source.path),
            "task": source.task,
            "model": model,
            "shard": int(shard),
            "shards": int(shards),
            "prediction": prediction_record(
                ensemble, block=source.block, flips=flips, trust=trust, **tiling
            ),
            "blocks": [
                [z, b.rows.start, b.rows.stop, b.cols.start, b.cols.stop]
                for z, indices in owned.items()
                for b in (blocks[i] for i in indices)
            ],
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
    labels_split_px: float | Mapping[str, float] = 0.0,
    labels_fill_holes: bool = False,
    labels_min_particle_px: int = 0,
    uncertain_above: float = 0.1,
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
    threshold, min_grain_px, whole_plane_max_px, labels_halo_px, labels_split_px,
    labels_fill_holes, labels_min_particle_px
        The labelling, as in :func:`infer_stack`.
    uncertain_above : float
        As in :func:`infer_stack`; used where the shards hold the trust map
        (``infer_shard(trust=True)``).

    Returns
    -------
    summary : dict
        The ``grainflow`` attributes written: those of :func:`infer_stack`,
        with ``seconds`` the sum of the shards' and the merge's wall times and
        ``shards`` the count, blocks and seconds of each shard.
    """
    import zarr

    check_integers(
        labels_halo_px=(labels_halo_px, 0),
        whole_plane_max_px=(whole_plane_max_px, 0),
        labels_min_particle_px=(labels_min_particle_px, 0),
    )
    check_uncertain_above(uncertain_above)
    if not shards:
        raise ValueError("need at least one shard store, got none")
    records, arrays, trusts = [], [], []
    for path in shards:
        if not (Path(path) / "zarr.json").is_file():
            raise FileNotFoundError(f"shard store {path} does not exist; run rule infer_shard")
        group = zarr.open_group(str(path), mode="r")
        if "grainflow_shard" not in group.attrs:
            raise ValueError(f"{path} is not a shard store written by infer_shard")
        records.append(dict(group.attrs["grainflow_shard"]))
        arrays.append(group["s0"])
        trusts.append(group["disagreement"] if "disagreement" in group else None)
    order = np.argsort([r["shard"] for r in records])
    records, arrays = [records[i] for i in order], [arrays[i] for i in order]
    trusts = [trusts[i] for i in order]
    first = records[0]
    same = ("stack", "task", "model", "shards", "prediction")
    for path, record in zip(shards, records):
        differ = [k for k in same if record[k] != first[k]]
        if differ:
            raise ValueError(
                f"shard store {path} differs from the others in {differ}; rerun "
                "the shards of one inference together"
            )
    if [r["shard"] for r in records] != list(range(first["shards"])):
        raise ValueError(
            f"need shards 0 to {first['shards'] - 1}, got {sorted(r['shard'] for r in records)}"
        )
    prediction = first["prediction"]
    source = open_source(stack, task=first["task"], block_px=prediction["block_px"])
    if source.name != first["stack"]:
        raise ValueError(
            f"the shards were predicted from stack {first['stack']!r}, not {source.name!r}"
        )
    n_planes, rows, cols = source.shape
    expected = sorted(
        [z, b.rows.start, b.rows.stop, b.cols.start, b.cols.stop]
        for z in range(n_planes)
        for b in source.blocks(tile=prediction["tile_px"], overlap=prediction["overlap_px"])
    )
    got = sorted(block for r in records for block in r["blocks"])
    if got != expected:
        raise ValueError(
            f"the shards' blocks must cover each of the {len(expected)} blocks "
            f"once, got {len(got)} blocks ({len(set(map(tuple, got)))} distinct)"
        )
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
    logger.info(
        "stack %r: merging %d shard(s) of %d blocks", source.name, len(records), len(expected)
    )
    out = Path(out)
    start = time.perf_counter()
    with staged_dir(out, check=check_ome_zarr) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        n_classes = len(CLASS_NAMES[source.task])
        probs, label_levels = create_output(root, source, n_classes)
        if tuple(arrays[0].shape) != tuple(probs[0].shape):
            raise ValueError(
                f"the shards hold probabilities of shape {arrays[0].shape}, the "
                f"stack needs {probs[0].shape}"
            )
        trust_levels = create_trust(root, source) if prediction.get("trust") else None
        for record, array, disagreement in zip(records, arrays, trusts):
            if trust_levels is not None and disagreement is None:
                raise ValueError(
                    f"shard {record['shard']} has no disagreement array; rerun infer_shard"
                )
            for z, r0, r1, c0, c1 in record["blocks"]:
                probs[0][:, z, r0:r1, c0:c1] = array[:, z, r0:r1, c0:c1]
                if trust_levels is not None:
                    trust_levels[0][z, r0:r1, c0:c1] = disagreement[z, r0:r1, c0:c1]
        summary = finish_store(
            root,
            source,
            probs,
            label_levels,
            predicted=predicted,
            model=first["model"],
            prediction=prediction,
            threshold=threshold,
            min_grain_px=min_grain_px,
            whole_plane_max_px=whole_plane_max_px,
            labels_halo_px=labels_halo_px,
            labels_split_px=labels_split_px,
            labels_fill_holes=labels_fill_holes,
            labels_min_particle_px=labels_min_particle_px,
            trust_levels=trust_levels,
            uncertain_above=uncertain_above,
        )
        seconds = time.perf_counter() - start + sum(r["seconds"] for r in records)
        summary["seconds"] = round(seconds, 3)
        summary["megapixels_per_s"] = round(n_planes * rows * cols / 1e6 / seconds, 3)
        summary["shards"] = [
            {"shard": r["shard"], "blocks": len(r["blocks"]), "seconds": r["seconds"]}
            for r in records
        ]
        root.attrs["grainflow"] = summary
    logger.info(
        "stack %r: %d shard(s) merged in %.1f s -> %s",
        source.name,
        len(records),
        time.perf_counter() - start,
        out,
    )
    return summary
