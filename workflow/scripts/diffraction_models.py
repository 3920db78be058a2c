"""Rule diffraction_models: which classifier to use for which pattern kind."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.diffraction.evaluate import model_choice
from grainflow.io.staging import atomic_path

table = model_choice(dict(zip(snakemake.params.classifiers, snakemake.input.breakdown)))
with atomic_path(snakemake.output.table) as tmp:
    table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
