"""Rule infer: a stack through the fold ensemble of one architecture, as OME-Zarr."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.inference.stack import infer_stack

summary = infer_stack(
    snakemake.input.stack,
    list(snakemake.input.checkpoints),
    snakemake.output.store,
    model=snakemake.wildcards.arch,
    device=snakemake.params.device,
    threads=snakemake.threads,
    level=snakemake.params.scale["level"],
    scale=snakemake.params.scale,
    **snakemake.params.options,
)
for plane in summary["planes"]:
    print(plane, file=sys.stderr)
