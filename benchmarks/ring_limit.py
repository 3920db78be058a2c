"""What limits crystal-system accuracy on ring patterns: pattern size or training-set size.

Ring-only patterns, one per crystal (default ``synthesize.diffraction`` physics),
``--train`` crystals to learn from (several sizes: nested subsets of the largest)
and ``--test`` crystals of their own, each classified by

``cnn``
    the course's DiffractionCNN on the workflow's ring form
    (:func:`grainflow.diffraction.representation.log_polar_highpass`), trained as in the workflow:
    Adam at 1e-3, cosine annealing, cross-entropy, batches of 64, a random
    rotation and mirror (a cyclic shift and reversal of the log-polar rows);
``profile``
    a reference 1-D network (six dilated convolutions, 64 channels, 67k
    parameters) on the sub-pixel azimuthal profile over log radius: all that a
    ring pattern holds about the crystal system but the texture, read with a
    receptive field as wide as the profile. What it reaches bounds what the
    pattern size allows better than any single 2-D form does;
``ring_profile``
    the workflow's ring model (``ring_profile`` in the models registry,
    :class:`grainflow.models.ring_profile.RingProfileNet`: dilated 1-D convolutions
    whose receptive field spans the whole profile) on the workflow's profile form
    (:func:`grainflow.diffraction.representation.radial_profile`), without the
    shift augmentation of ``profile``, as the workflow trains it.

``--size 128`` samples the same physics twice as finely: the detector pixel is
halved (``detector_pixel_mm``), so every length on the detector — the first
ring's radius, the spot radius — doubles in pixels, while the detector
broadening (``ring_sigma_px``) stays one to two pixels, as binning sets it.
::

    OMP_NUM_THREADS=2 python benchmarks/ring_limit.py --size 64 --train 3000 --test 900 \\
        --out benchmarks/results/ring_limit_64.json
    python benchmarks/ring_limit.py --size 128 --train 1500 --test 600 --models ring_profile \\
        --epochs-profile 30 --processes 1 --threads 1 \\
        --out benchmarks/results/ring_limit_128_ring_profile.json

Writes JSON (per model and training size: accuracy on the training and the
held-out crystals, per system, seconds) and prints a markdown table;
``--table a.json b.json`` prints the table of finished runs (the README's).
"""

from __future__ import annotations

import argparse
import json
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn
from tqdm import tqdm

from grainflow import __version__
from grainflow.diffraction.crystal import SYSTEMS
from grainflow.diffraction.representation import log_polar_highpass, radial_profile
from grainflow.diffraction.simulate import synthesize_diffraction_specimen
from grainflow.io.staging import atomic_path
from grainflow.models.diffraction_cnn import DiffractionCNN
from grainflow.models.registry import build_model
from grainflow.report.provenance import hardware
from grainflow.seeds import derive_seed

BASE_SIZE = 64
PROFILE_BINS = 128
PROFILE_R_MIN = 3.0  # px of a 64-px pattern: inside the first ring (>= 5 px)
PROFILE_BACKGROUND_BINS = 6.0
BATCH = 64


RING_FIRST_ORDER_64 = (5.0, 9.0)  # px: the first ring's radius range on a 64-px ring pattern


def ring_settings(size: int) -> dict:
    """Ring-only settings of one pattern per crystal at ``size`` px, the physics unchanged.

    The same detector as the default spot patterns (``detector_pixel_mm`` at
    ``image_size_px``), binned to ``size`` px for the rings
    (:func:`grainflow.diffraction.simulate.pattern_size`).
    """
    zoom = size / BASE_SIZE
    return {
        "modalities": ["ring"],
        "sessions_per_specimen": 1,
        "images_per_session": 1,
        "ring_image_size_px": size,
        "ring_first_order_px": [v * zoom for v in RING_FIRST_ORDER_64],
    }


def _pattern(job):
    name, settings, seed = job
    (sample,), _ = synthesize_diffraction_specimen(name, settings, seed=seed)
    return sample.image.astype(np.float32), int(sample.params["class_index"])


