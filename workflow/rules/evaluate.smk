# Scoring segmentations against ground truth: the classical baseline per fold,
# then per-model aggregation into cross-validated tables and a figure.

from grainflow.evaluation.crossval import headline_scores


rule baseline:
    input:
        manifest="results/splits/{task}.tsv",
        sha256="results/splits/{task}.tsv.sha256",
        specimens=lambda wc: synthetic_files(wc.task),
    output:
        metrics="results/metrics/{task}/classical/fold{fold}.tsv",
        info="results/metrics/{task}/classical/fold{fold}.json",
    log:
        "logs/baseline/{task}/fold{fold}.log",
    benchmark:
        "benchmarks/rules/baseline/{task}/fold{fold}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        fold=lambda wc: int(wc.fold),
        grid=lambda wc: config["evaluation"]["baseline"][wc.task],
        max_fit_images=config["evaluation"]["baseline"]["max_fit_images"],
        tolerance_px=config["evaluation"]["boundary_tolerance_px"],
        iou_threshold=config["evaluation"]["match_iou"],
        pixel_size_um=config["evaluation"]["pixel_size_um"],
        seed=lambda wc: job_seed("baseline", wc.task, wc.fold),
    script:
        "../scripts/baseline.py"


rule aggregate_metrics:
    input:
        folds=lambda wc: expand(
            "results/metrics/{task}/{model}/fold{fold}.tsv",
            task=wc.task,
            model=wc.model,
            fold=range(config["splits"]["folds"]),
        ),
    output:
        cv=report(
            "results/metrics/{task}/{model}/cv.tsv",
            caption="../report/metrics_cv.rst",
            category="5. Cross-validated results",
            subcategory="{task}",
        ),
        specimens="results/metrics/{task}/{model}/specimens.tsv",
    log:
        "logs/aggregate_metrics/{task}/{model}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/aggregate_metrics.py"


rule metric_distributions:
    input:
        # a network's figure shows the classical baseline beside it
        folds=lambda wc: expand(
            "results/metrics/{task}/{model}/fold{fold}.tsv",
            task=wc.task,
            model=sorted({wc.model, "classical"}),
            fold=range(config["splits"]["folds"]),
        ),
    output:
        fig=report(
            "results/figures/metric_distributions_{task}_{model}.png",
            caption="../report/metric_distributions.rst",
            category="5. Cross-validated results",
            subcategory="{task}",
        ),
    log:
        "logs/metric_distributions/{task}/{model}.log",
    conda:
        "../../environment.yml"
    params:
        tolerance_px=config["evaluation"]["boundary_tolerance_px"],
        iou_threshold=config["evaluation"]["match_iou"],
        # read by the caption: numbers in captions come from the results
        headline=lambda wc, input: headline_scores(
            [f for f in input.folds if f"/{wc.model}/" in f], task=wc.task
        ),
    script:
        "../scripts/metric_distributions.py"


all_targets.extend(
    [
        *(f"results/metrics/{task}/classical/cv.tsv" for task in TASKS),
        *(
            f"results/figures/metric_distributions_{task}_classical.png"
            for task in TASKS
        ),
    ]
)
