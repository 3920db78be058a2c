"""Rule synthetic_statistics: requested against measured statistics, per specimen."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from grainflow.io.staging import atomic_path
from grainflow.synth.stats import specimen_statistics

table = specimen_statistics([*snakemake.input.grains, *snakemake.input.phases])
with atomic_path(snakemake.output.table) as tmp:
    table.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
