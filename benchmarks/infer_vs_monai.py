"""Tiled inference: grainflow's streaming ``infer`` against MONAI's ``sliding_window_inference``.

The same trained U-Net (one fold's ``best.pt``), the same 256 px tiles with
overlap 0.5 (128 px), the same Gaussian blending (grainflow's window, handed
to MONAI as ``roi_weight_map``) and the same normalisation, on the same
synthetic planes of 2k, 8k and 16k px per side, in one run on one machine.
Each side is measured in fresh processes, one per tool:

- **grainflow**: :func:`grainflow.inference.stack.infer_stack` reads the plane from
  an OME-Zarr store block by block and writes the probabilities to another;
  its probability stage (``predict_s``: read, normalise, tile, predict,
  blend, write) is timed, and the labelling after it reported apart;
- **MONAI**: the plane is read whole into memory (as MONAI needs), normalised
  with the limits grainflow used, and ``sliding_window_inference`` runs the
  model as a user passes it (``softmax(model(x))``, eager, ``sw_batch_size``
  as grainflow's batch) with the output on the CPU. The same process then
  compares its probabilities with grainflow's, block by block.

Peak resident memory is each process's own high-water mark (``VmHWM``). Both use all the CPU
threads given by ``--threads``. MONAI is installed only for this benchmark
(``pip install monai``); grainflow does not depend on it.

Usage::

    python benchmarks/infer_vs_monai.py [--sides 2048 8192 16384] [--threads 2]
        [--checkpoint results/models/grains/unet/fold0/best.pt]
        [--workdir /tmp/grainflow_vs_monai] [--out benchmarks/results/infer_vs_monai.json]

Writes JSON and prints a markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infer_memory import make_stack, micrograph, peak_rss_mb  # noqa: E402

#: the comparison's tiling: MONAI's overlap 0.5 is grainflow's overlap_px = tile / 2, and with
#: margin 0 and sides that are multiples of tile / 2 both place exactly the same tiles
TILE, BATCH, SIGMA = 256, 8, 0.125
SETTINGS = {
    "tile_px": TILE,
    "overlap_px": TILE // 2,
    "margin_px": 0,
    "block_px": 2048,
    "batch_size": BATCH,
    "sigma_scale": SIGMA,
}


def run_grainflow(args) -> dict:
    """infer_stack on the stack; numbers of its probability stage."""
    import torch

    from grainflow.inference.stack import infer_stack

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    summary = infer_stack(
        args.stack,
        [args.checkpoint],
        args.out,
        model="unet",
        device="cpu",
        threads=args.threads,
        progress=False,
        **SETTINGS,
    )
    plane = summary["planes"][0]
    return {
        "seconds": round(time.perf_counter() - t0, 2),
        "predict_s": plane["predict_s"],
        "label_s": plane["label_s"],
        "tiles": plane["tiles"],
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def run_monai(args) -> dict:
    """sliding_window_inference on the whole plane in memory, then the comparison."""
    import torch
    import zarr
    from monai.inferers import sliding_window_inference

    from grainflow.checkpoint import load_checkpoint, model_from_checkpoint
    from grainflow.inference.stack import open_inference
    from grainflow.inference.tiling import gaussian_weights
    from grainflow.normalize import apply_limits

    torch.set_num_threads(args.threads)
    attrs, reference, _ = open_inference(args.out)
    plane = attrs["planes"][0]
    model = model_from_checkpoint(load_checkpoint(args.checkpoint, map_location="cpu")).eval()
    weights = torch.from_numpy(np.array(gaussian_weights(TILE, sigma_scale=SIGMA)))

    def predictor(x):
        return torch.softmax(model(x), dim=1)

    t0 = time.perf_counter()
    image = zarr.open_group(args.stack, mode="r")["s0"][0]  # the whole plane, as MONAI needs it
    x = torch.from_numpy(apply_limits(image, plane["norm_low"], plane["norm_high"]))[None, None]
    with torch.inference_mode():
        probs = sliding_window_inference(
            x,
            roi_size=(TILE, TILE),
            sw_batch_size=BATCH,
            predictor=predictor,
            overlap=0.5,
            mode="gaussian",
            sigma_scale=SIGMA,
            roi_weight_map=weights,
            padding_mode="reflect",
            sw_device="cpu",
            device="cpu",
            progress=False,
        )[0]
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    worst = 0.0
    side = probs.shape[-1]
    for r in range(0, side, 2048):
        for c in range(0, side, 2048):
            ours = reference[:, 0, r : r + 2048, c : c + 2048]
            theirs = probs[:, r : r + 2048, c : c + 2048].numpy()
            worst = max(worst, float(np.abs(ours - theirs).max()))
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1), "max_abs_diff": worst}


def child(args) -> None:
    rss = peak_rss_mb()
    result = run_grainflow(args) if args.child == "grainflow" else run_monai(args)
    print(json.dumps({**result, "rss_after_imports_mb": round(rss, 1)}))


def _spawn(tool: str, stack: Path, out: Path, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        tool,
        "--stack",
        str(stack),
        "--out",
        str(out),
        "--checkpoint",
        args.checkpoint,
        "--threads",
        str(args.threads),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        sys.exit(f"{tool} failed on {stack}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[2048, 8192, 16384])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--checkpoint", default="results/models/grains/unet/fold0/best.pt")
    parser.add_argument("--workdir", default="/tmp/grainflow_vs_monai")
    parser.add_argument("--out", default="benchmarks/results/infer_vs_monai.json")
    parser.add_argument("--child", choices=["grainflow", "monai"], help=argparse.SUPPRESS)
    parser.add_argument("--stack", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import monai
    import torch

    from grainflow import __version__
    from grainflow.report.provenance import hardware

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tile = micrograph(2048)
    rows = []
    for side in args.sides:
        if side % (TILE // 2):
            sys.exit(
                f"--sides must be multiples of {TILE // 2} px (same tiles for both), got {side}"
            )
        stack = make_stack(side, work, tile)
        out = work / f"inference_{side}.ome.zarr"
        ours = _spawn("grainflow", stack, out, args)
        theirs = _spawn("monai", stack, out, args)
        mpx = side * side / 1e6
        row = {
            "side_px": side,
            "megapixels": round(mpx, 2),
            "grainflow": ours,
            "monai": theirs,
            "grainflow_mpx_per_s": round(mpx / ours["predict_s"], 3),
            "monai_mpx_per_s": round(mpx / theirs["seconds"], 3),
        }
        row["speedup"] = round(row["grainflow_mpx_per_s"] / row["monai_mpx_per_s"], 2)
        rows.append(row)
        print(f"{side} px: {json.dumps(row)}", file=sys.stderr, flush=True)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(stack, ignore_errors=True)
        result = {  # written after every side, so that a long run keeps what it measured
            "benchmark": "infer_vs_monai",
            "version": __version__,
            "monai": monai.__version__,
            "torch": torch.__version__,
            "checkpoint": args.checkpoint,
            "settings": SETTINGS,
            "threads": args.threads,
            "machine": hardware(),
            "runs": rows,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        "| plane (px) | grainflow Mpx/s | MONAI Mpx/s | speed-up | grainflow peak RSS (MB) "
        "| MONAI peak RSS (MB) | max abs difference |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['side_px']} × {r['side_px']} | {r['grainflow_mpx_per_s']:.2f} | "
            f"{r['monai_mpx_per_s']:.2f} | {r['speedup']:.2f}× | "
            f"{r['grainflow']['peak_rss_mb']:.0f} | {r['monai']['peak_rss_mb']:.0f} | "
            f"{r['monai']['max_abs_diff']:.1e} |"
        )


if __name__ == "__main__":
    main()
