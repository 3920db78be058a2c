# Synthetic micrographs with free labels: one job per specimen.


def synthetic_summary(table):
    """Figures for the captions: worst relative error of the requested statistics."""
    import pandas as pd

    t = pd.read_csv(table, sep="\t")
    out = {"specimens": len(t)}
    g = t[t.task == "grains"]
    if len(g):
        err = (g.measured_diameter_px / g.requested_diameter_px - 1).abs().max()
        out["grain_diameter_max_error_pct"] = round(100 * float(err), 1)
    p = t[t.task == "phases"]
    if len(p):
        err = (p.measured_area_fraction - p.requested_area_fraction).abs().max()
        out["area_fraction_max_error"] = round(float(err), 3)
    return out


rule synthesize:
    output:
        h5="results/synthetic/{task}/{specimen}.h5",
    log:
        "logs/synthesize/{task}/{specimen}.log",
    benchmark:
        "benchmarks/rules/synthesize/{task}/{specimen}.tsv"
    params:
        settings=lambda wc: config["synthesize"][wc.task],
        seed=lambda wc: job_seed("synthesize", wc.task, wc.specimen),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    script:
        "../scripts/synthesize.py"


rule synthetic_examples:
    input:
        grains=lambda wc: synthetic_files("grains")[:2] if "grains" in TASKS else [],
        phases=lambda wc: synthetic_files("phases")[:2] if "phases" in TASKS else [],
        kernels=lambda wc: synthetic_files("kernels")[:1],
    output:
        fig=report(
            "results/figures/synthetic_examples.png",
            caption="../report/synthetic_examples.rst",
            category="Synthetic data",
        ),
    log:
        "logs/synthetic_examples.log",
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
            category="Synthetic data",
        ),
    log:
        "logs/synthetic_statistics.log",
    script:
        "../scripts/synthetic_statistics.py"


rule synthetic_statistics_figure:
    input:
        table="results/tables/synthetic_statistics.tsv",
    output:
        fig=report(
            "results/figures/synthetic_statistics.png",
            caption="../report/synthetic_statistics_figure.rst",
            category="Synthetic data",
        ),
    log:
        "logs/synthetic_statistics_figure.log",
    params:
        # read by the caption: numbers in captions come from the results
        summary=lambda wc, input: synthetic_summary(input.table),
    script:
        "../scripts/synthetic_statistics_figure.py"


all_targets.extend(
    [
        "results/figures/synthetic_examples.png",
        "results/figures/synthetic_statistics.png",
    ]
)
