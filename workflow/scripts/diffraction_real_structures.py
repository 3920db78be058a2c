"""Rule diffraction_real_structures: a fold ensemble scored per real structure and zone axis."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.diffraction.structures import score_real_structures
from grainflow.io.staging import atomic_path

predictions, table, summary = score_real_structures(
    snakemake.input.patterns,
    snakemake.input.models,
    snakemake.input.abstention,
    coverage=snakemake.params.coverage,
    device=snakemake.params.device,
)
for name, frame in {"predictions": predictions, "table": table, "summary": summary}.items():
    with atomic_path(getattr(snakemake.output, name)) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
print(summary.to_string(index=False), file=sys.stderr)
