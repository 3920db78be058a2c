"""Rule diffraction_abstention: thresholds chosen on validation crystals, accuracy against coverage."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

import re

import pandas as pd

from grainflow.diffraction.evaluate import abstention_tables, predict_validation
from grainflow.io.staging import atomic_path
from grainflow.splits import read_manifest

manifest = read_manifest(snakemake.input.manifest)
validation = pd.concat(
    [
        predict_validation(
            path,
            manifest,
            int(re.search(r"fold(\d+)", path).group(1)),
            val_specimens_per_class=snakemake.params.val_specimens_per_class,
            validation_seed=snakemake.params.validation_seed,
            device=snakemake.params.device,
        )
        for path in snakemake.input.models
    ],
    ignore_index=True,
)
predictions = pd.read_csv(snakemake.input.predictions, sep="\t")
curve, abstention = abstention_tables(predictions, validation, coverage=snakemake.params.coverage)
for name, table in {"validation": validation, "coverage": curve, "abstention": abstention}.items():
    with atomic_path(getattr(snakemake.output, name)) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
print(abstention.to_string(index=False), file=sys.stderr)
