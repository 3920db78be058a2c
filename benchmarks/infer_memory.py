"""Peak memory and throughput of rule infer on synthetic stacks of growing size.

For each side (default 1024, 4096 and 16384 px) a one-plane synthetic stack is
written block by block (a 2048 px polycrystal micrograph repeated over the
plane) and imported with :func:`grainflow.stacks.importer.import_stack`; then a fresh
process runs :func:`grainflow.inference.stack.infer_stack` with a fold ensemble of
random U-Nets of the default architecture (their last bias centred so that the
label maps are as busy as real ones) and reports its peak resident memory
(``VmHWM``) and its throughput. The stack's pixels never pass through the
measured process except block by block, so a flat peak RSS shows that memory
is bounded by the block size, not the stack.

Usage::

    python benchmarks/infer_memory.py [--sides 1024 4096 16384] [--folds 3] [--device auto]
        [--threads 1] [--model-kwargs '{"depth": 3, "base_channels": 8}']
        [--workdir /tmp/grainflow_infer_memory] [--out benchmarks/results/infer_memory.json]

A lighter network (``--folds 1 --model-kwargs '{"depth": 1, "base_channels": 2}'``)
measures the memory of the streaming and the labelling at 16k x 16k px in minutes on a
CPU, where the default ensemble would take about an hour.

Writes JSON and prints a markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from grainflow import __version__

#: the default configuration's architecture and inference settings (config/config.yaml)
MODEL_KWARGS = {"depth": 3, "base_channels": 8, "norm": "batch", "residual": False}
SETTINGS = {
    "tile_px": 256,
    "overlap_px": 64,
    "margin_px": 16,
    "block_px": 2048,
    "batch_size": 8,
    "sigma_scale": 0.125,
}


def micrograph(side: int, seed: int = 0) -> np.ndarray:
    """A grey polycrystal (uint8): bright grains, dark boundaries, noise."""
    from scipy import ndimage

    from grainflow.synth.tessellation import boundary_mask, polycrystal

    rng = np.random.default_rng(seed)
    grains = polycrystal((side, side), grain_diameter_px=40, rng=seed)
    image = 0.55 + 0.35 * rng.random(grains.max() + 1)[grains]
    image[boundary_mask(grains, width_px=3)] = 0.15
    image = ndimage.gaussian_filter(image, 1.2) + rng.normal(0, 0.04, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def make_stack(side: int, folder: Path, tile: np.ndarray) -> Path:
    """A (side, side) synthetic plane as a Zarr array, imported as an OME-Zarr stack."""
    import zarr

    from grainflow.stacks.importer import import_stack

    source = folder / f"source_{side}.zarr"
    store = folder / f"stack_{side}.ome.zarr"
    if store.exists():
        return store
    array = zarr.create_array(
        str(source), shape=(side, side), chunks=(512, 512), dtype=np.uint8, overwrite=True
    )
    t = tile.shape[0]
    for r in range(0, side, t):
        for c in range(0, side, t):
            h, w = min(t, side - r), min(t, side - c)
            array[r : r + h, c : c + w] = tile[:h, :w]
    import_stack(
        source,
        store,
        stack=f"synthetic_{side}",
        task="grains",
        pixel_size_um=0.5,
        chunk=512,
        pyramid_min_px=512,
        block=2048,
    )
    shutil.rmtree(source)
    return store


def make_checkpoints(
    folder: Path, folds: int, tile: np.ndarray, model_kwargs: dict = MODEL_KWARGS
) -> list[Path]:
    """Random U-Nets of the default architecture, last bias centred on the micrograph."""
    import torch

    from grainflow.checkpoint import make_checkpoint, save_checkpoint
    from grainflow.models.registry import build_model
    from grainflow.normalize import normalize_image

    x = torch.from_numpy(normalize_image(tile[:256, :256])[None, None])
    paths = []
    for fold in range(folds):
        torch.manual_seed(fold)
        model = build_model("unet", **model_kwargs).eval()
        with torch.inference_mode():
            logits = model(x)[0]
            model.head.bias[1] -= float(torch.median(logits[1] - logits[0]))
        ckpt = make_checkpoint(
            model=model,
            model_name="unet",
            model_kwargs=model_kwargs,
            epoch=1,
            step=1,
            config={"norm_percentiles": (1.0, 99.0)},
            extra={"task": "grains", "fold": fold},
            with_rng=False,
        )
        paths.append(save_checkpoint(folder / f"fold{fold}.pt", ckpt))
    return paths


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MB.

    Not ``ru_maxrss``: Linux carries the parent's high-water mark at fork
    into the child's ``ru_maxrss`` across exec; ``VmHWM`` belongs to the new
    address space alone.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB


def child(args) -> None:
    """Run infer in this (fresh) process and print its numbers as JSON."""
    from grainflow.inference.stack import infer_stack

    rss_start = peak_rss_mb()
    t0 = time.perf_counter()
    summary = infer_stack(
        args.stack,
        args.checkpoints,
        args.out,
        model="unet",
        device=args.device,
        threads=args.threads,
        progress=False,
        **SETTINGS,
    )
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    plane = summary["planes"][0]
    print(
        json.dumps(
            {
                "peak_rss_mb": round(peak, 1),
                "rss_after_imports_mb": round(rss_start, 1),
                "seconds": round(seconds, 2),
                "predict_s": plane["predict_s"],
                "label_s": plane["label_s"],
                "labelling": plane["labelling"],
                "grains": plane["n_objects"],
                "tiles": plane["tiles"],
                "blocks": plane["blocks"],
                "device": summary["device"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--model-kwargs",
        type=json.loads,
        default=MODEL_KWARGS,
        help="U-Net arguments (JSON); the default configuration's by default",
    )
    parser.add_argument("--workdir", default="/tmp/grainflow_infer_memory")
    parser.add_argument("--out", default="benchmarks/results/infer_memory.json")
    parser.add_argument("--keep", action="store_true", help="keep the stacks and outputs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stack", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from grainflow.report.provenance import hardware

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tile = micrograph(2048)
    model_kwargs = {**MODEL_KWARGS, **args.model_kwargs}
    checkpoints = make_checkpoints(work, args.folds, tile, model_kwargs)
    rows = []
    for side in args.sides:
        t0 = time.perf_counter()
        stack = make_stack(side, work, tile)
        import_s = time.perf_counter() - t0
        out = work / f"inference_{side}.ome.zarr"
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--stack",
            str(stack),
            "--out",
            str(out),
            "--device",
            args.device,
            "--threads",
            str(args.threads),
            "--checkpoints",
            *map(str, checkpoints),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            sys.exit(f"infer failed for {side} px:\n{result.stderr[-3000:]}")
        row = {
            "side_px": side,
            "megapixels": round(side * side / 1e6, 2),
            **json.loads(result.stdout.strip().splitlines()[-1]),
            "import_s": round(import_s, 1),
        }
        row["megapixels_per_s"] = round(side * side / 1e6 / row["seconds"], 3)
        rows.append(row)
        print(f"{side} px: {row}", file=sys.stderr, flush=True)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(stack, ignore_errors=True)
    result = {
        "benchmark": "infer_memory",
        "version": __version__,
        "model": {"name": "unet", **model_kwargs, "folds": args.folds},
        "settings": SETTINGS,
        "threads": args.threads,
        "machine": hardware(),
        "runs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| stack (px) | Mpx | device | labelling | peak RSS (MB) | seconds | Mpx/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['side_px']} x {r['side_px']} | {r['megapixels']} | {r['device']} | "
            f"{r['labelling']} | {r['peak_rss_mb']:.0f} | {r['seconds']:.1f} | "
            f"{r['megapixels_per_s']:.3f} |"
        )


if __name__ == "__main__":
    main()
