"""Rule anatomy_diffraction_cnn: the DiffractionCNN's parameters per layer, read from the model."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import parameter_table_figure
from grainflow.figures import save_figure
from grainflow.models.registry import build_model

n = snakemake.params.input_px
fig = parameter_table_figure(
    build_model("diffraction_cnn"), input_shape=(1, n, n), title="DiffractionCNN"
)
save_figure(fig, snakemake.output.fig)
