"""Rule diffraction_forms: spot and ring patterns beside the forms the networks see."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.diffraction.figures import representation_figure
from grainflow.figures import save_figure
from grainflow.io.hdf5 import read_specimen

samples = [s for path in snakemake.input.specimens for s in read_specimen(path).samples]
fig = representation_figure(samples, snakemake.params.representation)
save_figure(fig, snakemake.output.fig)
