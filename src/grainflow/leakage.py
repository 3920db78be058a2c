"""The leak that grouped splits prevent, measured.

A classifier learns a property of the *specimen* from simple image features, once under a
random split of the images and once under the grouped split of the manifest
(:func:`leakage_experiment`); the difference is the optimism a random split would report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import KFold

from grainflow.io.hdf5 import Sample, read_specimen
from grainflow.seeds import as_rng
from grainflow.tasks import segments_particles

__all__ = [
    "FEATURE_NAMES",
    "image_features",
    "specimen_property",
    "compare_splits",
    "leakage_experiment",
    "leakage_figure",
    "summarize_leakage",
]

_HIST_BINS = 8
FEATURE_NAMES = (
    "mean",
    "std",
    "p05",
    "p50",
    "p95",
    "gradient_mean",
    "gradient_std",
    "laplacian_std",
    *(f"hist{i}" for i in range(_HIST_BINS)),
)


def image_features(image: np.ndarray) -> np.ndarray:
    """Simple global features of one image: intensity statistics, edges, histogram.

    Parameters
    ----------
    image : ndarray of shape (H, W), float in [0, 1]

    Returns
    -------
    features : ndarray of shape (16,), float64
        In the order of :data:`FEATURE_NAMES`: mean, std, 5/50/95th percentiles,
        mean and std of the Sobel gradient magnitude (per pixel), std of the
        Laplacian, and the fraction of pixels in 8 equal intensity bins.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got {image.shape=}")
    grad = np.hypot(ndi.sobel(image, 0), ndi.sobel(image, 1)) / 8.0
    lap = ndi.laplace(image)
    hist, _ = np.histogram(np.clip(image, 0, 1), bins=_HIST_BINS, range=(0, 1))
    return np.concatenate(
        [
            [image.mean(), image.std(), *np.percentile(image, [5, 50, 95])],
            [grad.mean(), grad.std(), lap.std()],
            hist / image.size,
        ]
    )


def specimen_property(samples: Sequence[Sample], task: str) -> float:
    """A property of the specimen measured from the labels of its images.

    Parameters
    ----------
    samples : sequence of Sample
        Images of one specimen (originals).
    task : {"grains", "phases", "nanoparticles"}
        ``grains``: the median equivalent-circle grain diameter in pixels,
        ``sqrt(4 * H * W / (pi * n_grains))`` per image; ``phases``: the median area
        fraction of the second phase (``phase == 1``).

    Returns
    -------
    value : float
    """
    if not samples:
        raise ValueError("no images to measure the specimen property on")
    if task == "grains":
        values = []
        for s in samples:
            ids = s.labels["grain_ids"]
            n = len(np.unique(ids[ids > 0]))
            values.append(np.sqrt(4 * ids.size / (np.pi * max(n, 1))))
    elif segments_particles(task):
        values = [float(s.labels["phase"].mean()) for s in samples]
    else:
        raise ValueError(
            f"the leakage experiment needs task 'grains', 'phases' or 'nanoparticles', got {task=}"
        )
    return float(np.median(values))


def _forest(n_estimators: int, seed: int) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1)


def compare_splits(
    features: np.ndarray,
    target: np.ndarray,
    grouped_fold: np.ndarray,
    *,
    rng,
    n_estimators: int = 100,
) -> pd.DataFrame:
    """Validation accuracy of a random forest under a random and under the grouped split.

    Parameters
    ----------
    features : ndarray of shape (N, F)
    target : ndarray of shape (N,)
        Class of each image (a property of its specimen).
    grouped_fold : ndarray of shape (N,), int
        The grouped fold of each image (the manifest's ``fold``); the random split
        uses as many folds, shuffled over images (:class:`~sklearn.model_selection.KFold`).
    rng : int or Generator
        Seeds the shuffle and the forests.
    n_estimators : int
        Trees per forest.

    Returns
    -------
    table : DataFrame
        Columns ``split`` ("random" or "grouped"), ``fold`` (int, or "all" for the
        pooled out-of-fold predictions), ``n_train``, ``n_val``, ``accuracy`` (fraction
        of validation images whose class is right) and ``chance`` (the accuracy of always
        answering the most frequent class, over all images). The ``"all"`` rows pool the
        out-of-fold predictions; their ``n_train`` is the mean over folds.
    """
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(target)
    grouped_fold = np.asarray(grouped_fold, dtype=int)
    if X.ndim != 2 or len(X) != len(y) or len(y) != len(grouped_fold):
        raise ValueError(
            f"need features (N, F), target (N,), grouped_fold (N,); got {X.shape=}, "
            f"{y.shape=}, {grouped_fold.shape=}"
        )
    folds = int(grouped_fold.max()) + 1
    if folds < 2:
        raise ValueError(f"the grouped split needs >= 2 folds, got {folds=}")
    rng = as_rng(rng)
    seed = int(rng.integers(0, 2**31 - 1))
    random_fold = np.empty(len(y), dtype=int)
    kfold = KFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, held) in enumerate(kfold.split(X)):
        random_fold[held] = k
    _, counts = np.unique(y, return_counts=True)
    chance = float(counts.max() / len(y))  # always answering the most frequent class
    rows = []
    for split, fold_of in (("random", random_fold), ("grouped", grouped_fold)):
        predicted = np.empty_like(y)
        n_train = []
        for k in range(folds):
            val = fold_of == k
            train = ~val
            model = _forest(n_estimators, seed + k).fit(X[train], y[train])
            predicted[val] = model.predict(X[val])
            n_train.append(int(train.sum()))
            rows.append(
                {
                    "split": split,
                    "fold": k,
                    "n_train": int(train.sum()),
                    "n_val": int(val.sum()),
                    "accuracy": float((predicted[val] == y[val]).mean()),
                    "chance": chance,
                }
            )
        rows.append(
            {
                "split": split,
                "fold": "all",
                "n_train": int(round(np.mean(n_train))),
                "n_val": len(y),
                "accuracy": float((predicted == y).mean()),
                "chance": chance,
            }
        )
    return pd.DataFrame(rows)


