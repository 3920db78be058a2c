"""The GPU path, measured: gpu-marked tests, training throughput, a short training run, inference.

One command for a machine with a CUDA GPU (``bash benchmarks/gpu_check.sh`` runs it with the
wheels of any missing packages installed). Each part runs in its own process under its own
time budget; a part that overruns is stopped (its partial results are kept) and the next runs.

Parts:

``tests``
    ``pytest -m gpu`` on the test files that hold ``gpu``-marked tests.
``throughput``
    Training images/s of the default and the full config's U-Net (``config/config.yaml``,
    ``config/full.yaml``): eager float32 (TF32 off, no autocast, no channels_last, no
    compile) against the optimised path (bf16 autocast, channels_last, TF32,
    ``torch.compile``, a DataLoader with pinned memory and workers); peak memory, model
    FLOPs per image and the fraction of the GPU's dense bf16 peak reached. Runs
    :func:`train_throughput.run_case` (the real training loop) on synthetic line images.
``train``
    A short real run of the full config's U-Net on ``grains``: synthetic specimens from the
    full config's ``synthesize.grains`` block, a split manifest, fold 0 trained for at most
    a time budget (resumable: a rerun continues from ``last.pt``), then the held-out score
    (boundary F1 of fold 0 through :func:`grainflow.evaluation.crossval.run_model_fold`) and
    the per-epoch time from ``history.tsv``.
``infer``
    Tiled inference of an 8192 x 8192 plane through
    :func:`grainflow.inference.stack.infer_stack` with the config's fold ensemble and
    settings: Mpx/s, and GPU utilisation sampled by ``nvidia-smi -lms 200`` while it runs.

Without a visible CUDA GPU every part is skipped with a message and a JSON saying so (exit
status 0). ``--device cpu --smoke`` runs every part's code path with tiny sizes on the CPU.

    python benchmarks/gpu_check.py [PART ...] [--device auto|cuda|cpu] [--smoke]
        [--out DIR] [--workdir DIR] [--budget PART=SECONDS ...]

Writes ``PART.json``, ``summary.json`` and ``gpu_check.log`` to ``--out`` (default ``$OUT``
when set, else ``benchmarks/results/gpu_check``) and prints a summary table.

Exit status: 0 when every part ran or was skipped for want of a GPU; 1 when a part failed
or overran its budget; 2 when a Python module is missing (nothing is run then).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent

PARTS = ("tests", "throughput", "train", "infer")
#: seconds each part may run on the GPU (about 9 minutes in all); --budget PART=S changes one
BUDGETS = {"tests": 45, "throughput": 180, "train": 150, "infer": 145}
#: modules each part imports (checked before anything runs: a missing one stops the check)
NEEDS = {
    "tests": ("pytest", "yaml", "grainflow.training.loop", "grainflow.splits"),
    "throughput": ("numpy", "grainflow.training.loop", "train_throughput"),
    "train": (
        "h5py",
        "skimage",
        "sklearn",
        "pandas",
        "grainflow.synth.specimen",
        "grainflow.io.hdf5",
        "grainflow.splits",
        "grainflow.training.loop",
        "grainflow.evaluation.crossval",
    ),
    "infer": (
        "zarr",
        "ome_zarr.format",
        "ome_zarr.writer",
        "scipy",
        "grainflow.stacks.importer",
        "grainflow.inference.stack",
        "infer_memory",
    ),
}
#: dense bf16 tensor-core peak (TFLOP/s, without sparsity) by GPU, from NVIDIA's data sheets
BF16_PEAK_TFLOPS = {"H100 SXM": 989.0, "H200": 989.0}
NO_CUDA = "no CUDA GPU visible (torch.cuda.is_available() is False)"
#: smoke sizes: tiny, so that the code paths run on a CPU in seconds
SMOKE_UNET = {"depth": 2, "base_channels": 4}
SMOKE_PX = 32


def say(message: str) -> None:
    print(message, flush=True)


# ----------------------------------------------------------------------------- helpers


def gpu_peak(name: str) -> tuple[float | None, str]:
    """Dense bf16 peak (TFLOP/s) of the GPU that torch calls ``name``, and which entry matched."""
    upper = name.upper()
    if "H200" in upper:
        return BF16_PEAK_TFLOPS["H200"], "H200"
    # torch names the SXM part "NVIDIA H100 80GB HBM3" (the PCIe card has HBM2e)
    if "H100" in upper and ("SXM" in upper or "HBM3" in upper):
        return BF16_PEAK_TFLOPS["H100 SXM"], "H100 SXM"
    return None, f"no dense bf16 peak known for {name!r} (table: {sorted(BF16_PEAK_TFLOPS)})"


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` merged into ``base`` key by key (as Snakemake merges config files)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_configs() -> dict[str, dict]:
    """The default run (config/config.yaml) and the full run (with config/full.yaml over it)."""
    import yaml

    with open(ROOT / "config" / "config.yaml") as f:
        default = yaml.safe_load(f)
    with open(ROOT / "config" / "full.yaml") as f:
        full = deep_merge(default, yaml.safe_load(f) or {})
    return {"default": default, "full": full}


def unet_settings(config: dict, **overrides):
    """Model name, arguments and TrainConfig of a config's ``unet`` architecture."""
    from grainflow.training.config import arch_settings

    shared = {k: v for k, v in config["training"].items() if k not in ("archs", "gpus_per_job")}
    return arch_settings(config["training"]["archs"]["unet"], shared=shared, **overrides)


