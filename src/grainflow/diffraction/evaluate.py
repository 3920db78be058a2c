"""Crystal-system predictions and their scores: confusion, calibration, breakdowns, abstention."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from grainflow.checkpoint import load_checkpoint, model_from_checkpoint
from grainflow.diffraction.data import CLASSES, fold_rows, load_patterns, patterns_of_kinds
from grainflow.diffraction.representation import (
    checkpoint_form_px,
    checkpoint_kinds,
    checkpoint_representation,
    represent,
)
from grainflow.runtime import resolve_device
from grainflow.splits import read_manifest

__all__ = [
    "predict_proba",
    "predict_rows",
    "predict_fold",
    "predict_validation",
    "confusion_matrix",
    "per_class_table",
    "reliability_table",
    "expected_calibration_error",
    "dose_bins",
    "summarize_predictions",
    "first_layer_weights",
    "evaluate_classifier",
    "headline",
    "accuracy_coverage",
    "abstention_threshold",
    "abstention_tables",
    "abstention_headline",
    "model_choice",
    "model_choice_headline",
]


def predict_proba(
    model: nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Class probabilities (N, C) of model inputs ``images`` (N, H, W), under ``inference_mode``.

    ``images`` are the patterns' forms (:func:`~grainflow.diffraction.representation.represent`):
    (N, h, w) for the 2-D models, (N, 1, bins) for ``ring_profile``.
    """
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


def predict_rows(
    checkpoint: str | os.PathLike,
    rows: pd.DataFrame,
    *,
    root: str | os.PathLike = ".",
    device: str = "cpu",
    batch_size: int = 256,
) -> pd.DataFrame:
    """One row per pattern of manifest ``rows``: metadata, true and predicted system, probabilities.

    Only the patterns of the kinds the checkpoint reads are predicted
    (:func:`~grainflow.diffraction.representation.checkpoint_kinds`: a
    ``ring_profile`` model's rows are ring patterns only).

    Columns: ``image_id, fold, specimen, session, modality, crystal_system,
    bravais, class_index, bravais_index, dose_counts, zone_family, true, pred,
    confidence, p_cubic, p_hexagonal, p_orthorhombic`` (``fold`` the rows' own).
    """

    ckpt = load_checkpoint(checkpoint)
    classes = ckpt["extra"].get("classes", list(CLASSES))
    if list(classes) != list(CLASSES):
        raise ValueError(f"{checkpoint} predicts {classes}, not the crystal systems {CLASSES}")
    model = model_from_checkpoint(ckpt)
    images, meta = load_patterns(rows, root=root)
    images, meta = patterns_of_kinds(images, meta, checkpoint_kinds(ckpt))
    if meta.empty:
        raise ValueError(
            f"{checkpoint} reads {checkpoint_kinds(ckpt)} patterns; the rows hold none"
        )
    images = represent(
        images,
        meta["modality"].tolist(),
        checkpoint_representation(ckpt),
        px=checkpoint_form_px(ckpt),
    )
    probs = predict_proba(model, images, device=device, batch_size=batch_size)
    meta = meta.assign(
        true=[CLASSES[i] for i in meta["class_index"]],
        pred=[CLASSES[i] for i in probs.argmax(axis=1)],
        confidence=probs.max(axis=1),
    )
    for k, name in enumerate(CLASSES):
        meta[f"p_{name}"] = probs[:, k]
    return meta


def predict_fold(
    checkpoint: str | os.PathLike,
    manifest: pd.DataFrame,
    fold: int,
    *,
    root: str | os.PathLike = ".",
    device: str = "cpu",
    batch_size: int = 256,
) -> pd.DataFrame:
    """:func:`predict_rows` of the test patterns of ``fold`` (the fold's held-out crystals)."""
    return predict_rows(
        checkpoint,
        manifest[manifest["fold"] == fold],
        root=root,
        device=device,
        batch_size=batch_size,
    )