def leakage_experiment(
    manifest: pd.DataFrame, *, task: str, rng, n_estimators: int = 100
) -> pd.DataFrame:
    """Run :func:`compare_splits` on the images of a split manifest.

    The target of each image is its specimen's class: 1 if the specimen's
    :func:`specimen_property` (measured on its originals) is above the median over
    specimens, else 0 ("coarse" vs "fine" grains, "high" vs "low" phase fraction).

    Parameters
    ----------
    manifest : DataFrame
        A split manifest (:func:`grainflow.splits.read_manifest`), whose ``file`` and
        ``index`` point at the images.
    task : {"grains", "phases", "nanoparticles"}
    rng : int or Generator
    n_estimators : int

    Returns
    -------
    table : DataFrame
        As :func:`compare_splits`, plus ``specimens`` (number of specimens) and
        ``property`` (what the class is based on).

    Notes
    -----
    With a random split of the images, every validation image has siblings from the
    same specimen, and augmented copies of itself, in the training set: the
    classifier can recognise the specimen instead of reading the property, and
    scores well. With the grouped split it must generalise to unseen specimens, as it
    must on real data. The difference between the two scores is the optimism that a
    random split would report.
    """
    manifest = manifest.reset_index(drop=True)
    features = np.empty((len(manifest), len(FEATURE_NAMES)))
    prop: dict[str, float] = {}
    for file, rows in manifest.groupby("file", sort=False):
        sf = read_specimen(file)
        for pos, index in zip(rows.index, rows["index"]):
            features[pos] = image_features(sf.samples[int(index)].image)
        originals = [s for s in sf.samples if not s.original_id or s.original_id == s.image_id]
        prop[sf.specimen] = specimen_property(originals, task)
    values = pd.Series(prop)
    cls = (values > values.median()).astype(int)
    if cls.nunique() < 2:
        raise ValueError(
            f"all {len(values)} specimens have the same {task} property {values.iloc[0]:.3g}; "
            "the leakage experiment needs specimens that differ"
        )
    target = manifest["specimen"].map(cls).to_numpy()
    table = compare_splits(
        features, target, manifest["fold"].to_numpy(), rng=rng, n_estimators=n_estimators
    )
    name = "grain diameter (px)" if task == "grains" else "phase area fraction"
    return table.assign(specimens=len(values), property=f"{name} above the median")


def leakage_figure(table: pd.DataFrame, *, title: str = ""):
    """Accuracy under the random and the grouped split: per fold (dots) and pooled (bars).

    Parameters
    ----------
    table : DataFrame
        From :func:`compare_splits` or :func:`leakage_experiment`.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 3.6), layout="constrained")
    ax = fig.subplots()
    splits = ["random", "grouped"]
    colours = {"random": "tab:red", "grouped": "tab:blue"}
    for i, split in enumerate(splits):
        t = table[table["split"] == split]
        pooled = t[t["fold"].astype(str) == "all"]
        per_fold = t[t["fold"].astype(str) != "all"]
        acc = float(pooled["accuracy"].iloc[0])
        ax.bar(i, acc, 0.6, color=colours[split], alpha=0.6)
        ax.scatter(
            np.full(len(per_fold), i),
            per_fold["accuracy"],
            color="k",
            s=12,
            zorder=3,
            label="one fold" if i == 0 else None,
        )
        ax.annotate(f"{acc:.2f}", (i, acc), ha="center", va="bottom", fontsize=9)
    ax.axhline(
        float(table["chance"].iloc[0]),
        color="grey",
        linestyle="--",
        label="always the most frequent class",
    )
    ax.set_xticks(range(len(splits)), ["random split\n(images)", "grouped split\n(manifest)"])
    ax.set_ylabel("validation accuracy (fraction)")
    ax.set_ylim(0, 1.08)
    ax.legend(fontsize=8, loc="lower left")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def summarize_leakage(path) -> dict:
    """Numbers for the report's caption from a table written by the ``leakage`` rule.

    Returns
    -------
    summary : dict
        ``random`` and ``grouped`` (pooled validation accuracy, 2 decimals), ``gap``
        (their difference), ``chance`` (accuracy of always answering the most frequent class),
        ``images``, ``specimens`` and ``property``.
    """
    t = pd.read_csv(path, sep="\t", dtype={"fold": str})
    pooled = t[t["fold"] == "all"].set_index("split")
    out = {
        "random": round(float(pooled.loc["random", "accuracy"]), 2),
        "grouped": round(float(pooled.loc["grouped", "accuracy"]), 2),
        "chance": round(float(pooled.loc["grouped", "chance"]), 2),
        "images": int(pooled.loc["grouped", "n_val"]),
    }
    out["gap"] = round(out["random"] - out["grouped"], 2)
    if "specimens" in t:
        out["specimens"] = int(t["specimens"].iloc[0])
    if "property" in t:
        out["property"] = str(t["property"].iloc[0])
    return out
