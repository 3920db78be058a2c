"""Rule diffraction_scan_figure: the crystal-system map, its confidence and the truth."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.diffraction.figures import scan_map_figure
from grainflow.diffraction.scan import read_scan_map, read_scan_truth
from grainflow.figures import save_figure

probs, labels, attrs = read_scan_map(snakemake.input.store)
truth = read_scan_truth(snakemake.input.scan)
fig = scan_map_figure(
    probs,
    labels,
    truth=truth,
    scan_step_um=attrs["scan_step_um"],
    title=f"{snakemake.wildcards.classifier}, ensemble of {attrs['models']} models",
)
save_figure(fig, snakemake.output.fig)
