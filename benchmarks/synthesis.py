"""Synthesis throughput: 256x256 polycrystals (SEM and optical) per second on one core.

Usage: python benchmarks/synthesis.py [--images N] [--out benchmarks/results/synthesis.json]
Writes JSON and prints a markdown row for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from grainflow import __version__  # noqa: E402
from grainflow.report.provenance import hardware
from grainflow.synth.specimen import synthesize_specimen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", default="benchmarks/results/synthesis.json")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    settings = {
        "sessions_per_specimen": 2,
        "images_per_session": max(1, args.images // 8),
        "image_size_px": args.size,
        "tessellation": ["voronoi", "laguerre"],
        "modalities": ["sem", "optical"],
        "grain_diameter_px": [16, 32],
        "dispersion": [0.2, 0.5],
        "elongation": [1.5, 2.5],
        "elongated_fraction": 0.33,
        "boundary_width_px": 2,
    }
    synthesize_specimen("grains", "s00", {**settings, "images_per_session": 1}, seed=0)  # warm-up
    load_before = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    times = []
    n = 0
    cpu0 = time.process_time()
    for i in range(4):
        t0 = time.perf_counter()
        samples, _ = synthesize_specimen("grains", f"s{i:02d}", settings, seed=i)
        times.append(time.perf_counter() - t0)
        n += len(samples)
    cpu = time.process_time() - cpu0
    total = sum(times)
    load_after = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    result = {
        "benchmark": "synthesis",
        "task": "grains",
        "image_size_px": args.size,
        "images": n,
        "seconds": round(total, 3),
        "images_per_second": round(n / total, 2),
        "ms_per_image": round(1000 * total / n, 1),
        # CPU time of this process: below the wall time when other work took turns on the core
        "cpu_seconds": round(cpu, 3),
        "cores": 1,
        "cpu": hardware()["cpu"],
        # other work on the machine: the 1-minute load average before and after timing
        "load_average": [load_before, load_after],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "grainflow": __version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"| synthesis, grains {args.size}x{args.size} px, 1 core | {result['images_per_second']} images/s "
        f"({result['ms_per_image']} ms/image) |"
    )


if __name__ == "__main__":
    main()
