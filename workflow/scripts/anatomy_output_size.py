"""Rule anatomy_output_size: output sizes by the formula, checked against torch."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import output_size_examples, save_figure

save_figure(output_size_examples(), snakemake.output.fig)
