"""Rule diffraction_prepare_stack: a diffraction stack's frames at the networks' training scale."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.diffraction.real import prepare_stack

params = snakemake.params
beam_stop = {"auto": None, True: True, False: False}[params.beam_stop]
attrs = prepare_stack(
    params.sheet["path"],
    snakemake.output.store,
    snakemake.output.table,
    name=snakemake.wildcards.stack,
    modality=params.modality,
    settings=params.settings,
    frames_per_block=params.frames_per_block,
    beam_stop=beam_stop,
    scan_step_um=params.sheet["pixel_size_um"],
)
print(attrs, file=sys.stderr)
