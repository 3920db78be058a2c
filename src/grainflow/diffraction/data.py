"""Diffraction patterns as datasets; folds over crystals."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from grainflow.diffraction.crystal import BRAVAIS, SYSTEMS
from grainflow.diffraction.representation import (
    INVARIANT_FORMS,
    _form,
    form_px,
    representation_of,
    rotate_pattern,
)
from grainflow.io.hdf5 import read_specimen
from grainflow.seeds import derive_seed

__all__ = [
    "CLASSES",
    "TARGETS",
    "TARGET_NAMES",
    "META",
    "PatternDataset",
    "load_patterns",
    "fold_rows",
    "subsample_per_class",
    "stack_patterns",
    "patterns_of_kinds",
]


CLASSES = SYSTEMS

#: what a model can learn: parameter of the patterns -> class names
TARGETS = {"class_index": SYSTEMS, "bravais_index": BRAVAIS}

#: config names of the targets (``diffraction.pretrain.target``)
TARGET_NAMES = {"crystal_system": "class_index", "bravais": "bravais_index"}

META = (
    "specimen",
    "session",
    "modality",
    "crystal_system",
    "bravais",
    "dose_counts",
    "zone_family",
)


def stack_patterns(images) -> np.ndarray | list[np.ndarray]:
    """Patterns as one float32 array (N, H, W) when they share a shape, else a list of (H_i, W_i)."""
    images = [np.asarray(im, dtype=np.float32) for im in images]
    if len({im.shape for im in images}) <= 1:
        return np.stack(images) if images else np.zeros((0, 0, 0), dtype=np.float32)
    return images


def patterns_of_kinds(images, meta: pd.DataFrame, kinds) -> tuple[object, pd.DataFrame]:
    """The patterns of :func:`load_patterns` (and their ``meta`` rows) whose ``modality`` is in ``kinds``."""
    keep = meta["modality"].isin(list(kinds)).to_numpy()
    if keep.all():
        return images, meta
    kept = stack_patterns([im for im, k in zip(images, keep) if k])
    return kept, meta[keep].reset_index(drop=True)


class PatternDataset(Dataset):
    """Patterns and class indices in memory; items ``(form (1, h, w) float32, class int64)``.

    Parameters
    ----------
    images : ndarray of shape (N, H, W) or sequence of (H_i, W_i) arrays, float32 in [0, 1]
        Cartesian patterns, centred; spot and ring patterns may differ in size.
    targets : ndarray of shape (N,), int
    ids : sequence of str
        Image ids (enter the resume fingerprint of :func:`grainflow.training.loop.train`).
    rotate : bool
        Rotate each item by a random angle (uniform in [0°, 360°)) about the
        pattern centre.
    flips : bool
        Mirror each item with probability ½ and, without ``rotate``, turn it
        by a random multiple of 90°.
    modalities : sequence of str, optional
        ``"spot"`` or ``"ring"`` per pattern (default: all spots).
    representation : mapping or str, optional
        Form of each pattern kind (:func:`representation_of`; default: every
        pattern as recorded), applied after the augmentation. Items in a form
        that ignores rotations and mirrors (:data:`INVARIANT_FORMS`) are
        prepared once and not augmented. Random numbers come from torch's
        global generator.
    px : int, optional
        Side of the 2-D forms (default :func:`form_px`, the smallest pattern
        side): every item has one shape, whatever the pattern sizes.

    Notes
    -----
    The augmentation is online, on the Cartesian pattern before its representation:
    a rotation about the direct beam (bilinear, pixels from outside filled with the
    pattern's border median) and a mirror. A form that ignores both (the angular
    spectrum) is not augmented: every rotated copy would give the same input.
    :func:`grainflow.training.loop.train` reseeds torch's global generator from
    ``(seed, epoch)`` every epoch, so runs with ``num_workers: 0`` reproduce bit for
    bit and resume exactly. The loop's own
    :class:`~grainflow.training.data.OnlineFlips` is switched off for these datasets
    (:func:`grainflow.diffraction.train.train_classifier`): a 90° turn of a log-polar
    image would swap azimuth and radius.
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        ids: Sequence[str],
        *,
        rotate: bool = False,
        flips: bool = False,
        modalities: Sequence[str] | None = None,
        representation: str | Mapping[str, str] | None = "cartesian",
        px: int | None = None,
    ):
        images = stack_patterns(images)
        if (
            any(np.ndim(im) != 2 for im in images)
            or len(images) != len(targets)
            or len(ids) != len(images)
        ):
            raise ValueError(
                f"need images: N patterns (H, W) with N targets and ids, got "
                f"{[np.shape(im) for im in images[:3]]}..., {len(images)=}, "
                f"{len(targets)=}, {len(ids)=}"
            )
        modalities = ["spot"] * len(images) if modalities is None else list(modalities)
        if len(modalities) != len(images):
            raise ValueError(
                f"need one modality per pattern, got {len(modalities)} for {len(images)}"
            )
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        self.ids = list(ids)
        self.rotate, self.flips = rotate, flips
        self.modalities, self.representation = modalities, representation_of(representation)
        self.px = (form_px(images) if len(images) else 0) if px is None else int(px)
        self._forms = [self.representation[m] for m in modalities]
        augment = rotate or flips
        # items that augmentation cannot change are prepared once
        self._fixed = {
            i: _form(images[i], f, self.px)
            for i, f in enumerate(self._forms)
            if not augment or f in INVARIANT_FORMS
        }

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self._fixed.get(i)
        if image is None:
            image = self.images[i]
            if self.flips and float(torch.rand(())) < 0.5:
                image = image[:, ::-1]
            if self.rotate:
                image = rotate_pattern(image, 360.0 * float(torch.rand(())))
            elif self.flips:
                image = np.rot90(image, int(torch.randint(4, ())))
            image = _form(image, self._forms[i], self.px)
        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None], torch.tensor(
            self.targets[i]
        )

    def class_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.targets, minlength=num_classes)[:num_classes]

    def content_digest(self) -> str:
        """SHA-256 of the patterns, targets, kinds and representation (the resume fingerprint)."""
        import hashlib

        h = hashlib.sha256()
        for image in self.images if isinstance(self.images, list) else [self.images]:
            h.update(np.ascontiguousarray(image).tobytes())
        h.update(self.targets.tobytes())
        h.update(",".join(self._forms).encode())
        h.update(f"rotate={self.rotate} flips={self.flips} px={self.px}".encode())
        return h.hexdigest()


