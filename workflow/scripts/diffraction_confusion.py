"""Rule diffraction_confusion: confusion matrices per fold and pooled."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from grainflow.diffraction.figures import confusion_figure
from grainflow.figures import save_figure

confusion = pd.read_csv(snakemake.input.confusion, sep="\t", dtype={"fold": str})
fig = confusion_figure(confusion, title=f"{snakemake.wildcards.classifier}: held-out crystals")
save_figure(fig, snakemake.output.fig)
