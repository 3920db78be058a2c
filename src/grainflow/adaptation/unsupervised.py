"""Unsupervised adaptation of the fold models to one unlabelled real stack.

Three steps, each optional (config ``adapt.unsupervised``):

- AdaBN: batch-norm statistics re-estimated on the stack's own crops;
- Fourier domain adaptation (Yang & Soatto 2020): synthetic training images take the
  low-frequency amplitude spectrum of real crops, so the network meets real image
  statistics with synthetic labels;
- self-training on the pseudo-labels of the real planes where the ensemble (folds x flips)
  is confident and unanimous, with synthetic images in every batch so that the model
  cannot drift into predicting one class everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from grainflow.adaptation.finetune import predict_full, random_crops
from grainflow.inference.predict import FLIPS
from grainflow.normalize import normalize_image
from grainflow.runtime import loop_autocast
from grainflow.training.losses import DiceCELoss

__all__ = [
    "IGNORE",
    "TEACHERS",
    "AdaptSettings",
    "fda_transfer",
    "member_probabilities",
    "pseudo_labels",
    "agreeing_labels",
    "adabn",
    "adapt_model",
    "synthetic_sampler",
    "adapt_stack",
]

#: pseudo-label value of pixels left out of the loss (not confident)
IGNORE = 255

#: who pseudo-labels the real planes: the ensemble's confident unanimous pixels, the
#: classical baseline's every pixel, or the ensemble's pixels where the baseline agrees
TEACHERS = ("ensemble", "classical", "agreement")


@dataclass(frozen=True)
class AdaptSettings:
    """How a fold model is adapted (config ``adapt.unsupervised``)."""

    teacher: str = "ensemble"  # who pseudo-labels the real planes: TEACHERS
    adabn: bool = False  # re-estimate batch-norm statistics on real crops, and let them follow
    # the mixed batches; else batch norm keeps the statistics of the synthetic training
    fda_beta: float = 0.01  # half-width of the swapped amplitude window / image side (0: no FDA)
    confidence: float = 0.9  # pseudo-label where the ensemble's mean probability reaches this
    real_fraction: float = (
        0.5  # share of each batch taken from pseudo-labelled real crops (0: none)
    )
    steps: int = 60
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 1e-4

    def __post_init__(self):
        if self.teacher not in TEACHERS:
            raise ValueError(
                f"adapt.unsupervised.teacher must be one of {TEACHERS}, got {self.teacher!r}"
            )
        if not 0 <= self.fda_beta < 0.5:
            raise ValueError(
                f"adapt.unsupervised.fda_beta must be in [0, 0.5), got {self.fda_beta}"
            )
        if not 0.5 <= self.confidence <= 1:
            raise ValueError(
                f"adapt.unsupervised.confidence must be in [0.5, 1], got {self.confidence}"
            )
        if not 0 <= self.real_fraction < 1:
            raise ValueError(
                f"adapt.unsupervised.real_fraction must be in [0, 1), got {self.real_fraction}"
            )


def fda_transfer(source: np.ndarray, target: np.ndarray, beta: float) -> np.ndarray:
    """``source`` with the low-frequency amplitude spectrum of ``target`` (same shape), FDA.

    The amplitudes of the ``(2L+1) x (2L+1)`` lowest frequencies (``L = floor(beta * min(H, W))``,
    the zero frequency in the middle) are replaced by the target's; the phase, and so the
    structure the labels describe, stays the source's. ``beta`` 0 returns the source.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape:
        raise ValueError(f"FDA needs images of one shape, got {source.shape} and {target.shape}")
    half = int(math.floor(beta * min(source.shape)))
    if half < 1 and beta == 0:
        return source.astype(np.float32)
    fs = np.fft.fftshift(np.fft.fft2(source))
    ft = np.fft.fftshift(np.fft.fft2(target))
    amplitude, phase = np.abs(fs), np.angle(fs)
    cy, cx = source.shape[0] // 2, source.shape[1] // 2
    window = (slice(cy - half, cy + half + 1), slice(cx - half, cx + half + 1))
    amplitude[window] = np.abs(ft)[window]
    mixed = np.fft.ifft2(np.fft.ifftshift(amplitude * np.exp(1j * phase)))
    return np.real(mixed).astype(np.float32)


