"""Rule infer: a stack through the fold ensemble of one architecture, as OME-Zarr."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import logging

logging.basicConfig(
    stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)

from grainflow.inference.stack import infer_stack

summary = infer_stack(
    snakemake.input.stack,
    list(snakemake.input.checkpoints),
    snakemake.output.store,
    model=snakemake.wildcards.arch,
    device=snakemake.params.device,
    threads=snakemake.threads,
    **snakemake.params.options,
)
for plane in summary["planes"]:
    print(plane, file=sys.stderr)
