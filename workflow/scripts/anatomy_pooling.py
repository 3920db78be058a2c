"""Rule anatomy_pooling: the lecture's 2×2 max-pooling examples."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import max_pooling_examples
from grainflow.figures import save_figure

save_figure(max_pooling_examples(), snakemake.output.fig)
