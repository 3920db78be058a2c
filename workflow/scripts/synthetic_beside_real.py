"""Rule synthetic_beside_real: crops of a real stack, as the networks read them, beside
synthetic training images of its task at the same size in network pixels."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.figures import save_figure
from grainflow.figures.scale import synthetic_beside_real

fig = synthetic_beside_real(
    snakemake.input.stack,
    list(snakemake.input.specimens),
    scale=snakemake.params.scale,
)
save_figure(fig, snakemake.output.figure, dpi=130)
print(snakemake.params.headline, file=sys.stderr)
