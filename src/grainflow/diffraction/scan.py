"""Crystal-system maps of diffraction scans (4D-STEM, diffraction mapping), written as OME-Zarr.

A *scan* is a Zarr array of patterns with leading scan axes, e.g. ``(sy, sx, H, W)``: one
diffraction pattern per probe position. :func:`classify_scan` classifies each pattern on
its own, :func:`write_scan_map` writes the map, :func:`scan_map` does both for the rule.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from grainflow import __version__
from grainflow.checkpoint import load_checkpoint, model_from_checkpoint, sha256_file
from grainflow.diffraction.crystal import SYSTEMS, random_crystal
from grainflow.diffraction.data import CLASSES
from grainflow.diffraction.evaluate import predict_proba
from grainflow.diffraction.representation import (
    checkpoint_form_px,
    checkpoint_kinds,
    checkpoint_representation,
    represent,
)
from grainflow.diffraction.simulate import (
    _image_params,
    _session_params,
    _settings,
    detector_counts,
    log_normalize,
    pattern_size,
    ring_intensity,
    spot_intensity,
)
from grainflow.io.ome_zarr import check_ome_zarr, ngff_writer
from grainflow.io.staging import staged_dir
from grainflow.seeds import as_rng
from grainflow.synth.tessellation import polycrystal

__all__ = [
    "LABEL_NAME",
    "synthetic_scan",
    "write_scan",
    "read_scan",
    "read_scan_truth",
    "prepare_patterns",
    "classify_scan",
    "write_scan_map",
    "read_scan_map",
    "scan_map",
]

LOG = logging.getLogger(__name__)
LABEL_NAME = "crystal_system"


def synthetic_scan(
    settings: Mapping,
    *,
    scan_shape: tuple[int, int] = (12, 12),
    grain_diameter_px: float = 5.0,
    modality: str = "spot",
    rng=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """A small scan over a polycrystal: raw detector counts and the truth.

    Each grain of a Voronoi tessellation of the scan area is one crystal of a
    random system in one orientation; every probe position gets that grain's
    pattern with its own noise (one session: camera length, dose, beam stop).

    Parameters
    ----------
    settings : mapping
        The ``synthesize.diffraction`` block (ranges of crystals and sessions).
    scan_shape : (sy, sx)
        Probe positions.
    grain_diameter_px : float
        Mean grain diameter in probe positions.
    modality : {"spot", "ring"}
    rng : int or Generator

    Returns
    -------
    counts : ndarray of shape (sy, sx, H, W), float32
        Detector counts (not log-scaled).
    truth : ndarray of shape (sy, sx), uint8
        Crystal system + 1 (1 cubic, 2 hexagonal, 3 orthorhombic).
    grains : ndarray of shape (sy, sx), uint32
    info : dict
        Per-grain crystals (Bravais lattice, lattice parameters) and the session.
    """

    rng = as_rng(rng)
    s = _settings(settings)
    size = pattern_size(s, modality)
    grains = polycrystal(tuple(scan_shape), grain_diameter_px=grain_diameter_px, rng=rng)
    session = _session_params(modality, s, rng)
    counts = np.zeros((*scan_shape, size, size), dtype=np.float32)
    truth = np.zeros(scan_shape, dtype=np.uint8)
    crystals = {}
    for g in range(1, int(grains.max()) + 1):
        system = SYSTEMS[int(rng.integers(len(SYSTEMS)))]
        crystal = random_crystal(system, rng=rng, settings=s)
        params = {**session, **_image_params(crystal, modality, s, rng)}
        if modality == "spot":
            diffracted, _ = spot_intensity(crystal, params, size=size, rng=rng)
        else:
            diffracted, _ = ring_intensity(crystal, params, size=size)
        where = np.argwhere(grains == g)
        for r, c in where:
            counts[r, c] = detector_counts(diffracted, params, rng=rng)
        truth[grains == g] = SYSTEMS.index(system) + 1
        crystals[str(g)] = {
            "bravais": crystal.bravais,
            "a_A": crystal.a,
            "b_A": crystal.b,
            "c_A": crystal.c,
            "zone_family": params.get("zone_family"),
        }
    return counts, truth, grains, {"session": session, "grains": crystals}


def write_scan(
    path: str | os.PathLike,
    counts: np.ndarray,
    *,
    truth: np.ndarray | None = None,
    attrs: Mapping | None = None,
) -> Path:
    """Write a scan as a Zarr v3 group: ``patterns`` (sy, sx, H, W) and ``truth``; atomically."""
    import zarr

    out = Path(path)
    with staged_dir(out) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        arr = root.create_array(
            "patterns", shape=counts.shape, dtype=counts.dtype, chunks=(1, *counts.shape[1:])
        )
        arr[...] = counts
        if truth is not None:
            t = root.create_array("truth", shape=truth.shape, dtype=truth.dtype, chunks=truth.shape)
            t[...] = truth
        root.attrs["grainflow"] = {
            "version": __version__,
            "classes": list(SYSTEMS),
            "truth": "crystal system + 1" if truth is not None else None,
            **dict(attrs or {}),
        }
    return out


def read_scan(path: str | os.PathLike, *, array: str = "patterns"):
    """Open a scan's pattern array read-only (a Zarr array, or a group holding ``array``)."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scan {path} does not exist")
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Group):
        if array not in node:
            raise ValueError(f"scan {path} has no array {array!r}; it holds {sorted(node.keys())}")
        node = node[array]
    if node.ndim < 3:
        raise ValueError(
            f"scan {path} must have scan axes and two pattern axes, got shape {node.shape}"
        )
    return node