@torch.inference_mode()
def member_probabilities(
    models: Sequence[torch.nn.Module], image: np.ndarray, *, level: int, shape, flips: bool = True
) -> np.ndarray:
    """Probabilities (members, C, rows, cols) of every model x flip on one normalised plane."""
    out = []
    for model in models:
        for dims in FLIPS if flips else FLIPS[:1]:  # negative axes: the same on (H, W), (C, H, W)
            flipped = np.flip(image, axis=dims) if dims else image
            p = predict_full(model, np.ascontiguousarray(flipped), level=0, shape=flipped.shape)
            out.append(np.ascontiguousarray(np.flip(p, axis=dims) if dims else p))
    probs = np.stack(out)
    if level:
        t = torch.from_numpy(probs)
        t = F.interpolate(t, scale_factor=2**level, mode="bilinear", align_corners=False)
        probs = t[:, :, : shape[0], : shape[1]].numpy()
    return probs


def pseudo_labels(members: np.ndarray, confidence: float) -> np.ndarray:
    """Class labels where the members agree and their mean probability reaches ``confidence``.

    ``members``: (M, C, H, W) probabilities. Returns uint8 (H, W): the class, or
    :data:`IGNORE` where any member's arg-max differs or the mean probability of the
    class is below ``confidence``.
    """
    members = np.asarray(members)
    mean = members.mean(axis=0)
    label = mean.argmax(axis=0)
    unanimous = (members.argmax(axis=1) == label[None]).all(axis=0)
    sure = np.take_along_axis(mean, label[None], axis=0)[0] >= confidence
    return np.where(unanimous & sure, label, IGNORE).astype(np.uint8)


