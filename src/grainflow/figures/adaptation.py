"""Figures of adaptation to a real stack: the few-label learning curve."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["learning_curve_figure", "curve_summary"]

_STYLE = {
    "synthetic": {"color": "tab:blue", "marker": "o", "label": "synthetic-pretrained"},
    "random": {"color": "tab:orange", "marker": "s", "label": "random weights"},
}


def curve_summary(table: pd.DataFrame, score: str = "iou") -> pd.DataFrame:
    """Mean, standard deviation and fold count of ``score`` per init and number of images."""
    grouped = table.groupby(["init", "n_images"])[score]
    out = grouped.agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"mean": f"{score}_mean", "std": f"{score}_sd", "count": "folds"})


def learning_curve_figure(table: pd.DataFrame, *, score: str = "iou", label: str = "IoU") -> Figure:
    """Held-out ``score`` against labelled real images, one line per init (mean ± sd over folds).

    The "all" point of each fold (all planes of the other groups) is plotted at the mean
    number of those planes. ``n_images`` 0 is the synthetic-pretrained model as it is.
    """
    summary = curve_summary(table, score)
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for init, rows in summary.groupby("init", sort=False):
        style = _STYLE.get(init, {"marker": "^", "label": init})
        x = rows["n_images"].to_numpy(dtype=float)
        ax.errorbar(
            np.maximum(x, 0.5),
            rows[f"{score}_mean"],
            yerr=rows[f"{score}_sd"].fillna(0.0),
            capsize=3,
            **style,
        )
    ax.set_xscale("log", base=2)
    ticks = sorted(set(np.maximum(summary["n_images"].to_numpy(dtype=float), 0.5)))
    ax.set_xticks(ticks, [("0" if t == 0.5 else f"{t:g}") for t in ticks])
    ax.set_xlabel("labelled real images fine-tuned on (0: synthetic training only)")
    ax.set_ylabel(f"{label} on held-out groups")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    stack = ", ".join(sorted(table["stack"].unique()))
    folds = table["fold"].nunique()
    ax.set_title(f"{stack}: fine-tuning, {folds} folds over the sheet's groups", fontsize=10)
    ax.legend(loc="lower right")
    return fig
