"""Rule diffraction_calibration: reliability diagram and expected calibration error."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from grainflow.diffraction.figures import reliability_figure
from grainflow.io.staging import atomic_path

reliability = pd.read_csv(snakemake.input.reliability, sep="\t")
ece = snakemake.params.headline["ece"] / 100
title = f"{snakemake.wildcards.classifier}: held-out crystals"
fig = reliability_figure(reliability, ece=ece, title=title)
with atomic_path(snakemake.output.fig) as tmp:
    fig.savefig(tmp, dpi=150, format="png")