def synthesize(n: int, size: int, seed: int, split: str, processes: int):
    settings = ring_settings(size)
    jobs = [(f"s{i:05d}", settings, derive_seed(seed, "ring_limit", split, i)) for i in range(n)]
    with Pool(processes) as pool:
        out = list(
            tqdm(
                pool.imap(_pattern, jobs, chunksize=16),
                total=n,
                desc=f"{split} rings ({size} px)",
                unit="pattern",
            )
        )
    return np.stack([o[0] for o in out]), np.array([o[1] for o in out])


def radial_profiles(images: np.ndarray) -> np.ndarray:
    """Azimuthal means over ``PROFILE_BINS`` log-spaced radii, background removed, standardised."""
    size = images.shape[-1]
    centre = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - centre, xx - centre).ravel()
    lo, hi = np.log(PROFILE_R_MIN * size / BASE_SIZE), np.log(size / 2)
    u = (np.log(np.maximum(r, 1e-3)) - lo) / (hi - lo) * PROFILE_BINS - 0.5
    i0 = np.floor(u).astype(int)
    f = u - i0
    in0 = (i0 >= 0) & (i0 < PROFILE_BINS)
    in1 = (i0 + 1 >= 0) & (i0 + 1 < PROFILE_BINS)

    def binned(v):  # linear (sub-pixel) binning of every pixel onto its two radius bins
        return np.bincount(i0[in0], ((1 - f) * v)[in0], PROFILE_BINS) + np.bincount(
            i0[in1] + 1, (f * v)[in1], PROFILE_BINS
        )

    weight = np.maximum(binned(np.ones_like(r)), 1e-9)
    out = np.stack([binned(im.ravel().astype(np.float64)) / weight for im in images])
    out -= ndi.gaussian_filter1d(out, PROFILE_BACKGROUND_BINS, axis=1, mode="nearest")
    out = (out - out.mean(1, keepdims=True)) / (out.std(1, keepdims=True) + 1e-9)
    return out[:, None].astype(np.float32)


class ProfileNet(nn.Module):
    """Dilated 1-D convolutions (receptive field 65 bins), global average pooling, 3 outputs."""

    def __init__(self, channels: int = 64):
        super().__init__()
        layers, c_in = [], 1
        for dilation in (1, 1, 2, 4, 8, 16):
            layers += [
                nn.Conv1d(c_in, channels, 3, padding=dilation, dilation=dilation),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
            ]
            c_in = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(channels, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, len(SYSTEMS))
        )

    def forward(self, x):
        return self.head(self.features(x).mean(-1))


def _augment(model: str, x: torch.Tensor) -> torch.Tensor:
    if model == "ring_profile":  # as in the workflow: the form ignores rotations and mirrors
        return x
    if model == "profile":  # camera length: a shift of the log-radius axis
        return torch.roll(x, int(torch.randint(-6, 7, ())), -1)
    x = torch.roll(x, int(torch.randint(x.shape[-2], ())), -2)  # rotation: cyclic row shift
    return torch.flip(x, (-2,)) if bool(torch.rand(()) < 0.5) else x  # mirror


