"""Rule prediction_overlays: worst and best held-out images, and true against predicted sizes."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

import numpy as np
import pandas as pd

from grainflow.evaluation.crossval import read_metric_tables
from grainflow.evaluation.metrology import grain_size_distribution
from grainflow.figures import save_figure
from grainflow.figures.training import prediction_overlays, size_distributions
from grainflow.inference.labels import labels_from_probability
from grainflow.io.hdf5 import read_probabilities, read_specimen
from grainflow.tasks import TASKS

task = snakemake.wildcards.task
rows = read_metric_tables(snakemake.input.metrics)
probability = {}
for path in snakemake.input.probability:
    probability.update(read_probabilities(path))
samples = {
    s.image_id: s
    for path in snakemake.input.specimens
    for s in read_specimen(path).samples
    if s.image_id in probability
}
predictions = {
    i: labels_from_probability(
        task,
        p,
        split_px=snakemake.params.split_px,
        fill_holes=snakemake.params.fill_holes,
        min_particle_px=snakemake.params.min_particle_px,
    )
    for i, p in probability.items()
}
score = TASKS[task].score
save_figure(
    prediction_overlays(rows, samples, probability, predictions, task=task, score=score),
    snakemake.output.overlays,
    dpi=130,
)
key = TASKS[task].label_names[1]
px = snakemake.params.pixel_size_um

# equivalent-circle diameters (µm) of the objects not cut by the image edge
true = np.concatenate(
    [grain_size_distribution(s.labels[key], pixel_size_um=px)["ecd_um"] for s in samples.values()]
)
pred = np.concatenate(
    [grain_size_distribution(predictions[i][key], pixel_size_um=px)["ecd_um"] for i in samples]
)
what = TASKS[task].object
save_figure(size_distributions(true, pred, unit="µm", what=what), snakemake.output.sizes)
pd.Series({"true_median_um": np.median(true), "pred_median_um": np.median(pred)}).to_csv(
    sys.stderr, sep="\t"
)
