# Offline augmentation, leakage-proof split manifests, and the leak they prevent.

from grainflow.leakage import summarize_leakage
from grainflow.splits import manifest_sha256

# the augmented file of every specimen of a task
AUGMENTED_FILE = "results/augmented/{task}/{specimen}.h5"


rule augment:
    input:
        h5="results/synthetic/{task}/{specimen}.h5",
    output:
        h5="results/augmented/{task}/{specimen}.h5",
    log:
        "logs/augment/{task}/{specimen}.log",
    benchmark:
        "benchmarks/rules/augment/{task}/{specimen}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        augment=config["augment"],
        seed=lambda wc: job_seed("augment", wc.task, wc.specimen),
    script:
        "../scripts/augment.py"


rule split:
    input:
        specimens=split_inputs,
    output:
        manifest="results/splits/{task}.tsv",
        sha256="results/splits/{task}.tsv.sha256",
    log:
        "logs/split/{task}.log",
    conda:
        "../../environment.yml"
    params:
        settings=lambda wc: split_settings(wc.task),
    script:
        "../scripts/split.py"


rule fold_table:
    input:
        manifest="results/splits/{task}.tsv",
        sha256="results/splits/{task}.tsv.sha256",
    output:
        table=report(
            "results/tables/folds_{task}.tsv",
            caption="../report/fold_table.rst",
            category="3. Augmentation and splits",
            subcategory="{task}",
        ),
        fig=report(
            "results/figures/folds_{task}.png",
            caption="../report/fold_figure.rst",
            category="3. Augmentation and splits",
            subcategory="{task}",
        ),
    log:
        "logs/fold_table/{task}.log",
    conda:
        "../../environment.yml"
    params:
        group_by=config["splits"]["group_by"],
        # read by the caption: the hash of the manifest this table describes
        sha256=lambda wc, input: manifest_sha256(input.manifest),
    script:
        "../scripts/fold_table.py"


rule augmentation_figure:
    input:
        h5=lambda wc: AUGMENTED_FILE.format(
            task=wc.task, specimen=specimens(wc.task)[0]
        ),
    output:
        fig=report(
            "results/figures/augmentation_{task}.png",
            caption="../report/augmentation_figure.rst",
            category="3. Augmentation and splits",
            subcategory="{task}",
        ),
    log:
        "logs/augmentation_figure/{task}.log",
    conda:
        "../../environment.yml"
    params:
        columns=4,
        # read by the caption
        copies=config["augment"]["copies"],
        transforms=config["augment"]["transforms"],
    script:
        "../scripts/augmentation_figure.py"


rule leakage:
    input:
        manifest="results/splits/{task}.tsv",
        sha256="results/splits/{task}.tsv.sha256",
        augmented=lambda wc: expand(
            AUGMENTED_FILE, task=wc.task, specimen=specimens(wc.task)
        ),
    output:
        table="results/tables/leakage_{task}.tsv",
    log:
        "logs/leakage/{task}.log",
    benchmark:
        "benchmarks/rules/leakage/{task}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    params:
        trees=config["splits"]["leakage_trees"],
        seed=lambda wc: job_seed("leakage", wc.task),
    script:
        "../scripts/leakage.py"


rule leakage_figure:
    input:
        table="results/tables/leakage_{task}.tsv",
    output:
        fig=report(
            "results/figures/leakage_{task}.png",
            caption="../report/leakage_figure.rst",
            category="3. Augmentation and splits",
            subcategory="{task}",
        ),
    log:
        "logs/leakage_figure/{task}.log",
    conda:
        "../../environment.yml"
    params:
        # read by the caption: numbers in captions come from the results
        summary=lambda wc, input: summarize_leakage(input.table),
        group_by=config["splits"]["group_by"],
    script:
        "../scripts/leakage_figure.py"


all_targets.extend(
    [
        *expand("results/figures/augmentation_{task}.png", task=TASKS),
        *expand("results/figures/folds_{task}.png", task=TASKS),
        *expand("results/figures/leakage_{task}.png", task=TASKS),
    ]
)
