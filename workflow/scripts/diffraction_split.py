"""Rule diffraction_split: folds over crystals, crystal systems balanced (StratifiedGroupKFold)."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from grainflow.splits import fold_table, make_manifest, write_manifest

manifest = make_manifest(
    snakemake.input.specimens,
    folds=snakemake.params.folds,
    group_by="specimen",
    stratify_by="crystal_system",
)
digest = write_manifest(manifest, snakemake.output.manifest)
print(fold_table(manifest).to_string(index=False), file=sys.stderr)
print(manifest.groupby(["fold", "crystal_system"]).size().to_string(), file=sys.stderr)
print(f"{len(manifest)} patterns; SHA-256 {digest}", file=sys.stderr)
