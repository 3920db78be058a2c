"""Rule synthetic_statistics: requested against measured statistics, per specimen."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.io.staging import atomic_path
from grainflow.synth.stats import specimen_statistics

table = specimen_statistics([*snakemake.input.grains, *snakemake.input.phases])
with atomic_path(snakemake.output.table) as tmp:
    table.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
