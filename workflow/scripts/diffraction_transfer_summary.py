"""Rule diffraction_transfer_summary: transfer strategies against labelled-set size."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from grainflow.diffraction.figures import transfer_figure
from grainflow.figures import save_figure
from grainflow.io.staging import atomic_path

table = pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input.rows], ignore_index=True)
with atomic_path(snakemake.output.table) as tmp:
    table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
fig = transfer_figure(
    table,
    title=f"ResNet-18 from {snakemake.params.pretrained} weights, "
    f"about {snakemake.params.steps} updates per run",
)
save_figure(fig, snakemake.output.fig)
