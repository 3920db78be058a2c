"""Rule split: the GroupKFold manifest of a task, with its SHA-256 beside it."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from grainflow.splits import fold_table, make_manifest, write_manifest

manifest = make_manifest(
    snakemake.input.augmented,
    folds=snakemake.params.folds,
    group_by=snakemake.params.group_by,
)
digest = write_manifest(manifest, snakemake.output.manifest)
print(fold_table(manifest).to_string(index=False), file=sys.stderr)
print(f"{len(manifest)} images; SHA-256 {digest}", file=sys.stderr)
