"""Scores of one image, of a fold and across folds, for networks and the classical baseline."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from grainflow import __version__
from grainflow.checkpoint import load_checkpoint, model_from_checkpoint
from grainflow.evaluation.baseline import apply_baseline, best_params, grid_scores
from grainflow.evaluation.metrics import (
    BoundaryCounts,
    ObjectCounts,
    PixelCounts,
    boundary_counts,
    instance_scores,
    object_counts,
    pixel_counts,
)
from grainflow.evaluation.metrology import area_fraction, planimetric
from grainflow.inference.labels import labels_from_probability
from grainflow.inference.predict import foreground, predict_probabilities
from grainflow.io.hdf5 import Sample, read_specimen
from grainflow.io.staging import atomic_path
from grainflow.seeds import as_rng
from grainflow.splits import manifest_sha256, read_manifest
from grainflow.tasks import SEGMENTATION, check_task, task_info

__all__ = [
    "META",
    "COUNTS",
    "COUNT_SCORES",
    "MEAN_SCORES",
    "SCORES",
    "LABELS",
    "scores_from_counts",
    "evaluate_segmentation",
    "evaluate_samples",
    "summarize",
    "cross_validation_table",
    "read_metric_tables",
    "aggregate_metrics",
    "headline_scores",
    "write_tsv",
    "select_fit_images",
    "run_baseline_fold",
    "held_out_originals",
    "run_model_fold",
]


META = ("task", "model", "fold", "image_id", "specimen", "session", "modality")

_PIXEL = ("px_tp", "px_fp", "px_fn", "px_tn")

_BOUNDARY = (
    "boundary_pred_matched",
    "boundary_pred_total",
    "boundary_true_matched",
    "boundary_true_total",
)

_OBJECTS = ("n_true", "n_pred", "n_matched")

_SPLITS = ("n_split", "n_merged")

#: count columns of each task (they add over images)
COUNTS = {
    "grains": (*_BOUNDARY, *_PIXEL, *_OBJECTS, *_SPLITS),
    "phases": (*_PIXEL, *_OBJECTS),
}
COUNTS["nanoparticles"] = COUNTS["phases"]

#: scores computed from (summed) counts
COUNT_SCORES = {
    "grains": (
        "boundary_f1",
        "boundary_precision",
        "boundary_recall",
        "pixel_iou",
        "pixel_dice",
        "grain_precision",
        "grain_recall",
        "grain_f1",
        "over_segmentation",
        "under_segmentation",
    ),
    "phases": (
        "iou",
        "dice",
        "precision",
        "recall",
        "object_precision",
        "object_recall",
        "object_f1",
    ),
}
COUNT_SCORES["nanoparticles"] = COUNT_SCORES["phases"]

#: per-image scores that are averaged over images
MEAN_SCORES = {
    "grains": (
        "ari",
        "vi_split",
        "vi_merge",
        "vi",
        "grain_size_G_true",
        "grain_size_G_pred",
        "grain_size_error_G",
        "grain_size_abs_error_G",
    ),
    "phases": (
        "area_fraction_true",
        "area_fraction_pred",
        "area_fraction_error",
        "area_fraction_abs_error",
    ),
}
MEAN_SCORES["nanoparticles"] = MEAN_SCORES["phases"]

#: all score columns of each task, in table order
SCORES = {t: (*COUNT_SCORES[t], *MEAN_SCORES[t]) for t in SEGMENTATION}

#: axis labels (with units) of the scores shown in figures
LABELS = {
    "boundary_f1": "boundary F1",
    "pixel_iou": "boundary-pixel IoU",
    "ari": "adjusted Rand index",
    "vi_split": "VI, false splits (bits)",
    "vi_merge": "VI, false merges (bits)",
    "grain_f1": "matched-grain F1 (IoU > 0.5)",
    "grain_size_error_G": "grain size error (ASTM G, pred - true)",
    "iou": "particle-phase IoU",
    "dice": "particle-phase Dice",
    "object_f1": "particle F1 (IoU >= 0.5)",
    "object_recall": "particle recall (IoU >= 0.5)",
    "area_fraction_error": "area-fraction error (pred - true)",
}


def _need(labels: Mapping, keys: Sequence[str], what: str) -> None:
    missing = [k for k in keys if k not in labels]
    if missing:
        raise ValueError(f"{what} label dict lacks {missing}; it has {sorted(labels)}")


def scores_from_counts(task: str, counts: Mapping[str, float]) -> dict[str, float]:
    """Count-based scores of ``task`` from (possibly summed) counts.

    Parameters
    ----------
    task : {"grains", "phases", "nanoparticles"}
    counts : mapping
        At least the columns :data:`COUNTS` ``[task]``.

    Returns
    -------
    scores : dict
        The columns :data:`COUNT_SCORES` ``[task]``.
    """
    check_task(task)
    c = {k: int(counts[k]) for k in COUNTS[task]}
    px = PixelCounts.from_binary(tp=c["px_tp"], fp=c["px_fp"], fn=c["px_fn"], tn=c["px_tn"])
    iou, dice = float(px.iou()[1]), float(px.dice()[1])
    if task == "grains":
        b = BoundaryCounts(*(c[k] for k in _BOUNDARY))
        o = ObjectCounts(*(c[k] for k in (*_OBJECTS, *_SPLITS)))
        return {
            "boundary_f1": b.f1,
            "boundary_precision": b.precision,
            "boundary_recall": b.recall,
            "pixel_iou": iou,
            "pixel_dice": dice,
            "grain_precision": o.precision,
            "grain_recall": o.recall,
            "grain_f1": o.f1,
            "over_segmentation": o.over_segmentation,
            "under_segmentation": o.under_segmentation,
        }
    o = ObjectCounts(*(c[k] for k in _OBJECTS))
    return {
        "iou": iou,
        "dice": dice,
        "precision": float(px.precision()[1]),
        "recall": float(px.recall()[1]),
        "object_precision": o.precision,
        "object_recall": o.recall,
        "object_f1": o.f1,
    }


def evaluate_segmentation(
    task: str,
    true: Mapping[str, np.ndarray],
    pred: Mapping[str, np.ndarray],
    *,
    tolerance_px: float = 2.0,
    iou_threshold: float = 0.5,
    pixel_size_um: float = 1.0,
) -> dict[str, float]:
    """Counts and scores of one predicted label dict against the truth.

    Parameters
    ----------
    task : {"grains", "phases", "nanoparticles"}
    true, pred : mapping of str -> ndarray of shape (M, N)
        Label dicts with the synthetic labels' keys: grains -> ``boundaries``
        (0/1) and ``grain_ids`` (1..n); phases -> ``phase`` (0/1) and
        ``particle_ids`` (0 = matrix).
    tolerance_px : float
        Boundary-F1 distance tolerance, pixels.
    iou_threshold : float
        IoU for a matched grain (IoU > threshold) or particle (IoU >= threshold).
    pixel_size_um : float
        Pixel size for the ASTM grain size numbers (their difference does not
        depend on it).

    Returns
    -------
    row : dict
        :data:`COUNTS` ``[task]`` and :data:`SCORES` ``[task]``.
    """
    check_task(task)
    if task == "grains":
        _need(true, ("boundaries", "grain_ids"), "true")
        _need(pred, ("boundaries", "grain_ids"), "predicted")
        b = boundary_counts(true["boundaries"], pred["boundaries"], tolerance_px=tolerance_px)
        px = pixel_counts(true["boundaries"] > 0, pred["boundaries"] > 0)
        inst = instance_scores(true["grain_ids"], pred["grain_ids"], iou_threshold=iou_threshold)
        g_true = planimetric(true["grain_ids"], pixel_size_um=pixel_size_um).g
        g_pred = planimetric(pred["grain_ids"], pixel_size_um=pixel_size_um).g
        counts = {
            **{f"boundary_{k}": v for k, v in b.as_dict().items()},
            **{f"px_{k}": v for k, v in px.as_dict().items()},
            **inst.counts.as_dict(),
        }
        extra = {
            "ari": inst.ari,
            "vi_split": inst.vi_split,
            "vi_merge": inst.vi_merge,
            "vi": inst.vi,
            "grain_size_G_true": g_true,
            "grain_size_G_pred": g_pred,
            "grain_size_error_G": g_pred - g_true,
            "grain_size_abs_error_G": abs(g_pred - g_true),
        }
    else:
        _need(true, ("phase", "particle_ids"), "true")
        _need(pred, ("phase", "particle_ids"), "predicted")
        px = pixel_counts(true["phase"] > 0, pred["phase"] > 0)
        obj = object_counts(
            true["particle_ids"], pred["particle_ids"], iou_threshold=iou_threshold, background=0
        )
        counts = {
            **{f"px_{k}": v for k, v in px.as_dict().items()},
            "n_true": obj.n_true,
            "n_pred": obj.n_pred,
            "n_matched": obj.n_matched,
        }
        af_true, af_pred = area_fraction(true["phase"]), area_fraction(pred["phase"])
        extra = {
            "area_fraction_true": af_true,
            "area_fraction_pred": af_pred,
            "area_fraction_error": af_pred - af_true,
            "area_fraction_abs_error": abs(af_pred - af_true),
        }
    return {**counts, **scores_from_counts(task, counts), **extra}


def evaluate_samples(
    task: str,
    samples: Sequence[Sample],
    predictions: Sequence[Mapping[str, np.ndarray]],
    *,
    model: str,
    fold: int,
    **options,
) -> pd.DataFrame:
    """Per-image table of predictions for ``samples`` (the rows of a fold file).

    Parameters
    ----------
    task : {"grains", "phases", "nanoparticles"}
    samples : sequence of Sample
        Held-out images with their true labels.
    predictions : sequence of dict
        One predicted label dict per sample.
    model : str
        Name of the model (``"classical"``, an architecture name, ...).
    fold : int
    **options
        Passed to :func:`evaluate_segmentation`.

    Returns
    -------
    DataFrame
        Columns :data:`META`, :data:`COUNTS` ``[task]``, :data:`SCORES` ``[task]``.
    """
    if len(samples) != len(predictions):
        raise ValueError(
            f"need one prediction per sample, got {len(samples)} and {len(predictions)}"
        )
    rows = []
    for s, pred in zip(samples, predictions):
        meta = {
            "task": task,
            "model": model,
            "fold": int(fold),
            "image_id": s.image_id,
            "specimen": s.specimen,
            "session": s.session,
            "modality": s.modality,
        }
        rows.append({**meta, **evaluate_segmentation(task, s.labels, pred, **options)})
    return pd.DataFrame(rows, columns=[*META, *COUNTS[task], *SCORES[task]])


def _group_row(task: str, df: pd.DataFrame) -> dict:
    counts = df[list(COUNTS[task])].sum()
    means = df[list(MEAN_SCORES[task])].mean()
    return {"n_images": len(df), **scores_from_counts(task, counts), **means.to_dict()}


def summarize(per_image: pd.DataFrame, *, task: str, by: Sequence[str]) -> pd.DataFrame:
    """Scores per group: counts summed, then scored once; other scores averaged.

    Parameters
    ----------
    per_image : DataFrame
        Per-image rows as written by :func:`evaluate_samples`.
    task : {"grains", "phases", "nanoparticles"}
    by : sequence of str
        Grouping columns, e.g. ``["task", "model", "specimen"]``.

    Returns
    -------
    DataFrame
        Columns ``by``, ``n_images`` and :data:`SCORES` ``[task]``; one row per group.
    """
    check_task(task)
    missing = [c for c in (*by, *COUNTS[task], *MEAN_SCORES[task]) if c not in per_image.columns]
    if missing:
        raise ValueError(f"per-image table lacks columns {missing}")
    if per_image.empty:
        raise ValueError("per-image table has no rows")
    rows = []
    for key, df in per_image.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), **_group_row(task, df)})
    return pd.DataFrame(rows, columns=[*by, "n_images", *SCORES[task]])


def cross_validation_table(per_image: pd.DataFrame, *, task: str) -> pd.DataFrame:
    """Cross-validated scores: one row per fold, the mean and std across folds, and all pooled.

    Parameters
    ----------
    per_image : DataFrame
        Per-image rows of all folds of one model (:func:`evaluate_samples`).
    task : {"grains", "phases", "nanoparticles"}

    Returns
    -------
    DataFrame
        Columns ``task, model, fold, n_images`` and :data:`SCORES` ``[task]``.
        ``fold`` holds the fold number, ``"mean"`` and ``"std"`` (sample
        standard deviation of the per-fold scores) and ``"pooled"`` (counts of
        all held-out images summed, scored once).
    """
    folds = summarize(per_image, task=task, by=["task", "model", "fold"])
    if folds[["task", "model"]].drop_duplicates().shape[0] != 1:
        raise ValueError("cross_validation_table needs the rows of one task and one model")
    scores = list(SCORES[task])
    head = {"task": folds["task"].iloc[0], "model": folds["model"].iloc[0]}
    mean = {
        **head,
        "fold": "mean",
        "n_images": int(folds["n_images"].sum()),
        **folds[scores].mean().to_dict(),
    }
    std = {
        **head,
        "fold": "std",
        "n_images": int(folds["n_images"].sum()),
        **folds[scores].std(ddof=1).to_dict(),
    }
    pooled = {**head, "fold": "pooled", **_group_row(task, per_image)}
    out = pd.concat([folds, pd.DataFrame([mean, std, pooled])], ignore_index=True)
    out["fold"] = out["fold"].astype(str)
    return out[["task", "model", "fold", "n_images", *scores]]


def read_metric_tables(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate per-image fold tables (TSV)."""
    if not paths:
        raise ValueError("no metric tables to read")
    frames = [
        pd.read_csv(
            p,
            sep="\t",
            dtype={"image_id": str, "specimen": str, "session": str},
            keep_default_na=False,
            na_values=["NaN", "nan", ""],
        )
        for p in paths
    ]
    return pd.concat(frames, ignore_index=True)


