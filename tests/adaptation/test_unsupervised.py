"""Unsupervised adaptation: FDA, pseudo-labels, AdaBN, and a shift it measurably undoes."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from grainflow.adaptation.finetune import (
    FinetuneSettings,
    adapt_stacks,
    finetune,
    pixel_scores,
    predict_full,
    random_crops,
)
from grainflow.adaptation.unsupervised import (
    IGNORE,
    AdaptSettings,
    adabn,
    adapt_model,
    fda_transfer,
    member_probabilities,
    pseudo_labels,
)
from grainflow.models.registry import build_model
from grainflow.normalize import normalize_image


def test_fda_swaps_the_low_frequency_amplitude_and_keeps_the_phase():
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(32, 32)), 3 + rng.normal(size=(32, 32)) * 2
    assert np.allclose(fda_transfer(source, target, 0.0), source, atol=1e-6)
    assert np.allclose(fda_transfer(source, source, 0.1), source, atol=1e-5)
    mixed = fda_transfer(source, target, 0.1)  # half-width 3: a 7 x 7 window
    fm, fs, ft = (np.fft.fftshift(np.fft.fft2(a)) for a in (mixed, source, target))
    window = (slice(13, 20), slice(13, 20))
    assert np.allclose(np.abs(fm)[window], np.abs(ft)[window], rtol=1e-4, atol=1e-3)
    outside = np.ones((32, 32), bool)
    outside[window] = False
    assert np.allclose(np.abs(fm)[outside], np.abs(fs)[outside], rtol=1e-4, atol=1e-3)
    nonzero = np.abs(fs) > 1e-6
    assert np.allclose(
        np.exp(1j * np.angle(fm[nonzero])), np.exp(1j * np.angle(fs[nonzero])), atol=1e-3
    )
    # the zero frequency too: the target's mean magnitude, with the source's sign (its phase)
    assert mixed.mean() == pytest.approx(np.sign(source.mean()) * abs(target.mean()), abs=1e-4)
    with pytest.raises(ValueError, match="one shape"):
        fda_transfer(source, target[:8], 0.1)


def test_pseudo_labels_only_where_unanimous_and_confident():
    # members (2), classes (2), 1 x 4 pixels
    fg = np.array(
        [
            [[0.95, 0.95, 0.80, 0.02]],
            [[0.97, 0.40, 0.99, 0.04]],
        ]
    )
    members = np.stack([1 - fg, fg], axis=1)
    labels = pseudo_labels(members, 0.9)
    # pixel 0: both say 1, mean 0.96; pixel 1: they disagree; pixel 2: mean 0.895 < 0.9;
    # pixel 3: both say 0, mean 0.97
    assert labels.tolist() == [[1, IGNORE, IGNORE, 0]]
    assert pseudo_labels(members, 0.85).tolist() == [[1, IGNORE, 1, 0]]
    assert labels.dtype == np.uint8


def test_member_probabilities_undo_their_flips():
    model = build_model("unet", depth=2, base_channels=4).eval()
    image = np.random.default_rng(1).normal(size=(24, 20)).astype(np.float32)
    members = member_probabilities([model], image, level=0, shape=image.shape, flips=True)
    assert members.shape == (4, 2, 24, 20)
    flipped = member_probabilities([model], image[:, ::-1].copy(), level=0, shape=image.shape)
    assert np.allclose(flipped[0], members[1][:, :, ::-1], atol=1e-5)  # left-right member
    coarse = member_probabilities([model], image[:12, :10], level=1, shape=(23, 19), flips=False)
    assert coarse.shape == (1, 2, 23, 19)


def test_adabn_takes_the_statistics_of_the_new_images_and_keeps_the_weights():
    torch.manual_seed(0)
    model = build_model("unet", depth=2, base_channels=4)
    weights = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if "running" not in k and "num_batches" not in k
    }
    crops = 5 + 3 * torch.randn(8, 1, 32, 32)
    adabn(model, crops)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        expected = first_conv(crops).mean(dim=(0, 2, 3))
    assert torch.allclose(first_bn.running_mean, expected, rtol=1e-4, atol=1e-4)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in weights.items())
    assert not model.training


def _discs(n, seed, *, illumination=0.0, speckle=False, size=64):
    """Bright discs; the 'real' shift: an uneven illumination hump and multiplicative speckle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for _ in range(n):
        mask = np.zeros((size, size), bool)
        for _ in range(5):
            cy, cx, r = rng.uniform(6, size - 6), rng.uniform(6, size - 6), rng.uniform(3, 7)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        image = mask * 1.0
        if illumination:
            cy, cx = rng.uniform(0, size, 2)
            image = image + illumination * np.exp(
                -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 3) ** 2)
            )
        if speckle:
            image = image * rng.gamma(4, 1 / 4, image.shape)
        else:
            image = image + rng.normal(0, 0.15, image.shape)
        images.append(normalize_image(image.astype(np.float32)))
        labels.append(mask.astype(np.uint8))
    return images, labels


