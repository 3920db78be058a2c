"""Figures of real stacks: prediction overlays and size histograms; each returns a Figure."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from grainflow.evaluation.real import truth_labels
from grainflow.stacks.importer import plane_boxes, plane_shapes
from grainflow.tasks import CLASS_NAMES, LABEL_NAMES, TASKS

__all__ = [
    "display_level",
    "choose_planes",
    "real_overlays",
    "real_trust",
    "real_size_histogram",
]

_ERRORS = ListedColormap([(0, 0, 0, 0), (0.9, 0.1, 0.1, 0.9), (0.1, 0.3, 1.0, 0.9)])
_MASK = ListedColormap([(0, 0, 0, 0), (1.0, 0.1, 0.8, 0.75)])
_UNCERTAIN = ListedColormap([(0, 0, 0, 0), (1.0, 0.55, 0.0, 0.6)])


def display_level(shapes, *, max_px: int = 1024) -> int:
    """The finest pyramid level whose largest side is at most ``max_px`` (else the coarsest).

    Parameters
    ----------
    shapes : sequence of (int, int)
        (rows, cols) of levels s0, s1, ...
    """
    for k, shape in enumerate(shapes):
        if max(shape) <= max_px:
            return k
    return len(shapes) - 1


def choose_planes(metrics: pd.DataFrame, *, task: str, n: int = 4) -> list[int]:
    """Planes to show: with scores, the worst and best of the first model; else the first ``n``."""
    rows = metrics[metrics["plane"].astype(str) != "all"]
    first = rows[rows["model"] == rows["model"].iloc[0]].copy()
    first["plane"] = first["plane"].astype(int)
    score = TASKS[task].score
    if score in first.columns and first[score].notna().any() and len(first) > n:
        order = first.sort_values(score)["plane"].tolist()
        half = n // 2
        return [*order[:half], *order[len(order) - (n - half) :]]
    return first["plane"].tolist()[:n]


def _extent(shape, pixel: float):
    rows, cols = shape
    return (0.0, cols * pixel, rows * pixel, 0.0)


def real_overlays(
    stack: str | os.PathLike,
    inference: Mapping[str, str | os.PathLike],
    metrics: pd.DataFrame,
    *,
    n_planes: int = 4,
    max_px: int = 1024,
) -> Figure:
    """Image, predicted probability, prediction and (where it exists) truth and errors.

    One row per shown plane and model. Planes come from :func:`choose_planes`;
    each is drawn at the pyramid level of :func:`display_level` (labels are
    every second pixel per level, never interpolated), with axes in µm (pixels
    when the pixel size is unknown). A padded plane is drawn on its own part only;
    a stack with box labels gets a column with the true boxes over the prediction.

    Parameters
    ----------
    stack : path-like
        The stack's OME-Zarr store.
    inference : mapping of str -> path-like
        Model name -> inference store.
    metrics : DataFrame
        The stack's per-plane table (:func:`grainflow.evaluation.real.measure_stack`).
    """
    import zarr

    root = zarr.open_group(str(stack), mode="r")
    info = dict(root.attrs)["grainflow"]
    task, name = info["task"], info["stack"]
    pixel = info.get("pixel_size_um")
    unit = "µm" if pixel else "px"
    shapes = [tuple(s) for s in info["levels"]]
    level = display_level(shapes, max_px=max_px)
    step = 2**level * (pixel or 1.0)
    has_truth = "labels" in root and "ground_truth" in root["labels"]
    own = plane_shapes(info, root["s0"].shape)
    boxes = plane_boxes(info)
    planes = choose_planes(metrics, task=task, n=n_planes)
    mask_name, _ = LABEL_NAMES[task]
    stores = {m: zarr.open_group(str(p), mode="r") for m, p in inference.items()}
    n_cols = 3 + 2 * has_truth + (boxes is not None)
    n_rows = len(planes) * len(stores)
    fig = Figure(figsize=(2.6 * n_cols, 2.5 * n_rows + 0.3), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    score = TASKS[task].score
    rows = metrics.assign(plane=metrics["plane"].astype(str)).set_index(["model", "plane"])
    r = 0
    for z in planes:
        part = (z, *(slice(0, -(-side // 2**level)) for side in own[z]))  # its own part
        image = np.asarray(root[f"s{level}"][part], dtype=np.float32)
        extent = _extent(image.shape, step)
        truth = None
        if has_truth:
            truth = truth_labels(
                task, np.asarray(root["labels"]["ground_truth"][f"s{level}"][part])
            )
        for model, store in stores.items():
            prob = np.asarray(store[f"s{level}"][(1, *part)])
            pred = np.asarray(store["labels"][mask_name][f"s{level}"][part]) > 0
            lo, hi = np.percentile(image, (1, 99))
            ax = axes[r]
            title = info["planes"][z].get("file") or f"plane {z}"
            ax[0].imshow(image, cmap="gray", vmin=lo, vmax=hi, extent=extent)
            ax[0].set_title(f"{title}", fontsize=7)
            ax[1].imshow(prob, cmap="magma", vmin=0, vmax=1, extent=extent)
            ax[1].set_title(f"{model}: P({CLASS_NAMES[task][1]})", fontsize=7)
            ax[2].imshow(image, cmap="gray", vmin=lo, vmax=hi, extent=extent)
            ax[2].imshow(
                pred.astype(np.uint8),
                cmap=_MASK,
                vmin=0,
                vmax=1,
                extent=extent,
                interpolation="nearest",
            )
            label = f"{model}: {mask_name}"
            if (model, str(z)) in rows.index and score in rows.columns:
                label += f", {score} = {rows.loc[(model, str(z)), score]:.3f}"
            ax[2].set_title(label, fontsize=7)
            if truth is not None:
                true = truth[mask_name] > 0
                ax[3].imshow(image, cmap="gray", vmin=lo, vmax=hi, extent=extent)
                ax[3].imshow(
                    true.astype(np.uint8),
                    cmap=_MASK,
                    vmin=0,
                    vmax=1,
                    extent=extent,
                    interpolation="nearest",
                )
                ax[3].set_title(f"truth: {mask_name}", fontsize=7)
                err = np.zeros(true.shape, np.uint8)
                err[pred & ~true] = 1
                err[~pred & true] = 2
                ax[4].imshow(image, cmap="gray", vmin=lo, vmax=hi, extent=extent)
                ax[4].imshow(
                    err, cmap=_ERRORS, vmin=0, vmax=2, extent=extent, interpolation="nearest"
                )
                ax[4].set_title("red = false +, blue = missed", fontsize=7)
            if boxes is not None:
                _draw_boxes(ax[-1], image, pred, boxes[z] * (pixel or 1.0), extent, lo, hi)
                label = "true boxes"
                if (model, str(z)) in rows.index and "det_f1" in rows.columns:
                    label += f", detection F1 {rows.loc[(model, str(z)), 'det_f1']:.3f}"
                ax[-1].set_title(label, fontsize=7)
            for a in ax:
                a.tick_params(labelsize=6)
            ax[0].set_ylabel(f"y ({unit})", fontsize=7)
            r += 1
    for a in axes[-1]:
        a.set_xlabel(f"x ({unit})", fontsize=7)
    shown = "" if level == 0 else f", shown at 1/{2**level} resolution"
    fig.suptitle(f"{name} ({task}){shown}", fontsize=9)
    return fig


def real_trust(
    stack: str | os.PathLike,
    inference: Mapping[str, str | os.PathLike],
    metrics: pd.DataFrame,
    *,
    n_planes: int = 4,
    max_px: int = 1024,
) -> Figure:
    """The trust map: where the ensemble's members disagree, per shown plane and model.

    One row per shown plane (:func:`choose_planes`) and model with the trust map:
    the image with its uncertain pixels shaded (disagreement above the store's
    ``uncertain_above``) and the disagreement itself with a colour bar from 0 to
    twice that threshold (marked on the bar; higher values saturate), at the
    level of :func:`display_level`, axes in µm (pixels when the pixel size is
    unknown). Titles give the plane's uncertain fraction and the synthetic
    reference's 99th percentile (columns of
    :func:`grainflow.evaluation.real.measure_stack`); the title of the figure
    carries the warning of :func:`grainflow.inference.trust.trust_warning`.

    Parameters
    ----------
    stack : path-like
        The stack's OME-Zarr store.
    inference : mapping of str -> path-like
        Model name -> inference store written with the trust map.
    metrics : DataFrame
        The stack's per-plane table, with the trust columns.
    """
    import zarr

    from grainflow.inference.trust import trust_warning

    root = zarr.open_group(str(stack), mode="r")
    info = dict(root.attrs)["grainflow"]
    task, name = info["task"], info["stack"]
    pixel = info.get("pixel_size_um")
    unit = "µm" if pixel else "px"
    shapes = [tuple(s) for s in info["levels"]]
    level = display_level(shapes, max_px=max_px)
    step = 2**level * (pixel or 1.0)
    own = plane_shapes(info, root["s0"].shape)
    planes = choose_planes(metrics, task=task, n=n_planes)
    stores = {m: zarr.open_group(str(p), mode="r") for m, p in inference.items()}
    rows = metrics.assign(plane=metrics["plane"].astype(str)).set_index(["model", "plane"])
    fig = Figure(figsize=(6.4, 2.5 * len(planes) * len(stores) + 0.5), layout="constrained")
    axes = fig.subplots(len(planes) * len(stores), 2, squeeze=False)
    warnings = []
    r = 0
    for z in planes:
        part = (z, *(slice(0, -(-side // 2**level)) for side in own[z]))
        image = np.asarray(root[f"s{level}"][part], dtype=np.float32)
        lo, hi = np.percentile(image, (1, 99))
        extent = _extent(image.shape, step)
        for model, store in stores.items():
            ax = axes[r]
            trust = dict(store.attrs)["grainflow"].get("trust")
            if not trust or "disagreement" not in store:
                for a in ax:
                    a.text(0.5, 0.5, "no trust map", ha="center", transform=a.transAxes)
                    a.set_axis_off()
                r += 1
                continue
            members = int(trust.get("members", 2))
            d = np.asarray(store["disagreement"][f"s{level}"][part], dtype=np.float32)
            uncertain = d > float(trust["uncertain_above"])
            ax[0].imshow(image, cmap="gray", vmin=lo, vmax=hi, extent=extent)
            ax[0].imshow(
                uncertain.astype(np.uint8),
                cmap=_UNCERTAIN,
                vmin=0,
                vmax=1,
                extent=extent,
                interpolation="nearest",
            )
            title = f"{info['planes'][z].get('file') or f'plane {z}'}, {model}"
            if (model, str(z)) in rows.index and "uncertain_fraction" in rows.columns:
                row = rows.loc[(model, str(z))]
                title += f"\nuncertain (orange) {100 * row['uncertain_fraction']:.1f} % of pixels"
                if pd.notna(row["uncertain_fraction_p99_synthetic"]):
                    title += (
                        f" (synthetic p99 {100 * row['uncertain_fraction_p99_synthetic']:.1f} %)"
                    )
                if row.get("beyond_reference") == 1:
                    title += " — beyond"
            ax[0].set_title(title, fontsize=7)
            above = float(trust["uncertain_above"])
            top = min(2 * above, max(1 - 1 / members, 1e-3))  # the threshold mid-bar
            shown = ax[1].imshow(d, cmap="viridis", vmin=0, vmax=top, extent=extent)
            ax[1].set_title(f"disagreement; uncertain above {above:g} (line)", fontsize=7)
            bar = fig.colorbar(shown, ax=ax[1], shrink=0.85, extend="max")
            bar.ax.axhline(above, color="orange", lw=1.5)
            bar.set_label(
                f"mean TV distance of a member\nto the mean ({members} members; 0 = agree)",
                fontsize=6,
            )
            bar.ax.tick_params(labelsize=6)
            for a in ax:
                a.tick_params(labelsize=6)
            ax[0].set_ylabel(f"y ({unit})", fontsize=7)
            r += 1
    for model in stores:
        pooled = rows.loc[(model, "all")] if (model, "all") in rows.index else None
        if pooled is not None and "beyond_reference" in rows.columns:
            n_beyond = pooled["beyond_reference"]
            n_all = int((metrics["model"] == model).sum() - 1)
            text = trust_warning(name, 0 if pd.isna(n_beyond) else int(n_beyond), n_all)
            if text:
                warnings.append(f"{model}: {text}")
    for a in axes[-1]:
        if a.axison:
            a.set_xlabel(f"x ({unit})", fontsize=7)
    shown_at = "" if level == 0 else f", shown at 1/{2**level} resolution"
    title = f"{name} ({task}): trust map{shown_at}"
    if warnings:
        title += "\nWARNING " + "\nWARNING ".join(warnings)
    fig.suptitle(title, fontsize=8, color="firebrick" if warnings else "black", wrap=True)
    return fig


def _draw_boxes(ax, image, pred, boxes, extent, lo, hi) -> None:
    """The image, the predicted mask and the true boxes (top, left, bottom, right) in the
    axes' units."""
    from matplotlib.patches import Rectangle

    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, extent=extent)
    ax.imshow(
        pred.astype(np.uint8), cmap=_MASK, vmin=0, vmax=1, extent=extent, interpolation="nearest"
    )
    for top, left, bottom, right in boxes:
        ax.add_patch(
            Rectangle(
                (left, top), right - left, bottom - top, fill=False, edgecolor="lime", linewidth=0.6
            )
        )


