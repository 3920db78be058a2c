"""Rule finetune_curve: few-label fine-tuning on a labelled real stack, GroupKFold over groups."""

import logging

from grainflow.logs import log_to

log_to(snakemake.log[0])

import torch

from grainflow.adaptation.finetune import FinetuneSettings, learning_curve
from grainflow.adaptation.planes import read_planes
from grainflow.checkpoint import load_checkpoint, model_from_checkpoint
from grainflow.evaluation.crossval import write_tsv
from grainflow.figures import save_figure
from grainflow.figures.adaptation import learning_curve_figure
from grainflow.inference.scale import read_scale
from grainflow.models.registry import build_model
from grainflow.runtime import resolve_device

p = snakemake.params
torch.set_num_threads(snakemake.threads)
checkpoint = load_checkpoint(snakemake.input.checkpoint)
level = read_scale(snakemake.input.scale)["level"] if snakemake.input.scale else 0
planes = read_planes(
    snakemake.input.stack,
    level=level,
    norm_percentiles=checkpoint["config"].get("norm_percentiles", (1.0, 99.0)),
    polarity=checkpoint["config"].get("polarity", "learned"),
)
inits = {
    "synthetic": lambda: model_from_checkpoint(checkpoint),
    "random": lambda: build_model(checkpoint["model_name"], **checkpoint["model_kwargs"]),
}
table = learning_curve(
    planes,
    {name: inits[name] for name in p.settings["inits"]},
    FinetuneSettings(**{k: p.settings[k] for k in ("steps", "batch_size", "crop_px", "lr")}),
    arch=snakemake.wildcards.arch,
    sizes=p.settings["images"],
    n_folds=p.settings["folds"],
    seed=p.seed,
    device=resolve_device(p.device),
    cpu_amp=checkpoint["config"].get("cpu_amp", "off"),  # the precision the model trained in
    log=logging.getLogger("grainflow.finetune_curve").info,
)
write_tsv(table, snakemake.output.table)
save_figure(learning_curve_figure(table), snakemake.output.figure)
