"""Figures of the synthetic data. Each function returns a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from grainflow.io.hdf5 import Sample
from grainflow.tasks import TASKS

__all__ = ["label_overlay", "synthetic_examples", "synthetic_statistics"]


def label_overlay(ax, image: np.ndarray, mask: np.ndarray, *, color=(1.0, 0.25, 0.1)) -> None:
    """Draw ``image`` in grey with ``mask`` in colour on top."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    cmap = ListedColormap([(0, 0, 0, 0), (*color, 0.75)])
    ax.imshow(mask > 0, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")


def synthetic_examples(samples: Mapping[str, Sequence[Sample]]) -> Figure:
    """Images beside their labels: one row per task, image / label pairs across.

    Parameters
    ----------
    samples : mapping of task -> samples to show
    """
    tasks = [t for t in samples if samples[t]]
    if not tasks:
        raise ValueError("no samples to show")
    ncol = max(len(samples[t]) for t in tasks)
    fig = Figure(figsize=(3.0 * ncol, 1.6 * len(tasks)), layout="constrained")
    axes = fig.subplots(len(tasks), 2 * ncol, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, task in enumerate(tasks):
        for j, s in enumerate(samples[task]):
            a, b = axes[r, 2 * j], axes[r, 2 * j + 1]
            a.imshow(s.image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            a.set_title(f"{s.specimen}/{s.session} {s.modality}", fontsize=7)
            name = TASKS[task].target
            label_overlay(b, s.image * 0.6, s.labels[name])
            b.set_title(f"label: {name}", fontsize=7)
            if j == 0:
                a.text(
                    -0.08,
                    0.5,
                    task,
                    transform=a.transAxes,
                    rotation=90,
                    va="center",
                    ha="right",
                    fontsize=9,
                    fontweight="bold",
                )
    h, w = samples[tasks[0]][0].image.shape
    fig.suptitle(f"Synthetic micrographs and their free labels ({h}×{w} px each)", fontsize=9)
    return fig


def synthetic_statistics(table: pd.DataFrame) -> Figure:
    """Requested against measured microstructure statistics, one point per specimen."""
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    grains = table[table.task == "grains"]
    phases = table[table.task == "phases"]
    for ax, df, req, meas, unit, title in (
        (
            ax1,
            grains,
            "requested_diameter_px",
            "measured_diameter_px",
            "px",
            "grains: mean grain diameter",
        ),
        (
            ax2,
            phases,
            "requested_area_fraction",
            "measured_area_fraction",
            "",
            "phases: area fraction",
        ),
    ):
        ax.set_title(title, fontsize=9)
        if df.empty:
            ax.text(0.5, 0.5, "task not run", ha="center", transform=ax.transAxes)
            continue
        ax.scatter(df[req], df[meas], s=25, zorder=3)
        for _, row in df.iterrows():
            ax.annotate(
                row.specimen,
                (row[req], row[meas]),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        lo = min(df[req].min(), df[meas].min()) * 0.9
        hi = max(df[req].max(), df[meas].max()) * 1.1
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, label="measured = requested")
        suffix = f" ({unit})" if unit else ""
        ax.set_xlabel(f"requested{suffix}")
        ax.set_ylabel(f"measured in the labels{suffix}")
        ax.legend(fontsize=7, loc="upper left")
    return fig
