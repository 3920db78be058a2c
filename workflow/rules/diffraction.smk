# Diffraction patterns: crystal-system classification with the DiffractionCNN,
# ResNet-18 by transfer and the ring-profile network, cross-validated over crystals;
# which to use for which pattern kind; pretraining on a large
# synthetic set; transfer strategies against labelled-set size; a scan map; real
# diffraction stacks (sheet rows with task diffraction) prepared, classified and mapped.
# The patterns come from the synthesize rule, their folds from the split rule
# (task "diffraction").
# Every rule here runs on one thread, the trainings too: their small CNNs keep one
# core busy, so two jobs side by side beat one job on two threads.

from grainflow.diffraction.evaluate import (
    abstention_headline,
    headline,
    model_choice,
    model_choice_headline,
)
from grainflow.diffraction.representation import model_kinds, representation_of
from grainflow.diffraction.simulate import pattern_size
from grainflow.stacks.frames import frame_files

DIFFRACTION = config["diffraction"]
#: the crystal-system classifiers (config diffraction.archs); wildcard {classifier}
DIFF_ARCHS = list(DIFFRACTION["archs"])
PRETRAINED_CKPT = "results/models/diffraction/pretrain/best.pt"


wildcard_constraints:
    classifier="|".join(DIFF_ARCHS),
    strategy="frozen|finetune|full|scratch",
    n=r"\d+",


#: where networks run (config training.device)
DEVICE = config["training"]["device"]
#: TrainConfig settings of every diffraction model: training's shared ones, then diffraction's
DIFF_SHARED = {**training_shared(), **DIFFRACTION["training"]}
#: the weights ResNet-18 starts from: grainflow's pretraining, none, or a local file
PRETRAINED = {"grainflow": [PRETRAINED_CKPT], "none": []}.get(
    DIFFRACTION["pretrained"], [DIFFRACTION["pretrained"]]
)
DIFF_FOLDS = range(DIFFRACTION["folds"])
#: the form in which each pattern kind reaches the models (representation_of)
REPRESENTATION = representation_of(DIFFRACTION["representation"])


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
        crystals=DIFFRACTION["pretrain"]["crystals"],
        images_per_crystal=DIFFRACTION["pretrain"]["images_per_crystal"],
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
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=240,
    params:
        pretrain=DIFFRACTION["pretrain"],
        shared=DIFF_SHARED,
        rotate=DIFFRACTION["rotate"],
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
            PRETRAINED
            if DIFFRACTION["archs"][wc.classifier]["model"] == "resnet18"
            else []
        ),
    output:
        best="results/models/diffraction/{classifier}/fold{fold}/best.pt",
        history="results/models/diffraction/{classifier}/fold{fold}/history.tsv",
    log:
        "logs/diffraction_train/{classifier}/fold{fold}.log",
    benchmark:
        "benchmarks/rules/diffraction_train/{classifier}/fold{fold}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=240,
    params:
        arch=lambda wc: DIFFRACTION["archs"][wc.classifier],
        shared=DIFF_SHARED,
        rotate=DIFFRACTION["rotate"],
        representation=REPRESENTATION,
        val_specimens_per_class=DIFFRACTION["val_specimens_per_class"],
        validation_seed=job_seed("diffraction_validation"),
        seed=lambda wc: job_seed("diffraction_train", wc.classifier, wc.fold),
    script:
        "../scripts/diffraction_train.py"


rule diffraction_evaluate:
    input:
        manifest="results/splits/diffraction.tsv",
        sha256="results/splits/diffraction.tsv.sha256",
        specimens=lambda wc: synthetic_files("diffraction"),
        models=lambda wc: expand(
            "results/models/diffraction/{classifier}/fold{fold}/best.pt",
            classifier=wc.classifier,
            fold=DIFF_FOLDS,
        ),
    output:
        predictions="results/metrics/diffraction/{classifier}/predictions.tsv",
        summary=report(
            "results/metrics/diffraction/{classifier}/summary.tsv",
            caption="../report/diffraction_summary.rst",
            category="7. Diffraction",
            subcategory="{classifier}",
        ),
        per_class=report(
            "results/metrics/diffraction/{classifier}/per_class.tsv",
            caption="../report/diffraction_per_class.rst",
            category="7. Diffraction",
            subcategory="{classifier}",
        ),
        confusion="results/metrics/diffraction/{classifier}/confusion.tsv",
        reliability="results/metrics/diffraction/{classifier}/reliability.tsv",
        breakdown="results/metrics/diffraction/{classifier}/breakdown.tsv",
    log:
        "logs/diffraction_evaluate/{classifier}.log",
    benchmark:
        "benchmarks/rules/diffraction_evaluate/{classifier}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    params:
        bins=DIFFRACTION["calibration_bins"],
        dose_bins=DIFFRACTION["dose_bins"],
        device=DEVICE,
    script:
        "../scripts/diffraction_evaluate.py"


