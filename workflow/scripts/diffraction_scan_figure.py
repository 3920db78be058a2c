"""Rule diffraction_scan_figure: the crystal-system map, its confidence and the truth."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import matplotlib

matplotlib.use("Agg")

from grainflow.figures_diffraction import scan_map_figure
from grainflow.io import atomic_path
from grainflow.scan import read_scan_map, read_scan_truth

probs, labels, attrs = read_scan_map(snakemake.input.store)
truth = read_scan_truth(snakemake.input.scan)
fig = scan_map_figure(probs, labels, truth=truth, scan_step_um=attrs["scan_step_um"],
                      title=f"{snakemake.wildcards.arch}, ensemble of {attrs['models']} models")
with atomic_path(snakemake.output.fig) as tmp:
    fig.savefig(tmp, dpi=150, format="png")
