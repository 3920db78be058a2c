"""Rule baseline: fit the classical pipeline on one fold's training images, score the held-out."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

import json

from grainflow.evaluation.crossval import run_baseline_fold, write_tsv
from grainflow.io.staging import atomic_path

p = snakemake.params
per_image, info = run_baseline_fold(
    snakemake.wildcards.task,
    snakemake.input.manifest,
    list(snakemake.input.specimens),
    fold=p.fold,
    grid=dict(p.grid),
    max_fit_images=p.max_fit_images,
    tolerance_px=p.tolerance_px,
    iou_threshold=p.iou_threshold,
    pixel_size_um=p.pixel_size_um,
    rng=p.seed,
)
write_tsv(per_image, snakemake.output.metrics)
with atomic_path(snakemake.output.info) as tmp:
    tmp.write_text(json.dumps(info, indent=1) + "\n")
print(
    f"fold {p.fold}: fitted on {len(info['fit_images'])} images, {info['fit_metric']} "
    f"{info['fit_score']:.3f} with {info['params']}; scored {len(per_image)} held-out images",
    file=sys.stderr,
)
