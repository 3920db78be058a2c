"""Rule aggregate_metrics: per-image fold tables -> cross-validated and per-specimen tables."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from grainflow.evaluation.crossval import aggregate_metrics, write_tsv

cv, specimens = aggregate_metrics(list(snakemake.input.folds), task=snakemake.wildcards.task)
write_tsv(cv, snakemake.output.cv)
write_tsv(specimens, snakemake.output.specimens)
print(cv.to_string(), file=sys.stderr)
