"""Rule summary_table: per task, the best network, the classical baseline and the real data."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.io.staging import atomic_path
from grainflow.report.summary import summary_html, summary_table, write_summary

table = summary_table(
    list(snakemake.input.cv),
    real=list(snakemake.input.real),
    diffraction=dict(zip(snakemake.params.diffraction_archs, snakemake.input.diffraction)),
)
write_summary(table, snakemake.output.table)
with atomic_path(snakemake.output.page) as tmp:
    tmp.write_text(summary_html(table), encoding="utf-8")
print(table.to_string(), file=sys.stderr)