def clean(value):
    """JSON-safe: non-finite floats become None, tuples lists, paths and others strings."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        number = float(value)  # numpy scalars
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(clean(data), indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def missing_message(part: str, module: str) -> str:
    wheels = os.environ.get("GPU_CHECK_WHEELS")
    if wheels == "absent":
        hint = "and there is no .whl/ folder to install it from; put its wheel in .whl/"
    elif wheels == "installed":
        hint = "even after installing .whl/*.whl; add its wheel to .whl/"
    else:
        hint = "install it, or run bash benchmarks/gpu_check.sh with its wheel in .whl/"
    return f"gpu_check: {part} needs the Python module '{module}', which is missing, {hint}"


def preflight(parts) -> dict[str, str]:
    """{part: missing module} for the parts whose modules do not import."""
    import importlib

    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    missing = {}
    for part in parts:
        for name in NEEDS[part]:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as error:
                missing[part] = error.name or name
                break
    return missing


class GpuSampler:
    """GPU utilisation from ``nvidia-smi ... -lms 200`` in a subprocess, timestamped by it.

    ``samples`` holds ``(time.time(), percent)``; without nvidia-smi, ``error`` says why.
    """

    def __init__(self, *, interval_ms: int = 200, gpu: str | None = None, exe: str = "nvidia-smi"):
        self.cmd = [
            exe,
            "--query-gpu=timestamp,utilization.gpu",
            "--format=csv,noheader,nounits",
            "-lms",
            str(interval_ms),
        ]
        if gpu:
            self.cmd.append(f"--id={gpu}")
        self.samples: list[tuple[float, float]] = []
        self.error: str | None = None
        self._proc = None
        self._thread = None

    def __enter__(self) -> GpuSampler:
        try:
            self._proc = subprocess.Popen(
                self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
            )
        except OSError as error:
            self.error = f"{self.cmd[0]} could not be started ({error.strerror or error})"
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            stamp, _, value = line.strip().rpartition(",")
            try:
                percent = float(value)
            except ValueError:
                continue
            try:  # nvidia-smi's own clock: right even if its output comes in bursts
                when = dt.datetime.strptime(stamp.strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
            except ValueError:
                when = time.time()
            self.samples.append((when, percent))

    def __exit__(self, *exc) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.samples:
            err = (self._proc.stderr.read() or "").strip().splitlines()
            self.error = f"nvidia-smi gave no samples ({err[-1] if err else 'no output'})"

    def stats(self, start: float | None = None, end: float | None = None) -> dict:
        """Mean utilisation and fraction of samples >= 80 % within [start, end] (time.time())."""
        values = [
            u
            for t, u in self.samples
            if (start is None or t >= start) and (end is None or t <= end)
        ]
        if not values:
            return {"samples": 0, "mean_percent": None, "fraction_ge_80": None}
        return {
            "samples": len(values),
            "mean_percent": round(sum(values) / len(values), 1),
            "fraction_ge_80": round(sum(v >= 80 for v in values) / len(values), 3),
        }


# ----------------------------------------------------------------------------- parts


@dataclasses.dataclass
class Context:
    part: str
    device: str  # "cuda" or "cpu"
    smoke: bool
    out: Path
    work: Path
    budget_s: float
    args: dict
    started: float = dataclasses.field(default_factory=time.perf_counter)
    record: dict = dataclasses.field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def save(self, **fields) -> None:
        """Merge ``fields`` into the part's JSON and write it (partial results survive a stop)."""
        self.record.update(fields)
        self.record["seconds"] = round(self.elapsed(), 1)
        write_json(self.out / f"{self.part}.json", self.record)


