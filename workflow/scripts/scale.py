"""Rule scale: the pyramid level a stack is read at, from its features and the synthetic ones."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.inference.scale import choose_level, write_scale

record = choose_level(
    snakemake.input.stack,
    list(snakemake.input.specimens),
    crop_px=snakemake.params.crop_px,
    level=snakemake.params.level,
)
write_scale(record, snakemake.output.json)
print(record, file=sys.stderr)
