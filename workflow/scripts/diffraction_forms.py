"""Rule diffraction_forms: spot and ring patterns beside the forms the networks see."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.figures_diffraction import representation_figure
from grainflow.io import atomic_path, read_specimen

samples = [s for path in snakemake.input.specimens for s in read_specimen(path).samples]
fig = representation_figure(samples, snakemake.params.representation)
with atomic_path(snakemake.output.fig) as tmp:
    fig.savefig(tmp, dpi=150, format="png")
