"""Metrology of real stacks from their inference stores, and scores against ground truth.

:func:`measure_stack` reads a stack and the inference stores of its models plane by plane
(each plane whole: the metrology functions need whole label images) and returns a table per
plane and a table per grain or particle.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats
from skimage.segmentation import find_boundaries

from grainflow.evaluation.crossval import (
    COUNTS,
    SCORES,
    evaluate_segmentation,
    summarize,
)
from grainflow.evaluation.detection import (
    DETECTION_COUNTS,
    DETECTION_SCORES,
    DetectionCounts,
    score_detection,
)
from grainflow.evaluation.metrics import boundary_counts
from grainflow.evaluation.metrology import (
    E112Statistics,
    area_fraction,
    e112_from_fields,
    e112_statistics,
    g_from_intercept,
    g_from_na,
    lineal_intercept,
    planimetric,
    region_table,
)
from grainflow.inference.stack import open_inference
from grainflow.inference.trust import beyond_reference, read_reference, trust_warning
from grainflow.stacks.importer import plane_boxes, plane_shapes
from grainflow.tasks import LABEL_NAMES, segments_particles

__all__ = [
    "META",
    "METROLOGY",
    "TRUST",
    "truth_labels",
    "measure_plane",
    "measure_stack",
    "real_headline",
]

META = ("stack", "task", "model", "plane", "file", "group", "pixel_size_um", "length_unit")
#: metrology columns of each task
METROLOGY = {
    "grains": (
        "n_grains",
        "n_grains_measured",
        "astm_g_planimetric",
        "na_per_mm2",
        "astm_g_intercept",
        "mean_intercept",
        "mean_intercept_ci95",
        "ecd_mean",
        "ecd_median",
        "boundary_fraction",
        "n_fields",
        "astm_g_planimetric_ci95_low",
        "astm_g_planimetric_ci95_high",
        "planimetric_ra_pct",
        "astm_g_intercept_ci95_low",
        "astm_g_intercept_ci95_high",
        "intercept_ra_pct",
        "astm_g_difference",
        "boundary_kept",
    ),
    "phases": ("area_fraction", "n_particles", "n_particles_measured", "ecd_mean", "ecd_median"),
}
METROLOGY["nanoparticles"] = METROLOGY["phases"]
#: trust columns (where the inference stores hold the trust map)
TRUST = (
    "disagreement_mean",
    "uncertain_fraction",
    "uncertain_fraction_p99_synthetic",
    "beyond_reference",
)
_SIZE_COLUMNS = (
    "stack",
    "model",
    "plane",
    "label",
    "area",
    "ecd",
    "major_axis",
    "minor_axis",
    "aspect_ratio",
    "orientation_deg",
    "edge",
    "length_unit",
)


def truth_labels(task: str, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The label dict of a ground-truth image, as :func:`evaluate_segmentation` wants it.

    Parameters
    ----------
    task : {"grains", "phases", "nanoparticles"}
    labels : ndarray of shape (M, N), integer or bool
        phases: a mask (> 0 = particle phase); grains: a boundary mask (values
        0 and 1 only) or grain ids (0 = boundary, no grain).

    Returns
    -------
    dict
        phases -> ``phase`` (uint8) and ``particle_ids`` (uint32, 4-connected);
        grains -> ``boundaries`` (uint8) and ``grain_ids`` (uint32).

    Notes
    -----
    Particles are the 4-connected components of the mask, as predicted particles
    are. Grains from a boundary mask are the 4-connected regions between the
    boundaries; from grain ids, boundaries lie where a pixel's 4-neighbour differs.
    """
    from skimage.measure import label
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"ground truth must be 2-D (rows, cols), got shape {labels.shape}")
    if segments_particles(task):
        phase = labels > 0
        return {
            "phase": phase.astype(np.uint8),
            "particle_ids": label(phase, connectivity=1).astype(np.uint32),
        }
    if task != "grains":
        raise ValueError(f"task must be 'grains', 'phases' or 'nanoparticles', got {task=}")
    if labels.max(initial=0) <= 1:  # a boundary mask
        boundaries = labels > 0
        return {
            "boundaries": boundaries.astype(np.uint8),
            "grain_ids": label(~boundaries, connectivity=1).astype(np.uint32),
        }
    boundaries = (labels == 0) | find_boundaries(labels, connectivity=1, mode="inner")
    return {"boundaries": boundaries.astype(np.uint8), "grain_ids": labels.astype(np.uint32)}


