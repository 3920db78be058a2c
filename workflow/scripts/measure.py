"""Rule measure: grain sizes, area fractions and (with ground truth) scores of one real stack."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.evaluation.crossval import write_tsv
from grainflow.evaluation.real import measure_stack

per_plane, sizes = measure_stack(
    snakemake.input.stack,
    dict(zip(snakemake.params.models, snakemake.input.inference)),
    tolerance_px=snakemake.params.tolerance_px,
    iou_threshold=snakemake.params.iou_threshold,
    # the synthetic trust references, one per model (none without the trust map)
    references=dict(zip(snakemake.params.models, snakemake.input.references)),
    flag_factor=snakemake.params.flag_factor,
)
write_tsv(per_plane, snakemake.output.metrics)
write_tsv(sizes, snakemake.output.sizes)
print(per_plane[per_plane["plane"] == "all"].T.to_string(), file=sys.stderr)
