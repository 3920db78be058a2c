"""Rule anatomy_feature_hierarchy: feature maps of layers 1–3 of a tiny random CNN.

When the rule is given an input named ``trained`` (a U-Net checkpoint), that model's
encoder maps are shown below the random ones.
"""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import feature_hierarchy
from grainflow.anatomy.studies import example_images
from grainflow.checkpoint import model_from_checkpoint
from grainflow.figures import save_figure
from grainflow.normalize import normalize_image

p = snakemake.params
images = example_images(
    size_px=p.image_size_px, grain_diameter_px=p.grain_diameter_px, rng=p.seeds["examples"]
)
image, _ = images["polycrystal"]
trained = trained_input = None
layers = {}
if snakemake.input.get("trained"):  # a trained U-Net checkpoint, when the run trains one
    trained = model_from_checkpoint(snakemake.input.trained[0])
    trained_input = normalize_image(image)  # as in training
    # the first (up to) three encoder stages, however deep the trained U-Net is
    layers = {"trained_layers": [f"encoder.{i}.block" for i in range(min(3, len(trained.encoder)))]}
fig = feature_hierarchy(
    image,
    channels=p.channels,
    rng=p.seeds["hierarchy"],
    trained=trained,
    trained_input=trained_input,
    **layers,
)
save_figure(fig, snakemake.output.fig)
