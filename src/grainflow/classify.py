"""Crystal-system classification of diffraction patterns: data, training, transfer, evaluation.

The ``diffraction`` task's models (the course's :class:`~grainflow.models.DiffractionCNN`
and torchvision's ResNet-18 by transfer) learn the crystal system (cubic,
hexagonal, orthorhombic) of a pattern. They train through
:func:`grainflow.training.train`, so checkpoints (``best.pt`` / ``last.pt``,
atomic, read with ``weights_only=True``), resume, history and determinism are
those of the segmentation models.

Data and folds
    The split manifest (``make_manifest(..., stratify_by="crystal_system")``)
    puts every crystal (specimen) in one fold, with the systems balanced
    across folds. The model of fold ``k`` is *tested* on fold ``k``; it is
    *validated* (best epoch) on ``val_specimens_per_class`` crystals of each
    system taken from the other folds (:func:`fold_rows`), so neither the
    choice of epoch nor anything else sees the test crystals.
Representation
    A pattern's crystal system is in the symmetry of its net (spots) or the
    ratio sequence of its radii (rings), not in its orientation or camera
    length, so the patterns reach the models in forms where those nuisances
    are gone or are shifts (``representation``, one form per pattern kind —
    always known: a spot and a ring pattern are different experiments —
    recorded in the checkpoint, so evaluation and scan maps prepare patterns
    as in training):

    ``angular_spectrum`` (spots, :func:`angular_spectrum`)
        The magnitude of the Fourier series along the azimuth of the
        log-polar pattern: row ``k`` is the harmonic ``m = 2k`` (Friedel
        pairs averaged, so odd ones vanish), column the log radius. A
        rotation only changes the phases, so the form is invariant to it
        (and to a mirror); a square net puts weight only on rows ``k ≡ 0
        (mod 2)`` (four-fold), a hexagonal net on ``k ≡ 0 (mod 3)``
        (six-fold), a rectangular one on every row — the rotational-symmetry
        analysis of 4D-STEM. Measured on the same crystals (2,000 training,
        1,000 held-out spot patterns, DiffractionCNN, one CPU thread): 99.5 %
        after 15 epochs in 260 s, against 91.1 % for Cartesian patterns with
        random rotations after 12 epochs on twice the patterns in 866 s.
    ``log_polar`` (:func:`log_polar`)
        Rows the azimuth over 180°, columns log-spaced radii: a ring is a
        column, the ratio sequence of the radii a fixed pattern of column
        spacings, and the camera length and the in-plane rotation shifts
        along the columns and rows, which convolutions and global pooling
        ignore — the azimuthal integration every powder-ring analysis starts
        with, keeping the azimuth (texture) as the second axis. Measured on
        the same 2,000 training and 1,000 held-out ring patterns, 8 epochs:
        80.7 % against 72.5 % for Cartesian rings.
    ``log_polar_highpass`` (rings, :func:`log_polar_highpass`)
        The same without the smooth radial background (diffuse inelastic
        scattering, the tail of the direct beam), scaled to zero mean and
        unit variance: the rings are what is left. On 2,000 training and
        1,000 held-out ring patterns of other crystals, 15 epochs: 87.3 and
        86.4 % (two seeds) against 83.9 % for ``log_polar``; the angular
        spectrum of a ring pattern, its radial profile in one row and noise
        elsewhere, reached 56 %.
    ``cartesian``
        The pattern as recorded (the course's set-up).
Augmentation
    Online, in the training set, on the Cartesian pattern before its
    representation: a rotation by an angle uniform in [0°, 360°) about the
    direct beam (bilinear, pixels from outside filled with the pattern's
    border median) and a mirror (:class:`PatternDataset`); without rotations
    a random flip/90° rotation. Patterns in a form that ignores both (the
    angular spectrum) are prepared once and not augmented: every rotated
    copy would give the same input. The random numbers come from torch's global
    generator, which :func:`~grainflow.training.train` reseeds from
    ``(seed, epoch)`` every epoch: runs with ``num_workers: 0`` reproduce bit
    for bit and resume exactly. (The training loop's own
    :class:`~grainflow.training.OnlineFlips` is switched off: a 90° turn of a
    log-polar image would swap azimuth and radius.)
Transfer
    ``resnet18`` starts from a local weights file (:func:`grainflow.models.load_pretrained`;
    ImageNet weights saved once by the user, or grainflow's own pretraining on
    a large synthetic set of other crystals, :func:`pretrain`) with one of the
    strategies ``frozen`` / ``finetune`` / ``full``
    (:func:`grainflow.models.set_transfer_strategy`); :func:`transfer_run`
    trains one strategy on ``n`` labelled patterns per class.
Evaluation
    :func:`predict_fold` gives one row per held-out pattern (true and
    predicted system, probabilities, pattern kind, dose, zone axis);
    :func:`summarize_predictions` counts first (confusion matrices per fold
    and pooled) and then reduces: accuracy, per-class precision and recall,
    expected calibration error and the reliability table, accuracy by
    pattern kind and by dose.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage as ndi
from torch import nn
from torch.utils.data import Dataset

from grainflow.augment import apply_transform
from grainflow.io import read_specimen
from grainflow.seeds import derive_seed
from grainflow.synth.diffraction import BRAVAIS, SYSTEMS

__all__ = [
    "CLASSES",
    "TARGETS",
    "TARGET_NAMES",
    "FORMS",
    "DEFAULT_REPRESENTATION",
    "PatternDataset",
    "rotate_pattern",
    "log_polar",
    "angular_spectrum",
    "log_polar_highpass",
    "representation_of",
    "represent",
    "checkpoint_representation",
    "load_patterns",
    "fold_rows",
    "subsample_per_class",
    "classifier_config",
    "train_classifier",
    "pretrain",
    "transfer_run",
    "predict_proba",
    "predict_fold",
    "confusion_matrix",
    "per_class_table",
    "expected_calibration_error",
    "reliability_table",
    "summarize_predictions",
    "first_layer_weights",
    "train_diffraction_fold",
    "evaluate_classifier",
    "headline",
]

LOG = logging.getLogger(__name__)

CLASSES = SYSTEMS
#: what a model can learn: parameter of the patterns -> class names
TARGETS = {"class_index": SYSTEMS, "bravais_index": BRAVAIS}
#: config names of the targets (``diffraction.pretrain.target``)
TARGET_NAMES = {"crystal_system": "class_index", "bravais": "bravais_index"}
#: training defaults of a classifier (the course's: Adam, lr 1e-3, cosine annealing, CE)
CLASSIFIER_DEFAULTS = {
    "optimizer": "adam",
    "lr": 1e-3,
    "min_lr": 1e-5,
    "warmup_epochs": 0.0,
    "weight_decay": 0.0,
    "grad_clip": 0.0,
    "loss": "ce",
    "class_weights": "none",
    "flips": True,
}
#: forms in which a pattern can reach the models; see the module notes
FORMS = ("angular_spectrum", "log_polar_highpass", "log_polar", "cartesian")
#: the form of each pattern kind unless configured (``diffraction.representation``)
DEFAULT_REPRESENTATION = {"spot": "angular_spectrum", "ring": "log_polar_highpass"}
#: forms that ignore rotations and mirrors: their items are prepared once, without augmentation
INVARIANT_FORMS = ("angular_spectrum",)
LOG_POLAR_R_MIN_PX = 2.0  # inside the first ring (>= 5 px) and about the beam stop's radius
HIGHPASS_SIGMA_COLUMNS = 3.0  # radial background of log_polar_highpass: Gaussian over 3 columns
META = ("specimen", "session", "modality", "crystal_system", "bravais", "dose_counts",
        "zone_family")


# --------------------------------------------------------------------------- data


def _border_median(image: np.ndarray) -> float:
    return float(np.median(np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])))


def rotate_pattern(image: np.ndarray, angle_deg: float) -> np.ndarray:
    """``image`` (H, W) turned counter-clockwise about its centre; outside: its border median."""
    op = {"name": "rotate", "params": {"angle_deg": float(angle_deg), "fill": "constant",
                                       "fill_value": _border_median(image)}}
    return apply_transform(image, {}, {"ops": [op]})[0]


@functools.lru_cache(maxsize=8)
def _log_polar_grid(in_shape: tuple[int, int], out_shape: tuple[int, int], r_min_px: float,
                    oversample: tuple[int, int]):
    rows, cols = out_shape
    n_phi, n_r = 2 * rows * oversample[0], cols * oversample[1]  # full circle, supersampled
    phi = (np.arange(n_phi) + 0.5) / n_phi * 2 * np.pi
    r_max = min(in_shape) / 2.0
    r = r_min_px * (r_max / r_min_px) ** ((np.arange(n_r) + 0.5) / n_r)
    centre_r, centre_c = (in_shape[0] - 1) / 2.0, (in_shape[1] - 1) / 2.0
    return np.stack([centre_r - r[None, :] * np.sin(phi[:, None]),
                     centre_c + r[None, :] * np.cos(phi[:, None])])


def log_polar(image: np.ndarray, *, r_min_px: float = LOG_POLAR_R_MIN_PX,
              oversample: tuple[int, int] = (4, 2),
              shape: tuple[int, int] | None = None) -> np.ndarray:
    """A centred pattern resampled on a log-polar grid about its centre.

    Parameters
    ----------
    image : ndarray of shape (H, W)
        Centred at ``((H - 1) / 2, (W - 1) / 2)`` (the direct beam).
    r_min_px : float
        Smallest radius, pixels; the largest is ``min(H, W) / 2``.
    oversample : (int, int)
        Samples per output pixel along the azimuth and the radius (bilinear,
        then averaged: anti-aliasing).
    shape : (int, int), optional
        Output (azimuths, radii); default the image's shape.

    Returns
    -------
    ndarray of shape ``shape``, float32
        Row ``i`` of ``A`` rows: azimuth ``φ = 180° (i + ½) / A``
        counter-clockwise from +x, each the mean of ``φ`` and ``φ + 180°``
        (Friedel pairs: a kinematic pattern is centrosymmetric, and a
        beam-stop arm is averaged with the open side). Column ``j`` of ``R``:
        radius ``r_min (r_max / r_min)^((j + ½) / R)``. A rotation of the
        pattern is a cyclic shift of the rows, a change of camera length a
        shift of the columns.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 4:
        raise ValueError(f"log_polar needs one pattern (H, W) with H, W >= 4, got {image.shape=}")
    if not 0 < r_min_px < min(image.shape) / 2:
        raise ValueError(f"r_min_px must be in (0, {min(image.shape) / 2}), got {r_min_px=}")
    rows, cols = image.shape if shape is None else (int(shape[0]), int(shape[1]))
    grid = _log_polar_grid(image.shape, (rows, cols), float(r_min_px),
                           tuple(int(v) for v in oversample))
    v = ndi.map_coordinates(image, grid, order=1, mode="nearest")
    half = v.shape[0] // 2
    v = 0.5 * (v[:half] + v[half:])  # φ and φ + 180°
    return v.reshape(rows, oversample[0], cols, oversample[1]).mean(axis=(1, 3)).astype(np.float32)


