"""Crystal-system predictions and their scores: confusion, calibration, breakdowns."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from grainflow.checkpoint import load_checkpoint, model_from_checkpoint
from grainflow.diffraction.data import CLASSES, load_patterns
from grainflow.diffraction.representation import checkpoint_representation, represent
from grainflow.runtime import resolve_device
from grainflow.splits import read_manifest

__all__ = [
    "predict_proba",
    "predict_fold",
    "confusion_matrix",
    "per_class_table",
    "reliability_table",
    "expected_calibration_error",
    "dose_bins",
    "summarize_predictions",
    "first_layer_weights",
    "evaluate_classifier",
    "headline",
]


def predict_proba(
    model: nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Class probabilities (N, C) of patterns ``images`` (N, H, W), under ``inference_mode``."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got {images.shape=}")
    device = resolve_device(device)
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size])[:, None].to(device)
            out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def predict_fold(
    checkpoint: str | os.PathLike,
    manifest: pd.DataFrame,
    fold: int,
    *,
    root: str | os.PathLike = ".",
    device: str = "cpu",
    batch_size: int = 256,
) -> pd.DataFrame:
    """One row per test pattern of ``fold``: metadata, true and predicted system, probabilities.

    Columns: ``image_id, fold, specimen, session, modality, crystal_system,
    bravais, class_index, bravais_index, dose_counts, zone_family, true, pred,
    confidence, p_cubic, p_hexagonal, p_orthorhombic``.
    """

    ckpt = load_checkpoint(checkpoint)
    classes = ckpt["extra"].get("classes", list(CLASSES))
    if list(classes) != list(CLASSES):
        raise ValueError(f"{checkpoint} predicts {classes}, not the crystal systems {CLASSES}")
    model = model_from_checkpoint(ckpt)
    images, meta = load_patterns(manifest[manifest["fold"] == fold], root=root)
    images = represent(images, meta["modality"].tolist(), checkpoint_representation(ckpt))
    probs = predict_proba(model, images, device=device, batch_size=batch_size)
    meta = meta.assign(
        true=[CLASSES[i] for i in meta["class_index"]],
        pred=[CLASSES[i] for i in probs.argmax(axis=1)],
        confidence=probs.max(axis=1),
    )
    for k, name in enumerate(CLASSES):
        meta[f"p_{name}"] = probs[:, k]
    return meta


def confusion_matrix(
    true: Sequence[str], pred: Sequence[str], classes: Sequence[str] = CLASSES
) -> pd.DataFrame:
    """Counts, rows = true class, columns = predicted class."""
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(true, pred):
        m[index[t], index[p]] += 1
    return pd.DataFrame(
        m, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted")
    )


def per_class_table(confusion: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall, F1 and support per class from a confusion matrix (counts)."""
    m = confusion.to_numpy().astype(float)
    tp = np.diag(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(m.sum(0) > 0, tp / m.sum(0), np.nan)
        recall = np.where(m.sum(1) > 0, tp / m.sum(1), np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), np.nan)
    return pd.DataFrame(
        {
            "class": confusion.index,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": m.sum(1).astype(int),
        }
    )


