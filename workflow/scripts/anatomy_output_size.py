"""Rule anatomy_output_size: output sizes by the formula, checked against torch."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import output_size_examples
from grainflow.figures import save_figure

save_figure(output_size_examples(), snakemake.output.fig)
