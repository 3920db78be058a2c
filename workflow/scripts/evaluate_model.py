"""Rule evaluate_model: one fold's best network scored on its held-out specimens."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.evaluation.crossval import run_model_fold, write_tsv
from grainflow.io.hdf5 import write_probabilities

p = snakemake.params
per_image, probability, samples = run_model_fold(
    snakemake.wildcards.task,
    snakemake.input.manifest,
    list(snakemake.input.specimens),
    snakemake.input.best,
    fold=p.fold,
    model=snakemake.wildcards.arch,
    tolerance_px=p.tolerance_px,
    iou_threshold=p.iou_threshold,
    pixel_size_um=p.pixel_size_um,
    flips=p.flips,
    split_px=p.split_px,
    fill_holes=p.fill_holes,
    min_particle_px=p.min_particle_px,
)
write_probabilities(snakemake.output.probability, probability, [s.image_id for s in samples])
write_tsv(per_image, snakemake.output.metrics)
print(per_image.drop(columns=["task", "model"]).describe().T.to_string(), file=sys.stderr)
