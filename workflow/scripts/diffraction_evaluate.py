"""Rule diffraction_evaluate: every fold's model on its held-out crystals, and the tables."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

import re

from grainflow.diffraction.evaluate import evaluate_classifier
from grainflow.io.staging import atomic_path

checkpoints = {int(re.search(r"fold(\d+)", p).group(1)): p for p in snakemake.input.models}
predictions, tables = evaluate_classifier(
    snakemake.input.manifest,
    checkpoints,
    bins=snakemake.params.bins,
    dose_bin_count=snakemake.params.dose_bins,
    device=snakemake.params.device,
)
for name, table in {"predictions": predictions, **tables}.items():
    with atomic_path(getattr(snakemake.output, name)) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
print(tables["summary"].to_string(index=False), file=sys.stderr)
print(tables["per_class"].to_string(index=False), file=sys.stderr)
