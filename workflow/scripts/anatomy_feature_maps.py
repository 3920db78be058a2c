"""Rule anatomy_feature_maps: hand-set kernels on a bicrystal and a Voronoi polycrystal."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import hand_set_feature_maps, save_figure
from grainflow.anatomy.studies import example_images

p = snakemake.params
images = example_images(size_px=p.image_size_px, grain_diameter_px=p.grain_diameter_px, rng=p.seed)
save_figure(hand_set_feature_maps(images), snakemake.output.fig)
