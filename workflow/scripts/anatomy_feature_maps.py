"""Rule anatomy_feature_maps: hand-set kernels on a bicrystal and a Voronoi polycrystal."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import hand_set_feature_maps
from grainflow.anatomy.studies import example_images
from grainflow.figures import save_figure

p = snakemake.params
images = example_images(size_px=p.image_size_px, grain_diameter_px=p.grain_diameter_px, rng=p.seed)
save_figure(hand_set_feature_maps(images), snakemake.output.fig)