def test_adaptation_measurably_undoes_a_shift_made_on_purpose():
    """A tiny U-Net trained on evenly lit discs with Gaussian noise meets unevenly lit discs
    with speckle; FDA with the real images' low frequencies raises its IoU on them.

    (An inverted contrast, the other shift one might try, cannot be undone without labels:
    neither the amplitude spectrum nor batch statistics carry the sign of the contrast.)
    """
    torch.set_num_threads(1)
    synthetic = _discs(32, 0)
    real = _discs(8, 1, illumination=2.5, speckle=True)
    torch.manual_seed(0)
    model = build_model("unet", depth=2, base_channels=8)
    rng = np.random.default_rng(0)
    finetune(
        model,
        lambda step: random_crops(*synthetic, n=8, crop=64, rng=rng),
        FinetuneSettings(steps=150, batch_size=8, crop_px=64, lr=1e-2),
    )

    def iou(m, images, labels):
        pred = [predict_full(m, x, level=0, shape=x.shape).argmax(0) for x in images]
        return pixel_scores(labels, pred)["iou"]

    before = iou(model, *real)
    pseudo = [
        pseudo_labels(member_probabilities([model], x, level=0, shape=x.shape), 0.9)
        for x in real[0]
    ]
    runs = []
    for _ in range(2):
        adapted = adapt_model(
            copy.deepcopy(model),
            lambda n, rng: random_crops(*synthetic, n=n, crop=64, rng=rng),
            real[0],
            pseudo,
            AdaptSettings(fda_beta=0.1, real_fraction=0.0, steps=60, lr=3e-3),
            crop_px=64,
            norm_percentiles=(1.0, 99.0),
            seed=0,
        )
        runs.append(iou(adapted, *real))
    assert runs[0] == runs[1]  # fixed seeds, same result
    assert runs[0] > before + 0.05
    assert iou(adapted, *synthetic) > 0.9  # it still reads synthetic images


def test_settings_are_checked():
    with pytest.raises(ValueError, match="fda_beta"):
        AdaptSettings(fda_beta=0.7)
    with pytest.raises(ValueError, match="confidence"):
        AdaptSettings(confidence=0.3)


def test_adapt_stacks_names_the_key_and_the_sheet():
    sheet = pd.DataFrame({"task": ["phases", "diffraction"]}, index=["alloy", "frames"])
    assert adapt_stacks(sheet, ["alloy"], sheet_path="s.tsv") == ["alloy"]
    with pytest.raises(ValueError, match="adapt.unsupervised.stacks names 'x'.*s.tsv"):
        adapt_stacks(sheet, ["x"], sheet_path="s.tsv")
    with pytest.raises(ValueError, match="a 'diffraction' stack"):
        adapt_stacks(sheet, ["frames"], sheet_path="s.tsv")


def _unlabelled(images):
    """A stack of ``images`` (one group each, no ground truth), as adapt_stack reads it."""
    from grainflow.adaptation.planes import StackPlanes

    names = "abcdefgh"[: len(images)]
    return StackPlanes(
        name="discs",
        task="phases",
        level=0,
        images=images,
        truth=None,
        truth_full=None,
        groups=list(names),
        files=[f"{n}.png" for n in names],
        shapes=[im.shape for im in images],
    )


def test_a_classical_teacher_labels_every_pixel_it_is_given():
    from grainflow.adaptation.unsupervised import adapt_stack

    images, labels = _discs(2, 3, size=32)
    planes = _unlabelled(images)
    synthetic = [
        (torch.from_numpy(x[None]), torch.from_numpy(y).long()) for x, y in zip(images, labels)
    ]
    settings = AdaptSettings(teacher="classical", fda_beta=0.0, steps=1, batch_size=2)
    run = dict(norm_percentiles=(1.0, 99.0), seed=0)
    models = [build_model("unet", depth=2, base_channels=4)]
    _, records = adapt_stack(
        planes, models, [synthetic], lambda m, k: 0.0, settings, teacher_labels=labels, **run
    )
    assert records[0]["pseudo_label_fraction"] == 1.0 and records[0]["teacher"] == "classical"
    with pytest.raises(ValueError, match="needs teacher_labels"):
        adapt_stack(planes, models, [synthetic], lambda m, k: 0.0, settings, **run)
    with pytest.raises(ValueError, match="teacher must be one of"):
        AdaptSettings(teacher="oracle")


def test_an_agreement_teacher_keeps_only_the_pixels_both_teachers_label_alike():
    from grainflow.adaptation.unsupervised import (
        adapt_stack,
        agreeing_labels,
        member_probabilities,
    )

    pseudo = np.array([[1, 0, IGNORE], [0, 1, 1]], np.uint8)
    baseline = np.array([[1, 1, 0], [0, 0, 1]], np.uint8)
    assert agreeing_labels(pseudo, baseline).tolist() == [[1, IGNORE, IGNORE], [0, IGNORE, 1]]

    images, labels = _discs(1, 3, size=32)
    planes = _unlabelled(images)
    synthetic = [(torch.from_numpy(images[0][None]), torch.from_numpy(labels[0]).long())]
    settings = AdaptSettings(
        teacher="agreement", confidence=0.5, fda_beta=0.0, steps=1, batch_size=2
    )
    models = [build_model("unet", depth=2, base_channels=4).eval()]
    ensemble = pseudo_labels(
        member_probabilities(models, images[0], level=0, shape=(32, 32)), settings.confidence
    )
    baseline = np.where(ensemble == IGNORE, 0, ensemble).astype(np.uint8)
    baseline[:16] = 1 - baseline[:16]  # the baseline disagrees on the top half
    expected = np.count_nonzero(agreeing_labels(ensemble, baseline) != IGNORE) / ensemble.size
    assert 0 < expected <= 0.5
    run = dict(norm_percentiles=(1.0, 99.0), seed=0)
    _, records = adapt_stack(
        planes,
        copy.deepcopy(models),
        [synthetic],
        lambda m, k: 0.0,
        settings,
        teacher_labels=[baseline],
        **run,
    )
    assert records[0]["teacher"] == "agreement"
    assert records[0]["pseudo_label_fraction"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="needs teacher_labels"):
        adapt_stack(planes, models, [synthetic], lambda m, k: 0.0, settings, **run)
