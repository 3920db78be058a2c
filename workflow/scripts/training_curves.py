"""Rule training_curves: loss, validation score and learning rate per epoch, every fold."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from grainflow.figures.training import training_curves

label = "boundary F1" if snakemake.wildcards.task == "grains" else "particle-phase IoU"
training_curves(snakemake.input.histories, score_label=label).savefig(snakemake.output.fig, dpi=150)
