"""Datasets for training: the split manifest, per-image normalisation, images with targets.

The split manifest ``results/splits/{task}.tsv`` has one row per image
(original or augmented copy) with the columns :data:`MANIFEST_COLUMNS`; ``file``
and ``index`` locate the image in an augmented specimen file, read through
:mod:`grainflow.io`. The model of fold ``k`` trains on the rows of the other
folds and is validated on the original images of fold ``k``
(:func:`fold_datasets`).

Every image is normalised by its own percentiles (:func:`normalize_image`),
the same function that inference applies to real images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from grainflow import splits
from grainflow.io import Sample, read_specimen
from grainflow.normalize import normalize_image  # one definition, shared with inference
from grainflow.splits import MANIFEST_COLUMNS

__all__ = [
    "MANIFEST_COLUMNS",
    "TARGETS",
    "read_manifest",
    "normalize_image",
    "MicrographDataset",
    "fold_datasets",
]

# The label each segmentation task learns (a label name in the specimen files).
TARGETS = {"grains": "boundaries", "phases": "phase", "kernels": "boundaries"}


def read_manifest(path: str | os.PathLike, *, verify: bool = True) -> pd.DataFrame:
    """Read a split manifest (:func:`grainflow.splits.read_manifest`) and check its columns.

    With ``verify`` the file must match the SHA-256 that the split rule recorded
    beside it.
    """
    table = splits.read_manifest(path, verify=verify)
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"split manifest {path} lacks columns {missing} (has {list(table.columns)}); "
            "rerun the split rule"
        )
    for column in ("fold", "index"):
        if not pd.api.types.is_integer_dtype(table[column]):
            raise ValueError(f"split manifest {path}: column {column!r} must hold integers")
    return table


Target = str | Callable[[Sample], np.ndarray | int]


class MicrographDataset(Dataset):
    """Images of a manifest's rows with their targets, normalised like inference.

    Parameters
    ----------
    rows : DataFrame
        Manifest rows (columns :data:`MANIFEST_COLUMNS`).
    target : str or callable
        Label name in the specimen files ("boundaries", "phase", …) or a
        function ``Sample -> ndarray (H, W) | int`` (e.g. a class index).
    root : path
        Folder that the manifest's ``file`` paths are relative to (the
        workflow's working directory).
    norm_percentiles : (float, float)
        See :func:`normalize_image`.
    cache : bool
        Read every image once, at construction, one file at a time (default);
        else read each image when asked for.

    Items are ``(image, target)``: image float32 tensor (1, H, W); target
    int64 tensor (H, W) for a label map or () for a class. The cache keeps
    class indices below 256 as uint8.
    """

    def __init__(self, rows: pd.DataFrame, *, target: Target, root: str | os.PathLike = ".",
                 norm_percentiles: Sequence[float] = (1.0, 99.0), cache: bool = True):
        self.rows = rows.reset_index(drop=True)
        self.target = target
        self.root = Path(root)
        self.norm_percentiles = tuple(norm_percentiles)
        self.ids = list(self.rows["image_id"])
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache:
            self._cache = [None] * len(self.rows)  # type: ignore[list-item]
            for file, group in self.rows.groupby("file", sort=True):
                samples = read_specimen(self.root / file, indices=list(group["index"])).samples
                for position, row, sample in zip(group.index, group.itertuples(), samples):
                    self._cache[position] = self._prepare(sample, row)

    @classmethod
    def from_manifest(cls, manifest: str | os.PathLike | pd.DataFrame, *, target: Target,
                      folds: Sequence[int] | None = None, exclude_folds: Sequence[int] = (),
                      originals_only: bool = False, **kwargs) -> "MicrographDataset":
        """Rows of ``manifest`` in ``folds`` (all when None) and not in ``exclude_folds``."""
        table = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
        keep = ~table["fold"].isin(list(exclude_folds))
        if folds is not None:
            keep &= table["fold"].isin(list(folds))
        if originals_only:
            keep &= table["original_id"] == table["image_id"]
        return cls(table[keep], target=target, **kwargs)

    def __len__(self) -> int:
        return len(self.rows)

    def _prepare(self, sample: Sample, row) -> tuple[np.ndarray, np.ndarray]:
        if sample.image_id != row.image_id:
            raise ValueError(
                f"{self.root / row.file}[{row.index}] holds image {sample.image_id!r}, but the "
                f"manifest says {row.image_id!r}; rerun the split rule"
            )
        if callable(self.target):
            target = np.asarray(self.target(sample), dtype=np.int64)
        else:
            if self.target not in sample.labels:
                raise ValueError(
                    f"{self.root / row.file} has no label {self.target!r} (has "
                    f"{sorted(sample.labels)}); choose the target that matches the task"
                )
            target = np.asarray(sample.labels[self.target], dtype=np.int64)
        if target.size and target.min() >= 0 and target.max() < 256:
            target = target.astype(np.uint8)  # 8× less memory in the cache
        image = normalize_image(sample.image, percentiles=self.norm_percentiles)
        return image[None], target

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None:
            return self._cache[i]
        row = next(self.rows.iloc[[i]].itertuples())
        sample = read_specimen(self.root / row.file, indices=[row.index]).samples[0]
        return self._prepare(sample, row)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self._load(i)
        return torch.from_numpy(image), torch.from_numpy(target.astype(np.int64))

    def content_digest(self) -> str:
        """SHA-256 of every image and target as the network sees them.

        Part of a training run's fingerprint: a resume checkpoint written for
        other pixels (the same image ids, regenerated) is never reused.
        """
        digest = hashlib.sha256()
        for i in range(len(self)):
            image, target = self._load(i)
            digest.update(np.ascontiguousarray(image).tobytes())
            digest.update(np.ascontiguousarray(target).tobytes())
        return digest.hexdigest()

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Pixels (or images, for class targets) of each class, shape (num_classes,)."""
        counts = np.zeros(num_classes, dtype=np.int64)
        for i in range(len(self)):
            target = self._load(i)[1]
            counts += np.bincount(target.ravel(), minlength=num_classes)[:num_classes]
        return counts


def fold_datasets(manifest: str | os.PathLike | pd.DataFrame, fold: int, *,
                  task: str | None = None,
                  target: Target | None = None, root: str | os.PathLike = ".",
                  norm_percentiles: Sequence[float] = (1.0, 99.0), cache: bool = True,
                  ) -> tuple[MicrographDataset, MicrographDataset]:
    """Training set (rows of the other folds) and validation set (originals of ``fold``).

    ``manifest`` is a path (read and verified with :func:`read_manifest`) or the
    table itself.
    """
    table = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    if target is None:
        if task not in TARGETS:
            raise ValueError(f"give target= for task {task!r} (known tasks: {sorted(TARGETS)})")
        target = TARGETS[task]
    folds = sorted(set(table["fold"]))
    if fold not in folds:
        raise ValueError(f"fold {fold} is not in {manifest} (folds {folds}); check n_folds")
    kwargs = dict(target=target, root=root, norm_percentiles=norm_percentiles, cache=cache)
    train_set = MicrographDataset.from_manifest(table, exclude_folds=[fold], **kwargs)
    val_set = MicrographDataset.from_manifest(table, folds=[fold], originals_only=True, **kwargs)
    if not len(train_set) or not len(val_set):
        raise ValueError(
            f"fold {fold} of {manifest} leaves {len(train_set)} training and {len(val_set)} "
            "validation images; use more specimens or fewer folds"
        )
    return train_set, val_set