rule diffraction_abstention:
    input:
        manifest="results/splits/diffraction.tsv",
        sha256="results/splits/diffraction.tsv.sha256",
        specimens=lambda wc: synthetic_files("diffraction"),
        models=lambda wc: expand(
            "results/models/diffraction/{classifier}/fold{fold}/best.pt",
            classifier=wc.classifier,
            fold=DIFF_FOLDS,
        ),
        predictions="results/metrics/diffraction/{classifier}/predictions.tsv",
    output:
        validation="results/metrics/diffraction/{classifier}/validation_predictions.tsv",
        coverage="results/metrics/diffraction/{classifier}/coverage.tsv",
        abstention=report(
            "results/metrics/diffraction/{classifier}/abstention.tsv",
            caption="../report/diffraction_abstention.rst",
            category="7. Diffraction",
            subcategory="{classifier}",
        ),
    log:
        "logs/diffraction_abstention/{classifier}.log",
    benchmark:
        "benchmarks/rules/diffraction_abstention/{classifier}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    params:
        coverage=DIFFRACTION["abstention_coverage"],
        # the validation crystals of each fold's model, drawn as diffraction_train drew them
        val_specimens_per_class=DIFFRACTION["val_specimens_per_class"],
        validation_seed=job_seed("diffraction_validation"),
        device=DEVICE,
    script:
        "../scripts/diffraction_abstention.py"


rule diffraction_coverage:
    input:
        coverage=expand(
            "results/metrics/diffraction/{classifier}/coverage.tsv",
            classifier=DIFF_ARCHS,
        ),
        abstention=expand(
            "results/metrics/diffraction/{classifier}/abstention.tsv",
            classifier=DIFF_ARCHS,
        ),
    output:
        fig=report(
            "results/figures/diffraction_coverage.png",
            caption="../report/diffraction_coverage.rst",
            category="7. Diffraction",
        ),
    log:
        "logs/diffraction_coverage.log",
    conda:
        "../../environment.yml"
    params:
        classifiers=DIFF_ARCHS,
        coverage=DIFFRACTION["abstention_coverage"],
        # read by the caption
        headline=lambda wc, input: abstention_headline(
            dict(zip(DIFF_ARCHS, input.abstention))
        ),
    script:
        "../scripts/diffraction_coverage.py"


rule diffraction_models:
    input:
        breakdown=expand(
            "results/metrics/diffraction/{classifier}/breakdown.tsv",
            classifier=DIFF_ARCHS,
        ),
    output:
        table=report(
            "results/tables/diffraction_models.tsv",
            caption="../report/diffraction_models.rst",
            category="7. Diffraction",
        ),
    log:
        "logs/diffraction_models.log",
    conda:
        "../../environment.yml"
    params:
        classifiers=DIFF_ARCHS,
        # read by the caption: the measured choice, not a typed one
        headline=lambda wc, input: model_choice_headline(
            model_choice(dict(zip(DIFF_ARCHS, input.breakdown)))
        ),
    script:
        "../scripts/diffraction_models.py"


rule diffraction_confusion:
    input:
        confusion="results/metrics/diffraction/{classifier}/confusion.tsv",
        summary="results/metrics/diffraction/{classifier}/summary.tsv",
        per_class="results/metrics/diffraction/{classifier}/per_class.tsv",
    output:
        fig=report(
            "results/figures/diffraction_confusion_{classifier}.png",
            caption="../report/diffraction_confusion.rst",
            category="7. Diffraction",
            subcategory="{classifier}",
        ),
    log:
        "logs/diffraction_confusion/{classifier}.log",
    conda:
        "../../environment.yml"
    params:
        # read by the caption: numbers in captions come from the results
        headline=lambda wc, input: headline(input.summary, input.per_class),
        kinds=lambda wc: model_kinds(
            DIFFRACTION["archs"][wc.classifier]["model"],
            config["synthesize"]["diffraction"]["modalities"],
        ),
    script:
        "../scripts/diffraction_confusion.py"


rule diffraction_calibration:
    input:
        reliability="results/metrics/diffraction/{classifier}/reliability.tsv",
        summary="results/metrics/diffraction/{classifier}/summary.tsv",
        per_class="results/metrics/diffraction/{classifier}/per_class.tsv",
    output:
        fig=report(
            "results/figures/diffraction_calibration_{classifier}.png",
            caption="../report/diffraction_calibration.rst",
            category="7. Diffraction",
            subcategory="{classifier}",
        ),
    log:
        "logs/diffraction_calibration/{classifier}.log",
    conda:
        "../../environment.yml"
    params:
        headline=lambda wc, input: headline(input.summary, input.per_class),
    script:
        "../scripts/diffraction_calibration.py"


