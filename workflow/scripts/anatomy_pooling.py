"""Rule anatomy_pooling: the course's 2×2 max-pooling examples."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import max_pooling_examples, save_figure

save_figure(max_pooling_examples(), snakemake.output.fig)
