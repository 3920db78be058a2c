"""Rule anatomy_kernels: the hand-set 3×3 kernels with their weights written in."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import kernel_weights
from grainflow.figures import save_figure

save_figure(kernel_weights(), snakemake.output.fig)
