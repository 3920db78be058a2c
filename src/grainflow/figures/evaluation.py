"""Figures of the cross-validated scores."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from grainflow.evaluation.crossval import LABELS
from grainflow.tasks import check_task

__all__ = ["FIGURE_METRICS", "plot_metric_distributions"]


FIGURE_METRICS = {
    "grains": ("boundary_f1", "pixel_iou", "ari", "vi_split", "vi_merge", "grain_size_error_G"),
    "phases": ("iou", "object_f1", "object_recall", "area_fraction_error"),
}
FIGURE_METRICS["nanoparticles"] = FIGURE_METRICS["phases"]


def plot_metric_distributions(
    per_image: pd.DataFrame, *, task: str, metrics: Sequence[str] | None = None
):
    """Per-image distributions of the main scores, one box per model, points coloured by fold.

    Parameters
    ----------
    per_image : DataFrame
        Per-image rows (:func:`evaluate_samples`) of one task, any models and folds.
    task : {"grains", "phases", "nanoparticles"}
    metrics : sequence of str, optional
        Score columns to show (default: the main ones of the task).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    check_task(task)
    metrics = list(metrics or FIGURE_METRICS[task])
    missing = [m for m in metrics if m not in per_image.columns]
    if missing:
        raise ValueError(f"per-image table lacks columns {missing}")
    models = sorted(per_image["model"].astype(str).unique())
    folds = sorted(per_image["fold"].unique())
    cmap = {f: f"C{i % 10}" for i, f in enumerate(folds)}
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.0 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    rng = np.random.default_rng(0)  # jitter only
    for ax, metric in zip(axes, metrics):
        data = [
            per_image.loc[per_image["model"].astype(str) == m, metric].dropna().to_numpy()
            for m in models
        ]
        ax.boxplot(data, showfliers=False, widths=0.5)
        ax.set_xticks(range(1, len(models) + 1), models)
        for i, m in enumerate(models, start=1):
            sub = per_image[per_image["model"].astype(str) == m]
            for f in folds:
                y = sub.loc[sub["fold"] == f, metric].dropna().to_numpy()
                x = i + rng.uniform(-0.15, 0.15, len(y))
                ax.scatter(
                    x,
                    y,
                    s=10,
                    color=cmap[f],
                    alpha=0.8,
                    label=f"fold {f}" if (i == 1 and metric == metrics[0]) else None,
                )
        if metric.endswith("error_G") or metric == "area_fraction_error":
            ax.axhline(0.0, color="0.5", lw=0.8, ls="--")
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.set_title(metric, fontsize=9)  # the column name in the tables
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    if len(folds) > 1:
        fig.legend(loc="outside lower center", ncols=min(len(folds), 8), fontsize=8, frameon=False)
    n = len(per_image)
    fig.suptitle(f"{task}: held-out images ({n} images, {len(folds)} folds); one point per image")
    return fig
