"""Rule metric_distributions: per-image score distributions of one model across folds."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.evaluation.crossval import read_metric_tables
from grainflow.figures import save_figure
from grainflow.figures.evaluation import plot_metric_distributions

per_image = read_metric_tables(list(snakemake.input.folds))
fig = plot_metric_distributions(per_image, task=snakemake.wildcards.task)
save_figure(fig, snakemake.output.fig)