def angular_spectrum(image: np.ndarray, *, r_min_px: float = LOG_POLAR_R_MIN_PX) -> np.ndarray:
    """Rotation-invariant form of a centred pattern: azimuthal harmonics by log radius, same shape.

    The pattern is resampled on a log-polar grid of ``2 H`` azimuths over
    180° (Friedel pairs averaged, :func:`log_polar`) by ``W`` radii; at each
    radius the magnitudes of the Fourier coefficients along the azimuth are
    kept, so a rotation (a cyclic shift of the azimuths) and a mirror (their
    reversal) leave the result unchanged.

    Returns
    -------
    ndarray of shape (H, W), float32
        Row ``k``: harmonic ``m = 2k`` of the full circle (``k = 0``, the
        azimuthal mean, is the radial profile); column ``j``: the radius of
        :func:`log_polar`'s column ``j``. Values are ``log(1 + 10 |c_k| / c̄)``
        with ``c̄`` the mean of the radial profile, so that they do not
        depend on the pattern's overall intensity scale. An ``n``-fold net
        puts weight only on harmonics ``m`` divisible by ``n``.
    """
    image = np.asarray(image, dtype=np.float64)
    rows, cols = image.shape if image.ndim == 2 else (0, 0)
    polar = log_polar(image, r_min_px=r_min_px, shape=(2 * rows, cols))
    coeff = np.abs(np.fft.rfft(polar.astype(np.float64), axis=0))[:rows] / polar.shape[0]
    scale = coeff[0].mean()
    return np.log1p(10.0 * coeff / scale if scale > 0 else coeff).astype(np.float32)