def aggregate_metrics(
    paths: Sequence[str | os.PathLike], *, task: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the fold tables of one model and aggregate them.

    Returns
    -------
    cv : DataFrame
        :func:`cross_validation_table`.
    specimens : DataFrame
        :func:`summarize` by ``task, model, fold, specimen``.
    """
    per_image = read_metric_tables(paths)
    cv = cross_validation_table(per_image, task=task)
    specimens = summarize(per_image, task=task, by=["task", "model", "fold", "specimen"])
    return cv, specimens


def headline_scores(paths: Sequence[str | os.PathLike], *, task: str) -> dict:
    """The main score of a model across folds, formatted for a caption.

    Returns
    -------
    dict
        ``model, n_images, n_folds, metric`` (its label), ``mean``, ``std``
        (across folds, 3 decimals) and ``pooled`` (all held-out images).
    """
    cv = cross_validation_table(read_metric_tables(paths), task=task)
    metric = task_info(task).score
    row = cv.set_index("fold")[metric]
    n_folds = int(np.count_nonzero(~cv["fold"].isin(["mean", "std", "pooled"])))
    fmt = lambda v: "NaN" if pd.isna(v) else f"{v:.3f}"  # noqa: E731
    return {
        "model": str(cv["model"].iloc[0]),
        "n_images": int(cv.set_index("fold").loc["pooled", "n_images"]),
        "n_folds": n_folds,
        "metric": LABELS[metric],
        "mean": fmt(row["mean"]),
        "std": fmt(row["std"]),
        "pooled": fmt(row["pooled"]),
    }


def write_tsv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table as TSV atomically (floats with 6 significant digits, NaN as ``NaN``)."""
    with atomic_path(path) as tmp:
        table.to_csv(
            tmp, sep="\t", index=False, float_format="%.6g", na_rep="NaN", lineterminator="\n"
        )


def select_fit_images(manifest: pd.DataFrame, *, fold: int, max_images: int, rng) -> list[str]:
    """Training originals (rows of other folds) for fitting the baseline, at most ``max_images``.

    Specimens take turns (each shuffled by ``rng``), so that a small subset still
    spans the training specimens and their imaging conditions.
    """

    rng = as_rng(rng)
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images=}")
    orig = manifest[(manifest["original_id"] == manifest["image_id"]) & (manifest["fold"] != fold)]
    queues = []
    for _, df in orig.sort_values("image_id").groupby("specimen", sort=True):
        ids = df["image_id"].tolist()
        queues.append([ids[i] for i in rng.permutation(len(ids))])
    order = rng.permutation(len(queues))
    chosen = []
    depth = max((len(q) for q in queues), default=0)
    for k in range(depth):
        for q in order:
            if k < len(queues[q]):
                chosen.append(queues[q][k])
    return chosen[:max_images]


