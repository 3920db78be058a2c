"""Rule training_curves: loss, validation score and learning rate per epoch, every fold."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.figures import save_figure
from grainflow.figures.training import training_curves
from grainflow.tasks import TASKS

label = TASKS[snakemake.wildcards.task].score_label
save_figure(training_curves(snakemake.input.histories, score_label=label), snakemake.output.fig)
