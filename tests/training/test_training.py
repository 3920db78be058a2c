"""Training core: checkpoints, loss, schedule, data, learning, determinism and resume."""

import hashlib
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from grainflow import checkpoint as ckpt
from grainflow.io.hdf5 import Sample, write_specimen
from grainflow.models.registry import build_model
from grainflow.normalize import normalize_image
from grainflow.runtime import CPU_AMP, cpu_bf16_native, runtime
from grainflow.splits import MANIFEST_COLUMNS, write_manifest
from grainflow.training.config import TrainConfig, arch_settings
from grainflow.training.data import (
    EpochSampler,
    MicrographDataset,
    OnlineFlips,
    SeparationTarget,
    dihedral,
    fold_datasets,
    read_manifest,
    separation_pixels,
)
from grainflow.training.loop import last_history, train
from grainflow.training.losses import SEPARATION, DiceCELoss, lr_at, make_loss
from grainflow.training.validation import pixel_metrics

TIMING = ("images_per_s", "peak_memory_mb", "epoch_s")


def line_labels(size, rng, lines=2, width=2):
    """Boundary map (H, W) of straight horizontal/vertical lines, ``width`` pixels wide."""
    y = np.zeros((size, size), np.int64)
    for _ in range(lines):
        at = rng.integers(3, size - 3 - width)
        if rng.random() < 0.5:
            y[:, at : at + width] = 1
        else:
            y[at : at + width, :] = 1
    return y


def line_image(y, rng, noise=0.08):
    return np.clip(0.3 + 0.4 * y + rng.normal(0, noise, y.shape), 0, 1).astype(np.float32)


def line_data(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    ys = [line_labels(size, rng) for _ in range(n)]
    xs = [normalize_image(line_image(y, rng))[None] for y in ys]
    return TensorDataset(torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)))