def read_scan_truth(path: str | os.PathLike) -> np.ndarray | None:
    """The ``truth`` map (crystal system + 1, shape (sy, sx)) of a scan group, or None."""
    import zarr

    root = zarr.open(str(path), mode="r")
    if isinstance(root, zarr.Group) and "truth" in root:
        return np.asarray(root["truth"])
    return None


def prepare_patterns(patterns: np.ndarray, *, size: int, log_scale: bool = True) -> np.ndarray:
    """Patterns (N, H, W) as the models saw them in training: (N, size, size) float32 in [0, 1].

    ``log_scale``: ``log(1 + I)`` then min–max per pattern (raw counts);
    otherwise min–max only (patterns already log-scaled). Patterns of
    another side are resized (bilinear, anti-aliased) to ``size``; their
    centre must be the direct beam.
    """
    from skimage.transform import resize

    patterns = np.asarray(patterns, dtype=np.float64)
    if patterns.ndim != 3:
        raise ValueError(f"patterns must be (N, H, W), got {patterns.shape=}")
    out = np.empty((len(patterns), size, size), dtype=np.float32)
    for i, p in enumerate(patterns):
        if not np.all(np.isfinite(p)):
            raise ValueError(f"pattern {i} holds NaN or infinite values")
        if p.shape != (size, size):
            p = resize(p, (size, size), order=1, anti_aliasing=True, preserve_range=True)
        if log_scale:
            out[i] = log_normalize(p)
        else:
            lo, hi = p.min(), p.max()
            out[i] = (p - lo) / (hi - lo) if hi > lo else 0.0
    return out