def log_polar_highpass(image: np.ndarray, *, r_min_px: float = LOG_POLAR_R_MIN_PX,
                       background_px: float = HIGHPASS_SIGMA_COLUMNS) -> np.ndarray:
    """:func:`log_polar` without its smooth radial background, scaled to zero mean and unit variance.

    Along each azimuth the log-polar pattern minus its Gaussian smoothing over
    ``background_px`` columns (the diffuse inelastic background and the
    tail of the direct beam, which change slowly with the radius, while a
    ring is one to two columns wide) — the background subtraction that
    precedes every ring-pattern analysis. Same shape as the pattern, float32.
    """
    polar = log_polar(image, r_min_px=r_min_px).astype(np.float64)
    flat = polar - ndi.gaussian_filter1d(polar, float(background_px), axis=1, mode="nearest")
    std = flat.std()
    return ((flat - flat.mean()) / std if std > 0 else np.zeros_like(flat)).astype(np.float32)


_FORM_FUNCTIONS = {"angular_spectrum": angular_spectrum, "log_polar": log_polar,
                   "log_polar_highpass": log_polar_highpass}


def representation_of(value: str | Mapping[str, str] | None) -> dict[str, str]:
    """The form of each pattern kind, from a mapping ``{"spot": form, "ring": form}``.

    A missing kind keeps :data:`DEFAULT_REPRESENTATION`'s form. A plain string
    is the older single setting, which named the ring form (spots as
    recorded): checkpoints written before spots had a form of their own
    record one. ``None`` gives the defaults.
    """
    if value is None:
        return dict(DEFAULT_REPRESENTATION)
    if isinstance(value, str):
        if value not in FORMS:
            raise ValueError(f"representation must be one of {FORMS}, got {value!r}")
        return {"spot": "cartesian", "ring": value}
    unknown = sorted(set(value) - set(DEFAULT_REPRESENTATION))
    if unknown:
        raise ValueError(f"representation: unknown pattern kind(s) {unknown}; known: "
                         f"{sorted(DEFAULT_REPRESENTATION)}")
    out = {**DEFAULT_REPRESENTATION, **{str(k): str(v) for k, v in value.items()}}
    bad = {k: v for k, v in out.items() if v not in FORMS}
    if bad:
        raise ValueError(f"representation: forms must be one of {FORMS}, got {bad}")
    return out