def class_data(n, size=16, seed=0):
    """Three classes: a bright horizontal line, a vertical line, or a centred spot."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        c = i % 3
        x = rng.normal(0, 0.1, (size, size)).astype(np.float32)
        if c == 0:
            x[rng.integers(2, size - 2)] += 1
        elif c == 1:
            x[:, rng.integers(2, size - 2)] += 1
        else:
            x[size // 2 - 2 : size // 2 + 2, size // 2 - 2 : size // 2 + 2] += 1
        xs.append(x[None])
        ys.append(c)
    return TensorDataset(torch.from_numpy(np.stack(xs)), torch.tensor(ys))


def tiny_config(**overrides):
    values = dict(
        epochs=4,
        batch_size=4,
        lr=1e-2,
        warmup_epochs=1,
        threads=1,
        device="cpu",
        deterministic=True,
        progress=False,
        seed=3,
    )
    return TrainConfig(**{**values, **overrides})


UNET = ("unet", {"depth": 2, "base_channels": 4})


def run(tmp_path, name, data, config, model=UNET, **kwargs):
    out = tmp_path / name
    result = train(
        model[0],
        model[1],
        data[0],
        data[1],
        config,
        best_path=out / "best.pt",
        history_path=out / "history.tsv",
        last_path=out / "last.pt",
        **kwargs,
    )
    return result, out


def same_state(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def drop_timing(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = build_model("unet", depth=1, base_channels=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5)
    model(torch.randn(2, 1, 16, 16)).sum().backward()
    optimizer.step()
    scheduler.step()
    path = tmp_path / "a.pt"
    config = tiny_config().to_dict()
    ckpt.save_checkpoint(
        path,
        ckpt.make_checkpoint(
            model=model,
            model_name="unet",
            model_kwargs={"depth": 1, "base_channels": 4},
            epoch=3,
            step=7,
            config=config,
            optimizer=optimizer,
            scheduler=scheduler,
            extra={"best": 0.5},
        ),
    )
    draws = (torch.rand(3), np.random.rand(3))

    raw = torch.load(path, weights_only=True)  # plain containers and tensors only
    loaded = ckpt.load_checkpoint(path)
    assert raw.keys() == loaded.keys()
    assert loaded["epoch"] == 3 and loaded["step"] == 7 and loaded["extra"] == {"best": 0.5}
    assert loaded["config"] == config and loaded["model_kwargs"] == {"depth": 1, "base_channels": 4}
    assert same_state(loaded["model_state"], model.state_dict())
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(loaded["optimizer_state"])
    assert torch.equal(
        fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )
    assert loaded["scheduler_state"]["last_epoch"] == 1

    ckpt.set_rng_state(loaded["rng"])  # the generators continue as after saving
    assert torch.equal(torch.rand(3), draws[0]) and np.array_equal(np.random.rand(3), draws[1])

    rebuilt = ckpt.model_from_checkpoint(path)
    model.eval()
    x = torch.randn(1, 1, 16, 16)
    assert not rebuilt.training and torch.equal(rebuilt(x), model(x))


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    good = ckpt.make_checkpoint(
        model=torch.nn.Linear(2, 2), model_name="x", model_kwargs={}, epoch=1, step=1
    )
    ckpt.save_checkpoint(path, good)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half")
        raise OSError("disk full")

    def broken_write(self, data):  # the disk fills while the file is written
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    for target, name, broken in ((torch, "save", broken_save), (Path, "write_bytes", broken_write)):
        with monkeypatch.context() as m:
            m.setattr(target, name, broken)
            with pytest.raises(OSError, match="disk full"):
                ckpt.save_checkpoint(path, good)
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left


def test_load_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt does not exist; run the rule"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")
    good = tmp_path / "good.pt"
    ckpt.save_checkpoint(
        good,
        ckpt.make_checkpoint(
            model=torch.nn.Linear(2, 2), model_name="x", model_kwargs={}, epoch=1, step=1
        ),
    )
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"truncated\.pt is not a readable torch file.*rerun"):
        ckpt.load_checkpoint(truncated)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)
    with pytest.raises(ValueError, match=r"pickled\.pt holds objects other than tensors"):
        ckpt.load_checkpoint(pickled)
    bare = tmp_path / "bare.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), bare)
    with pytest.raises(ValueError, match=r"bare\.pt is not a grainflow checkpoint"):
        ckpt.load_checkpoint(bare)


def test_sha256_file(tmp_path):
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    assert ckpt.sha256_file(path) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    data = os.urandom(3000)
    path.write_bytes(data)
    assert ckpt.sha256_file(path, chunk_bytes=1000) == hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- pieces


def test_lr_schedule_hand_worked():
    kw = dict(total_steps=12, warmup_steps=3, peak_lr=1e-3, min_lr=1e-5)
    assert [lr_at(s, **kw) for s in range(3)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4])
    assert lr_at(3, **kw) == pytest.approx(1e-3)  # peak at the end of the warm-up
    assert lr_at(7.5, **kw) == pytest.approx((1e-3 + 1e-5) / 2)  # half-way down the cosine
    assert lr_at(12, **kw) == lr_at(50, **kw) == 1e-5
    decay = [lr_at(s, **kw) for s in range(3, 13)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert lr_at(0, total_steps=4, warmup_steps=0, peak_lr=2.0) == 2.0


def test_dice_ce_loss_hand_worked():
    target = torch.tensor([[[0, 1], [1, 1]]])  # one image, 3 foreground pixels
    perfect = torch.where(target.bool(), 20.0, -20.0)
    logits = torch.stack([-perfect, perfect], dim=1)  # (1, 2, 2, 2)
    assert DiceCELoss(smooth=0.0)(logits, target) == pytest.approx(0.0, abs=1e-6)
    even = torch.zeros(1, 2, 2, 2)  # p = 0.5 everywhere: CE = ln 2, Dice = 2*1.5 / (2 + 3) = 0.6
    loss = DiceCELoss(smooth=0.0, dice_weight=1.0)(even, target)
    assert loss.item() == pytest.approx(math.log(2) + 0.4, rel=1e-6)
    weighted = DiceCELoss(class_weights=[1.0, 5.0], dice_weight=0.0)(even, target)
    assert weighted.item() == pytest.approx(math.log(2))  # weighted mean of equal losses


def test_separation_weight_hand_worked():
    # a gap pixel (top right) read as particle 3:1, the others even
    target = torch.tensor([[[0, SEPARATION], [1, 1]]])
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 0, 1] = math.log(3)  # P(particle) = 0.75 there: its loss is ln 4
    ce = DiceCELoss(dice_weight=0.0, separation_weight=9.0)(logits, target)
    assert ce.item() == pytest.approx((3 * math.log(2) + 10 * math.log(4)) / 13, rel=1e-6)
    # Dice counts the gap as matrix: overlap 1, predicted 2.25, true 2
    both = DiceCELoss(smooth=0.0, separation_weight=9.0)(logits, target)
    assert both.item() == pytest.approx(ce.item() + 1 - 2 / 4.25, rel=1e-6)
    # off: a plain target gives the loss of before, bit for bit
    plain = torch.tensor([[[0, 0], [1, 1]]])
    weights = dict(class_weights=[1.0, 2.0])
    assert torch.equal(
        DiceCELoss(**weights, separation_weight=9.0)(logits, plain),
        DiceCELoss(**weights)(logits, plain),
    )
    assert make_loss(tiny_config(separation_weight=4.0)).separation_weight == 4.0
    with pytest.raises(ValueError, match="separation_px must be an integer >= 1"):
        tiny_config(separation_px=0)


def test_separation_pixels_hand_worked():
    ids = np.zeros((9, 12), np.uint32)
    ids[2:7, 1:5], ids[2:7, 7:11] = 1, 2  # two particles, two columns of matrix between
    phase = (ids > 0).astype(np.uint8)
    gap = np.zeros(ids.shape, bool)
    gap[2:7, 5:7] = True  # both particles within 2 px; the gap's corners are not (sqrt 5)
    np.testing.assert_array_equal(separation_pixels(phase, ids, 2), gap)
    assert not separation_pixels(phase, ids, 1).any()  # one particle within 1 px at most
    hidden = phase.copy()
    hidden[ids == 2] = 0  # a particle the label does not show is no neighbour
    assert not separation_pixels(hidden, ids, 3).any()
    sample = Sample(
        image=np.zeros(ids.shape, np.float32),
        labels={"phase": phase, "particle_ids": ids},
        image_id="phases/s00/b0/i00",
        specimen="s00",
        session="b0",
        seed=0,
        modality="stem_particles",
    )
    target = SeparationTarget("phase", "particle_ids", 2)(sample)
    np.testing.assert_array_equal(target, np.where(gap, SEPARATION, phase))
    with pytest.raises(ValueError, match="no label 'grain_ids'"):
        SeparationTarget("phase", "grain_ids", 2)(sample)


def test_class_counts_count_the_gaps_as_matrix(tmp_path):
    ids = np.zeros((9, 12), np.uint32)
    ids[2:7, 1:5], ids[2:7, 7:11] = 1, 2  # 40 particle pixels, a gap of 10 between them
    sample = Sample(
        image=np.random.default_rng(0).random(ids.shape).astype(np.float32),
        labels={"phase": (ids > 0).astype(np.uint8), "particle_ids": ids},
        image_id="phases/s00/b0/i00",
        specimen="s00",
        session="b0",
        seed=0,
        modality="sem_precipitates",
    )
    file = Path("results/synthetic/phases/s00.h5")
    write_specimen(tmp_path / file, [sample], task="phases", specimen="s00")
    rows = pd.DataFrame(
        [["phases/s00/b0/i00", "phases/s00/b0/i00", "s00", "b0", 0, str(file), 0]],
        columns=MANIFEST_COLUMNS,
    )
    data = MicrographDataset(
        rows, target=SeparationTarget("phase", "particle_ids", 2), root=tmp_path
    )
    assert (data[0][1] == SEPARATION).sum() == 10  # the target marks the gap...
    assert data.class_counts(2).tolist() == [9 * 12 - 40, 40]  # ...which is matrix


def test_auto_class_weights_from_frequencies():
    config = tiny_config()
    loss = make_loss(config, np.array([96, 4]))
    assert loss.class_weights.tolist() == pytest.approx([1.0, math.sqrt(24)])
    assert make_loss(tiny_config(class_weights="none"), np.array([96, 4])).class_weights is None
    ce = make_loss(tiny_config(loss="ce", class_weights=[1, 2, 3]))
    assert ce.dice_weight == 0 and ce.class_weights.tolist() == [1, 2, 3]
    logits, target = torch.randn(7, 3), torch.tensor([0, 1, 2, 2, 1, 0, 2])
    reference = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(ce(logits, target), reference(logits, target))
    seg = make_loss(config, np.array([96, 4]))
    logits, target = torch.randn(2, 2, 5, 5), torch.randint(0, 2, (2, 5, 5))
    reference = torch.nn.CrossEntropyLoss(weight=seg.class_weights)
    seg.dice_weight = 0.0
    torch.testing.assert_close(seg(logits, target), reference(logits, target))


def test_dihedral_elements():
    x = torch.arange(6).reshape(1, 2, 3)
    assert torch.equal(dihedral(x, 0), x)
    assert torch.equal(dihedral(x, 1), torch.tensor([[[2, 5], [1, 4], [0, 3]]]))  # 90° ccw
    assert torch.equal(dihedral(x, 2), x.flip(-1).flip(-2))
    assert torch.equal(dihedral(x, 4), torch.tensor([[[2, 1, 0], [5, 4, 3]]]))
    square = torch.rand(1, 5, 5)
    assert len({tuple(dihedral(square, k).flatten().tolist()) for k in range(8)}) == 8


def test_online_flips_move_image_and_labels_together():
    images = torch.rand(24, 1, 8, 8)
    data = TensorDataset(images, (images[:, 0] > 0.5).long())
    flips = OnlineFlips(data, seed=1)
    seen = set()
    for i in range(len(data)):
        x, y = flips[(3, i)]
        k = flips.element(3, i, square=True)
        assert torch.equal(x, dihedral(images[i], k)) and torch.equal(y, (x[0] > 0.5).long())
        seen.add(k)
    assert len(seen) > 4  # the elements are drawn, not a fixed one
    assert torch.equal(flips[(3, 5)][0], OnlineFlips(data, seed=1)[(3, 5)][0])  # seeded
    draws = [flips.element(e, 5, square=True) for e in range(20)]
    assert len(set(draws)) > 1  # a new draw every epoch
    assert torch.equal(OnlineFlips(data, seed=1, enabled=False)[(3, 5)][0], images[5])
    # non-square images keep their shape; class targets are left as they are
    wide = OnlineFlips(TensorDataset(torch.rand(16, 1, 4, 6), torch.arange(16)), seed=0)
    for i in range(16):
        x, y = wide[(0, i)]
        assert x.shape == (1, 4, 6) and y == i
        assert wide.element(0, i, square=False) in (0, 2, 4, 6)


def test_epoch_sampler_order_depends_on_seed_and_epoch_only():
    sampler = EpochSampler(10, seed=4)
    sampler.set_epoch(2)
    keys = list(sampler)
    assert sorted(i for _, i in keys) == list(range(10)) and {e for e, _ in keys} == {2}
    again = EpochSampler(10, seed=4)
    again.set_epoch(2)
    assert list(again) == keys
    sampler.set_epoch(3)
    assert [i for _, i in sampler] != [i for _, i in keys]


def test_pixel_metrics_hand_worked():
    target = np.array([[[1, 1, 0, 0]]])
    pred = np.array([[[1, 0, 1, 0]]])  # tp 1, fp 1, fn 1
    assert pixel_metrics(target, pred) == {"accuracy": 0.5, "iou": 1 / 3, "f1": 0.5}
    assert pixel_metrics(np.array([0, 1, 1]), np.array([0, 1, 2])) == {"accuracy": 2 / 3}


def test_config_validation():
    assert TrainConfig.from_mapping({"class_weights": [1, 5], "epochs": 2}).class_weights == (
        1.0,
        5.0,
    )
    with pytest.raises(ValueError, match=r"unknown training keys \['epoch'\]"):
        TrainConfig.from_mapping({"epoch": 2})
    for bad, match in [
        (dict(epochs=0), "epochs must be an integer >= 1"),
        (dict(optimizer="sgd"), "optimizer must be one of"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(min_lr=1.0), "min_lr"),
        (dict(norm_percentiles=(99, 1)), "norm_percentiles"),
        (dict(class_weights="balanced"), "class_weights"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)
    with pytest.raises(AttributeError):
        TrainConfig().epochs = 3  # frozen


def test_arch_settings_from_the_config_blocks():
    training = {
        "device": "cpu",
        "deterministic": True,
        "archs": {
            "resnet18_frozen": {
                "model": "resnet18",
                "model_kwargs": {"num_classes": 3},
                "tasks": ["diffraction"],
                "transfer": "frozen",
                "loss": "ce",
                "deterministic": False,
            }
        },
    }
    shared = {k: v for k, v in training.items() if k != "archs"}
    name, kwargs, config = arch_settings(
        training["archs"]["resnet18_frozen"], shared=shared, threads=2, seed=7
    )
    assert (name, kwargs) == ("resnet18", {"num_classes": 3})
    assert (config.transfer, config.loss, config.device, config.threads, config.seed) == (
        "frozen",
        "ce",
        "cpu",
        2,
        7,
    )
    assert config.deterministic is False  # the architecture overrides the shared value
    with pytest.raises(ValueError, match="needs 'model'"):
        arch_settings({"epochs": 3})
    with pytest.raises(ValueError, match="unknown training keys"):
        arch_settings({"model": "unet", "depth": 3})


def test_runtime_restores_global_torch_state():
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with runtime(tiny_config(threads=1, deterministic=True, channels_last=False)) as rt:
        assert rt.device.type == "cpu" and rt.amp_dtype is None and not rt.channels_last
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det


@pytest.mark.parametrize("cpu_amp", CPU_AMP)
def test_cpu_autocast_follows_cpu_amp(cpu_amp):
    native = cpu_bf16_native()
    bf16 = cpu_amp == "bf16" or (cpu_amp == "auto" and native)
    with runtime(tiny_config(cpu_amp=cpu_amp)) as rt:
        assert rt.amp_dtype == (torch.bfloat16 if bf16 else None) and rt.channels_last
        conv = torch.nn.Conv2d(1, 2, 3)
        x = rt.to_device(torch.ones(1, 1, 5, 5))
        with rt.autocast():
            y = conv(x)
    assert y.dtype == (torch.bfloat16 if bf16 else torch.float32)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_cpu_amp_must_be_known():
    with pytest.raises(ValueError, match=r"training.cpu_amp must be one of .*'fp8'"):
        tiny_config(cpu_amp="fp8")


# ----------------------------------------------------------------------------- data


def write_line_specimens(root, *, specimens=3, images=3, size=32, seed=0):
    """Specimen files with originals and one flipped copy each, and their split manifest."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(specimens):
        name, samples = f"s{s:02d}", []
        for i in range(images):
            y = line_labels(size, rng)
            image_id = f"grains/{name}/b1/i{i:02d}"
            common = dict(specimen=name, session="b1", seed=i, modality="sem")
            samples.append(
                Sample(
                    image=line_image(y, rng),
                    labels={"boundaries": y.astype(np.uint8)},
                    image_id=image_id,
                    **common,
                )
            )
            samples.append(
                Sample(
                    image=samples[-1].image[:, ::-1].copy(),
                    labels={"boundaries": y[:, ::-1].astype(np.uint8)},
                    image_id=f"{image_id}/a0",
                    original_id=image_id,
                    transform={"flip": "lr"},
                    **common,
                )
            )
        file = f"results/augmented/grains/{name}.h5"
        write_specimen(root / file, samples, task="grains", specimen=name)
        rows += [
            dict(
                image_id=x.image_id,
                original_id=x.original_id or x.image_id,
                specimen=name,
                session="b1",
                fold=s,
                file=file,
                index=k,
            )
            for k, x in enumerate(samples)
        ]
    manifest = root / "results/splits/grains.tsv"
    manifest.parent.mkdir(parents=True)
    write_manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS), manifest)
    return manifest


