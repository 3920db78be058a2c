"""Rule augmentation_figure: one image with a grid of its augmented copies."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from grainflow.augment import augmentation_figure
from grainflow.io.hdf5 import read_specimen
from grainflow.io.staging import atomic_path

samples = read_specimen(snakemake.input.h5).samples
fig = augmentation_figure(samples, columns=snakemake.params.columns)
with atomic_path(snakemake.output.fig) as tmp:
    fig.savefig(tmp, dpi=150, format="png")