def predict_validation(
    checkpoint: str | os.PathLike,
    manifest: pd.DataFrame,
    fold: int,
    *,
    val_specimens_per_class: int,
    validation_seed: int,
    root: str | os.PathLike = ".",
    device: str = "cpu",
    batch_size: int = 256,
) -> pd.DataFrame:
    """:func:`predict_rows` of the validation crystals of fold ``fold``'s model.

    They are drawn again exactly as training drew them
    (:func:`grainflow.diffraction.data.fold_rows` with the same
    ``val_specimens_per_class`` and ``validation_seed``): crystals of the
    other folds that the model did not train on and that chose its epoch. In
    the result ``fold`` is the model's fold and ``crystal_fold`` the fold the
    crystal belongs to in the manifest.
    """
    _, val_rows, _ = fold_rows(
        manifest, int(fold), val_specimens_per_class=val_specimens_per_class, seed=validation_seed
    )
    if val_rows.empty:
        raise ValueError(
            f"fold {fold} has no validation crystals (val_specimens_per_class="
            f"{val_specimens_per_class}); abstention thresholds are chosen on them"
        )
    pred = predict_rows(checkpoint, val_rows, root=root, device=device, batch_size=batch_size)
    pred.insert(2, "crystal_fold", pred["fold"].to_numpy())
    pred["fold"] = int(fold)
    return pred


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
    """Weights of the first convolution, (filters, in_channels, kh, kw), as NumPy (1-D: kh = 1)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().cpu().numpy()
        if isinstance(module, nn.Conv1d):
            return module.weight.detach().cpu().numpy()[:, :, None, :]
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


def _confidence_and_correct(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ValueError(
            f"need probabilities (N, C) and N labels, got {probabilities.shape=}, {labels.shape=}"
        )
    return probabilities.max(axis=1), probabilities.argmax(axis=1) == labels


def accuracy_coverage(probabilities, labels) -> pd.DataFrame:
    """Accuracy of the predictions kept at each confidence threshold, against their share.

    A prediction is kept when its confidence (the largest class probability)
    is at least the threshold; the classifier abstains on the rest.

    Parameters
    ----------
    probabilities : array-like of shape (N, C)
        Class probabilities; the prediction is the arg-max.
    labels : array-like of shape (N,)
        True class indices.

    Returns
    -------
    DataFrame
        One row per distinct confidence, highest first: ``threshold`` (that
        confidence), ``accepted`` (predictions with confidence >= threshold),
        ``coverage`` (accepted / N), ``correct`` (correct among the accepted),
        ``accuracy`` (correct / accepted). The last row keeps everything
        (coverage 1).

    Notes
    -----
    Predictions of equal confidence are kept or dropped together: no threshold
    separates them, so a tie is one step of the curve (sorting and cutting inside
    a tie would report a coverage that no threshold gives).
    """
    confidence, correct = _confidence_and_correct(probabilities, labels)
    columns = ["threshold", "accepted", "coverage", "correct", "accuracy"]
    if not len(confidence):
        return pd.DataFrame(columns=columns)
    order = np.argsort(-confidence, kind="stable")
    conf, ok = confidence[order], correct[order]
    accepted = np.arange(1, len(conf) + 1)
    hits = np.cumsum(ok)
    last = np.append(conf[1:] != conf[:-1], True)  # the last of each tie group
    return pd.DataFrame(
        {
            "threshold": conf[last],
            "accepted": accepted[last],
            "coverage": accepted[last] / len(conf),
            "correct": hits[last],
            "accuracy": hits[last] / accepted[last],
        },
        columns=columns,
    )


def abstention_threshold(
    curve: pd.DataFrame, *, coverage: float | None = None, accuracy: float | None = None
) -> float:
    """The confidence threshold for a target coverage or a target accuracy.

    Parameters
    ----------
    curve : DataFrame
        :func:`accuracy_coverage` of the patterns the threshold is chosen on
        (the validation crystals).
    coverage : float in (0, 1], optional
        Keep at least this share: the highest threshold whose coverage reaches it.
    accuracy : float in (0, 1], optional
        Reach this accuracy on what is kept: the lowest threshold (the largest
        coverage) whose accuracy reaches it; ``inf`` (abstain on everything)
        when none does.

    Returns
    -------
    float
        Keep a prediction when its confidence is ``>= threshold``.
    """
    if (coverage is None) == (accuracy is None):
        raise ValueError("give one of coverage or accuracy")
    if curve.empty:
        raise ValueError("no predictions to choose a threshold on")
    target = coverage if coverage is not None else accuracy
    if not 0 < target <= 1:
        raise ValueError(f"the target must be in (0, 1], got {target}")
    if coverage is not None:
        # float slack: 9 of 10 kept is coverage 0.9 even when 9 / 10 rounds below 0.9
        reached = curve["coverage"].to_numpy() >= coverage - 1e-12
        return float(curve["threshold"].to_numpy()[np.argmax(reached)])
    reached = np.flatnonzero(curve["accuracy"].to_numpy() >= accuracy - 1e-12)
    return float(curve["threshold"].to_numpy()[reached[-1]]) if len(reached) else math.inf


def _kept(pred: pd.DataFrame, threshold: float) -> dict:
    keep = pred["confidence"].to_numpy() >= threshold
    ok = (pred["true"] == pred["pred"]).to_numpy()
    return {"patterns": len(pred), "accepted": int(keep.sum()), "correct": int(ok[keep].sum())}


def abstention_tables(
    predictions: pd.DataFrame, validation: pd.DataFrame, *, coverage: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy against coverage on held-out crystals, and thresholds chosen on validation crystals.

    Parameters
    ----------
    predictions : DataFrame
        Held-out (test) predictions of every fold (:func:`evaluate_classifier`).
    validation : DataFrame
        Each fold's model on its validation crystals (:func:`predict_validation`).
    coverage : float
        Target coverage of the thresholds.

    Returns
    -------
    curve : DataFrame
        :func:`accuracy_coverage` of the held-out predictions per ``fold`` and
        pooled (``all``).
    abstention : DataFrame
        One row per fold and ``all``: ``threshold`` (chosen on the fold's
        validation crystals so that they keep ``coverage``), ``val_patterns``,
        ``val_coverage``, ``val_accuracy``; on the fold's held-out crystals
        ``patterns``, ``accepted``, ``coverage``, ``accuracy`` (of the kept
        predictions) and ``accuracy_all`` (without abstention). ``all`` sums
        the counts of the folds (each under its own threshold); its
        ``threshold`` is the folds' mean.

    Notes
    -----
    Each fold's model gets its own threshold, chosen on the crystals that chose its
    epoch; the held-out crystals never enter the choice, so the held-out coverage and
    accuracy are what a user gets on new crystals. The validation crystals also chose
    the epoch, so their confidences may be a little higher than on new crystals: the
    held-out coverage then falls below the target.
    """
    folds = sorted(set(predictions["fold"]))
    missing = sorted(set(folds) - set(validation["fold"]))
    if missing:
        raise ValueError(f"no validation predictions for fold(s) {missing}")
    curves, rows = [], []
    for fold in [*folds, "all"]:
        test = predictions if fold == "all" else predictions[predictions["fold"] == fold]
        c = accuracy_coverage(_probabilities(test), test["class_index"])
        curves.append(c.assign(fold=str(fold)))
        if fold == "all":
            continue
        val = validation[validation["fold"] == fold]
        threshold = abstention_threshold(
            accuracy_coverage(_probabilities(val), val["class_index"]), coverage=coverage
        )
        v, t = _kept(val, threshold), _kept(test, threshold)
        rows.append(
            {
                "fold": str(fold),
                "threshold": threshold,
                "val_patterns": v["patterns"],
                "val_accepted": v["accepted"],
                "val_correct": v["correct"],
                **t,
                "correct_all": int((test["true"] == test["pred"]).sum()),
            }
        )
    table = pd.DataFrame(rows)
    total = table.drop(columns=["fold", "threshold"]).sum()
    table = pd.concat(
        [table, pd.DataFrame([{"fold": "all", "threshold": table["threshold"].mean(), **total}])],
        ignore_index=True,
    )
    table = table.assign(
        val_coverage=table["val_accepted"] / table["val_patterns"],
        val_accuracy=table["val_correct"] / table["val_accepted"].where(table["val_accepted"] > 0),
        coverage=table["accepted"] / table["patterns"],
        accuracy=table["correct"] / table["accepted"].where(table["accepted"] > 0),
        accuracy_all=table["correct_all"] / table["patterns"],
    )
    columns = [
        "fold",
        "threshold",
        "val_patterns",
        "val_coverage",
        "val_accuracy",
        "patterns",
        "accepted",
        "coverage",
        "accuracy",
        "accuracy_all",
    ]
    curve = pd.concat(curves, ignore_index=True)
    return curve[["fold", *curve.columns[:-1]]], table[columns]