def test_normalize_image_maps_percentiles():
    image = np.arange(101, dtype=np.float32).reshape(1, 101)
    out = normalize_image(image, percentiles=(1, 99))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (image - 1) / 98, rtol=1e-6)
    assert not normalize_image(np.full((4, 4), 0.7)).any()


def test_fold_datasets_from_manifest(tmp_path):
    manifest = write_line_specimens(tmp_path)
    train_set, val_set = fold_datasets(manifest, 1, task="grains", root=tmp_path)
    assert len(train_set) == 12 and len(val_set) == 3  # 2 specimens × 3 × 2 copies; 3 originals
    assert {i.split("/")[1] for i in train_set.ids} == {"s00", "s02"}
    assert val_set.ids == [f"grains/s01/b1/i{i:02d}" for i in range(3)]
    lazy = MicrographDataset.from_manifest(
        manifest, target="boundaries", folds=[1], originals_only=True, root=tmp_path, cache=False
    )
    image, target = val_set[2]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert target.shape == (32, 32) and target.dtype == torch.int64
    assert torch.equal(image, lazy[2][0]) and torch.equal(target, lazy[2][1])
    assert np.percentile(image.numpy(), 99) == pytest.approx(1.0, abs=1e-5)
    assert train_set.class_counts(2).sum() == 12 * 32 * 32


