"""Rule anatomy_parameters: weights of a dense first layer against a convolution layer."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import parameter_counts, save_figure

save_figure(parameter_counts(**snakemake.params.settings), snakemake.output.fig)