def agreeing_labels(pseudo: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """``pseudo`` (uint8, :data:`IGNORE` where unsure) kept only where ``baseline`` has its class."""
    pseudo = np.asarray(pseudo, dtype=np.uint8)
    return np.where(pseudo == np.asarray(baseline), pseudo, IGNORE).astype(np.uint8)


@torch.no_grad()
def adabn(model: torch.nn.Module, crops: torch.Tensor, *, batch_size: int = 8) -> torch.nn.Module:
    """Batch-norm running statistics replaced by those of ``crops`` (N, 1, h, w); weights kept."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    for start in range(0, len(crops), batch_size):
        model(crops[start : start + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


def adapt_model(
    model: torch.nn.Module,
    synthetic: Callable[[int, np.random.Generator], tuple[torch.Tensor, torch.Tensor]],
    real_images: Sequence[np.ndarray],
    real_labels: Sequence[np.ndarray],
    settings: AdaptSettings,
    *,
    crop_px: int,
    norm_percentiles: Sequence[float],
    seed: int,
    cpu_amp: str = "off",
) -> torch.nn.Module:
    """Adapt ``model`` in place: AdaBN, then mixed synthetic (FDA) and pseudo-labelled steps.

    The steps run under bf16 autocast on the CPU by ``cpu_amp`` (``training.cpu_amp``).

    Parameters
    ----------
    synthetic : callable
        ``(n, rng) -> (images (n, 1, h, w), labels (n, h, w))``: synthetic training crops,
        normalised, of side ``crop_px``.
    real_images, real_labels : sequences of ndarray
        Normalised real planes (at the level the stack is read at) and their pseudo-labels
        (:func:`pseudo_labels`, :data:`IGNORE` left out of the loss).
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    n_real = int(round(settings.batch_size * settings.real_fraction))
    n_synth = settings.batch_size - n_real
    if settings.adabn:
        crops, _ = random_crops(
            real_images, real_labels, n=4 * settings.batch_size, crop=crop_px, rng=rng
        )
        adabn(model, crops.to(device), batch_size=settings.batch_size)
    if not settings.steps:
        return model.eval()
    dice_ce = DiceCELoss().to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    model.train()
    if not settings.adabn:  # batch norm keeps the synthetic statistics (the model still reads them)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
        xs, ys = synthetic(n_synth, rng)
        if settings.fda_beta > 0:
            styles, _ = random_crops(
                real_images, real_labels, n=n_synth, crop=xs.shape[-1], rng=rng
            )
            xs = torch.from_numpy(
                np.stack(
                    [
                        normalize_image(
                            fda_transfer(x[0].numpy(), s[0].numpy(), settings.fda_beta),
                            percentiles=norm_percentiles,
                        )[None]
                        for x, s in zip(xs, styles)
                    ]
                )
            )
        with loop_autocast(device, cpu_amp):
            logits = model(xs.to(device))
        loss = dice_ce(logits.float(), ys.to(device))
        if n_real:
            xr, yr = random_crops(real_images, real_labels, n=n_real, crop=crop_px, rng=rng)
            with loop_autocast(device, cpu_amp):
                logits = model(xr.to(device)).float()
            yr = yr.to(device)
            if (yr != IGNORE).any():
                loss = loss + F.cross_entropy(logits, yr, ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def synthetic_sampler(dataset) -> Callable[[int, np.random.Generator], tuple]:
    """``(n, rng) -> (images, labels)``: ``n`` random items of a training dataset, flipped."""

    def sample(n: int, rng: np.random.Generator):
        xs, ys = [], []
        for _ in range(n):
            x, y = dataset[int(rng.integers(len(dataset)))]
            k = int(rng.integers(8))
            x, y = torch.rot90(x, k % 4, dims=(-2, -1)), torch.rot90(y, k % 4, dims=(-2, -1))
            if k >= 4:
                x, y = torch.flip(x, dims=(-1,)), torch.flip(y, dims=(-1,))
            xs.append(x)
            ys.append(y)
        return torch.stack(xs), torch.stack(ys).long()

    return sample


def adapt_stack(
    planes,
    models: Sequence[torch.nn.Module],
    training_sets: Sequence,
    validation: Callable[[torch.nn.Module, int], float],
    settings: AdaptSettings,
    *,
    norm_percentiles: Sequence[float],
    seed: int,
    teacher_labels: Sequence[np.ndarray] | None = None,
    cpu_amp: str = "off",
    log: Callable[[str], None] | None = None,
) -> tuple[list[torch.nn.Module], list[dict]]:
    """Adapt each fold model to a stack's planes; return the models and one record per fold.

    Pseudo-labels come once from the whole ensemble (every fold model x 4 flips) at the
    level ``planes`` was read at. ``training_sets[k]`` holds fold ``k``'s synthetic
    training images; ``validation(model, k)`` scores a model on fold ``k``'s held-out
    synthetic specimens (the primary score), before and after. ``teacher_labels`` (the
    classical baseline's classes of each plane) replace the ensemble's pseudo-labels with
    ``settings.teacher == "classical"`` (a teacher that does not share the network's
    mistakes), or keep only those the baseline agrees with (``"agreement"``).
    """
    from grainflow.seeds import derive_seed

    if settings.teacher != "ensemble" and teacher_labels is None:
        raise ValueError(
            f"teacher {settings.teacher!r} needs teacher_labels, the baseline's classes"
        )
    if settings.teacher == "classical":
        labels = [np.asarray(lab, dtype=np.uint8) for lab in teacher_labels]
    else:
        labels = [
            pseudo_labels(
                member_probabilities(models, image, level=0, shape=image.shape),
                settings.confidence,
            )
            for image in planes.images
        ]
    if settings.teacher == "agreement":
        labels = [agreeing_labels(lab, other) for lab, other in zip(labels, teacher_labels)]
    covered = sum(int(np.count_nonzero(lab != IGNORE)) for lab in labels)
    pixels = sum(lab.size for lab in labels)
    adapted, records = [], []
    for fold, (model, training) in enumerate(zip(models, training_sets)):
        before = validation(model, fold)
        crop = int(training[0][0].shape[-1])
        model = adapt_model(
            model,
            synthetic_sampler(training),
            planes.images,
            labels,
            settings,
            crop_px=crop,
            norm_percentiles=norm_percentiles,
            seed=derive_seed(seed, fold),
            cpu_amp=cpu_amp,
        )
        after = validation(model, fold)
        records.append(
            {
                "stack": planes.name,
                "fold": fold,
                "level": planes.level,
                "pseudo_label_fraction": covered / max(pixels, 1),
                "synthetic_score_before": before,
                "synthetic_score_after": after,
                "synthetic_score_change": after - before,
                **{k: getattr(settings, k) for k in AdaptSettings.__dataclass_fields__},
            }
        )
        if log:
            log(
                f"fold {fold}: held-out synthetic score {before:.4f} -> {after:.4f}; "
                f"pseudo-labels on {covered / max(pixels, 1):.1%} of the real pixels"
            )
        adapted.append(model)
    return adapted, records
