"""Rule diffraction_examples: simulated patterns of each crystal system."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.diffraction.figures import pattern_examples_figure
from grainflow.io.hdf5 import read_specimen
from grainflow.io.staging import atomic_path

samples = [s for path in snakemake.input.specimens for s in read_specimen(path).samples]
fig = pattern_examples_figure(samples, per_row=snakemake.params.per_row)
with atomic_path(snakemake.output.fig) as tmp:
    fig.savefig(tmp, dpi=150, format="png")
