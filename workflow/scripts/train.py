"""Rule train: one fold's network, trained on the other folds' specimens."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.training.config import arch_settings
from grainflow.training.distributed import world_size_for
from grainflow.training.loop import train_fold
from grainflow.training.validation import primary_score, segmentation_metrics

p = snakemake.params
task = snakemake.wildcards.task
name, model_kwargs, config = arch_settings(
    p.arch, shared=p.shared, threads=snakemake.threads, seed=p.seed
)


train_fold(
    snakemake.input.manifest,
    p.fold,
    task=task,
    model_name=name,
    model_kwargs=model_kwargs,
    config=config,
    best_path=snakemake.output.best,
    history_path=snakemake.output.history,
    last_path=p.last,
    metrics_fn=segmentation_metrics(task, tolerance_px=p.tolerance_px),
    score_fn=primary_score(task),
    # one process per GPU granted to the job and visible to it (1 on the CPU)
    world_size=world_size_for(snakemake.resources.gpu, device=config.device),
)
