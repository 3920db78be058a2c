"""Rule diffraction_breakdown: accuracy by pattern kind, dose and zone axis."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from grainflow.diffraction.figures import breakdown_figure
from grainflow.figures import save_figure

breakdown = pd.read_csv(snakemake.input.breakdown, sep="\t")
fig = breakdown_figure(breakdown, title=f"{snakemake.wildcards.classifier}: held-out crystals")
save_figure(fig, snakemake.output.fig)
