"""Figures of training and of a network's held-out predictions; each returns a Figure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from grainflow.io.hdf5 import Sample
from grainflow.tasks import TASKS

__all__ = [
    "read_histories",
    "training_summary",
    "training_curves",
    "prediction_overlays",
    "size_distributions",
]


def read_histories(paths: Sequence[str]) -> pd.DataFrame:
    """Concatenate ``history.tsv`` files; the fold is read from each path (``.../fold{k}/``)."""
    frames = []
    for path in paths:
        fold = next((p[4:] for p in str(path).split("/") if p.startswith("fold")), "?")
        df = pd.read_csv(path, sep="\t")
        df["fold"] = fold
        frames.append(df)
    if not frames:
        raise ValueError("no history files given")
    return pd.concat(frames, ignore_index=True)


def training_summary(paths: Sequence[str]) -> dict:
    """Numbers for the training caption: epochs, last epoch's validation score, speed, memory."""
    h = read_histories(paths)
    last = h.loc[h.groupby("fold")["epoch"].idxmax()]
    return {
        "folds": int(h["fold"].nunique()),
        "epochs": int(h["epoch"].max()),
        "last_score_mean": round(float(last["score"].mean()), 3),
        "last_score_min": round(float(last["score"].min()), 3),
        "images_per_s": round(float(h["images_per_s"].median()), 1),
        "peak_memory_mb": round(float(h["peak_memory_mb"].max()), 0),
    }


def training_curves(paths: Sequence[str], *, score_label: str) -> Figure:
    """Training and validation loss, validation score and learning rate per epoch, per fold."""
    h = read_histories(paths)
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    ax_loss, ax_score, ax_lr = fig.subplots(1, 3)
    for i, (fold, df) in enumerate(h.groupby("fold", sort=True)):
        c = f"C{i}"
        ax_loss.plot(df.epoch, df.train_loss, color=c, label=f"fold {fold} train")
        ax_loss.plot(df.epoch, df.val_loss, color=c, ls="--", label=f"fold {fold} validation")
        ax_score.plot(df.epoch, df.score, color=c, marker="o", ms=3, label=f"fold {fold}")
        ax_lr.plot(df.epoch, df.lr, color=c)
    ax_loss.set(xlabel="epoch", ylabel="loss (Dice + cross-entropy)", yscale="log", title="loss")
    ax_score.set(xlabel="epoch", ylabel=score_label, title="held-out specimens (curve only)")
    ax_lr.set(xlabel="epoch", ylabel="learning rate at epoch end", yscale="log", title="schedule")
    ax_loss.legend(fontsize=6, ncol=2)
    ax_score.legend(fontsize=7)
    return fig


def _show(ax, image, title):
    ax.imshow(image, cmap="gray", interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def prediction_overlays(
    rows: pd.DataFrame,
    samples: dict[str, Sample],
    probability: dict[str, np.ndarray],
    predictions: dict[str, dict[str, np.ndarray]],
    *,
    task: str,
    score: str,
    n: int = 2,
) -> Figure:
    """Image, truth, prediction and errors for the ``n`` worst and ``n`` best held-out images.

    Errors: false positives in red, false negatives in blue (boundaries for
    grains, the particle phase for phases).
    """
    key = TASKS[task].target
    order = rows.sort_values(score)
    chosen = [*order.head(n).itertuples(), *order.tail(n).itertuples()]
    fig = Figure(figsize=(9, 2.3 * len(chosen)), layout="constrained")
    axes = fig.subplots(len(chosen), 4, squeeze=False)
    errors = ListedColormap([(0, 0, 0, 0), (0.9, 0.1, 0.1, 0.9), (0.1, 0.3, 1.0, 0.9)])
    for r, row in enumerate(chosen):
        s = samples[row.image_id]
        truth = s.labels[key] > 0
        pred = predictions[row.image_id][key] > 0
        which = "worst" if r < n else "best"
        _show(axes[r, 0], s.image, f"{which}: {row.image_id} ({s.modality})")
        _show(axes[r, 1], truth, f"truth: {key}")
        axes[r, 2].imshow(
            probability[row.image_id], cmap="magma", vmin=0, vmax=1, interpolation="nearest"
        )
        axes[r, 2].set_title(f"P({key}), {score} = {getattr(row, score):.3f}", fontsize=7)
        axes[r, 2].set_axis_off()
        err = np.zeros(truth.shape, np.uint8)
        err[pred & ~truth] = 1
        err[~pred & truth] = 2
        axes[r, 3].imshow(s.image, cmap="gray", interpolation="nearest")
        axes[r, 3].imshow(err, cmap=errors, vmin=0, vmax=2, interpolation="nearest")
        axes[r, 3].set_title("errors: red = false +, blue = missed", fontsize=7)
        axes[r, 3].set_axis_off()
    return fig


def size_distributions(
    true_sizes: np.ndarray, pred_sizes: np.ndarray, *, unit: str, what: str
) -> Figure:
    """Histograms (log bins) of true against predicted object sizes."""
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    both = np.concatenate([true_sizes, pred_sizes])
    both = both[both > 0]
    if both.size == 0:
        ax.text(0.5, 0.5, "no objects", ha="center", transform=ax.transAxes)
        return fig
    bins = np.geomspace(both.min(), both.max() * 1.001, 30)
    ax.hist(true_sizes, bins=bins, histtype="step", lw=2, label=f"truth ({len(true_sizes)})")
    ax.hist(pred_sizes, bins=bins, histtype="step", lw=2, label=f"prediction ({len(pred_sizes)})")
    ax.set_xscale("log")
    ax.set(xlabel=f"{what} equivalent-circle diameter ({unit})", ylabel="count")
    ax.axvline(np.median(true_sizes), color="C0", ls=":", lw=1)
    ax.axvline(np.median(pred_sizes), color="C1", ls=":", lw=1)
    ax.legend(fontsize=8)
    return fig
