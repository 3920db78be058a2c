# Synthetic micrographs with free labels: one job per specimen.

from grainflow.synth.stats import summarize_statistics


rule synthesize:
    output:
        h5="results/synthetic/{task}/{specimen}.h5",
    log:
        "logs/synthesize/{task}/{specimen}.log",
    benchmark:
        "benchmarks/rules/synthesize/{task}/{specimen}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        settings=lambda wc: config["synthesize"][wc.task],
        seed=lambda wc: job_seed("synthesize", wc.task, wc.specimen),
    script:
        "../scripts/synthesize.py"


rule synthetic_examples:
    input:
        grains=lambda wc: synthetic_files("grains")[:2] if "grains" in TASKS else [],
        phases=lambda wc: synthetic_files("phases")[:2] if "phases" in TASKS else [],
        nanoparticles=lambda wc: (
            synthetic_files("nanoparticles")[:2] if "nanoparticles" in TASKS else []
        ),
        kernels=lambda wc: synthetic_files("kernels")[:1],
    output:
        fig=report(
            "results/figures/synthetic_examples.png",
            caption="../report/synthetic_examples.rst",
            category="1. Synthetic data",
        ),
    log:
        "logs/synthetic_examples.log",
    conda:
        "../../environment.yml"
    params:
        per_task=3,
    script:
        "../scripts/synthetic_examples.py"


rule synthetic_statistics:
    input:
        grains=lambda wc: synthetic_files("grains") if "grains" in TASKS else [],
        phases=lambda wc: synthetic_files("phases") if "phases" in TASKS else [],
    output:
        table=report(
            "results/tables/synthetic_statistics.tsv",
            caption="../report/synthetic_statistics.rst",
            category="1. Synthetic data",
        ),
    log:
        "logs/synthetic_statistics.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/synthetic_statistics.py"


rule synthetic_statistics_figure:
    input:
        table="results/tables/synthetic_statistics.tsv",
    output:
        fig=report(
            "results/figures/synthetic_statistics.png",
            caption="../report/synthetic_statistics_figure.rst",
            category="1. Synthetic data",
        ),
    log:
        "logs/synthetic_statistics_figure.log",
    conda:
        "../../environment.yml"
    params:
        # read by the caption: numbers in captions come from the results
        summary=lambda wc, input: summarize_statistics(input.table),
    script:
        "../scripts/synthetic_statistics_figure.py"


all_targets.extend(
    [
        "results/figures/synthetic_examples.png",
        "results/figures/synthetic_statistics.png",
    ]
)