def classify_scan(
    scan,
    checkpoints: Sequence[str | os.PathLike],
    *,
    modality: str = "spot",
    size: int = 64,
    log_scale: bool = True,
    batch_size: int = 256,
    device: str = "cpu",
) -> np.ndarray:
    """Class probabilities of every pattern of a scan, averaged over ``checkpoints``.

    Parameters
    ----------
    scan : array-like of shape (*scan_axes, H, W)
        A Zarr array (read block by block along its first axis) or an ndarray.
    checkpoints : sequence of path
        Classifier checkpoints of the crystal systems (e.g. the folds' best.pt).
    modality : {"spot", "ring"}
        What the scan recorded: zone-axis spot patterns or ring patterns.
    size : int
        Pattern side the models were trained on.
    log_scale : bool
        Whether the scan holds raw intensities (see :func:`prepare_patterns`).

    Returns
    -------
    probs : ndarray of shape (3, *scan_axes), float32

    Notes
    -----
    Raw intensities are log-scaled and normalised exactly as the simulator does
    (:func:`grainflow.diffraction.simulate.log_normalize`), resized to the models'
    input side if needed, put in the form each model was trained on
    (:func:`grainflow.diffraction.representation.represent`) and passed through the
    ensemble (mean of the models' probabilities). The scan is streamed block by block
    along its first axis; only one block of patterns is in memory.
    """

    if not checkpoints:
        raise ValueError("classify_scan needs at least one checkpoint")
    if modality not in ("spot", "ring"):
        raise ValueError(f"modality must be 'spot' or 'ring', got {modality=}")
    models = []
    for path in checkpoints:
        ckpt = load_checkpoint(path)
        classes = ckpt["extra"].get("classes", list(CLASSES))
        if list(classes) != list(CLASSES):
            raise ValueError(f"{path} predicts {classes}, not the crystal systems {CLASSES}")
        if modality not in checkpoint_kinds(ckpt):
            raise ValueError(
                f"{path} reads {list(checkpoint_kinds(ckpt))} patterns, not {modality!r} ones; "
                "map this scan with another classifier (diffraction.scan.arch)"
            )
        models.append(
            (model_from_checkpoint(ckpt), checkpoint_representation(ckpt), checkpoint_form_px(ckpt))
        )
    shape = tuple(scan.shape)
    if len(shape) < 3:
        raise ValueError(f"a scan has at least one scan axis and two pattern axes, got {shape}")
    lead = shape[:-2]
    per_row = int(np.prod(lead[1:], dtype=np.int64)) if len(lead) > 1 else 1
    rows_per_block = max(1, batch_size // per_row)
    probs = np.zeros((len(CLASSES), *lead), dtype=np.float32)
    for start in range(0, lead[0], rows_per_block):
        block = np.asarray(scan[start : start + rows_per_block])
        flat = prepare_patterns(block.reshape(-1, *shape[-2:]), size=size, log_scale=log_scale)
        kinds = [modality] * len(flat)
        p = np.mean(
            [
                predict_proba(
                    m, represent(flat, kinds, rep, px=px), batch_size=batch_size, device=device
                )
                for m, rep, px in models
            ],
            axis=0,
        )
        probs[:, start : start + len(block)] = p.T.reshape(len(CLASSES), len(block), *lead[1:])
    return probs


def write_scan_map(
    path: str | os.PathLike,
    probs: np.ndarray,
    *,
    scan_step_um: float | None = None,
    name: str = "scan",
    attrs: Mapping | None = None,
    abstained: np.ndarray | None = None,
) -> dict:
    """Write probabilities (3, sy, sx) and the arg-max map as OME-Zarr, atomically.

    ``abstained`` (bool, shape (sy, sx)) marks positions whose label is 0
    (none): the classifier abstained there.

    Returns the ``grainflow`` attributes written (classes, counts per class,
    mean confidence, ...).

    Notes
    -----
    The map is an OME-Zarr (NGFF 0.5, Zarr v3) store::

        {name}.ome.zarr/
            zarr.json        ome: multiscales (axes c, y, x; y, x scale = scan step),
                             grainflow: classes, checkpoints (SHA-256), source, version
            s0               float32 (3, sy, sx): probability of cubic, hexagonal, orthorhombic
            labels/crystal_system/
                s0           uint8 (sy, sx): 1 cubic, 2 hexagonal, 3 orthorhombic (0 = none)

    Two-dimensional scans only (``(sy, sx, H, W)``); a line scan ``(n, H, W)`` is a
    map of one row.
    """
    import zarr

    fmt, write_multiscales_metadata, write_label_metadata = ngff_writer()

    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim == 2:  # a line scan: one row
        probs = probs[:, None, :]
    if probs.ndim != 3 or probs.shape[0] != len(CLASSES):
        raise ValueError(f"probs must be ({len(CLASSES)}, sy, sx), got {probs.shape}")
    labels = (probs.argmax(axis=0) + 1).astype(np.uint8)
    if abstained is not None:
        abstained = np.asarray(abstained, dtype=bool).reshape(labels.shape)
        labels[abstained] = 0
    step = 1.0 if scan_step_um is None or math.isnan(scan_step_um) else float(scan_step_um)
    unit = {} if scan_step_um is None else {"unit": "micrometer"}
    out = Path(path)
    summary = {
        "version": __version__,
        "classes": list(CLASSES),
        "image": "probability of each crystal system (channel axis c)",
        "labels": {LABEL_NAME: "arg-max crystal system + 1 (1 cubic, 2 hexagonal, 3 orthorhombic)"},
        "counts": {c: int((labels == k + 1).sum()) for k, c in enumerate(CLASSES)},
        "mean_confidence": float(probs.max(axis=0).mean()),
        "abstained": int((labels == 0).sum()),
        "scan_step_um": scan_step_um,
        **dict(attrs or {}),
    }
    with staged_dir(out, check=check_ome_zarr) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        image = root.create_array(
            "s0",
            shape=probs.shape,
            dtype=np.float32,
            chunks=probs.shape,
            dimension_names=["c", "y", "x"],
        )
        image[...] = probs
        write_multiscales_metadata(
            root,
            datasets=[
                {
                    "path": "s0",
                    "coordinateTransformations": [{"type": "scale", "scale": [1.0, step, step]}],
                }
            ],
            fmt=fmt,
            axes=[
                {"name": "c", "type": "channel"},
                {"name": "y", "type": "space", **unit},
                {"name": "x", "type": "space", **unit},
            ],
            name=name,
        )
        label_root = root.create_group("labels")
        group = label_root.create_group(LABEL_NAME)
        arr = group.create_array(
            "s0",
            shape=labels.shape,
            dtype=np.uint8,
            chunks=labels.shape,
            dimension_names=["y", "x"],
        )
        arr[...] = labels
        write_multiscales_metadata(
            group,
            datasets=[
                {
                    "path": "s0",
                    "coordinateTransformations": [{"type": "scale", "scale": [step, step]}],
                }
            ],
            fmt=fmt,
            axes=[{"name": "y", "type": "space", **unit}, {"name": "x", "type": "space", **unit}],
            name=LABEL_NAME,
        )
        colours = [(230, 85, 13), (49, 130, 189), (49, 163, 84)]
        # through the parent's handle: it adds the name to the parent's label list
        write_label_metadata(
            label_root,
            LABEL_NAME,
            fmt=fmt,
            source={"image": "../../"},
            colors=[{"label-value": k + 1, "rgba": [*rgb, 255]} for k, rgb in enumerate(colours)],
            properties=[{"label-value": k + 1, "crystal_system": c} for k, c in enumerate(CLASSES)],
        )
        label_root.attrs["ome"] = {**label_root.attrs["ome"], "version": fmt.version}
        root.attrs["grainflow"] = summary
    return summary


def read_scan_map(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
    """Probabilities (3, sy, sx), label map (sy, sx) and ``grainflow`` attributes of a scan map."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    return (
        np.asarray(root["s0"]),
        np.asarray(root["labels"][LABEL_NAME]["s0"]),
        dict(root.attrs["grainflow"]),
    )


def scan_map(
    scan: str | os.PathLike,
    out: str | os.PathLike,
    checkpoints: Sequence[str | os.PathLike],
    *,
    array: str = "patterns",
    modality: str = "spot",
    size: int = 64,
    log_scale: bool = True,
    scan_step_um: float | None = None,
    device: str = "cpu",
) -> dict:
    """Classify the scan ``scan`` (a Zarr store) and write the map ``out`` (the rule's one call).

    When the scan's group holds a ``truth`` array (crystal system + 1), the
    agreement of the map with it is stored in the attributes.
    """

    patterns = read_scan(scan, array=array)
    probs = classify_scan(
        patterns, checkpoints, modality=modality, size=size, log_scale=log_scale, device=device
    )
    attrs = {
        "source": str(scan),
        "array": array,
        "modality": modality,
        "log_scale": log_scale,
        "pattern_px": size,
        "models": len(checkpoints),
        "checkpoints": {str(p): sha256_file(p) for p in checkpoints},
    }
    truth = read_scan_truth(scan)
    if truth is not None and truth.shape == probs.shape[1:]:
        attrs["agreement_with_truth"] = float(np.mean(truth == probs.argmax(axis=0) + 1))
    return write_scan_map(
        out, probs, scan_step_um=scan_step_um, name=Path(str(out)).stem, attrs=attrs
    )
