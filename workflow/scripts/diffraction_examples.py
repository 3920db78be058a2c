"""Rule diffraction_examples: simulated patterns of each crystal system."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.diffraction.figures import pattern_examples_figure
from grainflow.figures import save_figure
from grainflow.io.hdf5 import read_specimen

samples = [s for path in snakemake.input.specimens for s in read_specimen(path).samples]
fig = pattern_examples_figure(samples, per_row=snakemake.params.per_row)
save_figure(fig, snakemake.output.fig)