def _sizes(ids: np.ndarray, pixel: float) -> pd.DataFrame:
    table = region_table(ids, pixel_size_um=pixel)
    return table.rename(
        columns={
            "area_um2": "area",
            "ecd_um": "ecd",
            "major_axis_um": "major_axis",
            "minor_axis_um": "minor_axis",
        }
    )


def measure_plane(
    task: str, labels: Mapping[str, np.ndarray], *, pixel_size_um: float | None
) -> tuple[dict, pd.DataFrame]:
    """Metrology of one plane's label dict.

    Parameters
    ----------
    task : {"grains", "phases", "nanoparticles"}
    labels : mapping
        grains -> ``boundaries``, ``grain_ids``; phases -> ``phase``, ``particle_ids``.
    pixel_size_um : float or None
        Pixel side in µm; None when unknown (lengths in pixels, no ASTM G).

    Returns
    -------
    row : dict
        :data:`METROLOGY` ``[task]`` plus the pooling sums ``_n_equivalent``,
        ``_area_mm2`` (grains).
    sizes : DataFrame
        One row per object (``region_table`` columns renamed without units).
    """
    known = pixel_size_um is not None and not math.isnan(pixel_size_um)
    pixel = float(pixel_size_um) if known else 1.0
    mask_name, ids_name = LABEL_NAMES[task]
    ids = np.asarray(labels[ids_name])
    sizes = _sizes(ids, pixel)
    measured = sizes[~sizes["edge"]]
    ecd = measured["ecd"].to_numpy(float)
    common = {
        "ecd_mean": float(ecd.mean()) if ecd.size else math.nan,
        "ecd_median": float(np.median(ecd)) if ecd.size else math.nan,
    }
    if segments_particles(task):
        return {
            "area_fraction": area_fraction(labels[mask_name]),
            "n_particles": int(len(sizes)),
            "n_particles_measured": int(len(measured)),
            **common,
        }, sizes
    jeffries = planimetric(ids, pixel_size_um=pixel)
    row = {
        "n_grains": int(len(sizes)),
        "n_grains_measured": int(len(measured)),
        "astm_g_planimetric": jeffries.g if known else math.nan,
        "na_per_mm2": jeffries.na_per_mm2 if known else math.nan,
        "astm_g_intercept": math.nan,
        "mean_intercept": math.nan,
        "mean_intercept_ci95": math.nan,
        **common,
        "boundary_fraction": area_fraction(labels[mask_name]),
        "_n_equivalent": jeffries.n_equivalent,
        "_area_mm2": jeffries.area_mm2,
    }
    if len(sizes) > 1:
        intercept = lineal_intercept(ids, pixel_size_um=pixel)
        ell = intercept.mean_intercept_mm * 1000.0  # in the length unit (µm or px)
        row.update(mean_intercept=ell, astm_g_intercept=intercept.g if known else math.nan)
    grid = tuple(min(FIELD_GRID[i], ids.shape[i]) for i in range(2))
    row.update(_e112_columns(e112_statistics(ids, pixel_size_um=pixel, grid=grid), known))
    kept = boundary_counts(labels[mask_name], find_boundaries(ids, mode="inner"))
    row["boundary_kept"] = kept.true_matched / kept.true_total if kept.true_total else math.nan
    return row, sizes


#: E112 §15 fields: each plane is cut into this grid of fields for the confidence intervals
FIELD_GRID = (3, 3)


def _e112_columns(e112: E112Statistics, known: bool) -> dict:
    """The E112 §15 columns of a row, and the fields' values for pooling (``_fields_*``)."""

    def g(value):
        return value if known else math.nan

    return {
        "n_fields": e112.n_fields,
        "astm_g_planimetric_ci95_low": g(e112.g_planimetric_ci95[0]),
        "astm_g_planimetric_ci95_high": g(e112.g_planimetric_ci95[1]),
        "planimetric_ra_pct": e112.planimetric_ra_pct,
        "astm_g_intercept_ci95_low": g(e112.g_intercept_ci95[0]),
        "astm_g_intercept_ci95_high": g(e112.g_intercept_ci95[1]),
        "intercept_ra_pct": e112.intercept_ra_pct,
        "astm_g_difference": g(e112.g_difference),
        "_fields_na": e112.field_na_per_mm2,
        "_fields_ell": e112.field_intercepts_mm,
    }


