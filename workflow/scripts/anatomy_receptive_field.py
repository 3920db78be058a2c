"""Rule anatomy_receptive_field: analytic against measured receptive fields, drawn on an image."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import json

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import receptive_field_figure
from grainflow.anatomy.studies import example_images
from grainflow.figures import save_figure

p = snakemake.params
images = example_images(
    size_px=p.image_size_px, grain_diameter_px=p.grain_diameter_px, rng=p.seeds["examples"]
)
image, _ = images["polycrystal"]
with open(snakemake.input.numbers) as f:
    fields = json.load(f)["receptive_field"]  # measured by rule anatomy_numbers
save_figure(
    receptive_field_figure(image, fields, rng=p.seeds["receptive_field"]), snakemake.output.fig
)