def load_patterns(
    rows: pd.DataFrame, *, root: str | os.PathLike = "."
) -> tuple[np.ndarray, pd.DataFrame]:
    """Images and metadata of manifest ``rows`` (columns ``file``, ``index``), in row order.

    Returns
    -------
    images : ndarray of shape (N, H, W), float32, or a list of (H_i, W_i) patterns
        A list when the rows hold patterns of several sizes (:func:`stack_patterns`).
    meta : DataFrame
        ``image_id``, ``fold`` (when present), the :data:`META` columns,
        ``class_index`` and ``bravais_index``, one row per image.
    """
    if rows.empty:
        raise ValueError("no manifest rows to load")
    images: list[np.ndarray | None] = [None] * len(rows)
    records: list[dict | None] = [None] * len(rows)
    positions = {k: i for i, k in enumerate(rows.index)}
    for file, group in rows.groupby("file", sort=True):
        sf = read_specimen(Path(root) / file, indices=group["index"].tolist())
        for key, sample in zip(group.index, sf.samples):
            i = positions[key]
            if sample.image_id != rows.at[key, "image_id"]:
                raise ValueError(
                    f"{file}[{rows.at[key, 'index']}] is {sample.image_id!r}, the "
                    f"manifest says {rows.at[key, 'image_id']!r}; rerun the split"
                )
            images[i] = sample.image
            p = sample.params
            if "class_index" not in p:
                raise ValueError(
                    f"{file}: {sample.image_id!r} has no crystal system; is it a "
                    "diffraction pattern (task diffraction)?"
                )
            records[i] = {
                "image_id": sample.image_id,
                "specimen": sample.specimen,
                "session": sample.session,
                "modality": sample.modality,
                "crystal_system": p["crystal_system"],
                "bravais": p["bravais"],
                "class_index": int(p["class_index"]),
                "bravais_index": int(p["bravais_index"]),
                "dose_counts": float(p["dose_counts"]),
                "zone_family": p.get("zone_family") or "",
            }
    meta = pd.DataFrame.from_records(records)
    if "fold" in rows:
        meta.insert(1, "fold", rows["fold"].to_numpy())
    return stack_patterns(images), meta


