"""Rule diffraction_filters: what the first convolution learned (fold 0's model)."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.checkpoint import model_from_checkpoint
from grainflow.diffraction.evaluate import first_layer_weights
from grainflow.diffraction.figures import filters_figure
from grainflow.figures import save_figure

weights = first_layer_weights(model_from_checkpoint(snakemake.input.model))
fig = filters_figure(weights)
save_figure(fig, snakemake.output.fig)
