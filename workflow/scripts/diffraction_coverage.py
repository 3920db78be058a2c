"""Rule diffraction_coverage: accuracy against coverage, one line per classifier."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from grainflow.diffraction.figures import coverage_figure
from grainflow.figures import save_figure


def read(paths):
    tables = [pd.read_csv(p, sep="\t", dtype={"fold": str}) for p in paths]
    return dict(zip(snakemake.params.classifiers, tables))


fig = coverage_figure(
    read(snakemake.input.coverage),
    read(snakemake.input.abstention),
    target=snakemake.params.coverage,
    title="held-out crystals: abstaining below a confidence threshold",
)
save_figure(fig, snakemake.output.fig)