def test_regenerated_data_under_the_same_ids_is_not_resumed(tmp_path):
    # the same image ids with other pixels (synthesis rerun after a code change) must
    # change the fingerprint, else a stale last.pt would be taken as the finished run
    manifest = write_line_specimens(tmp_path, seed=0)
    before = fold_datasets(manifest, 1, task="grains", root=tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "results")
    manifest = write_line_specimens(tmp_path, seed=1)
    after = fold_datasets(manifest, 1, task="grains", root=tmp_path)
    assert before[0].ids == after[0].ids and before[1].ids == after[1].ids
    assert before[0].content_digest() != after[0].content_digest()
    again = fold_datasets(manifest, 1, task="grains", root=tmp_path)
    assert again[0].content_digest() == after[0].content_digest()


def test_manifest_errors(tmp_path):
    manifest = write_line_specimens(tmp_path, specimens=2, images=1)
    with pytest.raises(ValueError, match=r"fold 5 is not in .*folds \[0, 1\]"):
        fold_datasets(manifest, 5, task="grains", root=tmp_path)
    with pytest.raises(ValueError, match=r"s0[01]\.h5 has no label 'phase'"):
        fold_datasets(manifest, 0, task="phases", root=tmp_path)
    with pytest.raises(ValueError, match=r"separation_px needs .*'phases'.*, got task 'grains'"):
        fold_datasets(manifest, 0, task="grains", root=tmp_path, separation_px=2)
    table = read_manifest(manifest)
    write_manifest(table.drop(columns="session"), tmp_path / "short.tsv")
    with pytest.raises(ValueError, match=r"short\.tsv lacks columns \['session'\]"):
        read_manifest(tmp_path / "short.tsv")
    table["index"] = table["index"][::-1].to_numpy()  # rows point at the wrong images
    with pytest.raises(ValueError, match="but the manifest says"):
        fold_datasets(table, 0, task="grains", root=tmp_path)
    manifest.write_text(manifest.read_text().replace("s00", "s09"))  # edited after the split
    with pytest.raises(ValueError, match="edited after the split"):
        read_manifest(manifest)