def _load(files: Sequence[str | os.PathLike], wanted: Mapping[str, str]) -> dict[str, Sample]:
    """Samples ``{image_id: specimen}`` from the specimen files (named ``{specimen}.h5``)."""
    by_specimen: dict[str, set[str]] = {}
    for image_id, specimen in wanted.items():
        by_specimen.setdefault(str(specimen), set()).add(image_id)
    paths = {Path(f).stem: Path(f) for f in files}
    out: dict[str, Sample] = {}
    for specimen, ids in sorted(by_specimen.items()):
        if specimen not in paths:
            raise ValueError(
                f"the split manifest lists images of specimen {specimen!r} but no synthetic "
                f"file {specimen}.h5 was given ({sorted(paths)})"
            )
        sf = read_specimen(paths[specimen])
        found = {s.image_id: s for s in sf.samples if s.image_id in ids}
        missing = sorted(ids - set(found))
        if missing:
            raise ValueError(
                f"{paths[specimen]} lacks images {missing[:5]} listed in the split manifest; "
                f"rerun the synthesize, augment and split rules"
            )
        out.update(found)
    return out


def run_baseline_fold(
    task: str,
    manifest_path: str | os.PathLike,
    specimen_files: Sequence[str | os.PathLike],
    *,
    fold: int,
    grid: Mapping[str, Sequence],
    max_fit_images: int = 16,
    tolerance_px: float = 2.0,
    iou_threshold: float = 0.5,
    pixel_size_um: float = 1.0,
    rng=None,
) -> tuple[pd.DataFrame, dict]:
    """Fit the classical baseline on fold ``fold``'s training images; score its held-out originals.

    Parameters
    ----------
    task : {"grains", "phases", "nanoparticles"}
    manifest_path : path
        Split manifest ``results/splits/{task}.tsv`` (checked against its SHA-256).
    specimen_files : sequence of path
        Synthetic specimen files ``results/synthetic/{task}/{specimen}.h5``
        (originals only; augmented copies are not needed by a model that is
        not trained).
    fold : int
        Held-out fold: the baseline is fitted on originals of the other folds
        and scored on this fold's originals.
    grid : mapping of str -> sequence
        Parameter grid (:func:`grainflow.evaluation.baseline.grid_scores`).
    max_fit_images : int
        At most this many training originals are used to fit.
    tolerance_px, iou_threshold, pixel_size_um : float
        As :func:`evaluate_segmentation`.
    rng : int or Generator
        Chooses the fitting subset.

    Returns
    -------
    per_image : DataFrame
        One row per held-out original (:func:`evaluate_samples`, model ``"classical"``).
    info : dict
        Chosen parameters, their training score, the fitting images, the grid
        and the manifest's SHA-256 (JSON-serialisable).
    """

    check_task(task)
    manifest = read_manifest(manifest_path)
    originals = manifest[manifest["original_id"] == manifest["image_id"]]
    test_ids = sorted(originals.loc[originals["fold"] == fold, "image_id"])
    if not test_ids:
        raise ValueError(
            f"fold {fold} has no original images in {manifest_path}; folds there: "
            f"{sorted(originals['fold'].unique().tolist())}"
        )
    fit_ids = select_fit_images(manifest, fold=fold, max_images=max_fit_images, rng=rng)
    if not fit_ids:
        raise ValueError(f"no training images outside fold {fold} in {manifest_path}")
    specimen_of = dict(zip(originals["image_id"], originals["specimen"]))
    samples = _load(specimen_files, {i: specimen_of[i] for i in (*test_ids, *fit_ids)})
    fit = [samples[i] for i in fit_ids]
    scores = grid_scores(
        task, [s.image for s in fit], [s.labels for s in fit], grid=grid, tolerance_px=tolerance_px
    )
    params = best_params(scores)
    test = [samples[i] for i in test_ids]
    preds = [apply_baseline(task, s.image, params) for s in test]
    per_image = evaluate_samples(
        task,
        test,
        preds,
        model="classical",
        fold=fold,
        tolerance_px=tolerance_px,
        iou_threshold=iou_threshold,
        pixel_size_um=pixel_size_um,
    )
    info = {
        "task": task,
        "fold": int(fold),
        "params": params,
        "fit_score": float(scores["score"].max()),
        "fit_metric": task_info(task).score,
        "fit_images": fit_ids,
        "n_test_images": len(test_ids),
        "grid": {k: list(v) for k, v in grid.items()},
        "grid_scores": json.loads(scores.to_json(orient="records")),
        "manifest_sha256": manifest_sha256(manifest_path),
        "grainflow_version": __version__,
    }
    return per_image, info


