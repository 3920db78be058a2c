"""Rule leakage_figure: validation accuracy under a random and the grouped split."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import pandas as pd

from grainflow.io.staging import atomic_path
from grainflow.leakage import leakage_figure

table = pd.read_csv(snakemake.input.table, sep="\t", dtype={"fold": str})
title = f"{snakemake.wildcards.task}: {table['property'].iloc[0]}"
fig = leakage_figure(table, title=title)
with atomic_path(snakemake.output.fig) as tmp:
    fig.savefig(tmp, dpi=150, format="png")