# ----------------------------------------------------------------------------- training


def test_tiny_unet_learns_to_segment_lines(tmp_path):
    data = line_data(8, size=32, seed=1)
    result, out = run(
        tmp_path,
        "fit",
        (data, data),
        tiny_config(epochs=30),
        model=("unet", {"depth": 2, "base_channels": 8}),
    )
    scores = [row["score"] for row in result.history]
    assert scores[0] < 0.5  # the untrained network does not find the lines
    assert result.best_score > 0.98  # … and after 60 steps it does, on the training images
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 3
    x, y = data.tensors
    pred = result.model(x).argmax(1)
    assert pixel_metrics(y.numpy(), pred.numpy())["f1"] == pytest.approx(result.best_score)
    table = pd.read_csv(out / "history.tsv", sep="\t")
    assert list(table.columns[:5]) == ["epoch", "step", "lr", "train_loss", "val_loss"]
    assert {"val_f1", "val_iou", "score", *TIMING} <= set(table.columns)
    assert table["epoch"].tolist() == list(range(1, 31)) and table["step"].iloc[-1] == 60


def test_best_checkpoint_follows_the_injected_score(tmp_path):
    data = line_data(8, size=16, seed=2)
    seen_shapes = []

    def metrics_fn(true, pred):
        seen_shapes.append((true.shape, true.dtype, pred.shape, pred.dtype))
        return pixel_metrics(true, pred)

    def score_fn(metrics):
        return -metrics["accuracy"]  # deliberately perverse: prefer the worst epoch

    result, out = run(
        tmp_path, "s", (data, data), tiny_config(epochs=3), metrics_fn=metrics_fn, score_fn=score_fn
    )
    assert seen_shapes == [((8, 16, 16), np.int64, (8, 16, 16), np.uint8)] * 3
    scores = [row["score"] for row in result.history]
    assert result.best_epoch == 1 + int(np.argmax(scores))
    best = ckpt.load_checkpoint(out / "best.pt")
    assert best["epoch"] == result.best_epoch and best["extra"]["score"] == max(scores)
    assert best["optimizer_state"] is None


