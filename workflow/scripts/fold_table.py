"""Rule fold_table: images, specimens and sessions per fold, as a table and a figure."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from grainflow.io.staging import atomic_path
from grainflow.splits import fold_figure, fold_table, read_manifest

group_by = snakemake.params.group_by
manifest = read_manifest(snakemake.input.manifest, group_by=group_by)
table = fold_table(manifest)
with atomic_path(snakemake.output.table) as tmp:
    table.to_csv(tmp, sep="\t", index=False)
title = f"{snakemake.wildcards.task}: folds grouped by {group_by}"
fig = fold_figure(table, title=title, sha256=snakemake.params.sha256)
with atomic_path(snakemake.output.fig) as tmp:
    fig.savefig(tmp, dpi=150, format="png")