def real_size_histogram(sizes: pd.DataFrame, *, task: str) -> Figure:
    """Histograms (log bins) of equivalent-circle diameters per model (and the truth).

    Objects cut by the field edge are left out.

    Parameters
    ----------
    sizes : DataFrame
        The stack's sizes table (:func:`grainflow.evaluation.real.measure_stack`).
    task : {"grains", "phases", "nanoparticles"}
    """
    what = TASKS[task].object
    unit = "µm" if (sizes["length_unit"] == "um").all() else "px"
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    measured = sizes[~sizes["edge"].astype(bool) & (sizes["ecd"] > 0)]
    if measured.empty:
        ax.text(0.5, 0.5, f"no {what}s inside the field", ha="center", transform=ax.transAxes)
        ax.set(xlabel=f"{what} equivalent-circle diameter ({unit})", ylabel="count")
        return fig
    values = measured["ecd"].to_numpy(float)
    bins = np.geomspace(values.min(), values.max() * 1.001, 30)
    order = [m for m in measured["model"].unique() if m != "truth"]
    order += ["truth"] if (measured["model"] == "truth").any() else []
    for i, model in enumerate(order):
        d = measured.loc[measured["model"] == model, "ecd"].to_numpy(float)
        colour = "k" if model == "truth" else f"C{i}"
        ax.hist(
            d,
            bins=bins,
            histtype="step",
            lw=2,
            color=colour,
            label=f"{model} ({len(d)}, median {np.median(d):.3g} {unit})",
        )
        ax.axvline(np.median(d), color=colour, ls=":", lw=1)
    ax.set_xscale("log")
    ax.set(xlabel=f"{what} equivalent-circle diameter ({unit})", ylabel=f"{what}s per bin")
    ax.legend(fontsize=7)
    return fig