def test_select_last_keeps_the_last_epoch_whatever_the_score(tmp_path):
    """The held-out fold may be scored each epoch, but then nothing is chosen on it."""
    data = line_data(8, size=16, seed=2)
    falling = iter([3.0, 2.0, 1.0])
    result, out = run(
        tmp_path,
        "s",
        (data, data),
        tiny_config(epochs=3),
        score_fn=lambda metrics: next(falling),
        select="last",
    )
    scores = [row["score"] for row in result.history]
    assert scores == [3.0, 2.0, 1.0]  # "best" would keep epoch 1
    best = ckpt.load_checkpoint(out / "best.pt")
    assert result.best_epoch == best["epoch"] == 3
    assert best["extra"]["score"] == scores[-1] and best["extra"]["select"] == "last"
    assert same_state(best["model_state"], ckpt.load_checkpoint(out / "last.pt")["model_state"])
    with pytest.raises(ValueError, match="select must be one of"):
        run(tmp_path, "bad", (data, data), tiny_config(epochs=1), select="first")


@pytest.mark.parametrize("cpu_amp", ["off", "bf16"])
def test_cpu_training_is_bit_for_bit_reproducible(tmp_path, cpu_amp):
    data = (line_data(6, size=16, seed=4), line_data(2, size=16, seed=5))
    first, _ = run(tmp_path, "a", data, tiny_config(epochs=2, cpu_amp=cpu_amp))
    second, _ = run(tmp_path, "b", data, tiny_config(epochs=2, cpu_amp=cpu_amp))
    assert same_state(first.model.state_dict(), second.model.state_dict())
    assert drop_timing(first.history) == drop_timing(second.history)
    other, _ = run(tmp_path, "c", data, tiny_config(epochs=2, seed=4, cpu_amp=cpu_amp))
    assert not same_state(first.model.state_dict(), other.model.state_dict())
    # the weights stay float32 under bf16 autocast; only the arithmetic is rounded
    assert all(v.dtype != torch.bfloat16 for v in first.model.state_dict().values())


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_equal_runs_write_byte_identical_checkpoints(tmp_path):
    data = (line_data(6, size=16, seed=4), line_data(2, size=16, seed=5))
    outs = []
    for name, seed in (("a", 1), ("b", 2)):
        # as if in a fresh process: the global generators start elsewhere
        np.random.seed(seed)
        random.seed(seed)
        outs.append(run(tmp_path, name, data, tiny_config(epochs=2))[1])
    a, b = outs
    assert sha256(a / "best.pt") == sha256(b / "best.pt")
    assert sha256(a / "last.pt") == sha256(b / "last.pt")
    # the timings: in history.tsv and beside last.pt, not in it
    assert set(TIMING) <= set(pd.read_csv(a / "history.tsv", sep="\t").columns)
    history = ckpt.load_checkpoint(a / "last.pt")["extra"]["history"]
    assert len(history) == 2 and not set(TIMING) & set(history[0])
    (a / "last.timings.json").unlink()  # lost: the history is still read, without timings
    assert all(math.isnan(row["epoch_s"]) for row in last_history(a / "last.pt"))