def part_tests(ctx: Context) -> dict:
    """``pytest -m gpu`` on the files that hold gpu-marked tests; counts from its JUnit XML."""
    import xml.etree.ElementTree as ET

    files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if "pytest.mark.gpu" in p.read_text(errors="replace")
    )
    if not files:
        return {"status": "failed", "error": "no gpu-marked tests found under tests/"}
    ctx.work.mkdir(parents=True, exist_ok=True)
    junit = ctx.work / "junit.xml"
    junit.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    cmd += [f"--junitxml={junit}", *files]
    say(f"gpu_check: tests: {' '.join(cmd[1:])}")
    proc = subprocess.run(cmd, cwd=ROOT, check=False)
    cases = []
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    outcome = {"failure": "failed", "error": "error"}.get(tag, tag)
                    reason = node.get("message", "")
                    break
            else:
                reason = ""
            cases.append(
                {
                    "test": f"{case.get('classname')}::{case.get('name')}",
                    "outcome": outcome,
                    "seconds": float(case.get("time", 0) or 0),
                    **({"reason": reason[:300]} if reason else {}),
                }
            )
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error")}
    counts["skipped"] = sum(c["outcome"] == "skipped" for c in cases)
    ok = proc.returncode == 0 and not counts["failed"] and not counts["error"]
    result = {"status": "ok" if ok else "failed", "files": files, "pytest_exit": proc.returncode}
    result.update(counts=counts, cases=cases)
    if ctx.cuda and counts["skipped"]:
        result["note"] = "gpu-marked tests were skipped on a CUDA machine; see their reasons"
    return result


def part_throughput(ctx: Context) -> dict:
    """Eager float32 against the optimised path, for the default and the full config's U-Net."""
    import torch
    from train_throughput import CASES, pure_step_rate, run_case

    configs = load_configs()
    gpu = torch.cuda.get_device_name() if ctx.cuda else None
    peak, peak_note = gpu_peak(gpu) if gpu else (None, "CPU run: no GPU bf16 peak")
    workers = 1 if ctx.smoke else 4
    epochs = 2  # the last epoch is timed: after cuDNN autotuning and compilation
    compile_ = not (ctx.smoke and not ctx.cuda)
    rows = {}
    for name, config in configs.items():
        model, kwargs, tc = unet_settings(config)
        size = int(config["synthesize"]["grains"]["image_size_px"])
        images = {"default": 4096, "full": 2048}.get(name, 2048)
        if ctx.smoke:
            kwargs, size, images = {**kwargs, **SMOKE_UNET}, min(size, SMOKE_PX), 32
        images -= images % tc.batch_size  # whole batches: no recompilation for a short one
        base = {k: v for k, v in tc.to_dict().items() if k not in ("epochs", "progress")}
        base.update(device=ctx.device, deterministic=False)
        paths = {
            "eager_fp32": dict(
                amp="off", channels_last=False, tf32=False, compile=False, num_workers=0
            ),
            "optimised": dict(
                amp="bf16", channels_last=True, tf32=True, compile=compile_, num_workers=workers
            ),
        }
        entry = {
            "config": "config/config.yaml" if name == "default" else "config/full.yaml",
            "model": model,
            "model_kwargs": kwargs,
            "size_px": size,
            "batch_size": tc.batch_size,
            "images_per_epoch": images,
            "epochs": epochs,
        }
        for path, settings in paths.items():
            case = f"gpu_check_{name}_{path}"
            CASES[case] = (model, kwargs, size, images, {**base, **settings})
            torch._dynamo.reset()  # compile each case afresh: no shapes marked dynamic
            say(f"gpu_check: throughput: {case} ({size} px, batch {tc.batch_size}) ...")
            try:
                row = run_case(case, epochs=epochs)
            except Exception as error:  # one case failing must not cost the others
                traceback.print_exc(file=sys.stdout)
                failure = f"{type(error).__name__}: {error}"[:500]
                if not settings["compile"]:
                    entry[path] = {"error": failure, "settings": settings}
                    rows[name] = entry
                    ctx.save(configs=rows)
                    continue
                say(f"gpu_check: throughput: {case} failed with torch.compile; again without")
                settings = {**settings, "compile": False}
                CASES[case] = (model, kwargs, size, images, {**base, **settings})
                row = run_case(case, epochs=epochs)
                row["compile_error"] = failure
            row["settings"] = settings
            tflops = row["gflop_per_image"] * row["images_per_s"] / 1e3
            row["achieved_tflop_per_s"] = round(tflops, 4)
            row["fraction_of_bf16_peak"] = round(tflops / peak, 5) if peak else None
            entry[path] = row
            say(
                f"gpu_check: throughput: {case}: {row['images_per_s']} images/s, "
                f"{row['peak_memory_mb']} MB, {row['gflop_per_image']} GFLOP/image"
            )
            rows[name] = entry
            ctx.save(configs=rows)
        rates = [entry[p].get("images_per_s") for p in paths]
        entry["speedup"] = round(rates[1] / rates[0], 2) if all(rates) else None
        if ctx.cuda:  # the bare step on data already on the GPU: what the loader can approach
            CASES[f"gpu_check_{name}"] = (model, kwargs, size, images, {**base})
            try:
                pure = pure_step_rate(f"gpu_check_{name}", batch_size=tc.batch_size)
            except Exception as error:
                pure = {"error": f"{type(error).__name__}: {error}"[:500]}
            entry["pure_step_bf16_channels_last"] = pure
        rows[name] = entry
        ctx.save(configs=rows)
    notes = [f"bf16 peak: {peak_note}" if peak is None else f"bf16 peak of the {peak_note}"]
    notes.append("both paths with deterministic=False (cudnn.benchmark on)")
    if not compile_:
        notes.append("smoke run on the CPU: torch.compile left out (it compiles for minutes)")
    return {
        "status": "ok" if all(e.get("speedup") for e in rows.values()) else "failed",
        "gpu": gpu,
        "bf16_peak_tflops": peak,
        "notes": notes,
        "configs": rows,
    }


