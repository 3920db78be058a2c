"""Rule augmentation_figure: one image with a grid of its augmented copies."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.augment import augmentation_figure
from grainflow.figures import save_figure
from grainflow.io.hdf5 import read_specimen

samples = read_specimen(snakemake.input.h5).samples
fig = augmentation_figure(samples, columns=snakemake.params.columns)
save_figure(fig, snakemake.output.fig)
