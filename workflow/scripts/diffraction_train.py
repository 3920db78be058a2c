"""Rule diffraction_train: the classifier of one fold (validated on crystals of other folds)."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

from pathlib import Path

from grainflow.diffraction.train import train_diffraction_fold

train_diffraction_fold(
    snakemake.input.manifest,
    int(snakemake.wildcards.fold),
    arch=snakemake.params.arch,
    shared=snakemake.params.shared,
    pretrained=snakemake.input.pretrained[0] if snakemake.input.pretrained else "",
    best_path=snakemake.output.best,
    history_path=snakemake.output.history,
    last_path=Path(snakemake.output.best).with_name("last.pt"),
    val_specimens_per_class=snakemake.params.val_specimens_per_class,
    validation_seed=snakemake.params.validation_seed,
    rotate=snakemake.params.rotate,
    representation=snakemake.params.representation,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
)
