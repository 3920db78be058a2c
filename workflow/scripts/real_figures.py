"""Rule real_figures: overlays (image, prediction, truth) and size histogram of one real stack."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import pandas as pd

from grainflow.figures.real import real_overlays, real_size_histogram

metrics = pd.read_csv(snakemake.input.metrics, sep="\t", dtype={"plane": str})
sizes = pd.read_csv(snakemake.input.sizes, sep="\t")
inference = dict(zip(snakemake.params.models, snakemake.input.inference))
real_overlays(snakemake.input.stack, inference, metrics).savefig(snakemake.output.overlays, dpi=130)
task = str(metrics["task"].iloc[0])
real_size_histogram(sizes, task=task).savefig(snakemake.output.sizes, dpi=150)
print(snakemake.params.headline, file=sys.stderr)
