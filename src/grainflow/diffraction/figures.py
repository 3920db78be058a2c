"""Figures of the diffraction task. Each function returns a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from grainflow.diffraction.crystal import SYSTEMS
from grainflow.diffraction.representation import (
    BASE_PX,
    LOG_POLAR_R_MIN_PX,
    represent,
    representation_of,
)
from grainflow.io.hdf5 import Sample

__all__ = [
    "COLOURS",
    "pattern_examples_figure",
    "representation_figure",
    "confusion_figure",
    "reliability_figure",
    "breakdown_figure",
    "filters_figure",
    "transfer_figure",
    "scan_map_figure",
    "coverage_figure",
]

#: one colour per crystal system (cubic, hexagonal, orthorhombic)
COLOURS = ("#e6550d", "#3182bd", "#31a354")


def pattern_examples_figure(samples: Sequence[Sample], *, per_row: int = 6) -> Figure:
    """Example patterns, one row per crystal system (spot patterns first, then rings).

    Titles give the Bravais lattice, the zone axis family (spots) and the dose
    in counts at the brightest diffracted pixel.
    """
    rows = {s: [x for x in samples if x.params.get("crystal_system") == s] for s in SYSTEMS}
    rows = {
        s: sorted(v, key=lambda x: x.modality != "spot")[:per_row] for s, v in rows.items() if v
    }
    if not rows:
        raise ValueError("no diffraction patterns to show")
    fig = Figure(figsize=(1.5 * per_row, 1.75 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), per_row, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, (system, items) in enumerate(rows.items()):
        for j, s in enumerate(items):
            ax = axes[r, j]
            ax.imshow(s.image, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
            zone = s.params.get("zone_family") or ""
            ax.set_title(
                f"{s.params['bravais']} {s.modality} {zone}\n{s.params['dose_counts']:.0f} counts",
                fontsize=6,
            )
        axes[r, 0].text(
            -0.08,
            0.5,
            system,
            transform=axes[r, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=9,
            color=COLOURS[SYSTEMS.index(system)],
        )
    fig.suptitle(
        f"simulated patterns, log(1 + counts) scaled to [0, 1], {items[0].image.shape[0]} px",
        fontsize=9,
    )
    return fig


def representation_figure(
    samples: Sequence[Sample], representation=None, *, harmonics: int = 16
) -> Figure:
    """What the networks see: per crystal system a spot and a ring pattern beside their forms.

    Columns: spot pattern, its form (:func:`grainflow.diffraction.representation.represent`;
    for the angular spectrum only the first ``harmonics`` rows, the higher
    ones hold little but noise), ring pattern, its form.
    """

    forms = representation_of(representation)
    picks = {}
    for system in SYSTEMS:
        for kind in ("spot", "ring"):
            found = [
                x
                for x in samples
                if x.params.get("crystal_system") == system and x.modality == kind
            ]
            if found:
                picks[system, kind] = found[0]
    systems = [s for s in SYSTEMS if any((s, k) in picks for k in ("spot", "ring"))]
    if not systems:
        raise ValueError("no diffraction patterns to show")
    fig = Figure(figsize=(8.4, 2.1 * len(systems)), layout="constrained")
    axes = fig.subplots(len(systems), 4, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, system in enumerate(systems):
        for c, kind in enumerate(("spot", "ring")):
            sample = picks.get((system, kind))
            if sample is None:
                continue
            size = sample.image.shape[0]
            form = forms[kind]
            shown = represent(sample.image[None], [kind], forms)[0]
            ax = axes[r, 2 * c]
            ax.imshow(sample.image, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
            zone = sample.params.get("zone_family") or ""
            ax.set_title(f"{sample.params['bravais']} {kind} {zone} ({size} px)", fontsize=7)
            ax = axes[r, 2 * c + 1]
            ax.set_axis_on()
            extent = None
            if form in ("angular_spectrum", "log_polar", "log_polar_highpass"):
                radii = (LOG_POLAR_R_MIN_PX * size / BASE_PX, size / 2)
                top = 2 * harmonics if form == "angular_spectrum" else 180
                extent = (radii[0], radii[1], top, 0)
                ax.set_xscale("log")
            if form == "angular_spectrum":
                shown = shown[:harmonics]
            ax.imshow(
                shown,
                cmap="magma" if form == "angular_spectrum" else "inferno",
                interpolation="nearest",
                aspect="auto",
                extent=extent,
            )
            ax.set_title(form.replace("_", " "), fontsize=7)
            ax.tick_params(labelsize=6)
            if extent is not None:
                ticks = [t for t in (2, 4, 8, 16, 32, 64) if extent[0] <= t <= extent[1]]
                ax.set_xticks(ticks, [str(t) for t in ticks])
                ax.set_xticks([], minor=True)
                ax.set_xlabel("radius (px, log scale)", fontsize=6)
                ax.set_ylabel(
                    "harmonic m" if form == "angular_spectrum" else "azimuth (°)", fontsize=6
                )
        axes[r, 0].text(
            -0.08,
            0.5,
            system,
            transform=axes[r, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=9,
            color=COLOURS[SYSTEMS.index(system)],
        )
    fig.suptitle("patterns and the forms in which the networks see them", fontsize=9)
    return fig


def confusion_figure(confusion: pd.DataFrame, *, title: str = "") -> Figure:
    """Confusion matrices per fold and pooled (columns ``fold, true, predicted, count``).

    Colour: fraction of the true class (row-normalised); text: counts.
    """
    folds = list(dict.fromkeys(confusion["fold"].astype(str)))
    fig = Figure(figsize=(2.6 * len(folds), 2.9), layout="constrained")
    axes = fig.subplots(1, len(folds), squeeze=False)[0]
    short = [c[:5] + "." if len(c) > 6 else c for c in SYSTEMS]
    for ax, fold in zip(axes, folds):
        d = confusion[confusion["fold"].astype(str) == fold]
        m = (
            d.pivot(index="true", columns="predicted", values="count")
            .reindex(index=list(SYSTEMS), columns=list(SYSTEMS))
            .fillna(0)
            .to_numpy()
        )
        frac = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(SYSTEMS)):
            for j in range(len(SYSTEMS)):
                ax.text(
                    j,
                    i,
                    f"{int(m[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if frac[i, j] > 0.6 else "black",
                )
        acc = np.trace(m) / max(m.sum(), 1)
        ax.set_title(
            ("pooled" if fold == "all" else f"fold {fold}") + f": accuracy {100 * acc:.1f} %",
            fontsize=8,
        )
        ax.set_xticks(range(len(SYSTEMS)), short, fontsize=7)
        ax.set_yticks(range(len(SYSTEMS)), short, fontsize=7)
        ax.set_xlabel("predicted system", fontsize=7)
    axes[0].set_ylabel("true system", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def reliability_figure(reliability: pd.DataFrame, *, ece: float, title: str = "") -> Figure:
    """Reliability diagram (accuracy against confidence per bin) and the confidence histogram."""
    fig = Figure(figsize=(6.5, 3.0), layout="constrained")
    ax, hx = fig.subplots(1, 2)
    used = reliability[reliability["count"] > 0]
    width = float((reliability["bin_high"] - reliability["bin_low"]).iloc[0])
    ax.bar(
        used["bin_low"],
        used["accuracy"],
        width=width,
        align="edge",
        color="#3182bd",
        edgecolor="white",
        label="accuracy",
    )
    ax.bar(
        used["bin_low"],
        used["confidence"] - used["accuracy"],
        bottom=used["accuracy"],
        width=width,
        align="edge",
        color="#e6550d",
        alpha=0.4,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)", ylabel="accuracy")
    ax.set_title(f"reliability, ECE {100 * ece:.2f} %", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    hx.bar(
        reliability["bin_low"],
        reliability["count"],
        width=width,
        align="edge",
        color="grey",
        edgecolor="white",
    )
    hx.set(xlim=(0, 1), xlabel="confidence (max probability)", ylabel="held-out patterns")
    hx.set_yscale("log")
    hx.set_title("confidence histogram", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def breakdown_figure(breakdown: pd.DataFrame, *, title: str = "") -> Figure:
    """Accuracy by pattern kind and dose (counts at the brightest diffracted pixel)."""
    d = breakdown[breakdown["by"] == "modality+dose_bin"]
    if d.empty:
        raise ValueError("the breakdown table has no modality+dose_bin rows")
    modalities = sorted(set(d["modality"]))
    bins = list(dict.fromkeys(d["dose_bin"]))
    fig = Figure(figsize=(6.5, 3.0), layout="constrained")
    ax, zx = fig.subplots(1, 2, width_ratios=[1, 1.2])
    width = 0.8 / len(modalities)
    for k, modality in enumerate(modalities):
        m = d[d["modality"] == modality].set_index("dose_bin").reindex(bins)
        x = np.arange(len(bins)) + k * width
        ax.bar(x, 100 * m["accuracy"], width=width, label=modality)
        for xi, (acc, n) in zip(x, zip(m["accuracy"], m["patterns"])):
            if np.isfinite(acc):
                ax.text(xi, 100 * acc + 0.5, f"{int(n)}", ha="center", fontsize=6)
    ax.set_xticks(np.arange(len(bins)) + width * (len(modalities) - 1) / 2, bins, fontsize=7)
    ax.set(
        xlabel="dose (counts at the brightest diffracted pixel)",
        ylabel="accuracy (%)",
        ylim=(max(0, 100 * np.nanmin(d["accuracy"]) - 10), 101),
    )
    ax.legend(fontsize=7, title="pattern", title_fontsize=7)
    ax.set_title("by kind and noise (numbers: patterns)", fontsize=9)
    z = breakdown[breakdown["by"] == "crystal_system+zone_family"]
    if len(z):
        labels = [f"{s[:5]} {f}" for s, f in zip(z["crystal_system"], z["zone_family"])]
        colours = [COLOURS[SYSTEMS.index(s)] for s in z["crystal_system"]]
        zx.barh(np.arange(len(z)), 100 * z["accuracy"], color=colours)
        zx.set_yticks(np.arange(len(z)), labels, fontsize=6)
        zx.invert_yaxis()
        zx.set(xlabel="accuracy (%)", xlim=(0, 101))
        zx.set_title("spot patterns by zone axis family", fontsize=9)
    else:
        zx.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def filters_figure(weights: np.ndarray, *, title: str = "") -> Figure:
    """First-layer filters (filters, in_channels, kh, kw), each on its own symmetric scale."""
    w = np.asarray(weights)
    if w.ndim != 4:
        raise ValueError(f"weights must be (filters, channels, kh, kw), got {w.shape}")
    w = w.sum(axis=1)  # one input channel (or RGB summed)
    n = len(w)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(0.75 * cols + 0.5, 0.75 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k < n:
            v = np.abs(w[k]).max() or 1.0
            ax.imshow(w[k], cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
    fig.suptitle(
        title
        or f"{n} first-layer filters, {w.shape[1]}×{w.shape[2]} px (red positive, blue negative)",
        fontsize=8,
    )
    return fig


def transfer_figure(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Held-out accuracy against labelled patterns per class, one line per strategy.

    ``table`` has columns ``strategy, n_per_class, fold, accuracy``; lines are
    fold means, bars the range over folds.
    """
    fig = Figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.subplots()
    styles = {"frozen": "o-", "finetune": "s-", "full": "^-", "scratch": "x--"}
    for strategy, group in table.groupby("strategy", sort=False):
        g = group.groupby("n_per_class")["accuracy"].agg(["mean", "min", "max"]).reset_index()
        ax.errorbar(
            g["n_per_class"],
            100 * g["mean"],
            yerr=[100 * (g["mean"] - g["min"]), 100 * (g["max"] - g["mean"])],
            fmt=styles.get(strategy, "o-"),
            capsize=3,
            label=strategy,
        )
    ax.set_xscale("log")
    ax.axhline(100 / len(SYSTEMS), color="grey", lw=0.7, ls=":", label="chance")
    ax.set(
        xlabel="labelled training patterns per crystal system",
        ylabel="held-out accuracy (%)",
        ylim=(0, 101),
    )
    ax.legend(fontsize=7, title="ResNet-18", title_fontsize=7)
    ax.set_title(title or "transfer learning as the labelled set shrinks", fontsize=9)
    return fig