rule diffraction_breakdown:
    input:
        breakdown="results/metrics/diffraction/{classifier}/breakdown.tsv",
    output:
        fig=report(
            "results/figures/diffraction_breakdown_{classifier}.png",
            caption="../report/diffraction_breakdown.rst",
            category="7. Diffraction",
            subcategory="{classifier}",
        ),
    log:
        "logs/diffraction_breakdown/{classifier}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/diffraction_breakdown.py"


rule diffraction_filters:
    input:
        model="results/models/diffraction/{classifier}/fold0/best.pt",
    output:
        fig=report(
            "results/figures/diffraction_filters_{classifier}.png",
            caption="../report/diffraction_filters.rst",
            category="7. Diffraction",
            subcategory="{classifier}",
        ),
    log:
        "logs/diffraction_filters/{classifier}.log",
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
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=120,
    params:
        transfer=DIFFRACTION["transfer"],
        shared=DIFF_SHARED,
        rotate=DIFFRACTION["rotate"],
        representation=REPRESENTATION,
        val_specimens_per_class=DIFFRACTION["val_specimens_per_class"],
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
        pretrained=DIFFRACTION["pretrained"],
        steps=DIFFRACTION["transfer"]["steps"],
        transfer_folds=DIFFRACTION["transfer"]["folds"],
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
        scan=DIFFRACTION["scan"],
        seed=job_seed("diffraction_scan_data"),
    script:
        "../scripts/diffraction_scan_data.py"


rule diffraction_scan_map:
    input:
        scan="results/diffraction/scan/patterns.zarr",
        models=lambda wc: expand(
            "results/models/diffraction/{classifier}/fold{fold}/best.pt",
            classifier=wc.classifier,
            fold=DIFF_FOLDS,
        ),
    output:
        store=directory("results/inference/diffraction_scan/{classifier}.ome.zarr"),
    log:
        "logs/diffraction_scan_map/{classifier}.log",
    benchmark:
        "benchmarks/rules/diffraction_scan_map/{classifier}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    params:
        modality=DIFFRACTION["scan"]["modality"],
        size=lambda wc: pattern_size(
            config["synthesize"]["diffraction"], DIFFRACTION["scan"]["modality"]
        ),
        scan_step_um=DIFFRACTION["scan"]["step_um"],
        device=DEVICE,
    script:
        "../scripts/diffraction_scan_map.py"


rule diffraction_scan_figure:
    input:
        store="results/inference/diffraction_scan/{classifier}.ome.zarr",
        scan="results/diffraction/scan/patterns.zarr",
    output:
        fig=report(
            "results/figures/diffraction_scan_{classifier}.png",
            caption="../report/diffraction_scan.rst",
            category="7. Diffraction",
            subcategory="{classifier}",
        ),
    log:
        "logs/diffraction_scan_figure/{classifier}.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/diffraction_scan_figure.py"


rule diffraction_real_structures_data:
    output:
        h5="results/diffraction/real_structures/patterns.h5",
        table=report(
            "results/tables/diffraction_real_structures.tsv",
            caption="../report/diffraction_real_structures_table.rst",
            category="7. Diffraction",
            subcategory="real structures",
        ),
    log:
        "logs/diffraction_real_structures_data.log",
    benchmark:
        "benchmarks/rules/diffraction_real_structures_data.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    params:
        # the physics the classifiers trained with
        settings=lambda wc: config["synthesize"]["diffraction"],
        patterns_per_zone=DIFFRACTION["real_structures"]["patterns_per_zone"],
        ring_patterns=DIFFRACTION["real_structures"]["ring_patterns"],
        seed=job_seed("diffraction_real_structures_data"),
    script:
        "../scripts/diffraction_real_structures_data.py"


