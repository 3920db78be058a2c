"""Rule diffraction_scan_map: classify every pattern of a scan; the map as OME-Zarr."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.diffraction.scan import scan_map

summary = scan_map(
    snakemake.input.scan,
    snakemake.output.store,
    snakemake.input.models,
    modality=snakemake.params.modality,
    size=snakemake.params.size,
    scan_step_um=snakemake.params.scan_step_um,
    device=snakemake.params.device,
)
print(summary, file=sys.stderr)
