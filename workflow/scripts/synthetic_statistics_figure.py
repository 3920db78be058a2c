"""Rule synthetic_statistics_figure: requested against measured statistics, per specimen."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import pandas as pd

from grainflow.figures import save_figure
from grainflow.figures.synthetic import synthetic_statistics

table = pd.read_csv(snakemake.input.table, sep="\t")
save_figure(synthetic_statistics(table), snakemake.output.fig)
