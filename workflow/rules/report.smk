# The report's first and last sections: a summary of every task's headline numbers, and the
# provenance of the run (config, package versions, seeds, git commit, hardware, run times).
# Included last in the Snakefile: the provenance job waits for every other target.

from grainflow.report.summary import summary_headline, summary_table

#: targets of every rule file included before this one
UPSTREAM_TARGETS = list(all_targets)
#: the diffraction architectures whose accuracy the summary quotes (none when it is off)
SUMMARY_DIFF_ARCHS = DIFF_ARCHS if DIFFRACTION["enabled"] else []
#: names of the seeded jobs, as the rules pass them to job_seed (for the provenance page)
SEEDED_JOBS = [
    *(("synthesize", t, s) for t in SYNTH_TASKS for s in specimens(t)),
    *(("augment", t, s) for t in TASKS for s in specimens(t)),
    *(("leakage", t) for t in TASKS),
    *(("baseline", t, f) for t in TASKS for f in range(config["splits"]["folds"])),
    *(
        ("train", t, a, f)
        for t in TASKS
        for a in archs_for(t)
        for f in range(config["splits"]["folds"])
    ),
    *(
        ("trust_reference", t, a)
        for t in dict.fromkeys(STACKS.loc[s, "task"] for s in INFERENCE_STORES)
        for a in archs_for(t)
        if TRUST["enabled"]
    ),
    *(("anatomy", name) for name in ANATOMY_SEED_NAMES),
    *(("finetune_curve", s, ADAPT["finetune"]["arch"]) for s in FINETUNE_STACKS),
    *(
        ("adapt", STACKS.loc[s, "task"], ADAPT["unsupervised"]["arch"], s)
        for s in ADAPT_STACKS
    ),
    *(
        [
            *(("synthesize", "diffraction", s) for s in specimens("diffraction")),
            *(("diffraction_train", a, f) for a in DIFF_ARCHS for f in DIFF_FOLDS),
            ("diffraction_validation",),
            ("diffraction_pretrain_data",),
            ("diffraction_pretrain",),
            ("diffraction_scan_data",),
        ]
        if DIFFRACTION["enabled"]
        else []
    ),
]
#: each rule's benchmark path pattern, to assign the benchmark files to their rules
BENCHMARK_PATTERNS = {
    r.name: str(r.benchmark) for r in workflow.rules if r.benchmark is not None
}


rule summary_table:
    input:
        cv=[
            f"results/metrics/{task}/{model}/cv.tsv"
            for task in TASKS
            for model in [*archs_for(task), "classical"]
        ],
        real=[f"results/metrics/real/{stack}.tsv" for stack in INFERENCE_STORES],
        diffraction=expand(
            "results/metrics/diffraction/{arch}/summary.tsv", arch=SUMMARY_DIFF_ARCHS
        ),
    output:
        table=report(
            "results/tables/summary.tsv",
            caption="../report/summary.rst",
            category="0. Summary",
        ),
        page=report(
            "results/tables/summary.html",
            caption="../report/summary.rst",
            category="0. Summary",
        ),
    log:
        "logs/summary_table.log",
    conda:
        "../../environment.yml"
    params:
        diffraction_archs=SUMMARY_DIFF_ARCHS,
        # read by the caption: numbers in captions come from the results
        headline=lambda wc, input: summary_headline(
            summary_table(
                input.cv,
                real=input.real,
                diffraction=dict(zip(SUMMARY_DIFF_ARCHS, input.diffraction)),
            )
        ),
    script:
        "../scripts/summary_table.py"


rule provenance:
    input:
        # every other target: run times are read once all benchmarked jobs are done
        upstream=UPSTREAM_TARGETS,
        summary="results/tables/summary.tsv",
    output:
        page=report(
            "results/provenance/provenance.html",
            caption="../report/provenance.rst",
            category="8. Provenance",
        ),
        runtimes=report(
            "results/provenance/runtimes.tsv",
            caption="../report/runtimes.rst",
            category="8. Provenance",
        ),
        config=report(
            "results/provenance/config.yaml",
            caption="../report/provenance_config.rst",
            category="8. Provenance",
        ),
        record="results/provenance/provenance.json",
    log:
        "logs/provenance.log",
    conda:
        "../../environment.yml"
    params:
        config=config,
        seed_jobs=SEEDED_JOBS,
        benchmark_root="benchmarks/rules",
        benchmark_patterns=BENCHMARK_PATTERNS,
    script:
        "../scripts/provenance.py"


all_targets.extend(
    [
        "results/tables/summary.html",
        "results/provenance/provenance.html",
    ]
)
