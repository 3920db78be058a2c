"""Datasets and samplers that feed the training loop from specimen files."""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage as ndi
from skimage.morphology import disk
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from grainflow import splits
from grainflow.io.hdf5 import Sample, read_specimen
from grainflow.normalize import (  # one definition, shared with inference
    normalize_image,
    polarity_view,
)
from grainflow.seeds import derive_seed
from grainflow.splits import MANIFEST_COLUMNS
from grainflow.tasks import TASKS
from grainflow.training.losses import SEPARATION

__all__ = [
    "EpochSampler",
    "dihedral",
    "OnlineFlips",
    "read_manifest",
    "MicrographDataset",
    "separation_pixels",
    "SeparationTarget",
    "fold_datasets",
]


class EpochSampler(Sampler[tuple[int, int]]):
    """Keys ``(epoch, index)`` in an order that depends only on ``(seed, epoch)``.

    The epoch travels with each index so that :class:`OnlineFlips` can draw a
    sample's augmentation in a DataLoader worker from ``(seed, epoch, index)``
    alone, whatever the number of workers.

    With ``num_replicas > 1`` (distributed training) process ``rank`` gets its
    share of that one order, split as :class:`DistributedSampler` splits a
    dataset: padded with the first keys to a multiple of ``num_replicas``, then
    every ``num_replicas``-th key from position ``rank``. Batch ``b`` of the
    processes (``batch_size / num_replicas`` keys each) together hold the keys
    of batch ``b`` of one process with ``batch_size``.
    """

    def __init__(self, n: int, *, seed: int, num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas), got {rank=}, {num_replicas=}")
        self.n, self.seed, self.epoch = n, seed, 0
        self.num_replicas, self.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "order", self.epoch))
        keys = [(self.epoch, i) for i in torch.randperm(self.n, generator=g).tolist()]
        if self.num_replicas > 1:
            share = DistributedSampler(
                keys, num_replicas=self.num_replicas, rank=self.rank, shuffle=False
            )
            keys = [keys[i] for i in share]
        return iter(keys)

    def __len__(self) -> int:
        return math.ceil(self.n / self.num_replicas)


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # set by the DataLoader from its seeded generator
    np.random.seed(seed)
    random.seed(seed)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element ``k`` (0–7) of the square's symmetry group, on the last two axes.

    ``k`` 0–3: rotation by ``k`` × 90° counter-clockwise; 4–7: left-right flip,
    then that rotation. Returns a new contiguous tensor.
    """
    if k >= 4:
        x = x.flip(-1)
    return (x.rot90(k % 4, dims=(-2, -1)) if k % 4 else x).contiguous()


class OnlineFlips(Dataset):
    """Each training item under a random flip/90° rotation drawn from ``(seed, epoch, index)``.

    Items are asked for by key ``(epoch, index)`` (see :class:`EpochSampler`).
    A label map (H, W) is transformed with its image (C, H, W); a class index
    is left as it is. Square images draw one of the 8 elements of the
    dihedral group (:func:`dihedral`), others one of 4 (identity, 180°, and
    the two flips), which keep the shape. The work happens in the DataLoader
    workers, on the CPU, and is the same for any number of workers.
    """

    def __init__(self, dataset: Dataset, *, seed: int, enabled: bool = True):
        self.dataset, self.seed, self.enabled = dataset, seed, enabled

    def __len__(self) -> int:
        return len(self.dataset)

    def element(self, epoch: int, index: int, *, square: bool) -> int:
        """The dihedral element (0–7) that ``index`` gets in ``epoch``."""
        elements = (0, 1, 2, 3, 4, 5, 6, 7) if square else (0, 2, 4, 6)
        return elements[derive_seed(self.seed, "flips", epoch, index) % len(elements)]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        image, target = self.dataset[index]
        if not self.enabled:
            return image, target
        k = self.element(epoch, index, square=image.shape[-1] == image.shape[-2])
        target = dihedral(target, k) if target.ndim >= 2 else target
        return dihedral(image, k), target


# The label each segmentation task learns (a label name in the specimen files).


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


def separation_pixels(phase: np.ndarray, ids: np.ndarray, radius_px: int) -> np.ndarray:
    """Matrix pixels of ``phase`` with two different particles within ``radius_px``.

    ``ids`` numbers the particles (0: none); only their pixels that ``phase``
    marks as particle count. These are the narrow gaps of matrix between
    neighbouring particles (with ``nanoparticle_contact_gap_px``, also between
    touching ones) whose few pixels decide whether two particles are counted
    apart or as one.
    """
    shown = np.where(np.asarray(phase) > 0, np.asarray(ids, dtype=np.int64), 0)
    if not shown.any():
        return np.zeros(shown.shape, dtype=bool)
    footprint = disk(radius_px).astype(bool)
    highest = ndi.maximum_filter(shown, footprint=footprint, mode="constant", cval=0)
    none = shown.max() + 1  # stands for "no particle" in the minimum
    lowest = ndi.minimum_filter(
        np.where(shown > 0, shown, none), footprint=footprint, mode="constant", cval=none
    )
    return (shown == 0) & (highest > 0) & (lowest < highest)


class SeparationTarget:
    """Training target: the ``label`` map with :func:`separation_pixels` set to
    :data:`~grainflow.training.losses.SEPARATION` (weighted matrix, see
    :class:`~grainflow.training.losses.DiceCELoss`)."""

    def __init__(self, label: str, ids: str, radius_px: int):
        self.label, self.ids, self.radius_px = label, ids, radius_px

    def __call__(self, sample: Sample) -> np.ndarray:
        for name in (self.label, self.ids):
            if name not in sample.labels:
                raise ValueError(
                    f"image {sample.image_id!r} has no label {name!r} (has "
                    f"{sorted(sample.labels)}); separation_weight needs the particles' ids"
                )
        phase = np.asarray(sample.labels[self.label], dtype=np.int64)
        apart = separation_pixels(phase, sample.labels[self.ids], self.radius_px)
        return np.where(apart, SEPARATION, phase)


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
    polarity : {"learned", "given"}
        ``"given"`` shows every image with its particles bright (an image whose
        ``/meta`` says ``particles_dark`` is inverted, :func:`polarity_view`); images
        without that key (grains) are shown as they are.
    cache : bool
        Read every image once, at construction, one file at a time (default);
        else read each image when asked for.

    Items are ``(image, target)``: image float32 tensor (1, H, W); target
    int64 tensor (H, W) for a label map or () for a class. The cache keeps
    class indices below 256 as uint8.
    """

    def __init__(
        self,
        rows: pd.DataFrame,
        *,
        target: Target,
        root: str | os.PathLike = ".",
        norm_percentiles: Sequence[float] = (1.0, 99.0),
        polarity: str = "learned",
        cache: bool = True,
    ):
        self.rows = rows.reset_index(drop=True)
        self.target = target
        self.root = Path(root)
        self.norm_percentiles = tuple(norm_percentiles)
        self.polarity = polarity
        self.ids = list(self.rows["image_id"])
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache:
            self._cache = [None] * len(self.rows)  # type: ignore[list-item]
            for file, group in self.rows.groupby("file", sort=True):
                samples = read_specimen(self.root / file, indices=list(group["index"])).samples
                for position, row, sample in zip(group.index, group.itertuples(), samples):
                    self._cache[position] = self._prepare(sample, row)

    @classmethod
    def from_manifest(
        cls,
        manifest: str | os.PathLike | pd.DataFrame,
        *,
        target: Target,
        folds: Sequence[int] | None = None,
        exclude_folds: Sequence[int] = (),
        originals_only: bool = False,
        **kwargs,
    ) -> MicrographDataset:
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
        dark = sample.params.get("particles_dark", False)
        image = polarity_view(image, particles_dark=dark, polarity=self.polarity)
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
        """Pixels (or images, for class targets) of each class, shape (num_classes,); the
        matrix gaps that :class:`SeparationTarget` marks count as the matrix they are."""
        counts = np.zeros(num_classes, dtype=np.int64)
        for i in range(len(self)):
            target = np.asarray(self._load(i)[1])
            target = np.where(target == SEPARATION, 0, target)
            counts += np.bincount(target.ravel(), minlength=num_classes)[:num_classes]
        return counts


