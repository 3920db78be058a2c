"""Rule train: one fold's network, trained on the other folds' specimens."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import logging
from functools import reduce
from operator import add

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")

from grainflow.evaluation.metrics import boundary_counts, pixel_counts
from grainflow.training.config import arch_settings
from grainflow.training.distributed import world_size_for
from grainflow.training.loop import train_fold

p = snakemake.params
task = snakemake.wildcards.task
name, model_kwargs, config = arch_settings(
    p.arch, shared=p.shared, threads=snakemake.threads, seed=p.seed
)


def metrics(true, pred):
    """Validation scores from counts summed over the held-out images."""
    if task == "grains":
        b = reduce(
            add, (boundary_counts(t, q, tolerance_px=p.tolerance_px) for t, q in zip(true, pred))
        )
        return {"boundary_f1": b.f1, "boundary_precision": b.precision, "boundary_recall": b.recall}
    c = reduce(add, (pixel_counts(t > 0, q > 0) for t, q in zip(true, pred)))
    return {"iou": float(c.iou()[1]), "dice": float(c.dice()[1])}


train_fold(
    snakemake.input.manifest,
    p.fold,
    task=task,
    model_name=name,
    model_kwargs=model_kwargs,
    config=config,
    best_path=snakemake.output.best,
    history_path=snakemake.output.history,
    last_path=p.last,
    metrics_fn=metrics,
    score_fn=lambda m: m["boundary_f1"] if task == "grains" else m["iou"],
    # one process per GPU granted to the job and visible to it (1 on the CPU)
    world_size=world_size_for(snakemake.resources.gpu, device=config.device),
)
