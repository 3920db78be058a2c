"""Rule anatomy_encoder: channels and sizes through the U-Net encoder, read from the model."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import encoder_trace_figure
from grainflow.figures import save_figure
from grainflow.models.registry import build_model

e = snakemake.params.encoder
model = build_model("unet", base_channels=e["base_channels"], depth=e["depth"])
save_figure(encoder_trace_figure(model, input_px=e["input_px"]), snakemake.output.fig)
