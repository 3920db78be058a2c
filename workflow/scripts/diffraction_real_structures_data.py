"""Rule diffraction_real_structures_data: patterns of the real-structure table, and the table."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.diffraction.structures import real_structure_samples, real_structure_table
from grainflow.io.hdf5 import write_specimen
from grainflow.io.staging import atomic_path

samples = real_structure_samples(
    snakemake.params.settings,
    patterns_per_zone=snakemake.params.patterns_per_zone,
    ring_patterns=snakemake.params.ring_patterns,
    seed=snakemake.params.seed,
)
write_specimen(snakemake.output.h5, samples, task="diffraction", specimen="real_structures")
with atomic_path(snakemake.output.table) as tmp:
    real_structure_table().to_csv(tmp, sep="\t", index=False)
print(f"wrote {len(samples)} patterns to {snakemake.output.h5}", file=sys.stderr)
