"""Rule diffraction_transfer: one transfer strategy trained on n labelled patterns per class."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from pathlib import Path

import pandas as pd

from grainflow.diffraction.train import classifier_config, transfer_run
from grainflow.io.staging import atomic_path
from grainflow.splits import read_manifest

t = snakemake.params.transfer
_, _, config = classifier_config(
    {"model": "resnet18", "lr": t["lr"]},
    shared=snakemake.params.shared,
    threads=snakemake.threads,
    seed=snakemake.params.seed,
)
row = transfer_run(
    read_manifest(snakemake.input.manifest),
    int(snakemake.wildcards.fold),
    strategy=snakemake.wildcards.strategy,
    n_per_class=int(snakemake.wildcards.n),
    steps=t["steps"],
    config=config,
    pretrained=snakemake.input.pretrained[0] if snakemake.input.pretrained else "",
    out_dir=Path(snakemake.output.best).parent,
    val_specimens_per_class=snakemake.params.val_specimens_per_class,
    validation_seed=snakemake.params.validation_seed,
    rotate=snakemake.params.rotate,
    representation=snakemake.params.representation,
    device=snakemake.params.device,
    seed=snakemake.params.seed,
)
with atomic_path(snakemake.output.row) as tmp:
    pd.DataFrame([row]).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
print(row, file=sys.stderr)
