"""Rule synthetic_statistics_figure: requested against measured statistics, per specimen."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import pandas as pd

from grainflow.figures.synthetic import synthetic_statistics

table = pd.read_csv(snakemake.input.table, sep="\t")
synthetic_statistics(table).savefig(snakemake.output.fig, dpi=150)
