"""Rule diffraction_pretrain: a ResNet-18 pretrained on the large synthetic set."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

from pathlib import Path

from grainflow.diffraction.data import TARGET_NAMES
from grainflow.diffraction.train import classifier_config, pretrain

p = dict(snakemake.params.pretrain)
arch = {"model": "resnet18", "epochs": p["epochs"], "lr": p["lr"]}
_, kwargs, config = classifier_config(
    arch, shared=snakemake.params.shared, threads=snakemake.threads, seed=snakemake.params.seed
)
pretrain(
    snakemake.input.h5,
    model_kwargs=kwargs,
    config=config,
    best_path=snakemake.output.best,
    history_path=snakemake.output.history,
    last_path=Path(snakemake.output.best).with_name("last.pt"),
    target=TARGET_NAMES[p["target"]],
    val_fraction=p["val_fraction"],
    rotate=snakemake.params.rotate,
    representation=snakemake.params.representation,
    seed=snakemake.params.seed,
)
