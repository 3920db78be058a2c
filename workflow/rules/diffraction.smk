# Diffraction patterns: crystal-system classification with the DiffractionCNN and
# ResNet-18 by transfer, cross-validated over crystals; pretraining on a large
# synthetic set; transfer strategies against labelled-set size; a scan map.
# The patterns come from the synthesize rule (task "diffraction").

from grainflow.classify import headline, representation_of

# the diffraction block; the fallback keeps the workflow running (task off) until
# config/config.yaml has the key
DIFFRACTION = config.get("diffraction", {"enabled": False})
DIFF_ARCHS = list(DIFFRACTION.get("archs", {}))
PRETRAINED_CKPT = "results/models/diffraction/pretrain/best.pt"


wildcard_constraints:
    arch="|".join(DIFF_ARCHS) or "(?!)",
    strategy="frozen|finetune|full|scratch",
    n=r"\d+",


# the generic split and train rules would also match task "diffraction"
ruleorder: diffraction_split > split
ruleorder: diffraction_train > train


#: where networks run (config training.device)
DEVICE = config.get("training", {}).get("device", "auto")
#: TrainConfig settings of every diffraction model: training's shared ones, then diffraction's
DIFF_SHARED = {**training_shared(), **DIFFRACTION.get("training", {})}
#: the weights ResNet-18 starts from: grainflow's pretraining, none, or a local file
PRETRAINED = {"grainflow": [PRETRAINED_CKPT], "none": []}.get(
    DIFFRACTION.get("pretrained", "none"), [DIFFRACTION.get("pretrained")]
)
DIFF_FOLDS = range(DIFFRACTION.get("folds", 3))
#: the form in which each pattern kind reaches the models (grainflow.classify.representation_of)
REPRESENTATION = representation_of(DIFFRACTION.get("representation"))


rule diffraction_split:
    input:
        specimens=lambda wc: synthetic_files("diffraction"),
    output:
        manifest="results/splits/diffraction.tsv",
        sha256="results/splits/diffraction.tsv.sha256",
    log:
        "logs/diffraction_split.log",
    conda:
        "../../environment.yml"
    params:
        folds=DIFFRACTION.get("folds", 3),
    script:
        "../scripts/diffraction_split.py"


rule diffraction_examples:
    input:
        specimens=lambda wc: synthetic_files("diffraction")[:6],
    output:
        fig=report(
            "results/figures/diffraction_examples.png",
            caption="../report/diffraction_examples.rst",
            category="7. Diffraction",
        ),
    log:
        "logs/diffraction_examples.log",
    conda:
        "../../environment.yml"
    params:
        per_row=6,
        settings=lambda wc: config["synthesize"]["diffraction"],
    script:
        "../scripts/diffraction_examples.py"


rule diffraction_forms:
    input:
        specimens=lambda wc: synthetic_files("diffraction")[:6],
    output:
        fig=report(
            "results/figures/diffraction_forms.png",
            caption="../report/diffraction_forms.rst",
            category="7. Diffraction",
        ),
    log:
        "logs/diffraction_forms.log",
    conda:
        "../../environment.yml"
    params:
        representation=REPRESENTATION,
    script:
        "../scripts/diffraction_forms.py"


rule diffraction_pretrain_data:
    output:
        h5="results/diffraction/pretrain/patterns.h5",
    log:
        "logs/diffraction_pretrain_data.log",
    benchmark:
        "benchmarks/rules/diffraction_pretrain_data.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        settings=lambda wc: config["synthesize"]["diffraction"],
        crystals=DIFFRACTION.get("pretrain", {}).get("crystals"),
        images_per_crystal=DIFFRACTION.get("pretrain", {}).get("images_per_crystal"),
        seed=job_seed("diffraction_pretrain_data"),
    script:
        "../scripts/diffraction_pretrain_data.py"


rule diffraction_pretrain:
    input:
        h5="results/diffraction/pretrain/patterns.h5",
    output:
        best=PRETRAINED_CKPT,
        history="results/models/diffraction/pretrain/history.tsv",
    log:
        "logs/diffraction_pretrain.log",
    benchmark:
        "benchmarks/rules/diffraction_pretrain.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=240,
    params:
        pretrain=DIFFRACTION.get("pretrain"),
        shared=DIFF_SHARED,
        rotate=DIFFRACTION.get("rotate"),
        representation=REPRESENTATION,
        seed=job_seed("diffraction_pretrain"),
    script:
        "../scripts/diffraction_pretrain.py"


