"""Training throughput and peak memory of grainflow's models, on synthetic line images.

Runs :func:`grainflow.training.loop.train` for a few epochs per case and writes one
TSV row per case: images/s of the last epoch (after cuDNN autotuning and
compilation), peak memory, and whether two deterministic runs agree bit for bit.

    PYTHONPATH=src python benchmarks/train_throughput.py OUT.tsv [CASE ...]

Each row also gives the FLOPs of one training image (forward and backward,
counted by :class:`torch.utils.flop_counter.FlopCounterMode`) and the
achieved GFLOP/s, to compare with the hardware's peak (this 2-core AMD EPYC
(Zen 3, AVX2): 2 cores x 2.45 GHz x 32 float32 FLOP/cycle = 157 GFLOP/s; an
H100 SXM: 989 dense bf16 TFLOP/s).

A case ``pure_<case>_b<batch>`` times the bare training step on data already
on the GPU (the upper bound the data pipeline and the loop can approach).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from grainflow.report.provenance import hardware
from grainflow.training.config import TrainConfig
from grainflow.training.loop import train

# name: (model, kwargs, image size, images, config overrides); "default_*" mirror the proposed
# CPU default config, "full_*" the GPU config (config/full.yaml); the rest are variants.
FULL = dict(batch_size=32, num_workers=4)
CASES = {
    "smoke": ("unet", dict(depth=2, base_channels=4), 32, 64, dict(batch_size=8, threads=1)),
    "default_unet": ("unet", dict(depth=3, base_channels=8), 128, 1024, dict(batch_size=8)),
    # the default model on the CPU: eager float32 (NCHW), channels_last, bf16 autocast with
    # channels_last (training.cpu_amp; native only with AMX or AVX-512 BF16), torch.compile
    "cpu_default_unet_eager": (
        "unet",
        dict(depth=3, base_channels=8),
        128,
        256,
        dict(batch_size=8, device="cpu", threads=1, channels_last=False, cpu_amp="off"),
    ),
    "cpu_default_unet_channels_last": (
        "unet",
        dict(depth=3, base_channels=8),
        128,
        256,
        dict(batch_size=8, device="cpu", threads=1, channels_last=True, cpu_amp="off"),
    ),
    "cpu_default_unet_bf16": (
        "unet",
        dict(depth=3, base_channels=8),
        128,
        256,
        dict(batch_size=8, device="cpu", threads=1, channels_last=True, cpu_amp="bf16"),
    ),
    "cpu_default_unet_compiled": (
        "unet",
        dict(depth=3, base_channels=8),
        128,
        256,
        dict(batch_size=8, device="cpu", threads=1, channels_last=False, compile=True),
    ),
    "default_diffraction_cnn": (
        "diffraction_cnn",
        {},
        64,
        8192,
        dict(batch_size=64, loss="ce", optimizer="adam", warmup_epochs=0, class_weights="none"),
    ),
    "default_resnet18": (
        "resnet18",
        {},
        64,
        8192,
        dict(batch_size=64, loss="ce", optimizer="adam", warmup_epochs=0, class_weights="none"),
    ),
    "full_unet": ("unet", dict(depth=4, base_channels=32), 256, 2048, FULL),
    "full_unet_deterministic": (
        "unet",
        dict(depth=4, base_channels=32),
        256,
        2048,
        {**FULL, "deterministic": True},
    ),
    "full_unet_fp32": (
        "unet",
        dict(depth=4, base_channels=32),
        256,
        2048,
        {**FULL, "amp": "off", "channels_last": False},
    ),
    "full_unet_compile": (
        "unet",
        dict(depth=4, base_channels=32),
        256,
        2048,
        {**FULL, "compile": True},
    ),
    "full_unet_b16": (
        "unet",
        dict(depth=4, base_channels=32),
        256,
        2048,
        {**FULL, "batch_size": 16},
    ),
    "full_unet_u8": (
        "unet",
        dict(depth=4, base_channels=32),
        256,
        2048,
        {**FULL, "_targets": "uint8"},
    ),
    "full_resunet": ("resunet", dict(depth=4, base_channels=32), 256, 2048, FULL),
    "full_unet64": ("unet", dict(depth=4, base_channels=64), 256, 2048, FULL),
    "full_resnet18": (
        "resnet18",
        {},
        64,
        8192,
        dict(
            batch_size=256,
            num_workers=4,
            loss="ce",
            optimizer="adam",
            warmup_epochs=0,
            class_weights="none",
        ),
    ),
}


def line_data(
    n: int, size: int, *, classes: bool, seed: int = 0, targets: str = "int64"
) -> TensorDataset:
    rng = np.random.default_rng(seed)
    y = np.zeros((n, size, size), np.int64)
    rows, cols = rng.integers(2, size - 4, (2, n))
    y[np.arange(n), rows] = 1
    y[np.arange(n), :, cols] = 1
    x = (0.3 + 0.4 * y + rng.normal(0, 0.1, y.shape)).astype(np.float32)[:, None]
    target = torch.from_numpy(rng.integers(0, 3, n)) if classes else torch.from_numpy(y)
    target = target.to(getattr(torch, targets))
    return TensorDataset(torch.from_numpy(x), target)


def run_case(name: str, *, epochs: int = 3, deterministic_check: bool = False) -> dict:
    model, kwargs, size, n, overrides = CASES[name]
    overrides = dict(overrides)
    targets = overrides.pop("_targets", "int64")
    classes = model in ("diffraction_cnn", "resnet18")
    train_set = line_data(n, size, classes=classes, targets=targets)
    val_set = line_data(max(64, n // 16), size, classes=classes, seed=1, targets=targets)
    config = TrainConfig(epochs=epochs, progress=False, **overrides)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        start = time.perf_counter()
        result = train(
            model,
            kwargs,
            train_set,
            val_set,
            config,
            best_path=out / "best.pt",
            history_path=out / "history.tsv",
            last_path=out / "last.pt",
        )
        wall = time.perf_counter() - start
        cuda = torch.cuda.is_available() and config.device != "cpu"
        row = {
            "case": name,
            "model": model,
            "kwargs": kwargs,
            "size_px": size,
            "batch_size": config.batch_size,
            "amp": config.amp if cuda else config.cpu_amp,
            "channels_last": config.channels_last,
            "compile": config.compile,
            "deterministic": config.deterministic,
            "num_workers": config.num_workers,
            "targets": targets,
            "images_per_s": round(result.history[-1]["images_per_s"], 1),
            "first_epoch_images_per_s": round(result.history[0]["images_per_s"], 1),
            "peak_memory_mb": round(max(r["peak_memory_mb"] for r in result.history), 1),
            "wall_s": round(wall, 1),
            "gflop_per_image": round(train_flops(model, kwargs, size) / 1e9, 3),
            "device": torch.cuda.get_device_name() if cuda else hardware()["cpu"],
            "torch": torch.__version__,
        }
        if deterministic_check:
            again = train(
                model,
                kwargs,
                train_set,
                val_set,
                config,
                best_path=out / "b2.pt",
                history_path=out / "h2.tsv",
                last_path=out / "l2.pt",
            )
            a, b = result.model.state_dict(), again.model.state_dict()
            row["repeat_bitwise_equal"] = all(torch.equal(a[k], b[k]) for k in a)
            row["repeat_max_abs_diff"] = max(
                float((a[k].float() - b[k].float()).abs().max()) for k in a
            )
    return row


def train_flops(model_name: str, kwargs: dict, size: int) -> float:
    """FLOPs of one training image: forward and backward, counted by torch (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    from grainflow.models.registry import build_model

    model = build_model(model_name, **kwargs)
    x = torch.randn(2, 1, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    return counter.get_total_flops() / 2


def pure_step_rate(name: str, *, batch_size: int | None = None, steps: int = 60) -> dict:
    """Images/s of forward, loss, backward and AdamW step on data already on the GPU."""
    from grainflow.models.registry import build_model
    from grainflow.training.losses import DiceCELoss

    model_name, kwargs, size, _, overrides = CASES[name]
    batch = batch_size or overrides.get("batch_size", 16)
    device = torch.device("cuda")
    model = build_model(model_name, **kwargs).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(class_weights=[1.0, 5.0]).to(device)
    x = torch.randn(batch, 1, size, size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 2, (batch, size, size), device=device)
    torch.backends.cudnn.benchmark = True
    for i in range(steps + 10):
        if i == 10:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    rate = steps * batch / (time.perf_counter() - start)
    return {
        "case": f"pure_{name}_b{batch}",
        "model": model_name,
        "kwargs": kwargs,
        "size_px": size,
        "batch_size": batch,
        "images_per_s": round(rate, 1),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
    }


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    out, names = Path(argv[0]), argv[1:] or list(CASES)
    rows = []
    for name in names:
        if name.startswith("pure_"):
            base, _, batch = name[len("pure_") :].rpartition("_b")
            row = pure_step_rate(base, batch_size=int(batch))
            print(row, flush=True)
            rows.append(row)
            continue
        check = name in (
            "smoke",
            "default_unet",
            "full_unet",
            "full_unet_deterministic",
            "cpu_default_unet_bf16",
        )
        row = run_case(name, epochs=6 if name.startswith("cpu_") else 3, deterministic_check=check)
        row["achieved_gflop_per_s"] = round(row["gflop_per_image"] * row["images_per_s"], 2)
        print(row, flush=True)
        rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(out, "w") as f:
        f.write("\t".join(columns) + "\n")
        for row in rows:
            f.write("\t".join(str(row.get(c, "")) for c in columns) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
