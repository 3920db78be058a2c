"""Rule augment: the originals of one specimen, each followed by its augmented copies."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.augment import augment_file

settings = snakemake.params.augment
n = augment_file(
    snakemake.input.h5,
    snakemake.output.h5,
    copies=settings["copies"],
    transforms=settings["transforms"],
    ops_per_copy=settings["ops_per_copy"],
    settings=settings,
    seed=snakemake.params.seed,
)
print(f"wrote {n} images (originals and copies) to {snakemake.output.h5}", file=sys.stderr)
