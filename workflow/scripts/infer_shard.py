"""Rule infer_shard: the probabilities of one shard of a stack's blocks (merged by merge_shards)."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.inference.shards import infer_shard

record = infer_shard(
    snakemake.input.stack,
    list(snakemake.input.checkpoints),
    snakemake.output.store,
    shard=snakemake.params.shard,
    shards=snakemake.params.shards,
    model=snakemake.wildcards.arch,
    device=snakemake.params.device,
    threads=snakemake.threads,
    **snakemake.params.options,
)
for plane, summary in record["planes"].items():
    print(plane, summary, file=sys.stderr)
