"""Real diffraction stacks: detector frames prepared, classified by the fold ensemble, tabled, mapped.

:func:`prepare_stack` reads a stack's frames (:func:`grainflow.stacks.frames.open_frames`)
block by block over the leading scan axes, brings each to the networks' training scale
(:func:`grainflow.diffraction.prepare.prepare_frames`) and writes the prepared patterns
and what was done to each frame. :func:`classify_stack` passes them through the
ensemble, abstains below the classifier's threshold and writes the per-frame table and
the crystal-system map (:func:`grainflow.diffraction.scan.write_scan_map`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from grainflow import __version__
from grainflow.diffraction.crystal import DEFAULT_SETTINGS
from grainflow.diffraction.data import CLASSES

__all__ = [
    "PREPARED_ARRAY",
    "prepare_stack",
    "read_threshold",
    "classify_stack",
    "read_prepared",
]

logger = logging.getLogger(__name__)

#: the array of prepared patterns in the store :func:`prepare_stack` writes
PREPARED_ARRAY = "patterns"

# per-frame records of prepare_frames, in the table's order
_RECORDS = (
    "centre_row",
    "centre_col",
    "centre_method",
    "first_order_found_px",
    "first_order_px",
    "scale",
    "bin",
    "padded",
    "intensity_scale",
    "dose_counts",
    "saturated_px",
    "masked_fraction",
)


def _position_columns(lead: Sequence[int]) -> dict[str, np.ndarray]:
    """``frame`` (flat index) and the scan position of every frame (C order)."""
    index = np.unravel_index(np.arange(int(np.prod(lead, dtype=np.int64))), tuple(lead))
    columns = {"frame": np.arange(len(index[0]))}
    if len(lead) == 2:
        columns["scan_row"], columns["scan_col"] = index
    elif len(lead) > 2:
        columns.update({f"scan_{k}": ix for k, ix in enumerate(index)})
    return columns


def prepare_stack(
    source: str | os.PathLike,
    store: str | os.PathLike,
    table: str | os.PathLike,
    *,
    name: str,
    modality: str,
    settings: Mapping | None = None,
    frames_per_block: int = 64,
    beam_stop: bool | None = None,
    scan_step_um: float | None = None,
) -> dict:
    """Prepare every frame of a diffraction stack; write the patterns and the records (the rule's call).

    Parameters
    ----------
    source : path
        The stack's file (any format :func:`~grainflow.stacks.frames.open_frames` reads);
        only read.
    store : path
        Zarr v3 group written atomically: ``patterns`` float32 of shape
        ``(*scan_shape, size, size)`` (a single frame: ``(1, size, size)``), in
        [0, 1] as the simulator stores patterns; attributes ``grainflow``
        (source, calibration, modality, settings).
    table : path
        TSV, one row per frame: ``frame``, the scan position (``scan_row``,
        ``scan_col`` for a 2-D scan) and what the preparation did
        (``centre_row``, ``centre_col``, ``centre_method``,
        ``first_order_found_px``, ``first_order_px``, ``scale``, ``bin``,
        ``padded``, ``intensity_scale``, ``dose_counts``, ``saturated_px``,
        ``masked_fraction``; see :func:`~grainflow.diffraction.prepare.prepare_frame`).
    name : str
        The stack's name (messages, attributes).
    modality : {"spot", "ring"}
    settings : mapping, optional
        The config's ``synthesize.diffraction`` block: the output side
        (``image_size_px`` for spots, ``ring_image_size_px`` for rings) and the
        trained first-order range.
    frames_per_block : int
        Frames read and prepared at a time (whole rows of the first scan axis,
        at least one).
    beam_stop : bool, optional
        As in :func:`~grainflow.diffraction.prepare.find_centre` (None: both tried).
    scan_step_um : float, optional
        The scan step the sheet gives (``pixel_size_um``); refused when the file
        records another (more than 1 % apart).

    Returns
    -------
    dict
        The attributes written.
    """
    with _open_logged(source, name=name) as stack:
        return _prepare(
            stack, store, table, name, modality, settings, frames_per_block, beam_stop, scan_step_um
        )


def _prepare(
    stack, store, table, name, modality, settings, frames_per_block, beam_stop, scan_step_um
) -> dict:
    """:func:`prepare_stack` with the stack's frames open."""
    import zarr

    from grainflow.diffraction.prepare import prepare_frames
    from grainflow.diffraction.simulate import pattern_size
    from grainflow.io.staging import atomic_path, staged_dir
    from grainflow.stacks.calibration import REL_TOLERANCE
    from grainflow.stacks.reader import StackError

    s = {**DEFAULT_SETTINGS, **dict(settings or {})}
    size = pattern_size(s, modality)  # the side the models saw patterns of this kind at
    frames = stack.frames()
    lead = tuple(int(n) for n in frames.shape[:-2])
    per_row = int(np.prod(lead[1:], dtype=np.int64)) if len(lead) > 1 else 1
    block = max(1, int(frames_per_block) // per_row)
    recorded = None if stack.calibration is None else stack.calibration.scan_step_um
    if scan_step_um is not None and recorded is not None:
        if abs(scan_step_um - recorded) > REL_TOLERANCE * min(scan_step_um, recorded):
            raise StackError(
                f"stack {name!r}: the sheet's pixel_size_um ({scan_step_um:.6g} um, the scan "
                f"step of a diffraction stack) differs from the {recorded:.6g} um that "
                f"{stack.path.name} records ({stack.calibration.fields['scan_step_um']}); "
                "leave the sheet's cell empty to use the file's, or correct it"
            )
    step = scan_step_um if scan_step_um is not None else recorded
    logger.info(
        "stack %r: %d frames of %s px (scan %s) from %s, %d frame(s) per block",
        name,
        int(np.prod(lead)),
        stack.frame_shape,
        lead,
        stack.path.name,
        block * per_row,
    )
    attrs = {
        "version": __version__,
        "stack": name,
        "source": stack.describe(),
        "is_scan": stack.is_scan,
        "scan_step_um": step,
        "scan_step_from": "sheet" if scan_step_um is not None else ("file" if step else None),
        "modality": modality,
        "pattern_px": size,
        "trained_first_order_px": list(
            s["first_order_px" if modality == "spot" else "ring_first_order_px"]
        ),
        "beam_stop": beam_stop,
        "frames_per_block": block * per_row,
    }
    with staged_dir(Path(store)) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        out = root.create_array(
            PREPARED_ARRAY,
            shape=(*lead, size, size),
            dtype=np.float32,
            chunks=(block, *lead[1:], size, size),
        )
        try:
            _, records = prepare_frames(
                frames,
                modality=modality,
                out=out,
                block=block,
                settings=s,
                beam_stop=beam_stop,
            )
        except ValueError as exc:
            raise StackError(
                f"stack {name!r}: {stack.path}: cannot prepare its frames: {exc}"
            ) from exc
        root.attrs["grainflow"] = attrs
    columns = _position_columns(lead)
    columns.update({k: np.asarray(records[k]).ravel() for k in _RECORDS})
    frame_table = pd.DataFrame(columns)
    with atomic_path(table) as tmp:
        frame_table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    found = np.isfinite(frame_table["first_order_found_px"])
    logger.info(
        "stack %r: first order found in %d of %d frames; centre by the direct beam in %d",
        name,
        int(found.sum()),
        len(frame_table),
        int((frame_table["centre_method"] == "direct_beam").sum()),
    )
    return attrs


def _open_logged(source, *, name: str):
    """:func:`~grainflow.stacks.frames.open_frames`, logging any note the reader made."""
    from grainflow.stacks.frames import open_frames

    stack = open_frames(source, name=name)
    if stack.calibration is None or stack.calibration.reciprocal_px_inv_A is None:
        logger.info(
            "note: stack %r: %s records no reciprocal-space pixel size; frames are scaled by "
            "their first order alone",
            name,
            stack.path.name,
        )
    return stack


def read_prepared(store: str | os.PathLike):
    """The prepared patterns (a read-only Zarr array) and the store's ``grainflow`` attributes."""
    import zarr

    root = zarr.open_group(str(store), mode="r")
    return root[PREPARED_ARRAY], dict(root.attrs["grainflow"])


def read_threshold(abstention: str | os.PathLike | None) -> float:
    """The pooled (``all``) confidence threshold of a classifier's abstention.tsv; NaN without one."""
    if not abstention:
        return math.nan
    t = pd.read_csv(abstention, sep="\t", dtype={"fold": str})
    pooled = t[t["fold"] == "all"]
    if pooled.empty:
        raise ValueError(f"{abstention} has no row 'all' (the folds' pooled threshold)")
    return float(pooled["threshold"].iloc[0])


def classify_stack(
    store: str | os.PathLike,
    prepared: str | os.PathLike,
    checkpoints: Sequence[str | os.PathLike],
    table: str | os.PathLike,
    map_store: str | os.PathLike,
    *,
    threshold: float = math.nan,
    batch_size: int = 256,
    device: str = "cpu",
) -> dict:
    """Classify a stack's prepared patterns; the per-frame table and the map (the rule's call).

    Parameters
    ----------
    store, prepared : path
        What :func:`prepare_stack` wrote: the patterns and the per-frame records.
    checkpoints : sequence of path
        The fold ensemble's checkpoints.
    table : path
        TSV written atomically: the records, then ``p_cubic``,
        ``p_hexagonal``, ``p_orthorhombic`` (the ensemble's mean
        probabilities), ``predicted`` (the arg-max system, empty where
        abstained), ``confidence`` (its probability), ``abstained``
        (confidence below ``threshold``) and ``threshold``.
    map_store : path
        OME-Zarr map (:func:`~grainflow.diffraction.scan.write_scan_map`) of
        shape (sy, sx): a 2-D scan's own; a stack of frames (or one frame) is a
        map of one row. Abstained positions have the label 0.
    threshold : float
        Keep a prediction when its confidence is at least this (the
        classifier's validation threshold); NaN: never abstain.

    Returns
    -------
    dict
        The map's ``grainflow`` attributes.
    """
    from grainflow.checkpoint import sha256_file
    from grainflow.diffraction.scan import classify_scan, write_scan_map
    from grainflow.io.staging import atomic_path

    patterns, attrs = read_prepared(store)
    records = pd.read_csv(prepared, sep="\t", keep_default_na=False, na_values=["", "nan", "NaN"])
    lead = tuple(int(n) for n in patterns.shape[:-2])
    if len(records) != int(np.prod(lead)):
        raise ValueError(f"{prepared} has {len(records)} rows but {store} holds {lead} patterns")
    probs = classify_scan(
        patterns,
        checkpoints,
        modality=attrs["modality"],
        size=int(attrs["pattern_px"]),
        log_scale=False,  # prepare_frame's patterns are log-scaled already
        batch_size=batch_size,
        device=device,
    )
    flat = probs.reshape(len(CLASSES), -1)
    confidence = flat.max(axis=0)
    predicted = np.asarray(CLASSES)[flat.argmax(axis=0)]
    abstained = confidence < threshold if math.isfinite(threshold) else np.zeros(len(flat.T), bool)
    out = records.assign(
        **{f"p_{c}": flat[k] for k, c in enumerate(CLASSES)},
        predicted=np.where(abstained, "", predicted),
        confidence=confidence,
        abstained=abstained,
        threshold=threshold,
    )
    with atomic_path(table) as tmp:
        out.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    grid = probs.reshape(len(CLASSES), *lead) if len(lead) == 2 else flat[:, None, :]
    summary = write_scan_map(
        map_store,
        grid,
        scan_step_um=attrs.get("scan_step_um") if len(lead) == 2 else None,
        name=attrs["stack"],
        abstained=abstained.reshape(grid.shape[1:]),
        attrs={
            "source": attrs["source"],
            "is_scan": len(lead) == 2,
            "modality": attrs["modality"],
            "pattern_px": attrs["pattern_px"],
            "threshold": None if not math.isfinite(threshold) else threshold,
            "models": len(checkpoints),
            "checkpoints": {str(p): sha256_file(p) for p in checkpoints},
        },
    )
    logger.info(
        "stack %r: %s; %d of %d frames abstained (threshold %s)",
        attrs["stack"],
        summary["counts"],
        int(abstained.sum()),
        len(out),
        threshold,
    )
    return summary
