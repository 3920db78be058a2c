"""Rule split: the GroupKFold manifest of a task, with its SHA-256 beside it."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.splits import fold_table, make_manifest, write_manifest

settings = snakemake.params.settings
manifest = make_manifest(snakemake.input.specimens, **settings)
digest = write_manifest(manifest, snakemake.output.manifest)
print(fold_table(manifest).to_string(index=False), file=sys.stderr)
if settings["stratify_by"]:
    print(manifest.groupby(["fold", settings["stratify_by"]]).size().to_string(), file=sys.stderr)
print(f"{len(manifest)} images; SHA-256 {digest}", file=sys.stderr)
