"""Rule import_stack: one real image stack into results/stacks/{stack}.ome.zarr (OME-Zarr)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

import logging

logging.basicConfig(
    stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
)

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
    chunk=params.chunk_px,
    pyramid_min_px=params.pyramid_min_px,
    block=params.block_px,
)
print(f"levels (rows, cols): {summary['levels']}", file=sys.stderr)
