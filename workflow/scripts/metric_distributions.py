"""Rule metric_distributions: per-image score distributions of one model across folds."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from grainflow.evaluation.crossval import read_metric_tables
from grainflow.figures.evaluation import plot_metric_distributions
from grainflow.io.staging import atomic_path

per_image = read_metric_tables(list(snakemake.input.folds))
fig = plot_metric_distributions(per_image, task=snakemake.wildcards.task)
with atomic_path(snakemake.output.fig) as tmp:
    fig.savefig(tmp, dpi=150, format="png")