rule diffraction_train:
    input:
        manifest="results/splits/diffraction.tsv",
        sha256="results/splits/diffraction.tsv.sha256",
        specimens=lambda wc: synthetic_files("diffraction"),
        pretrained=lambda wc: (
            PRETRAINED if DIFFRACTION["archs"][wc.arch]["model"] == "resnet18" else []
        ),
    output:
        best="results/models/diffraction/{arch}/fold{fold}/best.pt",
        history="results/models/diffraction/{arch}/fold{fold}/history.tsv",
    log:
        "logs/diffraction_train/{arch}/fold{fold}.log",
    benchmark:
        "benchmarks/rules/diffraction_train/{arch}/fold{fold}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=240,
    params:
        arch=lambda wc: DIFFRACTION["archs"][wc.arch],
        shared=DIFF_SHARED,
        rotate=DIFFRACTION.get("rotate"),
        representation=REPRESENTATION,
        val_specimens_per_class=DIFFRACTION.get("val_specimens_per_class"),
        validation_seed=job_seed("diffraction_validation"),
        seed=lambda wc: job_seed("diffraction_train", wc.arch, wc.fold),
    script:
        "../scripts/diffraction_train.py"


rule diffraction_evaluate:
    input:
        manifest="results/splits/diffraction.tsv",
        sha256="results/splits/diffraction.tsv.sha256",
        specimens=lambda wc: synthetic_files("diffraction"),
        models=lambda wc: expand(
            "results/models/diffraction/{arch}/fold{fold}/best.pt",
            arch=wc.arch,
            fold=DIFF_FOLDS,
        ),
    output:
        predictions="results/metrics/diffraction/{arch}/predictions.tsv",
        summary=report(
            "results/metrics/diffraction/{arch}/summary.tsv",
            caption="../report/diffraction_summary.rst",
            category="7. Diffraction",
            subcategory="{arch}",
        ),
        per_class=report(
            "results/metrics/diffraction/{arch}/per_class.tsv",
            caption="../report/diffraction_per_class.rst",
            category="7. Diffraction",
            subcategory="{arch}",
        ),
        confusion="results/metrics/diffraction/{arch}/confusion.tsv",
        reliability="results/metrics/diffraction/{arch}/reliability.tsv",
        breakdown="results/metrics/diffraction/{arch}/breakdown.tsv",
    log:
        "logs/diffraction_evaluate/{arch}.log",
    benchmark:
        "benchmarks/rules/diffraction_evaluate/{arch}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    params:
        bins=DIFFRACTION.get("calibration_bins"),
        dose_bins=DIFFRACTION.get("dose_bins"),
        device=DEVICE,
    script:
        "../scripts/diffraction_evaluate.py"


rule diffraction_confusion:
    input:
        confusion="results/metrics/diffraction/{arch}/confusion.tsv",
        summary="results/metrics/diffraction/{arch}/summary.tsv",
        per_class="results/metrics/diffraction/{arch}/per_class.tsv",
    output:
        fig=report(
            "results/figures/diffraction_confusion_{arch}.png",
            caption="../report/diffraction_confusion.rst",
            category="7. Diffraction",
            subcategory="{arch}",
        ),
    log:
        "logs/diffraction_confusion/{arch}.log",
    conda:
        "../../environment.yml"
    params:
        # read by the caption: numbers in captions come from the results
        headline=lambda wc, input: headline(input.summary, input.per_class),
    script:
        "../scripts/diffraction_confusion.py"


rule diffraction_calibration:
    input:
        reliability="results/metrics/diffraction/{arch}/reliability.tsv",
        summary="results/metrics/diffraction/{arch}/summary.tsv",
        per_class="results/metrics/diffraction/{arch}/per_class.tsv",
    output:
        fig=report(
            "results/figures/diffraction_calibration_{arch}.png",
            caption="../report/diffraction_calibration.rst",
            category="7. Diffraction",
            subcategory="{arch}",
        ),
    log:
        "logs/diffraction_calibration/{arch}.log",
    conda:
        "../../environment.yml"
    params:
        headline=lambda wc, input: headline(input.summary, input.per_class),
    script:
        "../scripts/diffraction_calibration.py"


rule diffraction_breakdown:
    input:
        breakdown="results/metrics/diffraction/{arch}/breakdown.tsv",
    output:
        fig=report(
            "results/figures/diffraction_breakdown_{arch}.png",
            caption="../report/diffraction_breakdown.rst",
            category="7. Diffraction",
            subcategory="{arch}",
        ),
    log:
        "logs/diffraction_breakdown/{arch}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/diffraction_breakdown.py"


rule diffraction_filters:
    input:
        model="results/models/diffraction/{arch}/fold0/best.pt",
    output:
        fig=report(
            "results/figures/diffraction_filters_{arch}.png",
            caption="../report/diffraction_filters.rst",
            category="7. Diffraction",
            subcategory="{arch}",
        ),
    log:
        "logs/diffraction_filters/{arch}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/diffraction_filters.py"


