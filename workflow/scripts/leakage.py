"""Rule leakage: a classifier's validation accuracy under a random and the grouped split."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.io.staging import atomic_path
from grainflow.leakage import leakage_experiment
from grainflow.splits import read_manifest

manifest = read_manifest(snakemake.input.manifest)
table = leakage_experiment(
    manifest,
    task=snakemake.wildcards.task,
    rng=snakemake.params.seed,
    n_estimators=snakemake.params.trees,
)
with atomic_path(snakemake.output.table) as tmp:
    table.to_csv(tmp, sep="\t", index=False)
print(table.to_string(index=False), file=sys.stderr)