def _predict(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return torch.cat([net(x[i : i + 512]) for i in range(0, len(x), 512)]).argmax(1).numpy()


def fit(model: str, x_train, y_train, x_test, y_test, epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    net = {"cnn": DiffractionCNN, "profile": ProfileNet}.get(
        model, lambda: build_model("ring_profile")
    )()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    x_train, y_t = torch.from_numpy(x_train), torch.from_numpy(y_train)
    t0 = time.perf_counter()
    for _ in tqdm(range(epochs), desc=f"{model} on {len(x_train)}", unit="epoch"):
        net.train()
        order = torch.randperm(len(x_train))
        for b in range(0, len(order), BATCH):
            idx = order[b : b + BATCH]
            loss = nn.functional.cross_entropy(net(_augment(model, x_train[idx])), y_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    seconds = time.perf_counter() - t0
    pred = _predict(net, torch.from_numpy(x_test))
    return {
        "model": model,
        "train_patterns": len(x_train),
        "epochs": epochs,
        "parameters": sum(p.numel() for p in net.parameters()),
        "train_accuracy": float((_predict(net, x_train) == y_train).mean()),
        "test_accuracy": float((pred == y_test).mean()),
        "test_accuracy_by_system": {
            s: float((pred[y_test == k] == k).mean()) for k, s in enumerate(SYSTEMS)
        },
        "train_seconds": round(seconds, 1),
    }


MODEL_NAMES = {
    "cnn": "DiffractionCNN (log-polar form)",
    "profile": "1-D net (profile)",
    "ring_profile": "ring_profile (registry)",
}


def markdown_table(results: list[dict]) -> str:
    """The README's table of one or more result files: one row per model and training size."""
    rows = [
        "| pattern | model | training rings | epochs | on its training rings | held-out |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for r in result["runs"]:
            rows.append(
                f"| {result['image_size_px']} px | {MODEL_NAMES[r['model']]} | "
                f"{r['train_patterns']:,} | {r['epochs']} | "
                f"{100 * r['train_accuracy']:.1f} % | "
                f"{100 * r['test_accuracy']:.1f} % of {result['test_patterns']} |"
            )
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="JSON file to write")
    p.add_argument(
        "--table",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="only print the markdown table of these result files",
    )
    p.add_argument("--size", type=int, default=64, help="pattern size, px")
    p.add_argument("--train", default="3000", help="training crystals, e.g. 3000,12000")
    p.add_argument("--test", type=int, default=900, help="held-out crystals")
    p.add_argument("--models", default="profile,cnn")
    p.add_argument("--epochs-cnn", type=int, default=15)
    p.add_argument("--epochs-profile", type=int, default=40)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=20261203)
    args = p.parse_args(argv)
    if args.table:
        print(markdown_table([json.loads(f.read_text()) for f in args.table]))
        return 0
    if args.out is None:
        p.error("--out is required unless --table is given")
    sizes = sorted(int(v) for v in args.train.split(","))
    models = [m for m in args.models.split(",") if m]
    if args.threads:
        torch.set_num_threads(args.threads)
    if set(models) - set(MODEL_NAMES) or not sizes or sizes[0] < 3 or args.size < 32:
        p.error(f"--models from {','.join(MODEL_NAMES)}; --train sizes >= 3; --size >= 32")
    t0 = time.perf_counter()
    img_train, y_train = synthesize(sizes[-1], args.size, args.seed, "train", args.processes)
    img_test, y_test = synthesize(args.test, args.size, args.seed, "test", args.processes)
    synth_s = time.perf_counter() - t0
    forms = {
        "profile": radial_profiles,
        "ring_profile": lambda ims: np.stack([radial_profile(im) for im in ims]),
        "cnn": lambda ims: np.stack([log_polar_highpass(im) for im in ims])[:, None],
    }
    runs = []
    result = {
        "benchmark": "ring_limit",
        "image_size_px": args.size,
        "settings": ring_settings(args.size),
        "test_patterns": args.test,
        "synthesis_seconds": round(synth_s, 1),
        "runs": runs,
        "grainflow": __version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": hardware(),
    }
    for model in models:
        x_train, x_test = forms[model](img_train), forms[model](img_test)
        epochs = args.epochs_cnn if model == "cnn" else args.epochs_profile
        for n in sizes:
            runs.append(
                fit(
                    model,
                    x_train[:n],
                    y_train[:n],
                    x_test,
                    y_test,
                    epochs,
                    derive_seed(args.seed, model, n),
                )
            )
            print(json.dumps(runs[-1]), flush=True)
            with atomic_path(args.out) as tmp:  # after every run: a long run keeps its part
                tmp.write_text(json.dumps(result, indent=1))
    print("\n" + markdown_table([result]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
