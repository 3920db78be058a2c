"""Rule diffraction_examples: simulated patterns of each crystal system."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.figures_diffraction import pattern_examples_figure
from grainflow.io import atomic_path, read_specimen

samples = [s for path in snakemake.input.specimens for s in read_specimen(path).samples]
fig = pattern_examples_figure(samples, per_row=snakemake.params.per_row)
with atomic_path(snakemake.output.fig) as tmp:
    fig.savefig(tmp, dpi=150, format="png")
