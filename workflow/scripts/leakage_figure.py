"""Rule leakage_figure: validation accuracy under a random and the grouped split."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import pandas as pd

from grainflow.figures import save_figure
from grainflow.leakage import leakage_figure

table = pd.read_csv(snakemake.input.table, sep="\t", dtype={"fold": str})
title = f"{snakemake.wildcards.task}: {table['property'].iloc[0]}"
fig = leakage_figure(table, title=title)
save_figure(fig, snakemake.output.fig)
