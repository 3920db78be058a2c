"""Rule adapt: the fold models adapted, without labels, to one real stack."""

import json
import logging
from pathlib import Path

from grainflow.logs import log_to

log_to(snakemake.log[0])

import numpy as np
import pandas as pd
import torch

from grainflow.adaptation.planes import read_planes
from grainflow.adaptation.unsupervised import AdaptSettings, adapt_stack
from grainflow.checkpoint import (
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from grainflow.evaluation.baseline import apply_baseline
from grainflow.evaluation.crossval import write_tsv
from grainflow.inference.scale import read_scale
from grainflow.runtime import resolve_device
from grainflow.tasks import TASKS
from grainflow.training.data import fold_datasets
from grainflow.training.validation import primary_score, segmentation_metrics

p = snakemake.params
task = p.task
torch.set_num_threads(snakemake.threads)
device = resolve_device(p.device)
checkpoints = [load_checkpoint(path) for path in snakemake.input.checkpoints]
percentiles = tuple(checkpoints[0]["config"].get("norm_percentiles", (1.0, 99.0)))
polarity = checkpoints[0]["config"].get("polarity", "learned")
level = read_scale(snakemake.input.scale)["level"] if snakemake.input.scale else 0
planes = read_planes(
    snakemake.input.stack,
    level=level,
    norm_percentiles=percentiles,
    polarity=polarity,
    with_truth=False,
)
folds = [
    fold_datasets(
        snakemake.input.manifest,
        k,
        task=task,
        norm_percentiles=percentiles,
        polarity=polarity,
    )
    for k in range(len(checkpoints))
]
metrics = segmentation_metrics(task, tolerance_px=p.tolerance_px)
score = primary_score(task)


@torch.inference_mode()
def validation(model, fold):
    """The primary score of ``model`` on fold ``fold``'s held-out synthetic images."""
    model.eval()
    images = torch.stack([folds[fold][1][i][0] for i in range(len(folds[fold][1]))]).to(device)
    truth = np.stack([folds[fold][1][i][1].numpy() for i in range(len(folds[fold][1]))])
    pred = torch.cat([model(images[s : s + 16]).argmax(1) for s in range(0, len(images), 16)])
    return float(score(metrics(truth, pred.cpu().numpy().astype(np.uint8))))


settings = AdaptSettings(**p.settings)
teacher = None
if settings.teacher != "ensemble":  # the baseline fitted on the synthetic training folds
    params = json.loads(Path(snakemake.input.classical).read_text())["params"]
    target = TASKS[task].target
    teacher = [  # on the planes in their own tones, as the baseline was fitted
        apply_baseline(task, np.clip(planes.as_imaged(z), 0, 1), params)[target]
        for z in range(len(planes.images))
    ]
models, records = adapt_stack(
    planes,
    [model_from_checkpoint(c).to(device) for c in checkpoints],
    [train for train, _ in folds],
    validation,
    settings,
    norm_percentiles=percentiles,
    seed=p.seed,
    teacher_labels=teacher,
    cpu_amp=checkpoints[0]["config"].get("cpu_amp", "off"),  # the precision the folds trained in
    log=logging.getLogger("grainflow.adapt").info,
)
for model, source, path, record in zip(models, checkpoints, snakemake.output.checkpoints, records):
    extra = {**source.get("extra", {}), "adapted_to": planes.name, "adaptation": record}
    save_checkpoint(
        path,
        make_checkpoint(
            model=model.cpu(),
            model_name=source["model_name"],
            model_kwargs=source["model_kwargs"],
            epoch=source.get("epoch", 0),
            step=source.get("step", 0),
            config=source.get("config"),
            extra=extra,
            with_rng=False,
        ),
    )
write_tsv(pd.DataFrame(records), snakemake.output.table)
