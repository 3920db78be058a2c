"""Rule diffraction_pretrain_data: a large labelled set of patterns of crystals of its own."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.diffraction.simulate import pretraining_samples
from grainflow.io.hdf5 import write_specimen

samples = pretraining_samples(
    snakemake.params.settings,
    crystals=snakemake.params.crystals,
    images_per_crystal=snakemake.params.images_per_crystal,
    seed=snakemake.params.seed,
    progress=True,
)
write_specimen(snakemake.output.h5, samples, task="diffraction", specimen="pretrain")
print(f"wrote {len(samples)} patterns to {snakemake.output.h5}", file=sys.stderr)