rule diffraction_transfer:
    input:
        manifest="results/splits/diffraction.tsv",
        sha256="results/splits/diffraction.tsv.sha256",
        specimens=lambda wc: synthetic_files("diffraction"),
        pretrained=lambda wc: [] if wc.strategy == "scratch" else PRETRAINED,
    output:
        row="results/diffraction/transfer/{strategy}/n{n}/fold{fold}/result.tsv",
        best="results/diffraction/transfer/{strategy}/n{n}/fold{fold}/best.pt",
        history="results/diffraction/transfer/{strategy}/n{n}/fold{fold}/history.tsv",
    log:
        "logs/diffraction_transfer/{strategy}/n{n}/fold{fold}.log",
    benchmark:
        "benchmarks/rules/diffraction_transfer/{strategy}/n{n}/fold{fold}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=120,
    params:
        transfer=DIFFRACTION.get("transfer"),
        shared=DIFF_SHARED,
        rotate=DIFFRACTION.get("rotate"),
        representation=REPRESENTATION,
        val_specimens_per_class=DIFFRACTION.get("val_specimens_per_class"),
        validation_seed=job_seed("diffraction_validation"),
        seed=lambda wc: job_seed("diffraction_transfer", wc.strategy, wc.n, wc.fold),
        device=DEVICE,
    script:
        "../scripts/diffraction_transfer.py"


rule diffraction_transfer_summary:
    input:
        rows=lambda wc: expand(
            "results/diffraction/transfer/{strategy}/n{n}/fold{fold}/result.tsv",
            strategy=DIFFRACTION["transfer"]["strategies"],
            n=DIFFRACTION["transfer"]["per_class"],
            fold=DIFFRACTION["transfer"]["folds"],
        ),
    output:
        table=report(
            "results/tables/diffraction_transfer.tsv",
            caption="../report/diffraction_transfer_table.rst",
            category="7. Diffraction",
            subcategory="transfer learning",
        ),
        fig=report(
            "results/figures/diffraction_transfer.png",
            caption="../report/diffraction_transfer.rst",
            category="7. Diffraction",
            subcategory="transfer learning",
        ),
    log:
        "logs/diffraction_transfer_summary.log",
    conda:
        "../../environment.yml"
    params:
        # read by the captions
        pretrained=DIFFRACTION.get("pretrained"),
        steps=DIFFRACTION.get("transfer", {}).get("steps"),
        transfer_folds=DIFFRACTION.get("transfer", {}).get("folds"),
    script:
        "../scripts/diffraction_transfer_summary.py"


rule diffraction_scan_data:
    output:
        scan=directory("results/diffraction/scan/patterns.zarr"),
    log:
        "logs/diffraction_scan_data.log",
    conda:
        "../../environment.yml"
    params:
        settings=lambda wc: config["synthesize"]["diffraction"],
        scan=DIFFRACTION.get("scan"),
        seed=job_seed("diffraction_scan_data"),
    script:
        "../scripts/diffraction_scan_data.py"


rule diffraction_scan_map:
    input:
        scan="results/diffraction/scan/patterns.zarr",
        models=lambda wc: expand(
            "results/models/diffraction/{arch}/fold{fold}/best.pt",
            arch=wc.arch,
            fold=DIFF_FOLDS,
        ),
    output:
        store=directory("results/inference/diffraction_scan/{arch}.ome.zarr"),
    log:
        "logs/diffraction_scan_map/{arch}.log",
    benchmark:
        "benchmarks/rules/diffraction_scan_map/{arch}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    params:
        modality=DIFFRACTION.get("scan", {}).get("modality"),
        size=config["synthesize"].get("diffraction", {}).get("image_size_px"),
        scan_step_um=DIFFRACTION.get("scan", {}).get("step_um"),
        device=DEVICE,
    script:
        "../scripts/diffraction_scan_map.py"


rule diffraction_scan_figure:
    input:
        store="results/inference/diffraction_scan/{arch}.ome.zarr",
        scan="results/diffraction/scan/patterns.zarr",
    output:
        fig=report(
            "results/figures/diffraction_scan_{arch}.png",
            caption="../report/diffraction_scan.rst",
            category="7. Diffraction",
            subcategory="{arch}",
        ),
    log:
        "logs/diffraction_scan_figure/{arch}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/diffraction_scan_figure.py"


if DIFFRACTION["enabled"]:
    all_targets.extend(
        [
            "results/figures/diffraction_examples.png",
            "results/figures/diffraction_forms.png",
            "results/figures/folds_diffraction.png",
            *expand(
                "results/figures/diffraction_{kind}_{arch}.png",
                kind=["confusion", "calibration", "breakdown", "filters"],
                arch=DIFF_ARCHS,
            ),
            *(
                ["results/figures/diffraction_transfer.png"]
                if DIFFRACTION["transfer"]["strategies"]
                else []
            ),
            "results/figures/diffraction_scan_{arch}.png".format(
                arch=DIFFRACTION["scan"]["arch"]
            ),
        ]
    )