class _BudgetSpent(Exception):
    pass


def _synthesize(job: tuple) -> str:
    """One specimen file (run in a worker process)."""
    path, specimen, settings, seed = job
    from grainflow.io.hdf5 import write_specimen
    from grainflow.synth.specimen import synthesize_specimen

    samples, params = synthesize_specimen("grains", specimen, settings, seed=seed)
    write_specimen(path, samples, task="grains", specimen=specimen, specimen_params=params)
    return path


def part_train(ctx: Context) -> dict:
    """Fold 0 of the full config's U-Net on grains, for at most the time budget; resumable."""
    import concurrent.futures
    import multiprocessing

    import pandas as pd
    import torch

    from grainflow.checkpoint import load_checkpoint, save_checkpoint
    from grainflow.evaluation.crossval import run_model_fold, summarize
    from grainflow.seeds import derive_seed
    from grainflow.splits import make_manifest, write_manifest
    from grainflow.training.data import fold_datasets
    from grainflow.training.loop import last_history, train
    from grainflow.training.validation import primary_score, segmentation_metrics

    config = load_configs()["full"]
    task, fold = "grains", 0
    settings = dict(config["synthesize"][task])
    planned_specimens = int(settings["specimens"])
    specimens = int(ctx.args.get("train_specimens") or (3 if ctx.smoke else 12))
    settings["specimens"] = min(specimens, planned_specimens)
    if ctx.smoke:
        settings.update(sessions_per_specimen=2, images_per_session=2, image_size_px=SMOKE_PX)
    work = ctx.work
    data = work / "synthetic"
    data.mkdir(parents=True, exist_ok=True)
    stamp = json.dumps({"settings": settings, "seed": config["seed"]}, sort_keys=True)
    if (work / "settings.json").exists() and (work / "settings.json").read_text() != stamp:
        for old in data.glob("*.h5"):  # other settings: resynthesise
            old.unlink()
    (work / "settings.json").write_text(stamp)
    names = [f"s{i:02d}" for i in range(settings["specimens"])]
    files = [str(data / f"{n}.h5") for n in names]
    jobs = [
        (f, n, settings, derive_seed(config["seed"], "synthesize", task, n))
        for f, n in zip(files, names)
        if not Path(f).exists()
    ]
    t0 = time.perf_counter()
    procs = min(len(jobs), os.cpu_count() or 1)
    if procs > 1:
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(procs, mp_context=spawn) as pool:
            list(pool.map(_synthesize, jobs))
    else:
        for job in jobs:
            _synthesize(job)
    synth_s = time.perf_counter() - t0
    say(f"gpu_check: train: {len(jobs)} of {len(files)} specimen files written in {synth_s:.1f} s")
    splits = config["splits"]
    manifest = make_manifest(files, folds=int(splits["folds"]), group_by=splits["group_by"])
    manifest_path = work / "manifest.tsv"
    write_manifest(manifest, manifest_path)

    seed = derive_seed(config["seed"], "train", task, "unet", fold)
    model, kwargs, tc = unet_settings(config, device=ctx.device, seed=seed, progress=False)
    if ctx.smoke:
        kwargs = {**kwargs, **SMOKE_UNET}
        tc = dataclasses.replace(tc, epochs=2)
    if ctx.args.get("train_epochs"):
        tc = dataclasses.replace(tc, epochs=int(ctx.args["train_epochs"]))
    run = work / f"fold{fold}"
    best_path, history_path, last_path = run / "best.pt", run / "history.tsv", run / "last.pt"
    train_set, val_set = fold_datasets(
        manifest_path, fold, task=task, norm_percentiles=tc.norm_percentiles
    )
    tolerance = config["evaluation"]["boundary_tolerance_px"]
    # leave time for the held-out evaluation after training
    reserve = 5.0 if ctx.smoke else max(25.0, 0.15 * ctx.budget_s)
    deadline = ctx.budget_s - reserve

    def stop_when_spent(epoch: int, row: dict) -> None:
        if epoch < tc.epochs and ctx.elapsed() + 1.2 * row["epoch_s"] > deadline:
            raise _BudgetSpent(epoch)

    record = {
        "task": task,
        "fold": fold,
        "model": model,
        "model_kwargs": kwargs,
        "train_config": tc.to_dict(),
        "specimens": settings["specimens"],
        "specimens_in_full_config": planned_specimens,
        "image_size_px": settings["image_size_px"],
        "images_per_specimen": settings["sessions_per_specimen"] * settings["images_per_session"],
        "train_images": len(train_set),
        "val_images": len(val_set),
        "synthesis_s": round(synth_s, 1),
        "run_dir": str(run),
    }
    ctx.save(**record)
    say(
        f"gpu_check: train: {model} {kwargs} on {len(train_set)} images "
        f"({settings['image_size_px']} px), validating on {len(val_set)}, "
        f"{tc.epochs} epochs, stop after {deadline:.0f} s of the part"
    )
    t0 = time.perf_counter()
    complete = True
    try:
        result = train(
            model,
            kwargs,
            train_set,
            val_set,
            tc,
            best_path=best_path,
            history_path=history_path,
            last_path=last_path,
            metrics_fn=segmentation_metrics(task, tolerance_px=tolerance),
            score_fn=primary_score(task),
            extra={"task": task, "fold": fold},
            on_epoch_end=stop_when_spent,
        )
        history = pd.read_csv(history_path, sep="\t").to_dict("records")
        resumed, checkpoint = result.resumed_from_epoch, best_path
    except _BudgetSpent:
        complete = False
        last = load_checkpoint(last_path)
        history, best = last_history(last_path, last), last["extra"]["best"]
        resumed = None
        checkpoint = run / "best_so_far.pt"  # the best epoch so far, as a best.pt
        partial = {**last, "model_state": best["model_state"]}
        partial["extra"] = {"task": task, "fold": fold, "score": best["score"], "partial": True}
        save_checkpoint(checkpoint, partial)
    train_s = time.perf_counter() - t0
    epoch_s = [float(r["epoch_s"]) for r in history]
    best_row = max(history, key=lambda r: r["score"]) if history else {}
    record.update(
        complete=complete,
        epochs_done=len(history),
        epochs_planned=tc.epochs,
        resumed_from_epoch=resumed,
        train_s=round(train_s, 1),
        epoch_s_median=round(sorted(epoch_s)[len(epoch_s) // 2], 3) if epoch_s else None,
        epoch_s_first=round(epoch_s[0], 3) if epoch_s else None,
        images_per_s_median=(
            round(sorted(float(r["images_per_s"]) for r in history)[len(history) // 2], 1)
            if history
            else None
        ),
        peak_memory_mb=max((float(r["peak_memory_mb"]) for r in history), default=None),
        best_epoch=best_row.get("epoch"),
        val_boundary_f1_best_epoch=best_row.get("score"),
        history=history,
    )
    if not complete:
        record["note"] = (
            f"stopped by the time budget after epoch {len(history)} of {tc.epochs}; "
            f"run the train part again to resume from {last_path}"
        )
    ctx.save(**record)
    t0 = time.perf_counter()
    per_image, _, _ = run_model_fold(
        task,
        manifest_path,
        files,
        checkpoint,
        fold=fold,
        model=model,
        tolerance_px=tolerance,
        iou_threshold=config["evaluation"]["match_iou"],
        pixel_size_um=config["evaluation"]["pixel_size_um"],
        flips=config["evaluation"]["test_time_flips"],
        device=ctx.device,
    )
    scores = summarize(per_image, task=task, by=["fold"]).iloc[0].to_dict()
    record.update(
        held_out={
            "fold": fold,
            "checkpoint": str(checkpoint),
            "test_time_flips": config["evaluation"]["test_time_flips"],
            "n_images": int(scores["n_images"]),
            "boundary_f1": scores["boundary_f1"],
            "boundary_precision": scores["boundary_precision"],
            "boundary_recall": scores["boundary_recall"],
            "grain_f1": scores["grain_f1"],
            "seconds": round(time.perf_counter() - t0, 1),
        },
        status="ok",
    )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return record


class _InferPhases(logging.Handler):
    """Notes when infer_stack starts and ends its prediction, from its log lines."""

    def __init__(self, on_predicted=None):
        super().__init__(level=logging.INFO)
        self.predict_start: float | None = None
        self.predict_end: float | None = None
        self.on_predicted = on_predicted

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        if message.startswith("stack %r") and self.predict_start is None:
            self.predict_start = record.created  # logged just before the prediction starts
        elif "tiles in" in message and self.predict_end is None:
            self.predict_end = record.created
            if self.on_predicted is not None:
                self.on_predicted(record.args)


def _sampled_gpu() -> str | None:
    """The ``--id`` for nvidia-smi: the first of CUDA_VISIBLE_DEVICES, else torch's device."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible:
        return visible.split(",")[0].strip()
    return None if torch.cuda.device_count() == 1 else str(torch.cuda.current_device())


def part_infer(ctx: Context) -> dict:
    """An 8192 x 8192 plane through infer_stack with the config's ensemble and settings."""
    from infer_memory import make_checkpoints, make_stack, micrograph

    from grainflow.inference.stack import infer_stack

    config = load_configs()["full"]
    model, kwargs, _ = unet_settings(config)
    side = int(ctx.args.get("infer_side") or (256 if ctx.smoke else 8192))
    folds = int(config["splits"]["folds"])
    inference = config["inference"]
    options = {k: inference[k] for k in ("tile_px", "overlap_px", "margin_px", "block_px")}
    options.update(batch_size=inference["batch_size"], sigma_scale=inference["sigma_scale"])
    options.update(
        flips=inference["test_time_flips"],
        whole_plane_max_px=inference["labels_whole_plane_max_px"],
        labels_halo_px=inference["labels_halo_px"],
    )
    if ctx.smoke:
        kwargs = {**kwargs, **SMOKE_UNET}
        options.update(tile_px=64, overlap_px=16, margin_px=4)
    threads = 2  # rule infer's threads
    ctx.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tile = micrograph(min(side, 2048))
    checkpoints = make_checkpoints(ctx.work, folds, tile, kwargs)
    stack = make_stack(side, ctx.work, tile)
    prepare_s = time.perf_counter() - t0
    megapixels = side * side / 1e6
    record = {
        "side_px": side,
        "megapixels": round(megapixels, 2),
        "model": model,
        "model_kwargs": kwargs,
        "folds": folds,
        "options": options,
        "threads": threads,
        "prepare_s": round(prepare_s, 1),
    }
    ctx.save(**record)
    say(f"gpu_check: infer: {side} x {side} px stack ready in {prepare_s:.1f} s; inferring ...")
    sampler = GpuSampler(gpu=_sampled_gpu()) if ctx.cuda else None

    def utilisation(start, end) -> dict | None:
        if sampler is None or not sampler.samples:
            return None
        return sampler.stats(start, end)

    def predicted(log_args) -> None:  # save the prediction's numbers before the labelling
        seconds = float(log_args[-1]) if log_args else float("nan")
        ctx.save(
            predict_s=round(seconds, 1),
            predict_megapixels_per_s=round(megapixels / seconds, 3) if seconds else None,
            gpu_utilisation_prediction=utilisation(phases.predict_start, phases.predict_end),
        )

    phases = _InferPhases(predicted)
    stack_log = logging.getLogger("grainflow.inference.stack")
    stack_log.addHandler(phases)
    stack_log.setLevel(logging.INFO)
    out = ctx.work / f"inference_{side}.ome.zarr"
    if sampler is not None:
        sampler.__enter__()
    try:
        start = time.time()
        summary = infer_stack(
            stack, checkpoints, out, model=model, device=ctx.device, threads=threads,
            progress=False, **options,
        )  # fmt: skip
        end = time.time()
    finally:
        if sampler is not None:
            sampler.__exit__(None, None, None)
        stack_log.removeHandler(phases)
    plane = summary["planes"][0]
    predict_start = phases.predict_start or end - summary["seconds"]
    predict_end = phases.predict_end or predict_start + plane["predict_s"]
    record.update(
        status="ok",
        device=summary["device"],
        infer_s=summary["seconds"],
        megapixels_per_s=summary["megapixels_per_s"],
        predict_s=plane["predict_s"],
        predict_megapixels_per_s=round(megapixels / plane["predict_s"], 3),
        label_s=plane["label_s"],
        labelling=plane["labelling"],
        tiles=plane["tiles"],
        blocks=plane["blocks"],
        grains=plane["n_objects"],
    )
    if sampler is None:
        record["gpu_utilisation"] = None
        record["gpu_utilisation_note"] = "CPU run: no GPU to sample"
    elif sampler.error:
        record["gpu_utilisation"] = None
        record["gpu_utilisation_note"] = sampler.error
    else:
        record["gpu_utilisation"] = {
            "command": " ".join(sampler.cmd),
            "whole_call": sampler.stats(start, end),
            "prediction": sampler.stats(predict_start, predict_end),
        }
    record["gpu_utilisation_prediction"] = (record["gpu_utilisation"] or {}).get("prediction")
    return record


PART_FUNCTIONS = {
    "tests": part_tests,
    "throughput": part_throughput,
    "train": part_train,
    "infer": part_infer,
}


def child(args) -> int:
    """Run one part in this process and write its JSON."""
    part = args.child
    options = json.loads(args.options)
    ctx = Context(
        part=part,
        device=options["device"],
        smoke=options["smoke"],
        out=Path(options["out"]),
        work=Path(options["workdir"]) / (f"{part}-smoke" if options["smoke"] else part),
        budget_s=float(options["budget_s"]),
        args=options,
    )
    ctx.record = {
        "part": part,
        "status": "running",
        "cuda": False,
        "skipped": False,
        "device": ctx.device,
        "smoke": ctx.smoke,
        "budget_s": ctx.budget_s,
        "started": dt.datetime.now().isoformat(timespec="seconds"),
    }
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        import torch

        from grainflow import __version__

        ctx.record.update(
            cuda=torch.cuda.is_available(),
            gpu=torch.cuda.get_device_name() if ctx.cuda else None,
            torch=torch.__version__,
            grainflow=__version__,
        )
        ctx.save()
        result = PART_FUNCTIONS[part](ctx)
    except ModuleNotFoundError as error:
        message = missing_message(part, error.name or str(error))
        ctx.save(status="missing_module", missing_module=error.name, error=message)
        say(message)
        return 2
    except Exception as error:  # a bug or a failed run: the traceback goes to the log
        traceback.print_exc(file=sys.stdout)
        message = f"gpu_check: {part} failed: {type(error).__name__}: {error}"
        ctx.save(status="failed", error=message, traceback=traceback.format_exc()[-4000:])
        say(message)
        return 1
    ctx.save(**result)
    return 0 if ctx.record.get("status") == "ok" else 1


# ----------------------------------------------------------------------------- driver


def run_part(part: str, options: dict, budget: float, out: Path, log) -> dict:
    """Run ``part`` in a child process; stop it (process group) when it overruns ``budget``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", part]
    cmd += ["--options", json.dumps({**options, "budget_s": budget})]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
        start_new_session=True,  # its own process group: DataLoader and compile workers too
    )

    def pump() -> None:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
    try:  # what the part left behind in its group (DataLoader or compile workers, nvidia-smi)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    reader.join(timeout=10)
    seconds = time.perf_counter() - start
    path = out / f"{part}.json"
    record = read_json(path) or {"part": part}
    if timed_out:
        record.update(status="timed_out", error=f"stopped after its budget of {budget:.0f} s")
        message = f"gpu_check: {part} overran its budget of {budget:.0f} s and was stopped"
        say(message)
        log.write(message + "\n")
    elif record.get("status") in (None, "running"):
        record.update(status="failed", error=f"the {part} process exited with {proc.returncode}")
    record.update(wall_s=round(seconds, 1), budget_s=budget)
    write_json(path, record)
    return record


def headline(record: dict) -> str:
    """One line of results of a part's record."""
    part, status = record.get("part"), record.get("status")
    if status in ("skipped", "missing_module", "failed") and record.get(
        "error", record.get("reason")
    ):
        return str(record.get("error") or record.get("reason"))
    if part == "tests" and "counts" in record:
        c = record["counts"]
        return f"{c['passed']} passed, {c['failed']} failed, {c['error']} errors, {c['skipped']} skipped"
    if part == "throughput" and record.get("configs"):
        bits = []
        for name, e in record["configs"].items():
            eager, opt = e.get("eager_fp32", {}), e.get("optimised", {})
            text = f"{name}: eager {eager.get('images_per_s', '?')}"
            text += f" -> optimised {opt.get('images_per_s', '?')} images/s"
            if e.get("speedup"):
                text += f" ({e['speedup']}x)"
            bits.append(text)
        return "; ".join(bits)
    if part == "train" and "epochs_done" in record:
        held = record.get("held_out") or {}
        f1 = held.get("boundary_f1")
        return (
            f"held-out boundary F1 {f1 if f1 is None else round(f1, 3)} after "
            f"{record['epochs_done']}/{record['epochs_planned']} epochs, "
            f"median {record.get('epoch_s_median')} s/epoch"
        )
    if part == "infer" and "megapixels_per_s" in record:
        util = record.get("gpu_utilisation") or {}
        pred = util.get("prediction") or {}
        text = (
            f"{record['side_px']}^2 px: {record['megapixels_per_s']} Mpx/s "
            f"(prediction {record['predict_megapixels_per_s']} Mpx/s)"
        )
        if pred.get("mean_percent") is not None:
            text += f", GPU {pred['mean_percent']} % busy, >=80 % in {pred['fraction_ge_80']:.0%}"
        return text
    return str(record.get("error", ""))


def print_summary(records: list[dict], log) -> None:
    lines = ["", "| part | status | seconds | result |", "|---|---|---|---|"]
    for r in records:
        seconds = r.get("wall_s", r.get("seconds", ""))
        lines.append(f"| {r.get('part')} | {r.get('status')} | {seconds} | {headline(r)} |")
    for r in records:
        if r.get("part") == "throughput" and r.get("configs"):
            lines += [
                "",
                "| config | path | px | batch | images/s | peak MB | GFLOP/image | % bf16 peak |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for name, e in r["configs"].items():
                for path in ("eager_fp32", "optimised"):
                    row = e.get(path)
                    if not row:
                        continue
                    frac = row.get("fraction_of_bf16_peak")
                    lines.append(
                        f"| {name} | {path} | {e['size_px']} | {e['batch_size']} | "
                        f"{row.get('images_per_s', 'error')} | {row.get('peak_memory_mb')} | "
                        f"{row.get('gflop_per_image')} | "
                        f"{'n/a' if frac is None else f'{100 * frac:.2f}'} |"
                    )
                pure = e.get("pure_step_bf16_channels_last") or {}
                if pure.get("images_per_s"):
                    lines.append(
                        f"| {name} | bare step, data on the GPU | {e['size_px']} | "
                        f"{e['batch_size']} | {pure['images_per_s']} | | | |"
                    )
    text = "\n".join(lines)
    say(text)
    log.write(text + "\n")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "parts", nargs="*", metavar="PART", help=f"{', '.join(PARTS)} (default: all)"
    )
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: every code path in seconds"
    )
    parser.add_argument(
        "--out", help="results folder (default: $OUT, else benchmarks/results/gpu_check)"
    )
    parser.add_argument(
        "--workdir", default="/tmp/grainflow_gpu_check", help="data, checkpoints, stacks"
    )
    parser.add_argument("--budget", action="append", default=[], metavar="PART=SECONDS")
    parser.add_argument("--train-specimens", type=int, help="specimens synthesised for train")
    parser.add_argument("--train-epochs", type=int, help="epochs of train (default: the config's)")
    parser.add_argument("--infer-side", type=int, help="side of the inferred plane, px")
    parser.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--options", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for part in args.parts:
        if part not in PARTS and part != "all":
            parser.error(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
    return args, parser


def main(argv=None) -> int:
    args, parser = parse_args(argv)
    if args.child:
        return child(args)
    parts = (
        [p for p in PARTS if p in args.parts or "all" in args.parts] if args.parts else list(PARTS)
    )
    budgets = dict(BUDGETS)
    for item in args.budget:
        part, _, seconds = item.partition("=")
        try:
            budgets[part] = float(seconds)
        except ValueError:
            parser.error(f"--budget wants PART=SECONDS, got {item!r}")
        if part not in PARTS:
            parser.error(f"--budget: unknown part {part!r}")
    out = Path(args.out or os.environ.get("OUT") or ROOT / "benchmarks" / "results" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gpu_check.log", "w") as log:
        return drive(args, parts, budgets, out, log)


def drive(args, parts, budgets, out: Path, log) -> int:
    def note(message: str) -> None:
        say(message)
        log.write(message + "\n")

    try:
        import torch
    except ModuleNotFoundError as error:
        for part in parts:
            message = missing_message(part, error.name or "torch")
            write_json(
                out / f"{part}.json",
                {
                    "part": part,
                    "status": "missing_module",
                    "missing_module": error.name,
                    "error": message,
                },
            )
        note(missing_message("gpu_check", error.name or "torch"))
        return 2
    cuda = torch.cuda.is_available()
    started = dt.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    summary = {
        "check": "gpu_check",
        "started": started,
        "device": args.device,
        "smoke": args.smoke,
        "cuda": cuda,
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "budgets_s": {p: budgets[p] for p in parts},
    }
    records = []
    if args.device != "cpu" and not cuda:
        for part in parts:
            note(f"gpu_check: {NO_CUDA}: skipping {part}")
            record = {
                "part": part,
                "status": "skipped",
                "cuda": False,
                "skipped": True,
                "reason": NO_CUDA,
                "torch": torch.__version__,
            }
            write_json(out / f"{part}.json", record)
            records.append(record)
        summary["parts"] = records
        write_json(out / "summary.json", summary)
        print_summary(records, log)
        return 0
    missing = preflight(parts)
    if missing:
        for part, module in missing.items():
            message = missing_message(part, module)
            record = {"part": part, "status": "missing_module", "missing_module": module}
            write_json(out / f"{part}.json", {**record, "error": message})
            note(message)
        summary["missing_modules"] = missing
        write_json(out / "summary.json", summary)
        return 2
    try:
        from grainflow.report.provenance import hardware

        summary["machine"] = hardware()
    except Exception as error:  # provenance is a nicety here
        summary["machine"] = f"unknown ({type(error).__name__}: {error})"
    device = "cuda" if args.device in ("auto", "cuda") else "cpu"
    options = {
        "device": device,
        "smoke": args.smoke,
        "out": str(out),
        "workdir": args.workdir,
        "train_specimens": args.train_specimens,
        "train_epochs": args.train_epochs,
        "infer_side": args.infer_side,
    }
    note(
        f"gpu_check: parts {', '.join(parts)} on {summary['gpu'] if device == 'cuda' else 'the CPU'}"
        f"{' (smoke sizes)' if args.smoke else ''}; results in {out}"
    )
    for part in parts:
        note(f"gpu_check: --- {part} (budget {budgets[part]:.0f} s) ---")
        records.append(run_part(part, options, budgets[part], out, log))
        summary["parts"] = [{k: r.get(k) for k in ("part", "status", "wall_s")} for r in records]
        write_json(out / "summary.json", summary)
    summary["parts"] = [
        {
            "part": r.get("part"),
            "status": r.get("status"),
            "wall_s": r.get("wall_s"),
            "result": headline(r),
        }
        for r in records
    ]
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(out / "summary.json", summary)
    print_summary(records, log)
    note(f"gpu_check: {summary['wall_s']:.0f} s in all; JSON and log in {out}")
    return 0 if all(r.get("status") == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
