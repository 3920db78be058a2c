"""Rule diffraction_confusion: confusion matrices per fold and pooled."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from grainflow.diffraction.figures import confusion_figure
from grainflow.io.staging import atomic_path

confusion = pd.read_csv(snakemake.input.confusion, sep="\t", dtype={"fold": str})
fig = confusion_figure(confusion, title=f"{snakemake.wildcards.classifier}: held-out crystals")
with atomic_path(snakemake.output.fig) as tmp:
    fig.savefig(tmp, dpi=150, format="png")
