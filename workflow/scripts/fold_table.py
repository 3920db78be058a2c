"""Rule fold_table: images, specimens and sessions per fold, as a table and a figure."""

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.figures import save_figure
from grainflow.io.staging import atomic_path
from grainflow.splits import fold_figure, fold_table, read_manifest

group_by = snakemake.params.group_by
manifest = read_manifest(snakemake.input.manifest, group_by=group_by)
table = fold_table(manifest)
with atomic_path(snakemake.output.table) as tmp:
    table.to_csv(tmp, sep="\t", index=False)
title = f"{snakemake.wildcards.task}: folds grouped by {group_by}"
fig = fold_figure(table, title=title, sha256=snakemake.params.sha256)
save_figure(fig, snakemake.output.fig)
