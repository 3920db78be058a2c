"""Rule synthesize: all images of one specimen, with labels, into one HDF5 file."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.io.hdf5 import write_specimen
from grainflow.synth.specimen import synthesize_specimen

task, specimen = snakemake.wildcards.task, snakemake.wildcards.specimen
samples, specimen_params = synthesize_specimen(
    task, specimen, snakemake.params.settings, seed=snakemake.params.seed, progress=True
)
write_specimen(
    snakemake.output.h5, samples, task=task, specimen=specimen, specimen_params=specimen_params
)
print(f"wrote {len(samples)} images of {task}/{specimen} to {snakemake.output.h5}", file=sys.stderr)
