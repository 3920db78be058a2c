"""Rule anatomy_correlation: the worked example, and correlation against convolution."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import correlation_example
from grainflow.anatomy.studies import example_images
from grainflow.figures import save_figure

p = snakemake.params
images = example_images(size_px=p.image_size_px, grain_diameter_px=p.grain_diameter_px, rng=p.seed)
image, _ = images["bicrystal"]
save_figure(correlation_example(image), snakemake.output.fig)