def _form(image: np.ndarray, form: str) -> np.ndarray:
    return image if form == "cartesian" else _FORM_FUNCTIONS[form](image)


def represent(images: np.ndarray, modalities: Sequence[str],
              representation: str | Mapping[str, str] | None = None) -> np.ndarray:
    """Patterns (N, H, W) as a model sees them: each in its kind's form (:func:`representation_of`)."""
    forms = representation_of(representation)
    images = np.asarray(images, dtype=np.float32)
    if len(modalities) != len(images):
        raise ValueError(f"need one modality per pattern, got {len(modalities)} for {len(images)}")
    out = images.copy()
    for i, modality in enumerate(modalities):
        out[i] = _form(images[i], forms[modality])
    return out


def checkpoint_representation(checkpoint: Mapping) -> dict[str, str]:
    """The forms a classifier checkpoint was trained on (every kind Cartesian if none recorded)."""
    recorded = checkpoint.get("extra", {}).get("representation", "cartesian")
    return representation_of(recorded)


class PatternDataset(Dataset):
    """Patterns and class indices in memory; items ``(image (1, H, W) float32, class int64)``.

    Parameters
    ----------
    images : ndarray of shape (N, H, W), float32 in [0, 1]
        Cartesian patterns, centred.
    targets : ndarray of shape (N,), int
    ids : sequence of str
        Image ids (enter the resume fingerprint of :func:`grainflow.training.train`).
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
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, ids: Sequence[str], *,
                 rotate: bool = False, flips: bool = False,
                 modalities: Sequence[str] | None = None,
                 representation: str | Mapping[str, str] | None = "cartesian"):
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 3 or len(images) != len(targets) or len(ids) != len(images):
            raise ValueError(
                f"need images (N, H, W) with N targets and ids, got {images.shape=}, "
                f"{len(targets)=}, {len(ids)=}"
            )
        modalities = ["spot"] * len(images) if modalities is None else list(modalities)
        if len(modalities) != len(images):
            raise ValueError(f"need one modality per pattern, got {len(modalities)} for "
                             f"{len(images)}")
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        self.ids = list(ids)
        self.rotate, self.flips = rotate, flips
        self.modalities, self.representation = modalities, representation_of(representation)
        self._forms = [self.representation[m] for m in modalities]
        augment = rotate or flips
        # items that augmentation cannot change are prepared once
        self._fixed = {i: _form(images[i], f) for i, f in enumerate(self._forms)
                       if not augment or f in INVARIANT_FORMS}

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
            image = _form(image, self._forms[i])
        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None], torch.tensor(
            self.targets[i])

    def class_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.targets, minlength=num_classes)[:num_classes]

    def content_digest(self) -> str:
        """SHA-256 of the patterns, targets, kinds and representation (the resume fingerprint)."""
        import hashlib

        h = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        h.update(self.targets.tobytes())
        h.update(",".join(self._forms).encode())
        h.update(f"rotate={self.rotate} flips={self.flips}".encode())
        return h.hexdigest()


def load_patterns(rows: pd.DataFrame, *,
                  root: str | os.PathLike = ".") -> tuple[np.ndarray, pd.DataFrame]:
    """Images and metadata of manifest ``rows`` (columns ``file``, ``index``), in row order.

    Returns
    -------
    images : ndarray of shape (N, H, W), float32
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
                raise ValueError(f"{file}[{rows.at[key, 'index']}] is {sample.image_id!r}, the "
                                 f"manifest says {rows.at[key, 'image_id']!r}; rerun the split")
            images[i] = sample.image
            p = sample.params
            if "class_index" not in p:
                raise ValueError(f"{file}: {sample.image_id!r} has no crystal system; is it a "
                                 "diffraction pattern (task diffraction)?")
            records[i] = {
                "image_id": sample.image_id, "specimen": sample.specimen,
                "session": sample.session, "modality": sample.modality,
                "crystal_system": p["crystal_system"], "bravais": p["bravais"],
                "class_index": int(p["class_index"]), "bravais_index": int(p["bravais_index"]),
                "dose_counts": float(p["dose_counts"]), "zone_family": p.get("zone_family") or "",
            }
    meta = pd.DataFrame.from_records(records)
    if "fold" in rows:
        meta.insert(1, "fold", rows["fold"].to_numpy())
    return np.stack(images).astype(np.float32), meta


