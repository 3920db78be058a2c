"""Rule import_stack: one real image stack into results/stacks/{stack}.ome.zarr (OME-Zarr)."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.stacks.importer import import_stack

sheet, params = snakemake.params.sheet, snakemake.params
summary = import_stack(
    sheet["path"],
    snakemake.output.store,
    stack=snakemake.wildcards.stack,
    task=sheet["task"],
    pixel_size_um=sheet["pixel_size_um"],
    ground_truth=sheet["ground_truth"],
    group=sheet["group"],
    description=sheet["description"],
    particles=sheet["particles"],
    chunk=params.chunk_px,
    pyramid_min_px=params.pyramid_min_px,
    block=params.block_px,
)
print(f"levels (rows, cols): {summary['levels']}", file=sys.stderr)
