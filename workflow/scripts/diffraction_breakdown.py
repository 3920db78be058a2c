"""Rule diffraction_breakdown: accuracy by pattern kind, dose and zone axis."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from grainflow.diffraction.figures import breakdown_figure
from grainflow.io.staging import atomic_path

breakdown = pd.read_csv(snakemake.input.breakdown, sep="\t")
fig = breakdown_figure(breakdown, title=f"{snakemake.wildcards.classifier}: held-out crystals")
with atomic_path(snakemake.output.fig) as tmp:
    fig.savefig(tmp, dpi=150, format="png")