def reliability_table(
    confidence: np.ndarray, correct: np.ndarray, *, bins: int = 10
) -> pd.DataFrame:
    """Equal-width confidence bins over [0, 1]: count, mean confidence and accuracy per bin."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins=}")
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = which == b
        rows.append(
            {
                "bin_low": edges[b],
                "bin_high": edges[b + 1],
                "count": int(sel.sum()),
                "confidence": float(confidence[sel].mean()) if sel.any() else np.nan,
                "accuracy": float(correct[sel].mean()) if sel.any() else np.nan,
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, *, bins: int = 10
) -> float:
    """ECE = Σ_b (n_b / N) |accuracy_b - confidence_b| over equal-width confidence bins."""
    table = reliability_table(confidence, correct, bins=bins)
    used = table[table["count"] > 0]
    n = used["count"].sum()
    if not n:
        raise ValueError("no predictions to calibrate")
    return float(np.sum(used["count"] / n * np.abs(used["accuracy"] - used["confidence"])))


def dose_bins(dose: np.ndarray, *, bins: int = 3) -> pd.Series:
    """Label each dose by its log-spaced bin, e.g. ``"30–300"`` (counts)."""
    dose = np.asarray(dose, dtype=float)
    edges = np.geomspace(dose.min(), dose.max() * (1 + 1e-9), bins + 1)
    which = np.clip(np.digitize(dose, edges[1:-1]), 0, bins - 1)
    names = [f"{edges[b]:.0f}–{edges[b + 1]:.0f}" for b in range(bins)]
    return pd.Series(pd.Categorical([names[w] for w in which], categories=names, ordered=True))


def summarize_predictions(pred: pd.DataFrame, *, bins: int = 10, dose_bin_count: int = 3) -> dict:
    """Tables of one model's held-out predictions (all folds).

    Returns
    -------
    tables : dict of str -> DataFrame
        ``summary`` (one row per fold and ``all``: patterns, accuracy, ECE),
        ``per_class`` (pooled precision/recall/F1/support), ``confusion``
        (long: fold, true, predicted, count; fold ``all`` pooled),
        ``reliability`` (pooled bins), ``breakdown`` (accuracy by modality,
        dose bin, and modality × dose bin; zone family for spot patterns).
    """
    correct = (pred["true"] == pred["pred"]).to_numpy()
    summary, confusion = [], []
    for fold, group in [*pred.groupby("fold", sort=True), ("all", pred)]:
        ok = (group["true"] == group["pred"]).to_numpy()
        summary.append(
            {
                "fold": str(fold),
                "patterns": len(group),
                "accuracy": float(ok.mean()),
                "ece": expected_calibration_error(group["confidence"], ok, bins=bins),
            }
        )
        cm = confusion_matrix(group["true"], group["pred"])
        for t in CLASSES:
            for p in CLASSES:
                confusion.append(
                    {"fold": str(fold), "true": t, "predicted": p, "count": int(cm.loc[t, p])}
                )
    pooled = confusion_matrix(pred["true"], pred["pred"])
    d = pred.assign(
        correct=correct, dose_bin=dose_bins(pred["dose_counts"], bins=dose_bin_count).array
    )
    parts = []
    for by in (["modality"], ["dose_bin"], ["modality", "dose_bin"]):
        g = d.groupby(by, observed=True, sort=True)["correct"].agg(["size", "mean"]).reset_index()
        g.insert(0, "by", "+".join(by))
        parts.append(g)
    spots = d[d["modality"] == "spot"]
    if len(spots):
        g = (
            spots.groupby(["crystal_system", "zone_family"], sort=True)["correct"]
            .agg(["size", "mean"])
            .reset_index()
        )
        g.insert(0, "by", "crystal_system+zone_family")
        parts.append(g)
    breakdown = pd.concat(parts, ignore_index=True).rename(
        columns={"size": "patterns", "mean": "accuracy"}
    )
    cols = ["by", "modality", "dose_bin", "crystal_system", "zone_family", "patterns", "accuracy"]
    breakdown = breakdown.reindex(columns=cols)
    return {
        "summary": pd.DataFrame(summary),
        "per_class": per_class_table(pooled),
        "confusion": pd.DataFrame(confusion),
        "reliability": reliability_table(pred["confidence"], correct, bins=bins),
        "breakdown": breakdown,
    }


def first_layer_weights(model: nn.Module) -> np.ndarray:
    """Weights of the first convolution, (filters, in_channels, kh, kw), as NumPy."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().cpu().numpy()
    raise ValueError(f"{type(model).__name__} has no convolution")


def evaluate_classifier(
    manifest: str | os.PathLike,
    checkpoints: Mapping[int, str | os.PathLike],
    *,
    bins: int = 10,
    dose_bin_count: int = 3,
    device: str = "cpu",
    root: str | os.PathLike = ".",
) -> tuple[pd.DataFrame, dict]:
    """Held-out predictions of every fold's model and their tables (see summarize_predictions)."""

    table = read_manifest(manifest)
    pred = pd.concat(
        [
            predict_fold(path, table, int(fold), root=root, device=device)
            for fold, path in sorted(checkpoints.items())
        ],
        ignore_index=True,
    )
    return pred, summarize_predictions(pred, bins=bins, dose_bin_count=dose_bin_count)


def headline(summary: str | os.PathLike, per_class: str | os.PathLike) -> dict:
    """Numbers for captions: pooled accuracy and ECE (%), per-class recall (%), patterns."""
    s = pd.read_csv(summary, sep="\t", dtype={"fold": str})
    pooled = s[s["fold"] == "all"].iloc[0]
    pc = pd.read_csv(per_class, sep="\t")
    folds = s[s["fold"] != "all"]["accuracy"]
    return {
        "accuracy": round(100 * float(pooled["accuracy"]), 1),
        "ece": round(100 * float(pooled["ece"]), 2),
        "patterns": int(pooled["patterns"]),
        "fold_min": round(100 * float(folds.min()), 1),
        "fold_max": round(100 * float(folds.max()), 1),
        "recall": {r["class"]: round(100 * float(r["recall"]), 1) for _, r in pc.iterrows()},
    }