class Interrupt(Exception):
    pass


def interrupt_after(epoch):
    def hook(done, row):
        if done == epoch:
            raise Interrupt

    return hook


@pytest.mark.parametrize(
    "model, data, overrides",
    [
        (UNET, (line_data(6, 16, 6), line_data(2, 16, 7)), {}),
        (
            ("diffraction_cnn", {}),
            (class_data(9), class_data(6, seed=1)),
            dict(loss="ce", optimizer="adam", lr=1e-3, warmup_epochs=0),
        ),
    ],
    ids=["unet", "diffraction_cnn"],
)
def test_resume_gives_the_uninterrupted_result(tmp_path, model, data, overrides):
    config = tiny_config(epochs=4, **overrides)
    whole, whole_out = run(tmp_path, "whole", data, config, model=model)

    with pytest.raises(Interrupt):
        run(tmp_path, "parts", data, config, model=model, on_epoch_end=interrupt_after(2))
    out = tmp_path / "parts"
    assert not (out / "best.pt").exists() and not (out / "history.tsv").exists()
    assert ckpt.load_checkpoint(out / "last.pt")["epoch"] == 2
    done = last_history(out / "last.pt")  # what a stopped run has, timings from beside it
    assert [row["epoch"] for row in done] == [1, 2] and all(row["epoch_s"] > 0 for row in done)

    resumed, _ = run(tmp_path, "parts", data, config, model=model)
    assert resumed.resumed_from_epoch == 2
    assert same_state(resumed.model.state_dict(), whole.model.state_dict())
    assert same_state(
        ckpt.load_checkpoint(out / "last.pt")["model_state"],
        ckpt.load_checkpoint(whole_out / "last.pt")["model_state"],
    )
    assert drop_timing(resumed.history) == drop_timing(whole.history)
    assert resumed.best_epoch == whole.best_epoch
    # the epochs before the interruption keep their timings; the checkpoints, their bytes
    assert all(row[k] > 0 for row in resumed.history for k in TIMING)
    assert sha256(out / "last.pt") == sha256(whole_out / "last.pt")
    assert sha256(out / "best.pt") == sha256(whole_out / "best.pt")


def test_resume_ignores_a_last_checkpoint_of_another_run(tmp_path):
    data = (line_data(4, 16, 8), line_data(2, 16, 9))
    with pytest.raises(Interrupt):
        run(tmp_path, "x", data, tiny_config(epochs=2), on_epoch_end=interrupt_after(1))
    result, out = run(tmp_path, "x", data, tiny_config(epochs=2, lr=5e-3))  # config changed
    assert result.resumed_from_epoch == 0
    (out / "last.pt").write_bytes(b"garbage")  # a corrupt last.pt is not trusted either
    assert run(tmp_path, "x", data, tiny_config(epochs=2, lr=5e-3))[0].resumed_from_epoch == 0
    # threads, workers and the progress bar do not change the result: resumed
    again = run(tmp_path, "x", data, tiny_config(epochs=2, lr=5e-3, progress=True))[0]
    assert again.resumed_from_epoch == 2


def test_transfer_learning_from_a_local_pretrained_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "imagenet_resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    data = (class_data(8, size=32), class_data(4, size=32, seed=1))
    config = tiny_config(epochs=1, loss="ce", transfer="frozen", pretrained=str(weights))
    result, out = run(tmp_path, "frozen", data, config, model=("resnet18", {}))
    trained = ckpt.load_checkpoint(out / "best.pt")["model_state"]
    source = torch.load(weights, weights_only=True)
    assert torch.equal(trained["conv1.weight"], source["conv1.weight"].sum(1, keepdim=True))
    for key in ("layer4.1.conv2.weight", "layer2.0.bn1.running_mean", "bn1.running_var"):
        assert torch.equal(trained[key], source[key]), key  # frozen backbone, BN statistics too
    assert trained["fc.weight"].shape == (3, 512)

    with pytest.raises(ValueError, match="apply to resnet18 only"):
        run(tmp_path, "u", data, tiny_config(transfer="frozen"))
    with pytest.raises(ValueError, match="keeps random backbone weights"):
        run(
            tmp_path, "r", data, tiny_config(transfer="finetune", loss="ce"), model=("resnet18", {})
        )
    with pytest.raises(FileNotFoundError, match="training.pretrained names .*missing.pth"):
        run(
            tmp_path,
            "m",
            data,
            tiny_config(pretrained=str(tmp_path / "missing.pth")),
            model=("resnet18", {}),
        )


