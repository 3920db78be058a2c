"""Rule anatomy_correlation: the worked example, and correlation against convolution."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import correlation_example, save_figure
from grainflow.anatomy.studies import example_images

p = snakemake.params
images = example_images(size_px=p.image_size_px, grain_diameter_px=p.grain_diameter_px, rng=p.seed)
image, _ = images["bicrystal"]
save_figure(correlation_example(image), snakemake.output.fig)