def _pool(task: str, rows: pd.DataFrame, sizes: pd.DataFrame, known: bool) -> dict:
    """The ``all`` row of one model from its plane rows and object sizes."""
    measured = sizes.loc[~sizes["edge"], "ecd"].to_numpy(float)
    pooled = {
        "ecd_mean": float(measured.mean()) if measured.size else math.nan,
        "ecd_median": float(np.median(measured)) if measured.size else math.nan,
    }
    if segments_particles(task):
        return {
            "area_fraction": float(rows["area_fraction"].mean()),
            "n_particles": int(rows["n_particles"].sum()),
            "n_particles_measured": int(rows["n_particles_measured"].sum()),
            **pooled,
        }
    na = rows["_n_equivalent"].sum() / rows["_area_mm2"].sum()
    ells = rows["mean_intercept"].dropna().to_numpy(float)
    ell = float(ells.mean()) if ells.size else math.nan
    ci = (
        float(stats.t.ppf(0.975, ells.size - 1) * ells.std(ddof=1) / math.sqrt(ells.size))
        if ells.size > 1
        else math.nan
    )
    e112 = e112_from_fields(
        np.concatenate(list(rows["_fields_na"])), np.concatenate(list(rows["_fields_ell"]))
    )
    kept = rows["boundary_kept"].to_numpy(float)
    return {
        **_e112_columns(e112, known),
        "boundary_kept": float(np.nanmean(kept)) if np.isfinite(kept).any() else math.nan,
        "n_grains": int(rows["n_grains"].sum()),
        "n_grains_measured": int(rows["n_grains_measured"].sum()),
        "astm_g_planimetric": g_from_na(na) if known and na > 0 else math.nan,
        "na_per_mm2": na if known else math.nan,
        "astm_g_intercept": g_from_intercept(ell / 1000.0) if known and ell > 0 else math.nan,
        "mean_intercept": ell,
        "mean_intercept_ci95": ci,
        **pooled,
        "boundary_fraction": float(rows["boundary_fraction"].mean()),
    }