KILL_SCRIPT = """
import sys
from grainflow.training.config import TrainConfig
from grainflow.training.loop import train_fold
root, out = sys.argv[1], sys.argv[2]
config = TrainConfig(**{config!r})
train_fold(f"{{root}}/results/splits/grains.tsv", 0, task="grains", model_name="unet",
           model_kwargs={kwargs!r}, config=config, best_path=f"{{out}}/best.pt",
           history_path=f"{{out}}/history.tsv", last_path=f"{{out}}/last.pt", root=root)
"""


def test_resume_after_sigkill_of_a_real_training_process(tmp_path):
    """Kill a training process at a random moment after its first epoch, then resume."""
    from grainflow.training.loop import train_fold

    manifest = write_line_specimens(tmp_path, specimens=3, images=3, size=32)
    values = dict(
        epochs=25,
        batch_size=4,
        lr=1e-2,
        threads=1,
        device="cpu",
        deterministic=True,
        progress=False,
        seed=11,
    )
    kwargs = {"depth": 2, "base_channels": 4}
    script = tmp_path / "train_job.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT.format(config=values, kwargs=kwargs)))
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), str(out)], env=env, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 45
    while not (out / "last.pt").exists():
        assert job.poll() is None, job.stderr.read().decode()
        assert time.monotonic() < deadline, "no epoch finished in 45 s"
        time.sleep(0.02)
    time.sleep(np.random.default_rng().uniform(0.0, 0.5))  # any moment of a later epoch
    assert job.poll() is None, "training finished before it could be killed; make it longer"
    job.send_signal(signal.SIGKILL)
    job.wait()
    job.stderr.close()
    assert job.returncode == -signal.SIGKILL
    assert not (out / "best.pt").exists() and not (out / "history.tsv").exists()
    killed_at = ckpt.load_checkpoint(out / "last.pt")["epoch"]
    print("killed after epoch", killed_at)
    assert 1 <= killed_at < 25

    common = dict(
        task="grains",
        model_name="unet",
        model_kwargs=kwargs,
        config=TrainConfig(**values),
        root=tmp_path,
    )
    resumed = train_fold(
        manifest,
        0,
        best_path=out / "best.pt",
        history_path=out / "history.tsv",
        last_path=out / "last.pt",
        **common,
    )
    ref = tmp_path / "whole"
    whole = train_fold(
        manifest,
        0,
        best_path=ref / "best.pt",
        history_path=ref / "history.tsv",
        last_path=ref / "last.pt",
        **common,
    )
    assert resumed.resumed_from_epoch == killed_at and whole.resumed_from_epoch == 0
    # the fold's validation images are its test images: the last epoch is kept, none chosen
    assert resumed.best_epoch == whole.best_epoch == 25
    assert same_state(
        ckpt.load_checkpoint(out / "best.pt")["model_state"],
        ckpt.load_checkpoint(ref / "best.pt")["model_state"],
    )
    assert same_state(
        ckpt.load_checkpoint(out / "last.pt")["model_state"],
        ckpt.load_checkpoint(ref / "last.pt")["model_state"],
    )
    assert drop_timing(resumed.history) == drop_timing(whole.history)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_with_bf16_channels_last_and_resume(tmp_path):
    data = (line_data(8, 32, 1), line_data(4, 32, 2))
    config = tiny_config(device="cuda", epochs=3, threads=1)
    whole, _ = run(tmp_path, "whole", data, config)
    assert whole.history[-1]["peak_memory_mb"] > 0
    with pytest.raises(Interrupt):
        run(tmp_path, "parts", data, config, on_epoch_end=interrupt_after(1))
    resumed, _ = run(tmp_path, "parts", data, config)
    assert resumed.resumed_from_epoch == 1
    assert same_state(resumed.model.state_dict(), whole.model.state_dict())


def test_given_polarity_shows_dark_particles_bright(tmp_path):
    from conftest import tiny_config as workflow_config
    from grainflow.synth.specimen import synthesize_specimen

    settings = {**workflow_config()["synthesize"]["phases"], "modalities": ["sem_precipitates"]}
    samples, spec = synthesize_specimen("phases", "s00", settings, seed=3)
    write_specimen(
        tmp_path / "s00.h5", samples, task="phases", specimen="s00", specimen_params=spec
    )
    table = pd.DataFrame(
        [(s.image_id, s.image_id, "s00", s.session, 0, "s00.h5", i) for i, s in enumerate(samples)],
        columns=MANIFEST_COLUMNS,
    )
    learned = MicrographDataset(table, target="phase", root=tmp_path)
    given = MicrographDataset(table, target="phase", root=tmp_path, polarity="given")
    assert {s.params["particles_dark"] for s in samples} == {True, False}
    for i, s in enumerate(samples):
        shown, mask = given[i][0][0].numpy(), given[i][1].numpy().astype(bool)
        assert shown[mask].mean() > shown[~mask].mean()  # particles always the brighter phase
        expected = 1 - learned[i][0] if s.params["particles_dark"] else learned[i][0]
        assert torch.allclose(given[i][0], expected)
