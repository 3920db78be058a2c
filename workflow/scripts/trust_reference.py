"""Rule trust_reference: the ensemble's uncertain fraction on fresh synthetic images."""

import json
import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.inference.reference import trust_reference
from grainflow.io.staging import atomic_path

reference = trust_reference(
    snakemake.wildcards.task,
    snakemake.params.settings,
    list(snakemake.input.checkpoints),
    seed=snakemake.params.seed,
    n_images=snakemake.params.n_images,
    uncertain_above=snakemake.params.uncertain_above,
    device=snakemake.params.device,
    threads=snakemake.threads,
    **snakemake.params.options,
)
with atomic_path(snakemake.output.json) as tmp:
    tmp.write_text(json.dumps(reference, indent=1) + "\n", encoding="utf-8")
print({k: v for k, v in reference.items() if k.startswith("uncertain_fraction_p")}, file=sys.stderr)
