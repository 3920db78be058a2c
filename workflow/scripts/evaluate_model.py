"""Rule evaluate_model: one fold's best network scored on its held-out specimens."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import h5py

from grainflow.evaluation.crossval import run_model_fold, write_tsv
from grainflow.io.staging import atomic_path

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
)
with atomic_path(snakemake.output.probability) as tmp, h5py.File(tmp, "w") as f:
    f.create_dataset(
        "probability", data=probability, compression="gzip", chunks=(1, *probability.shape[1:])
    )
    f.create_dataset("image_id", data=[s.image_id for s in samples], dtype=h5py.string_dtype())
write_tsv(per_image, snakemake.output.metrics)
print(per_image.drop(columns=["task", "model"]).describe().T.to_string(), file=sys.stderr)
