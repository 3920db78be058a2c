"""Rule diffraction_calibration: reliability diagram and expected calibration error."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from grainflow.diffraction.figures import reliability_figure
from grainflow.figures import save_figure

reliability = pd.read_csv(snakemake.input.reliability, sep="\t")
ece = snakemake.params.headline["ece"] / 100
title = f"{snakemake.wildcards.classifier}: held-out crystals"
fig = reliability_figure(reliability, ece=ece, title=title)
save_figure(fig, snakemake.output.fig)
