# Real image stacks (config/stacks.tsv): each row of an image task becomes an OME-Zarr store.

import re

from grainflow.stacks.sheet import sheet_inputs, sheet_row

IMPORT_STACK = config["import_stack"]


wildcard_constraints:
    stack="|".join(re.escape(name) for name in STACKS.index) or "(?!)",


rule import_stack:
    input:
        image=lambda wc: sheet_inputs(STACKS, wc.stack, "path"),
        ground_truth=lambda wc: sheet_inputs(STACKS, wc.stack, "ground_truth"),
    output:
        store=directory("results/stacks/{stack}.ome.zarr"),
    log:
        "logs/import_stack/{stack}.log",
    benchmark:
        "benchmarks/rules/import_stack/{stack}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        sheet=lambda wc: sheet_row(STACKS, wc.stack),
        chunk_px=IMPORT_STACK["chunk_px"],
        pyramid_min_px=IMPORT_STACK["pyramid_min_px"],
        block_px=IMPORT_STACK["block_px"],
    script:
        "../scripts/import_stack.py"


# image stacks only: a diffraction stack's frames are read where they are (diffraction.smk)
all_targets.extend(
    expand(
        "results/stacks/{stack}.ome.zarr",
        stack=STACKS.index[STACKS["task"] != "diffraction"],
    )
)
