"""Rule anatomy_designed_kernel: a designed boundary detector and its selectivity."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.anatomy.figures import designed_kernel_figure
from grainflow.anatomy.studies import designed_kernel_study
from grainflow.figures import save_figure

p = snakemake.params
study = designed_kernel_study(**p.settings, image_px=p.image_size_px, rng=p.seed)
save_figure(designed_kernel_figure(study), snakemake.output.fig)
