"""Rule provenance: config, package versions, seeds, git commit, hardware and run times."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.report.provenance import write_provenance

record = write_provenance(
    html_path=snakemake.output.page,
    runtimes_path=snakemake.output.runtimes,
    config_path=snakemake.output.config,
    json_path=snakemake.output.record,
    config=snakemake.params.config,
    seed_jobs=snakemake.params.seed_jobs,
    benchmark_root=snakemake.params.benchmark_root,
    benchmark_patterns=snakemake.params.benchmark_patterns,
    # the workflow's own repository (the scripts live in it), not the working directory
    repository=snakemake.scriptdir,
)
print(f"git: {record['git']}; {len(record['jobs'])} benchmarked jobs", file=sys.stderr)