def held_out_originals(
    manifest_path: str | os.PathLike, specimen_files: Sequence[str | os.PathLike], *, fold: int
) -> list[Sample]:
    """The original images of fold ``fold`` (its held-out specimens), with their labels."""

    manifest = read_manifest(manifest_path)
    originals = manifest[manifest["original_id"] == manifest["image_id"]]
    held = originals[originals["fold"] == fold].sort_values("image_id")
    if held.empty:
        raise ValueError(
            f"fold {fold} has no original images in {manifest_path}; folds there: "
            f"{sorted(originals['fold'].unique().tolist())}"
        )
    samples = _load(specimen_files, dict(zip(held["image_id"], held["specimen"])))
    return [samples[i] for i in held["image_id"]]


def run_model_fold(
    task: str,
    manifest_path: str | os.PathLike,
    specimen_files: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike,
    *,
    fold: int,
    model: str,
    tolerance_px: float = 2.0,
    iou_threshold: float = 0.5,
    pixel_size_um: float = 1.0,
    flips: bool = False,
    split_px: float = 0.0,
    fill_holes: bool = False,
    min_particle_px: int = 0,
    device: str = "cpu",
) -> tuple[pd.DataFrame, np.ndarray, list[Sample]]:
    """Score fold ``fold``'s trained network on its held-out originals.

    With ``flips`` the probabilities are the mean over the four flips of each
    image (test-time augmentation, :data:`grainflow.inference.predict.FLIPS`).
    ``split_px``, ``fill_holes`` and ``min_particle_px`` label them as
    :func:`~grainflow.inference.labels.labels_from_probability` does.

    Returns
    -------
    per_image : DataFrame
        One row per held-out original (:func:`evaluate_samples`).
    probability : ndarray of shape (N, H, W), float32
        Foreground probability of each held-out image (for the figures).
    samples : list of Sample
    """

    check_task(task)
    test = held_out_originals(manifest_path, specimen_files, fold=fold)
    ckpt = load_checkpoint(checkpoint)
    trained = ckpt.get("extra") or {}
    if trained.get("task", task) != task or int(trained.get("fold", fold)) != int(fold):
        raise ValueError(
            f"{checkpoint} was trained for task {trained.get('task')!r} fold "
            f"{trained.get('fold')}, not {task!r} fold {fold}; rerun the train rule"
        )
    net = model_from_checkpoint(ckpt)
    trained_with = ckpt.get("config") or {}
    probs = predict_probabilities(
        net,
        [s.image for s in test],
        norm_percentiles=trained_with.get("norm_percentiles", (1.0, 99.0)),
        polarity=trained_with.get("polarity", "learned"),
        particles_dark=[s.params.get("particles_dark", False) for s in test],
        flips=flips,
        device=device,
    )
    fg = foreground(probs)
    preds = [
        labels_from_probability(
            task, p, split_px=split_px, fill_holes=fill_holes, min_particle_px=min_particle_px
        )
        for p in fg
    ]
    per_image = evaluate_samples(
        task,
        test,
        preds,
        model=model,
        fold=fold,
        tolerance_px=tolerance_px,
        iou_threshold=iou_threshold,
        pixel_size_um=pixel_size_um,
    )
    return per_image, fg.astype(np.float32), test
