"""Rule diffraction_stack_figure: the crystal-system map of a diffraction stack and its confidence."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import matplotlib

matplotlib.use("Agg")

from grainflow.diffraction.figures import scan_map_figure
from grainflow.diffraction.scan import read_scan_map
from grainflow.figures import save_figure

probs, labels, attrs = read_scan_map(snakemake.input.store)
kept = (
    "never abstaining" if attrs["threshold"] is None else f"white: abstained, {attrs['abstained']}"
)
what = "scan" if attrs["is_scan"] else "frames in a row"
fig = scan_map_figure(
    probs,
    labels,
    scan_step_um=attrs["scan_step_um"],
    title=f"{snakemake.wildcards.stack} ({what}): {snakemake.params.classifier}, "
    f"ensemble of {attrs['models']} models; {kept}",
)
save_figure(fig, snakemake.output.fig)