rule diffraction_real_structures:
    input:
        patterns="results/diffraction/real_structures/patterns.h5",
        models=lambda wc: expand(
            "results/models/diffraction/{classifier}/fold{fold}/best.pt",
            classifier=wc.classifier,
            fold=DIFF_FOLDS,
        ),
        abstention="results/metrics/diffraction/{classifier}/abstention.tsv",
    output:
        predictions="results/metrics/diffraction/real_structures_{classifier}_predictions.tsv",
        table=report(
            "results/metrics/diffraction/real_structures_{classifier}.tsv",
            caption="../report/diffraction_real_structures.rst",
            category="7. Diffraction",
            subcategory="real structures",
        ),
        summary=report(
            "results/metrics/diffraction/real_structures_{classifier}_summary.tsv",
            caption="../report/diffraction_real_structures_summary.rst",
            category="7. Diffraction",
            subcategory="real structures",
        ),
    log:
        "logs/diffraction_real_structures/{classifier}.log",
    benchmark:
        "benchmarks/rules/diffraction_real_structures/{classifier}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    params:
        coverage=DIFFRACTION["abstention_coverage"],
        device=DEVICE,
    script:
        "../scripts/diffraction_real_structures.py"


#: settings of the real diffraction stacks (config diffraction.stacks)
DIFF_STACKS = DIFFRACTION["stacks"]
#: the sheet's diffraction stacks
DIFFRACTION_STACKS = list(STACKS.index[STACKS["task"] == "diffraction"])


rule diffraction_prepare_stack:
    input:
        frames=lambda wc: frame_files(STACKS.loc[wc.stack, "path"]),
    output:
        store=directory("results/diffraction/stacks/{stack}/prepared.zarr"),
        table="results/diffraction/stacks/{stack}/prepared.tsv",
    log:
        "logs/diffraction_prepare_stack/{stack}.log",
    benchmark:
        "benchmarks/rules/diffraction_prepare_stack/{stack}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        sheet=lambda wc: sheet_row(STACKS, wc.stack),
        modality=DIFF_STACKS["modality"],
        beam_stop=DIFF_STACKS["beam_stop"],
        frames_per_block=DIFF_STACKS["frames_per_block"],
        settings=lambda wc: config["synthesize"]["diffraction"],
    script:
        "../scripts/diffraction_prepare_stack.py"


rule diffraction_stack:
    input:
        store="results/diffraction/stacks/{stack}/prepared.zarr",
        prepared="results/diffraction/stacks/{stack}/prepared.tsv",
        models=lambda wc: expand(
            "results/models/diffraction/{classifier}/fold{fold}/best.pt",
            classifier=DIFF_STACKS["arch"],
            fold=DIFF_FOLDS,
        ),
        abstention=lambda wc: (
            f"results/metrics/diffraction/{DIFF_STACKS['arch']}/abstention.tsv"
            if DIFF_STACKS["abstain"]
            else []
        ),
    output:
        frames=report(
            "results/metrics/real/{stack}.frames.tsv",
            caption="../report/diffraction_frames.rst",
            category="6. Real stacks",
            subcategory="{stack}",
        ),
        store=directory(f"results/inference/{{stack}}/{DIFF_STACKS['arch']}.ome.zarr"),
    log:
        "logs/diffraction_stack/{stack}.log",
    benchmark:
        "benchmarks/rules/diffraction_stack/{stack}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=3000,
        runtime=120,
    params:
        device=DEVICE,
    script:
        "../scripts/diffraction_stack.py"


rule diffraction_stack_figure:
    input:
        store=f"results/inference/{{stack}}/{DIFF_STACKS['arch']}.ome.zarr",
        frames="results/metrics/real/{stack}.frames.tsv",
    output:
        fig=report(
            "results/figures/diffraction_map_{stack}.png",
            caption="../report/diffraction_map.rst",
            category="6. Real stacks",
            subcategory="{stack}",
        ),
    log:
        "logs/diffraction_stack_figure/{stack}.log",
    conda:
        "../../environment.yml"
    params:
        classifier=DIFF_STACKS["arch"],
    script:
        "../scripts/diffraction_stack_figure.py"


if DIFFRACTION["enabled"]:
    all_targets.extend(
        expand("results/figures/diffraction_map_{stack}.png", stack=DIFFRACTION_STACKS)
    )
    all_targets.extend(
        [
            "results/figures/diffraction_examples.png",
            "results/figures/diffraction_forms.png",
            "results/figures/folds_diffraction.png",
            "results/figures/diffraction_coverage.png",
            "results/tables/diffraction_models.tsv",
            *expand(
                "results/metrics/diffraction/real_structures_{classifier}_summary.tsv",
                classifier=DIFF_ARCHS,
            ),
            *expand(
                "results/figures/diffraction_{kind}_{classifier}.png",
                kind=["confusion", "calibration", "breakdown", "filters"],
                classifier=DIFF_ARCHS,
            ),
            *(
                ["results/figures/diffraction_transfer.png"]
                if DIFFRACTION["transfer"]["strategies"]
                else []
            ),
            "results/figures/diffraction_scan_{classifier}.png".format(
                classifier=DIFFRACTION["scan"]["arch"]
            ),
        ]
    )
