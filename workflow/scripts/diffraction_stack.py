"""Rule diffraction_stack: a diffraction stack's prepared frames through the fold ensemble."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.diffraction.real import classify_stack, read_threshold

summary = classify_stack(
    snakemake.input.store,
    snakemake.input.prepared,
    snakemake.input.models,
    snakemake.output.frames,
    snakemake.output.store,
    threshold=read_threshold(snakemake.input.abstention),
    device=snakemake.params.device,
)
print(summary, file=sys.stderr)
