"""Rule anatomy_numbers: every number the CNN-anatomy captions quote, as JSON."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

import json

from grainflow.anatomy.studies import anatomy_numbers
from grainflow.io.staging import atomic_path

numbers = anatomy_numbers(**snakemake.params.settings, seeds=snakemake.params.seeds)
with atomic_path(snakemake.output.json) as tmp:
    tmp.write_text(json.dumps(numbers, indent=2, ensure_ascii=False) + "\n")