def _probabilities(pred: pd.DataFrame) -> np.ndarray:
    return pred[[f"p_{c}" for c in CLASSES]].to_numpy(dtype=np.float64)


def abstention_headline(abstention: Mapping[str, str | os.PathLike]) -> dict:
    """Numbers for captions, per classifier (name -> abstention.tsv): pooled held-out values (%)."""
    out = {}
    for name, path in abstention.items():
        t = pd.read_csv(path, sep="\t", dtype={"fold": str})
        pooled = t[t["fold"] == "all"].iloc[0]
        out[name] = {
            "threshold": round(float(pooled["threshold"]), 3),
            "coverage": round(100 * float(pooled["coverage"]), 1),
            "accuracy": round(100 * float(pooled["accuracy"]), 1),
            "accuracy_all": round(100 * float(pooled["accuracy_all"]), 1),
            "val_coverage": round(100 * float(pooled["val_coverage"]), 1),
            "patterns": int(pooled["patterns"]),
        }
    return out


def model_choice(breakdowns: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """Which classifier to use for which pattern kind, from their held-out accuracies.

    Parameters
    ----------
    breakdowns : mapping of classifier name -> path
        Each classifier's ``breakdown.tsv`` (:func:`summarize_predictions`).

    Returns
    -------
    DataFrame
        One row per pattern kind and classifier that reads it: ``modality``,
        ``classifier``, ``patterns`` (held-out patterns of that kind),
        ``accuracy`` and ``use`` (True for the most accurate classifier of the
        kind; ties go to the first named). A classifier that reads only some
        kinds (``ring_profile``) has rows for those only.
    """
    rows = []
    for name, path in breakdowns.items():
        b = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
        for _, r in b[b["by"] == "modality"].iterrows():
            rows.append(
                {
                    "modality": r["modality"],
                    "classifier": name,
                    "patterns": int(r["patterns"]),
                    "accuracy": float(r["accuracy"]),
                }
            )
    table = pd.DataFrame(rows, columns=["modality", "classifier", "patterns", "accuracy"])
    table["use"] = False
    for _, group in table.groupby("modality", sort=False):
        table.loc[group["accuracy"].idxmax(), "use"] = True
    order = {m: k for k, m in enumerate(("spot", "ring"))}
    return table.sort_values(
        "modality", key=lambda m: m.map(order).fillna(len(order)), kind="stable"
    ).reset_index(drop=True)


def model_choice_headline(table: pd.DataFrame) -> dict:
    """Numbers for the caption: per pattern kind, the classifier to use and every one's accuracy (%)."""
    out = {}
    for modality, group in table.groupby("modality", sort=False):
        best = group[group["use"]].iloc[0]
        out[str(modality)] = {
            "use": str(best["classifier"]),
            "accuracy": round(100 * float(best["accuracy"]), 1),
            "patterns": int(best["patterns"]),
            "all": {
                str(r["classifier"]): round(100 * float(r["accuracy"]), 1)
                for _, r in group.iterrows()
            },
        }
    return out
