"""Rule diffraction_forms: spot and ring patterns beside the forms the networks see."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.diffraction.figures import representation_figure
from grainflow.io.hdf5 import read_specimen
from grainflow.io.staging import atomic_path

samples = [s for path in snakemake.input.specimens for s in read_specimen(path).samples]
fig = representation_figure(samples, snakemake.params.representation)
with atomic_path(snakemake.output.fig) as tmp:
    fig.savefig(tmp, dpi=150, format="png")