def fold_rows(
    manifest: pd.DataFrame, fold: int, *, val_specimens_per_class: int = 1, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Training, validation and test rows of ``fold`` of a diffraction manifest.

    The test rows are fold ``fold``; the validation rows are every image of
    ``val_specimens_per_class`` crystals of each system drawn (with ``seed``)
    from the other folds; the training rows are the rest. Needs the
    ``crystal_system`` column (the manifest's stratification column).

    Notes
    -----
    The manifest (``make_manifest(..., stratify_by="crystal_system")``) puts every
    crystal (specimen) in one fold, with the systems balanced across folds. The
    model of fold ``k`` is *tested* on fold ``k`` and *validated* (best epoch) on
    crystals from the other folds, so neither the choice of epoch nor anything else
    sees the test crystals.
    """
    if "crystal_system" not in manifest:
        raise ValueError(
            "the diffraction manifest needs a crystal_system column; make it with "
            "make_manifest(..., stratify_by='crystal_system')"
        )
    folds = sorted(set(manifest["fold"]))
    if fold not in folds:
        raise ValueError(f"fold {fold} is not in the manifest (folds {folds})")
    test = manifest[manifest["fold"] == fold]
    rest = manifest[manifest["fold"] != fold]
    rng = np.random.default_rng(derive_seed(seed, "validation", fold))
    val_specimens = []
    if val_specimens_per_class:
        for system, group in rest.groupby("crystal_system", sort=True):
            names = sorted(set(group["specimen"]))
            if len(names) <= val_specimens_per_class:
                raise ValueError(
                    f"fold {fold}: only {len(names)} {system} crystal(s) outside the fold, cannot "
                    f"hold out {val_specimens_per_class} for validation; add specimens or lower "
                    "val_specimens_per_class"
                )
            val_specimens += list(rng.choice(names, val_specimens_per_class, replace=False))
    is_val = rest["specimen"].isin(val_specimens)
    return rest[~is_val], rest[is_val], test


def subsample_per_class(rows: pd.DataFrame, n_per_class: int, *, seed: int) -> pd.DataFrame:
    """``n_per_class`` rows of each crystal system, drawn without replacement with ``seed``.

    Raises ``ValueError`` when a system has fewer rows.
    """
    out = []
    rng = np.random.default_rng(seed)
    for system, group in rows.groupby("crystal_system", sort=True):
        if len(group) < n_per_class:
            raise ValueError(
                f"{n_per_class} {system} patterns asked for, the training folds have "
                f"{len(group)}; lower the size or add specimens"
            )
        out.append(group.iloc[np.sort(rng.choice(len(group), n_per_class, replace=False))])
    return pd.concat(out)


def _dataset(
    rows: pd.DataFrame,
    *,
    target: str,
    rotate: bool,
    flips: bool,
    representation,
    root,
    px=None,
    kinds=None,
) -> PatternDataset:
    images, meta = load_patterns(rows, root=root)
    if kinds is not None:
        images, meta = patterns_of_kinds(images, meta, kinds)
    return PatternDataset(
        images,
        meta[target].to_numpy(),
        meta["image_id"].tolist(),
        rotate=rotate,
        flips=flips,
        modalities=meta["modality"].tolist(),
        representation=representation,
        px=px,
    )
