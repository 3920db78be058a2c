"""Rule diffraction_filters: what the first convolution learned (fold 0's model)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.checkpoint import model_from_checkpoint
from grainflow.diffraction.evaluate import first_layer_weights
from grainflow.diffraction.figures import filters_figure
from grainflow.io.staging import atomic_path

weights = first_layer_weights(model_from_checkpoint(snakemake.input.model))
fig = filters_figure(weights)
with atomic_path(snakemake.output.fig) as tmp:
    fig.savefig(tmp, dpi=150, format="png")
