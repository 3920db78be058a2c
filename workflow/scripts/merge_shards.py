"""Rule merge_shards: a stack's shards as one inference store, labelled across shard edges."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import logging

logging.basicConfig(
    stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)

from grainflow.inference.shards import merge_shards

summary = merge_shards(
    snakemake.input.stack,
    list(snakemake.input.shards),
    snakemake.output.store,
    **snakemake.params.options,
)
for plane in summary["planes"]:
    print(plane, file=sys.stderr)
