"""Rule real_figures: overlays (image, prediction, truth) and size histogram of one real stack."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

import pandas as pd

from grainflow.figures import save_figure
from grainflow.figures.real import real_overlays, real_size_histogram

metrics = pd.read_csv(snakemake.input.metrics, sep="\t", dtype={"plane": str})
sizes = pd.read_csv(snakemake.input.sizes, sep="\t")
inference = dict(zip(snakemake.params.models, snakemake.input.inference))
save_figure(
    real_overlays(snakemake.input.stack, inference, metrics), snakemake.output.overlays, dpi=130
)
task = str(metrics["task"].iloc[0])
save_figure(real_size_histogram(sizes, task=task), snakemake.output.sizes)
print(snakemake.params.headline, file=sys.stderr)