def scan_map_figure(
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    truth: np.ndarray | None = None,
    scan_step_um: float | None = None,
    title: str = "",
) -> Figure:
    """Crystal-system map (arg-max), confidence map and, when given, the truth."""
    cmap = ListedColormap(["white", *COLOURS])
    panels = 3 if truth is not None else 2
    fig = Figure(figsize=(3.0 * panels, 3.1), layout="constrained")
    axes = fig.subplots(1, panels)
    sy, sx = labels.shape
    step = 1.0 if scan_step_um is None else scan_step_um
    unit = "µm" if scan_step_um is not None else "probe positions"
    extent = (0, sx * step, sy * step, 0)
    axes[0].imshow(labels, cmap=cmap, vmin=0, vmax=3, interpolation="nearest", extent=extent)
    axes[0].set_title("predicted crystal system", fontsize=8)
    im = axes[1].imshow(
        probs.max(axis=0),
        cmap="viridis",
        vmin=1 / len(SYSTEMS),
        vmax=1,
        interpolation="nearest",
        extent=extent,
    )
    fig.colorbar(im, ax=axes[1], shrink=0.8, label="max probability")
    axes[1].set_title("confidence", fontsize=8)
    if truth is not None:
        acc = float(np.mean(truth == labels))
        axes[2].imshow(truth, cmap=cmap, vmin=0, vmax=3, interpolation="nearest", extent=extent)
        axes[2].set_title(f"truth (agreement {100 * acc:.1f} %)", fontsize=8)
    for ax in axes:
        ax.set_xlabel(f"x ({unit})", fontsize=7)
        ax.set_ylabel(f"y ({unit})", fontsize=7)
        ax.tick_params(labelsize=6)
    handles = [
        axes[0].scatter([], [], marker="s", color=c, label=s) for s, c in zip(SYSTEMS, COLOURS)
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def coverage_figure(
    curves: Mapping[str, pd.DataFrame],
    abstention: Mapping[str, pd.DataFrame] | None = None,
    *,
    target: float = 0.9,
    title: str = "",
) -> Figure:
    """Accuracy of the kept predictions against coverage, one line per classifier.

    ``curves`` maps a classifier to its accuracy–coverage table (columns
    ``fold, coverage, accuracy``; the pooled ``all`` rows are drawn). A dot marks
    each line at coverage ``target`` (the first point reaching it); a star, when
    ``abstention`` (name -> table with an ``all`` row of ``coverage, accuracy``)
    is given, what the thresholds chosen on validation crystals gave on the
    held-out ones.
    """
    if not curves:
        raise ValueError("no accuracy-coverage curves to draw")
    fig = Figure(figsize=(5.0, 3.6), layout="constrained")
    ax = fig.subplots()
    lowest = 100.0
    for k, (name, table) in enumerate(curves.items()):
        c = table[table["fold"].astype(str) == "all"] if "fold" in table else table
        colour = f"C{k}"
        x, y = 100 * c["coverage"].to_numpy(), 100 * c["accuracy"].to_numpy()
        ax.plot(x, y, "-", color=colour, lw=1.2, label=name)
        lowest = min(lowest, float(y.min()))
        at = int(np.argmax(c["coverage"].to_numpy() >= target - 1e-12))
        ax.plot(x[at], y[at], "o", color=colour, ms=5)
        ax.annotate(
            f"{y[at]:.1f} %",
            (x[at], y[at]),
            xytext=(-6, 6 + 10 * k),  # one label above another where the lines meet
            textcoords="offset points",
            ha="right",
            fontsize=7,
            color=colour,
        )
        if abstention is not None and name in abstention:
            a = abstention[name]
            pooled = a[a["fold"].astype(str) == "all"].iloc[0]
            ax.plot(
                100 * pooled["coverage"], 100 * pooled["accuracy"], "*", color=colour, ms=9, mec="k"
            )
    ax.axvline(100 * target, color="grey", lw=0.8, ls="--")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(ax.plot([], [], "o", color="grey", ms=5)[0])
    labels.append(f"{100 * target:.0f} % coverage")
    if abstention is not None:
        handles.append(ax.plot([], [], "*", color="grey", ms=9, mec="k")[0])
        labels.append("threshold from validation crystals")
    ax.legend(handles, labels, fontsize=7)
    ax.set(
        xlabel="coverage: held-out patterns classified (%)",
        ylabel="accuracy of those classified (%)",
        xlim=(0, 101),
        ylim=(max(0.0, lowest - 5), 100.5),
    )
    ax.set_title(title or "abstaining below a confidence threshold", fontsize=9)
    return fig
