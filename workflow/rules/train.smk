# Networks: one training job per task x architecture x fold, then each fold's last-epoch model
# scored on its held-out specimens beside the classical baseline.

from grainflow.figures.training import training_summary


rule train:
    input:
        manifest="results/splits/{task}.tsv",
        sha256="results/splits/{task}.tsv.sha256",
        data=lambda wc: augmented_files(wc.task),
    output:
        best="results/models/{task}/{arch}/fold{fold}/best.pt",
        history="results/models/{task}/{arch}/fold{fold}/history.tsv",
    log:
        "logs/train/{task}/{arch}/fold{fold}.log",
    benchmark:
        "benchmarks/rules/train/{task}/{arch}/fold{fold}.tsv"
    conda:
        "../../environment.yml"
    # one thread per training process: on a laptop, folds training side by side beat threads
    # fighting over two cores; raise it with --set-threads train=N on a workstation or cluster
    threads: config["training"]["gpus_per_job"]
    # GPUs: training.gpus_per_job (default 1). A job granted N > 1 GPUs (on SLURM, sbatch
    # --gpus=N; they appear in CUDA_VISIBLE_DEVICES) trains with one process per GPU it sees
    # (DistributedDataParallel, same results contract): world_size_for(resources.gpu) in the
    # script; on the CPU always one process. Locally, --resources gpu=M caps the GPUs in use.
    resources:
        gpu=config["training"]["gpus_per_job"],
        mem_mb=4000,
        runtime=120,
    params:
        arch=lambda wc: config["training"]["archs"][wc.arch],
        shared=lambda wc: training_shared(),
        fold=lambda wc: int(wc.fold),
        seed=lambda wc: job_seed("train", wc.task, wc.arch, wc.fold),
        tolerance_px=config["evaluation"]["boundary_tolerance_px"],
        # resume state: rewritten after every epoch, kept out of the outputs so that
        # Snakemake does not delete it before rerunning a killed job
        last="results/models/{task}/{arch}/fold{fold}/last.pt",
    script:
        "../scripts/train.py"


rule evaluate_model:
    input:
        manifest="results/splits/{task}.tsv",
        sha256="results/splits/{task}.tsv.sha256",
        specimens=lambda wc: synthetic_files(wc.task),
        best="results/models/{task}/{arch}/fold{fold}/best.pt",
    output:
        metrics="results/metrics/{task}/{arch}/fold{fold}.tsv",
        probability="results/predictions/{task}/{arch}/fold{fold}.h5",
    log:
        "logs/evaluate_model/{task}/{arch}/fold{fold}.log",
    benchmark:
        "benchmarks/rules/evaluate_model/{task}/{arch}/fold{fold}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        fold=lambda wc: int(wc.fold),
        tolerance_px=config["evaluation"]["boundary_tolerance_px"],
        iou_threshold=config["evaluation"]["match_iou"],
        pixel_size_um=config["evaluation"]["pixel_size_um"],
        flips=config["evaluation"]["test_time_flips"],
        split_px=lambda wc: config["inference"]["labels_split_px"][wc.task],
        fill_holes=config["inference"]["labels_fill_holes"],
        min_particle_px=config["inference"]["labels_min_particle_px"],
    script:
        "../scripts/evaluate_model.py"


rule training_curves:
    input:
        histories=lambda wc: expand(
            "results/models/{task}/{arch}/fold{fold}/history.tsv",
            task=wc.task,
            arch=wc.arch,
            fold=range(config["splits"]["folds"]),
        ),
    output:
        fig=report(
            "results/figures/training_{task}_{arch}.png",
            caption="../report/training_curves.rst",
            category="4. Training",
            subcategory="{task}",
        ),
    log:
        "logs/training_curves/{task}/{arch}.log",
    conda:
        "../../environment.yml"
    params:
        summary=lambda wc, input: training_summary(input.histories),
    script:
        "../scripts/training_curves.py"


rule prediction_overlays:
    input:
        metrics=lambda wc: expand(
            "results/metrics/{task}/{arch}/fold{fold}.tsv",
            task=wc.task,
            arch=wc.arch,
            fold=range(config["splits"]["folds"]),
        ),
        probability=lambda wc: expand(
            "results/predictions/{task}/{arch}/fold{fold}.h5",
            task=wc.task,
            arch=wc.arch,
            fold=range(config["splits"]["folds"]),
        ),
        specimens=lambda wc: synthetic_files(wc.task),
    output:
        overlays=report(
            "results/figures/overlays_{task}_{arch}.png",
            caption="../report/prediction_overlays.rst",
            category="5. Cross-validated results",
            subcategory="{task}",
        ),
        sizes=report(
            "results/figures/size_distribution_{task}_{arch}.png",
            caption="../report/size_distribution.rst",
            category="5. Cross-validated results",
            subcategory="{task}",
        ),
    log:
        "logs/prediction_overlays/{task}/{arch}.log",
    conda:
        "../../environment.yml"
    params:
        pixel_size_um=config["evaluation"]["pixel_size_um"],
        split_px=lambda wc: config["inference"]["labels_split_px"][wc.task],
        fill_holes=config["inference"]["labels_fill_holes"],
        min_particle_px=config["inference"]["labels_min_particle_px"],
    script:
        "../scripts/prediction_overlays.py"


all_targets.extend(
    [
        *(
            f"results/{kind}/{task}/{arch}/{name}"
            for task in TASKS
            for arch in archs_for(task)
            for kind, name in (("metrics", "cv.tsv"),)
        ),
        *(
            f"results/figures/{fig}_{task}_{arch}.png"
            for task in TASKS
            for arch in archs_for(task)
            for fig in (
                "training",
                "overlays",
                "size_distribution",
                "metric_distributions",
            )
        ),
    ]
)
