"""Rule anatomy_designed_kernel: a designed boundary detector and its selectivity."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import designed_kernel_figure, save_figure
from grainflow.anatomy.studies import designed_kernel_study

p = snakemake.params
study = designed_kernel_study(**p.settings, image_px=p.image_size_px, rng=p.seed)
save_figure(designed_kernel_figure(study), snakemake.output.fig)