def _classes_of(meta_or_rows: pd.DataFrame) -> pd.Series:
    return meta_or_rows["crystal_system"]


def fold_rows(manifest: pd.DataFrame, fold: int, *, val_specimens_per_class: int = 1,
              seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Training, validation and test rows of ``fold`` of a diffraction manifest.

    The test rows are fold ``fold``; the validation rows are every image of
    ``val_specimens_per_class`` crystals of each system drawn (with ``seed``)
    from the other folds; the training rows are the rest. Needs the
    ``crystal_system`` column (the manifest's stratification column).
    """
    if "crystal_system" not in manifest:
        raise ValueError("the diffraction manifest needs a crystal_system column; make it with "
                         "make_manifest(..., stratify_by='crystal_system')")
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
            raise ValueError(f"{n_per_class} {system} patterns asked for, the training folds have "
                             f"{len(group)}; lower the size or add specimens")
        out.append(group.iloc[np.sort(rng.choice(len(group), n_per_class, replace=False))])
    return pd.concat(out)


def _dataset(rows: pd.DataFrame, *, target: str, rotate: bool, flips: bool, representation,
             root) -> PatternDataset:
    images, meta = load_patterns(rows, root=root)
    return PatternDataset(images, meta[target].to_numpy(), meta["image_id"].tolist(), rotate=rotate,
                          flips=flips, modalities=meta["modality"].tolist(),
                          representation=representation)


# --------------------------------------------------------------------------- training


def classifier_config(arch: Mapping, *, shared: Mapping | None = None, **overrides):
    """Model name, model kwargs and :class:`~grainflow.training.TrainConfig` of a classifier block.

    :data:`CLASSIFIER_DEFAULTS` (Adam, lr 1e-3, cosine to ``min_lr`` without
    warm-up, plain cross-entropy) apply unless the block or ``shared`` sets them.
    """
    from grainflow.training import arch_settings

    keep = {k: v for k, v in arch.items() if k not in ("rotate", "val_specimens_per_class")}
    return arch_settings(keep, shared={**CLASSIFIER_DEFAULTS, **(shared or {})}, **overrides)


def train_classifier(
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    *,
    model_name: str,
    model_kwargs: Mapping,
    config,
    best_path: str | os.PathLike,
    history_path: str | os.PathLike,
    last_path: str | os.PathLike,
    target: str = "class_index",
    rotate: bool = True,
    representation: str | Mapping[str, str] | None = None,
    root: str | os.PathLike = ".",
    extra: Mapping | None = None,
):
    """Train a classifier on ``train_rows``, choosing the epoch on ``val_rows``.

    Parameters
    ----------
    train_rows, val_rows : DataFrame
        Manifest rows (``file``, ``index``, ``image_id``).
    model_name, model_kwargs, config
        As returned by :func:`classifier_config`; ``num_classes`` is set
        from ``target`` when missing.
    best_path, history_path, last_path : path
        Outputs of :func:`grainflow.training.train`.
    target : {"class_index", "bravais_index"}
        What to learn: the crystal system (3 classes) or the Bravais lattice (8).
    rotate : bool
        Online random rotations of the training patterns (and, with
        ``config.flips``, mirrors; the flips are done by the dataset, before
        the representation, and the loop's own are switched off).
    representation : mapping, optional
        Form of each pattern kind (:func:`representation_of`; default
        :data:`DEFAULT_REPRESENTATION`), recorded in the checkpoint.

    Returns
    -------
    grainflow.training.TrainResult
    """
    import dataclasses

    from grainflow.training import train

    if target not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {target=}")
    model_kwargs = {"num_classes": len(TARGETS[target]), **dict(model_kwargs)}
    train_set = _dataset(train_rows, target=target, rotate=rotate, flips=config.flips,
                         representation=representation, root=root)
    val_set = _dataset(val_rows, target=target, rotate=False, flips=False,
                       representation=representation, root=root)
    augmentation = {"rotate": bool(rotate), "flips": bool(config.flips)}
    config = dataclasses.replace(config, flips=False)
    LOG.info("%s: %d training patterns %s, %d validation patterns", model_name, len(train_set),
             np.bincount(train_set.targets, minlength=len(TARGETS[target])).tolist(), len(val_set))
    return train(model_name, model_kwargs, train_set, val_set, config, best_path=best_path,
                 history_path=history_path, last_path=last_path,
                 extra={"task": "diffraction", "target": target,
                        "representation": representation_of(representation),
                        "augmentation": augmentation,
                        "classes": list(TARGETS[target]), **dict(extra or {})})


def pretrain(
    patterns: str | os.PathLike,
    *,
    model_kwargs: Mapping | None = None,
    config,
    best_path: str | os.PathLike,
    history_path: str | os.PathLike,
    last_path: str | os.PathLike,
    target: str = "bravais_index",
    val_fraction: float = 0.1,
    rotate: bool = True,
    representation: str | Mapping[str, str] | None = None,
    seed: int = 0,
):
    """Pretrain a ResNet-18 on a large synthetic set (one specimen file of many crystals).

    The crystals are split ``1 - val_fraction`` / ``val_fraction`` (whole
    crystals, every class of ``target`` in both); the weights of the best
    validation epoch go to ``best_path``, a grainflow checkpoint that
    :func:`grainflow.models.load_pretrained` reads (a head of another size
    is left out).
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction=}")
    sf = read_specimen(patterns)
    rows = pd.DataFrame({
        "image_id": [s.image_id for s in sf.samples],
        "specimen": [s.specimen for s in sf.samples],
        "label": [s.params["bravais" if target == "bravais_index" else "crystal_system"]
                  for s in sf.samples],
        "file": str(patterns),
        "index": range(len(sf.samples)),
    })
    rng = np.random.default_rng(derive_seed(seed, "pretrain-validation"))
    val = []
    for label, group in rows.groupby("label", sort=True):
        names = sorted(set(group["specimen"]))
        k = max(1, round(val_fraction * len(names)))
        if k >= len(names):
            raise ValueError(f"{patterns}: {len(names)} crystal(s) of {label}, too few to hold "
                             "some out for validation; add crystals "
                             "(diffraction.pretrain.crystals)")
        val += list(rng.choice(names, k, replace=False))
    is_val = rows["specimen"].isin(val)
    return train_classifier(rows[~is_val], rows[is_val], model_name="resnet18",
                            model_kwargs=model_kwargs or {}, config=config, best_path=best_path,
                            history_path=history_path, last_path=last_path, target=target,
                            rotate=rotate, representation=representation,
                            extra={"pretraining": str(patterns)})


def transfer_run(
    manifest: pd.DataFrame,
    fold: int,
    *,
    strategy: str,
    n_per_class: int,
    steps: int,
    config,
    pretrained: str,
    out_dir: str | os.PathLike,
    val_specimens_per_class: int = 1,
    validation_seed: int = 0,
    rotate: bool = True,
    representation: str | Mapping[str, str] | None = None,
    root: str | os.PathLike = ".",
    device: str = "cpu",
    seed: int = 0,
) -> dict:
    """Train a ResNet-18 with ``strategy`` on ``n_per_class`` patterns per class; test on ``fold``.

    Parameters
    ----------
    strategy : {"frozen", "finetune", "full", "scratch"}
        A transfer strategy from ``pretrained``, or "scratch": random
        initialisation, everything trained (the baseline transfer must beat).
    n_per_class : int
        Labelled training patterns per crystal system (drawn from the
        training folds, ``seed``).
    steps : int
        Optimiser steps (about): epochs = ``ceil(steps / ceil(3 n / batch_size))``,
        so that small and large sets train for the same number of updates.
    config : TrainConfig
        Training settings (batch size, lr, ...); strategy, pretrained and
        epochs are set here.

    Returns
    -------
    row : dict
        strategy, n_per_class, fold, epochs, best_epoch, test accuracy (and
        per modality), test patterns, trainable parameters.
    """
    import dataclasses

    if strategy not in ("frozen", "finetune", "full", "scratch"):
        raise ValueError(f"strategy must be frozen, finetune, full or scratch, got {strategy=}")
    train_rows, val_rows, test_rows = fold_rows(
        manifest, fold, val_specimens_per_class=val_specimens_per_class, seed=validation_seed)
    train_rows = subsample_per_class(train_rows, n_per_class,
                                     seed=derive_seed(seed, "subsample", n_per_class, fold))
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    epochs = max(1, math.ceil(steps / steps_per_epoch))
    config = dataclasses.replace(
        config, epochs=epochs, transfer="full" if strategy == "scratch" else strategy,
        pretrained="" if strategy == "scratch" else str(pretrained))
    out = Path(out_dir)
    result = train_classifier(
        train_rows, val_rows, model_name="resnet18", model_kwargs={}, config=config,
        best_path=out / "best.pt", history_path=out / "history.tsv", last_path=out / "last.pt",
        rotate=rotate, representation=representation, root=root,
        extra={"fold": int(fold), "strategy": strategy,
                                         "n_per_class": int(n_per_class)})
    images, meta = load_patterns(test_rows, root=root)
    images = represent(images, meta["modality"].tolist(), representation)
    probs = predict_proba(result.model, images, device=device)
    correct = probs.argmax(axis=1) == meta["class_index"].to_numpy()
    row = {
        "strategy": strategy, "n_per_class": int(n_per_class), "fold": int(fold),
        "epochs": epochs, "best_epoch": result.best_epoch,
        "trainable_parameters": int(sum(p.numel() for p in result.model.parameters()
                                        if p.requires_grad)),
        "test_patterns": int(len(meta)), "accuracy": float(correct.mean()),
    }
    for modality in sorted(set(meta["modality"])):
        row[f"accuracy_{modality}"] = float(correct[meta["modality"].to_numpy() == modality].mean())
    return row


# --------------------------------------------------------------------------- prediction


def predict_proba(model: nn.Module, images: np.ndarray, *, batch_size: int = 256,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """Class probabilities (N, C) of patterns ``images`` (N, H, W), under ``inference_mode``."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got {images.shape=}")
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                          else "cpu" if device == "auto" else device)
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start:start + batch_size])[:, None].to(device)
            out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def predict_fold(checkpoint: str | os.PathLike, manifest: pd.DataFrame, fold: int, *,
                 root: str | os.PathLike = ".", device: str = "cpu",
                 batch_size: int = 256) -> pd.DataFrame:
    """One row per test pattern of ``fold``: metadata, true and predicted system, probabilities.

    Columns: ``image_id, fold, specimen, session, modality, crystal_system,
    bravais, class_index, bravais_index, dose_counts, zone_family, true, pred,
    confidence, p_cubic, p_hexagonal, p_orthorhombic``.
    """
    from grainflow.checkpoint import load_checkpoint, model_from_checkpoint

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


# --------------------------------------------------------------------------- metrics


def confusion_matrix(true: Sequence[str], pred: Sequence[str],
                     classes: Sequence[str] = CLASSES) -> pd.DataFrame:
    """Counts, rows = true class, columns = predicted class."""
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(true, pred):
        m[index[t], index[p]] += 1
    return pd.DataFrame(m, index=pd.Index(classes, name="true"),
                        columns=pd.Index(classes, name="predicted"))


def per_class_table(confusion: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall, F1 and support per class from a confusion matrix (counts)."""
    m = confusion.to_numpy().astype(float)
    tp = np.diag(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(m.sum(0) > 0, tp / m.sum(0), np.nan)
        recall = np.where(m.sum(1) > 0, tp / m.sum(1), np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), np.nan)
    return pd.DataFrame({"class": confusion.index, "precision": precision, "recall": recall,
                         "f1": f1, "support": m.sum(1).astype(int)})


def reliability_table(confidence: np.ndarray, correct: np.ndarray, *,
                      bins: int = 10) -> pd.DataFrame:
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
        rows.append({"bin_low": edges[b], "bin_high": edges[b + 1], "count": int(sel.sum()),
                     "confidence": float(confidence[sel].mean()) if sel.any() else np.nan,
                     "accuracy": float(correct[sel].mean()) if sel.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, *,
                               bins: int = 10) -> float:
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
        summary.append({"fold": str(fold), "patterns": len(group), "accuracy": float(ok.mean()),
                        "ece": expected_calibration_error(group["confidence"], ok, bins=bins)})
        cm = confusion_matrix(group["true"], group["pred"])
        for t in CLASSES:
            for p in CLASSES:
                confusion.append({"fold": str(fold), "true": t, "predicted": p,
                                  "count": int(cm.loc[t, p])})
    pooled = confusion_matrix(pred["true"], pred["pred"])
    d = pred.assign(correct=correct, dose_bin=dose_bins(pred["dose_counts"],
                                                        bins=dose_bin_count).array)
    parts = []
    for by in (["modality"], ["dose_bin"], ["modality", "dose_bin"]):
        g = d.groupby(by, observed=True, sort=True)["correct"].agg(["size", "mean"]).reset_index()
        g.insert(0, "by", "+".join(by))
        parts.append(g)
    spots = d[d["modality"] == "spot"]
    if len(spots):
        g = spots.groupby(["crystal_system", "zone_family"], sort=True)["correct"].agg(
            ["size", "mean"]).reset_index()
        g.insert(0, "by", "crystal_system+zone_family")
        parts.append(g)
    breakdown = pd.concat(parts, ignore_index=True).rename(
        columns={"size": "patterns", "mean": "accuracy"})
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


# --------------------------------------------------------------------------- rule entry points


def train_diffraction_fold(
    manifest: str | os.PathLike,
    fold: int,
    *,
    arch: Mapping,
    shared: Mapping | None = None,
    pretrained: str = "",
    best_path: str | os.PathLike,
    history_path: str | os.PathLike,
    last_path: str | os.PathLike,
    val_specimens_per_class: int = 1,
    validation_seed: int = 0,
    rotate: bool = True,
    representation: str | Mapping[str, str] | None = None,
    seed: int = 0,
    threads: int = 1,
    root: str | os.PathLike = ".",
):
    """Train the model of one fold from the split manifest (the ``diffraction_train`` rule).

    ``arch`` is one block of ``diffraction.archs`` (``model``, ``model_kwargs``,
    TrainConfig fields), ``shared`` the settings common to all of them;
    ``pretrained`` a local weights file for ``resnet18`` ("" = random init).
    ``validation_seed`` picks the validation crystals (the same for every
    architecture), ``seed`` the weights, data order and augmentation.
    """
    from grainflow.splits import read_manifest

    table = read_manifest(manifest)
    train_rows, val_rows, _ = fold_rows(table, int(fold),
                                        val_specimens_per_class=val_specimens_per_class,
                                        seed=validation_seed)
    overrides = {"threads": int(threads), "seed": int(seed)}
    if arch.get("model") == "resnet18":
        overrides["pretrained"] = str(pretrained or "")
    name, kwargs, config = classifier_config(arch, shared=shared, **overrides)
    return train_classifier(train_rows, val_rows, model_name=name, model_kwargs=kwargs,
                            config=config, best_path=best_path, history_path=history_path,
                            last_path=last_path, rotate=rotate,
                            representation=representation, root=root,
                            extra={"fold": int(fold)})


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
    from grainflow.splits import read_manifest

    table = read_manifest(manifest)
    pred = pd.concat([predict_fold(path, table, int(fold), root=root, device=device)
                      for fold, path in sorted(checkpoints.items())], ignore_index=True)
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
