"""Generalisation to new materials: a run's fold networks on fresh synthetic specimens.

The cross-validation tests each fold model on the few specimens its fold holds (two to
four per task in the default run), so its mean moves with which materials were drawn.
This benchmark synthesizes ``--specimens`` new specimens of a task with the run's settings
and seeds no job uses, and scores every fold model alone and the fold ensemble (mean
probability) on the same images, with the evaluation's own code and options. Two runs,
e.g. before and after a change of the synthetic world or the training, are then compared
on equal images.

Usage::

    python benchmarks/fresh_specimens.py TASK [--results results] [--config config/config.yaml]
        [--specimens 8] [--out benchmarks/results/fresh_specimens_TASK.json]

Writes JSON and prints a markdown table row for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from grainflow import __version__
from grainflow.checkpoint import load_checkpoint, model_from_checkpoint
from grainflow.evaluation.crossval import evaluate_samples
from grainflow.inference.labels import labels_from_probability
from grainflow.inference.predict import foreground, predict_probabilities
from grainflow.report.provenance import hardware
from grainflow.synth.specimen import synthesize_specimen

#: the scores reported per task (means over the images)
SCORES = {
    "grains": ("boundary_f1", "ari", "grain_f1"),
    "phases": ("iou", "object_f1"),
    "nanoparticles": ("iou", "object_f1"),
}

#: seeds of the fresh specimens (the workflow's are hashes: seeds.derive_seed)
SEED_BASE = 777_000


def fresh_samples(task: str, settings: dict, n: int) -> list:
    """``n`` new specimens of ``task`` (materials and modalities assigned in turn, as in the
    workflow), from seeds of their own."""
    samples = []
    for i in range(n):
        made, _ = synthesize_specimen(task, f"s{i:02d}", settings, seed=SEED_BASE + i)
        samples += made
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(SCORES))
    parser.add_argument("--results", default="results")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--specimens", type=int, default=8)
    parser.add_argument("--out")
    args = parser.parse_args()

    config = yaml.safe_load(Path(args.config).read_text())
    evaluation, inference = config["evaluation"], config["inference"]
    samples = fresh_samples(args.task, config["synthesize"][args.task], args.specimens)
    paths = sorted(Path(args.results, "models", args.task, args.arch).glob("fold*/best.pt"))
    if not paths:
        raise SystemExit(f"no fold checkpoints under {args.results}/models/{args.task}/{args.arch}")
    probabilities = {}
    for path in paths:
        checkpoint = load_checkpoint(path)
        trained_with = checkpoint.get("config") or {}
        probabilities[path.parent.name] = foreground(
            predict_probabilities(
                model_from_checkpoint(checkpoint),
                [s.image for s in samples],
                norm_percentiles=trained_with.get("norm_percentiles", (1.0, 99.0)),
                polarity=trained_with.get("polarity", "learned"),
                particles_dark=[s.params.get("particles_dark", False) for s in samples],
                flips=evaluation["test_time_flips"],
            )
        )
    probabilities["ensemble"] = np.mean(list(probabilities.values()), axis=0)

    scores = {}
    for name, fg in probabilities.items():
        predictions = [
            labels_from_probability(
                args.task,
                p,
                split_px=inference["labels_split_px"][args.task],
                fill_holes=inference["labels_fill_holes"],
                min_particle_px=inference.get("labels_min_particle_px", 0),
            )
            for p in fg
        ]
        table = evaluate_samples(
            args.task,
            samples,
            predictions,
            model=name,
            fold=-1,
            tolerance_px=evaluation["boundary_tolerance_px"],
            iou_threshold=evaluation["match_iou"],
            pixel_size_um=evaluation["pixel_size_um"],
        )
        scores[name] = {k: round(float(table[k].mean()), 4) for k in SCORES[args.task]}

    record = {
        "task": args.task,
        "results": str(args.results),
        "specimens": args.specimens,
        "images": len(samples),
        "scores": scores,
        "grainflow_version": __version__,
        "machine": hardware()["cpu"],
    }
    out = Path(args.out or f"benchmarks/results/fresh_specimens_{args.task}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    members = [scores[k] for k in scores if k != "ensemble"]
    cells = [
        f"{k} {scores['ensemble'][k]:.3f} (folds {min(m[k] for m in members):.3f}–"
        f"{max(m[k] for m in members):.3f})"
        for k in SCORES[args.task]
    ]
    row = (args.task, args.results, len(samples), "; ".join(cells), record["machine"])
    print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
