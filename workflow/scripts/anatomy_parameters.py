"""Rule anatomy_parameters: weights of a dense first layer against a convolution layer."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import parameter_counts
from grainflow.figures import save_figure

save_figure(parameter_counts(**snakemake.params.settings), snakemake.output.fig)