def fold_datasets(
    manifest: str | os.PathLike | pd.DataFrame,
    fold: int,
    *,
    task: str | None = None,
    target: Target | None = None,
    root: str | os.PathLike = ".",
    norm_percentiles: Sequence[float] = (1.0, 99.0),
    polarity: str = "learned",
    cache: bool = True,
    separation_px: int = 0,
) -> tuple[MicrographDataset, MicrographDataset]:
    """Training set (rows of the other folds) and validation set (originals of ``fold``).

    ``manifest`` is a path (read and verified with :func:`read_manifest`) or the
    table itself. ``separation_px`` > 0 (a task that separates touching
    instances): the training targets mark the matrix gaps between particles
    (:class:`SeparationTarget`); the validation targets stay plain labels.
    """
    table = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    if target is None:
        if task not in TASKS:
            raise ValueError(f"give target= for task {task!r} (known tasks: {sorted(TASKS)})")
        target = TASKS[task].target
    folds = sorted(set(table["fold"]))
    if fold not in folds:
        raise ValueError(f"fold {fold} is not in {manifest} (folds {folds}); check n_folds")
    kwargs = dict(
        target=target,
        root=root,
        norm_percentiles=norm_percentiles,
        polarity=polarity,
        cache=cache,
    )
    train_kwargs = dict(kwargs)
    if separation_px:
        if task not in TASKS or not TASKS[task].separate_touching or not isinstance(target, str):
            raise ValueError(
                f"separation_px needs a task whose touching instances are kept apart "
                f"({[t for t in TASKS if TASKS[t].separate_touching]}), got task {task!r}"
            )
        train_kwargs["target"] = SeparationTarget(target, TASKS[task].label_names[1], separation_px)
    train_set = MicrographDataset.from_manifest(table, exclude_folds=[fold], **train_kwargs)
    val_set = MicrographDataset.from_manifest(table, folds=[fold], originals_only=True, **kwargs)
    if not len(train_set) or not len(val_set):
        raise ValueError(
            f"fold {fold} of {manifest} leaves {len(train_set)} training and {len(val_set)} "
            "validation images; use more specimens or fewer folds"
        )
    return train_set, val_set
