"""Rule anatomy_encoder: channels and sizes through the U-Net encoder, read from the model."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import encoder_trace_figure, save_figure
from grainflow.models.registry import build_model

e = snakemake.params.encoder
model = build_model("unet", base_channels=e["base_channels"], depth=e["depth"])
save_figure(encoder_trace_figure(model, input_px=e["input_px"]), snakemake.output.fig)
