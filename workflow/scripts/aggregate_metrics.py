"""Rule aggregate_metrics: per-image fold tables -> cross-validated and per-specimen tables."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.evaluation.crossval import aggregate_metrics, write_tsv

cv, specimens = aggregate_metrics(list(snakemake.input.folds), task=snakemake.wildcards.task)
write_tsv(cv, snakemake.output.cv)
write_tsv(specimens, snakemake.output.specimens)
print(cv.to_string(), file=sys.stderr)