def measure_stack(
    stack: str | os.PathLike,
    inference: Mapping[str, str | os.PathLike],
    *,
    tolerance_px: float = 2.0,
    iou_threshold: float = 0.5,
    references: Mapping[str, str | os.PathLike | Mapping] | None = None,
    flag_factor: float = 2.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrology (and, with ground truth, scores) of every plane and model of a stack.

    Parameters
    ----------
    stack : path-like
        The stack's OME-Zarr store (:func:`grainflow.stacks.importer.import_stack`).
    inference : mapping of str -> path-like
        Model name -> its inference store (:func:`grainflow.inference.stack.infer_stack`).
    tolerance_px, iou_threshold : float
        As in :func:`grainflow.evaluation.crossval.evaluate_segmentation`.
    references : mapping of str -> path-like or dict, optional
        Model name -> its synthetic trust reference
        (:func:`grainflow.inference.reference.trust_reference`, the ``trust_reference``
        rule's JSON), for the trust columns.
    flag_factor : float
        As in :func:`grainflow.inference.trust.beyond_reference`.

    Returns
    -------
    per_plane : DataFrame
        ``results/metrics/real/{stack}.tsv``: one row per model and plane, then
        one row per model with ``plane == "all"`` for the whole stack (see Notes).
    sizes : DataFrame
        ``results/metrics/real/{stack}.sizes.tsv``: one row per grain or particle
        (``model`` is the architecture, or ``truth``): ``stack, model, plane,
        label, area, ecd, major_axis, minor_axis, aspect_ratio, orientation_deg,
        edge, length_unit`` (area in ``length_unit`` squared).

    Notes
    -----
    Columns of ``per_plane``: :data:`META` (phases: and ``particles_dark``, each plane's
    polarity as imported), then

    - grains: ``n_grains`` (labels), ``n_grains_measured`` (not cut by the field
      edge), ``astm_g_planimetric`` and ``na_per_mm2`` (ASTM E112 Jeffries count),
      ``astm_g_intercept`` and ``mean_intercept`` (E112 lineal intercept: 4
      directions x 5 lines and the three circles), ``ecd_mean``, ``ecd_median``
      (equivalent-circle diameters of the measured grains), ``boundary_fraction``;
      E112 §15 statistics over fields (each plane cut into :data:`FIELD_GRID`
      fields, every field counted on its own): ``n_fields``, the 95 % confidence
      interval of each G (``astm_g_planimetric_ci95_low``/``_high``,
      ``astm_g_intercept_ci95_low``/``_high``) and relative accuracy
      (``planimetric_ra_pct``, ``intercept_ra_pct``), ``astm_g_difference``
      (planimetric minus intercept G of the fields: well below 0, merged grains),
      and ``boundary_kept`` (the fraction of the thresholded boundary skeleton
      within 2 px of a boundary of the grain map: boundaries the labelling lost);
    - phases: ``area_fraction``, ``n_particles``, ``n_particles_measured``,
      ``ecd_mean``, ``ecd_median`` (particles cut by the edge left out).

    Lengths are in ``length_unit``: ``um`` with a known pixel size, else ``px``
    (ASTM G needs a physical size and is then NaN). The ``all`` row pools the
    planes: Jeffries counts summed over the area, the planes' mean intercepts
    averaged (``mean_intercept_ci95``: half-width of their 95 % interval, E112's
    fields), sizes over all objects. Where the stack has ground truth
    (:func:`truth_labels`), each row also holds the counts and scores of
    :func:`grainflow.evaluation.crossval.evaluate_segmentation` (per plane; counts
    summed and scored once in the ``all`` row, as in the cross-validated tables).

    Where the ground truth is boxes (a phases stack imported with box labels,
    :func:`grainflow.stacks.importer.plane_boxes`), the rows hold detection counts
    and scores instead (:data:`~grainflow.evaluation.detection.DETECTION_COUNTS`,
    :data:`~grainflow.evaluation.detection.DETECTION_SCORES`): predicted particles
    as bounding boxes matched one to one to the true boxes at box IoU >=
    ``iou_threshold`` (:func:`grainflow.evaluation.detection.score_detection`);
    the ``all`` row sums the counts and scores them once.

    Where the inference stores hold the trust map (``infer_stack(trust=True)``),
    the rows also hold :data:`TRUST`: ``disagreement_mean`` and
    ``uncertain_fraction`` of the plane (from the store; the ``all`` row: over
    all planes' pixels), ``uncertain_fraction_p99_synthetic`` (the 99th
    percentile of the fresh synthetic images' uncertain fractions, NaN without
    a reference) and ``beyond_reference`` (1 where the plane's fraction exceeds
    ``flag_factor`` times that, :func:`~grainflow.inference.trust.beyond_reference`;
    the ``all`` row: the number of such planes).

    Planes padded to the stack's size (images of different sizes,
    :func:`grainflow.stacks.importer.plane_shapes`) are measured and scored on
    their own rectangle only: the padding holds no object, no area and no edge.
    """
    import zarr

    if not inference:
        raise ValueError("need at least one inference store, got none")
    root = zarr.open_group(str(stack), mode="r")
    info = dict(root.attrs)["grainflow"]
    name, task = info["stack"], info["task"]
    pixel = info.get("pixel_size_um")
    known = pixel is not None and not (isinstance(pixel, float) and math.isnan(pixel))
    unit = "um" if known else "px"
    images = root["s0"]
    truth_store = None
    if "labels" in root and "ground_truth" in root["labels"]:
        truth_store = root["labels"]["ground_truth"]["s0"]
    truth_boxes = plane_boxes(info)
    if truth_boxes is not None and not segments_particles(task):
        raise ValueError(
            f"stack {name!r} has box labels, which score particles; its task is {task!r}, "
            "not 'phases' or 'nanoparticles'"
        )
    n_planes = int(images.shape[0])
    shapes = plane_shapes(info, images.shape)
    planes = info.get("planes") or [{} for _ in range(n_planes)]
    truths: dict[int, dict] = {}
    rows, size_tables = [], []

    def add_sizes(table, model, z):
        table = table.assign(stack=name, model=model, plane=z, length_unit=unit)
        size_tables.append(table[list(_SIZE_COLUMNS)])

    references = {
        m: (dict(r) if isinstance(r, Mapping) else read_reference(r))
        for m, r in (references or {}).items()
    }
    with_trust = False
    for model, path in inference.items():
        attrs, _, labels = open_inference(path)
        trusted = bool(attrs.get("trust"))
        with_trust |= trusted
        reference = references.get(model)
        p99 = math.nan if reference is None else float(reference["uncertain_fraction_p99"])
        if attrs["task"] != task or attrs["stack"] != name:
            raise ValueError(
                f"inference store {path} holds task {attrs['task']!r} of stack "
                f"{attrs['stack']!r}, not {task!r} of {name!r}; rerun infer"
            )
        if tuple(labels[LABEL_NAMES[task][1]].shape) != tuple(images.shape):
            raise ValueError(
                f"inference store {path} has shape "
                f"{labels[LABEL_NAMES[task][1]].shape}, the stack {images.shape}"
            )
        model_rows = []
        for z in range(n_planes):
            own = (z, slice(0, shapes[z][0]), slice(0, shapes[z][1]))  # padding left out
            pred = {k: np.asarray(v[own]) for k, v in labels.items()}
            row, sizes = measure_plane(task, pred, pixel_size_um=pixel if known else None)
            add_sizes(sizes, model, z)
            meta = {
                "stack": name,
                "task": task,
                "model": model,
                "plane": str(z),
                "file": planes[z].get("file"),
                "group": planes[z].get("group"),
                "pixel_size_um": pixel if known else math.nan,
                "length_unit": unit,
                # the polarity the plane was imported with (shown inverted to given networks)
                **(
                    {"particles_dark": planes[z].get("particles_dark")}
                    if segments_particles(task)
                    else {}
                ),
            }
            if truth_store is not None:
                if z not in truths:
                    truths[z] = truth_labels(task, np.asarray(truth_store[own]))
                    truth_row, truth_sizes = measure_plane(
                        task, truths[z], pixel_size_um=pixel if known else None
                    )
                    add_sizes(truth_sizes, "truth", z)
                scores = evaluate_segmentation(
                    task,
                    truths[z],
                    pred,
                    tolerance_px=tolerance_px,
                    iou_threshold=iou_threshold,
                    pixel_size_um=pixel if known else 1.0,
                )
                if task == "grains" and not known:  # absolute G needs a pixel size
                    scores.update(grain_size_G_true=math.nan, grain_size_G_pred=math.nan)
                row.update(scores)
            if truth_boxes is not None:
                row.update(
                    score_detection(
                        pred[LABEL_NAMES[task][1]], truth_boxes[z], iou_threshold=iou_threshold
                    )
                )
            if trusted:
                record = attrs["planes"][z]
                fraction = float(record["uncertain_fraction"])
                row.update(
                    disagreement_mean=float(record["disagreement_mean"]),
                    uncertain_fraction=fraction,
                    uncertain_fraction_p99_synthetic=p99,
                    beyond_reference=int(
                        reference is not None
                        and beyond_reference(fraction, reference, factor=flag_factor)
                    ),
                    _area_px=shapes[z][0] * shapes[z][1],
                )
            model_rows.append({**meta, **row})
        table = pd.DataFrame(model_rows)
        model_sizes = pd.concat([t for t in size_tables if (t["model"] == model).all()])
        pooled = {
            **{
                k: table[k].iloc[0]
                for k in ("stack", "task", "model", "pixel_size_um", "length_unit")
            },
            "plane": "all",
            "file": None,
            "group": None,
            **_pool(task, table, model_sizes, known),
        }
        if trusted:
            area = table["_area_px"].to_numpy(float)
            pooled.update(
                disagreement_mean=float((table["disagreement_mean"] * area).sum() / area.sum()),
                uncertain_fraction=float((table["uncertain_fraction"] * area).sum() / area.sum()),
                uncertain_fraction_p99_synthetic=p99,
                beyond_reference=int(table["beyond_reference"].sum()),
            )
        if truth_store is not None:
            score_table = table.assign(n_images=1)
            summary = summarize(score_table, task=task, by=["model"]).iloc[0]
            pooled.update({k: table[k].sum() for k in COUNTS[task]})
            pooled.update({k: summary[k] for k in SCORES[task]})
        if truth_boxes is not None:
            counts = DetectionCounts(*(int(table[k].sum()) for k in DETECTION_COUNTS))
            pooled.update({**counts.as_dict(), **counts.scores()})
        rows.extend(model_rows)
        rows.append(pooled)
    columns = [*META, *(["particles_dark"] if segments_particles(task) else []), *METROLOGY[task]]
    if truth_store is not None:
        columns += [*COUNTS[task], *SCORES[task]]
    if truth_boxes is not None:
        columns += [*DETECTION_COUNTS, *DETECTION_SCORES]
    if with_trust:
        columns += list(TRUST)
    per_plane = pd.DataFrame(rows)[columns]
    sizes = (
        pd.concat(size_tables, ignore_index=True)
        if size_tables
        else pd.DataFrame(columns=_SIZE_COLUMNS)
    )
    return per_plane, sizes


def real_headline(path: str | os.PathLike) -> dict:
    """The numbers of a stack's ``all`` rows for captions, formatted, one dict per model.

    Returns
    -------
    dict
        ``stack, task, unit`` ("µm" or "px"), ``n_planes``, ``ground_truth``
        (bool: label images), ``boxes`` (bool: box labels) and ``models``: a list
        of dicts with ``model`` and, for grains, ``g_planimetric, g_intercept,
        mean_intercept, ecd_median, n_grains``; for phases ``area_fraction,
        ecd_median, n_particles``; with ground truth also ``iou`` (phases,
        pooled) or ``boundary_f1`` (grains, pooled); with boxes ``det_f1``,
        ``det_precision``, ``det_recall`` and ``count_true`` (pooled); with the
        trust columns also ``uncertain_fraction`` (pooled, formatted),
        ``uncertain_p99`` (the synthetic reference's) and ``warning`` (the
        sentence of :func:`grainflow.inference.trust.trust_warning`, "" for none).
    """
    table = pd.read_csv(
        path,
        sep="\t",
        dtype={"plane": str, "file": str, "group": str},
        keep_default_na=False,
        na_values=["NaN", "nan", ""],
    )
    fmt = lambda v, d=2: "NaN" if pd.isna(v) else f"{v:.{d}f}"  # noqa: E731
    task = str(table["task"].iloc[0])
    pooled = table[table["plane"] == "all"]
    has_truth = "iou" in table.columns or "boundary_f1" in table.columns
    has_boxes = "det_f1" in table.columns
    models = []
    for row in pooled.itertuples():
        entry = {"model": row.model, "ecd_median": fmt(row.ecd_median)}
        if task == "grains":
            entry.update(
                g_planimetric=fmt(row.astm_g_planimetric),
                g_intercept=fmt(row.astm_g_intercept),
                mean_intercept=fmt(row.mean_intercept),
                n_grains=int(row.n_grains),
            )
            if has_truth:
                entry["boundary_f1"] = fmt(row.boundary_f1, 3)
        else:
            entry.update(area_fraction=fmt(row.area_fraction, 3), n_particles=int(row.n_particles))
            if has_truth:
                entry["iou"] = fmt(row.iou, 3)
            if has_boxes:
                entry.update(
                    det_f1=fmt(row.det_f1, 3),
                    det_precision=fmt(row.det_precision, 3),
                    det_recall=fmt(row.det_recall, 3),
                    count_true=int(row.count_true),
                )
        if "uncertain_fraction" in table.columns:
            n_beyond = row.beyond_reference
            entry.update(
                uncertain_fraction=fmt(row.uncertain_fraction, 3),
                uncertain_p99=fmt(row.uncertain_fraction_p99_synthetic, 3),
                warning=trust_warning(
                    str(row.stack),
                    0 if pd.isna(n_beyond) else int(n_beyond),
                    int((table["model"] == row.model).sum() - 1),
                ),
            )
        models.append(entry)
    return {
        "stack": str(table["stack"].iloc[0]),
        "task": task,
        "unit": "µm" if table["length_unit"].iloc[0] == "um" else "px",
        "n_planes": int((table["plane"] != "all").sum() // max(len(pooled), 1)),
        "ground_truth": bool(has_truth),
        "boxes": bool(has_boxes),
        "models": models,
    }
