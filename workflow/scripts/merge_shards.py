"""Rule merge_shards: a stack's shards as one inference store, labelled across shard edges."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.inference.shards import merge_shards

summary = merge_shards(
    snakemake.input.stack,
    list(snakemake.input.shards),
    snakemake.output.store,
    **snakemake.params.options,
)
for plane in summary["planes"]:
    print(plane, file=sys.stderr)
