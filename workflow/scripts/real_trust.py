"""Rule real_trust: where the ensemble's members disagree on one real stack."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

import pandas as pd

from grainflow.figures import save_figure
from grainflow.figures.real import real_trust

metrics = pd.read_csv(snakemake.input.metrics, sep="\t", dtype={"plane": str})
inference = dict(zip(snakemake.params.models, snakemake.input.inference))
save_figure(real_trust(snakemake.input.stack, inference, metrics), snakemake.output.figure, dpi=130)
for model in snakemake.params.headline["models"]:
    print(model["model"], model.get("warning") or "no warning", file=sys.stderr)
