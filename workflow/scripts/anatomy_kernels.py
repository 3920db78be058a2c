"""Rule anatomy_kernels: the hand-set 3×3 kernels with their weights written in."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import kernel_weights, save_figure

save_figure(kernel_weights(), snakemake.output.fig)
