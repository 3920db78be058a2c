# Adapting the synthetic-trained networks to a real stack: unsupervised adaptation of the
# fold models to an unlabelled stack (rule adapt; rule infer then also predicts the stack with
# the adapted models, "<arch>-adapted", beside the trained ones), and few-label fine-tuning
# cross-validated over the sheet's groups (a learning curve against labelled images).

from grainflow.adaptation.finetune import adapt_stacks, finetune_stacks

ADAPT = config["adapt"]
#: labelled stacks the learning curve is measured on (adapt.finetune.stacks)
FINETUNE_STACKS = finetune_stacks(
    STACKS, ADAPT["finetune"]["stacks"], sheet_path=config["stacks"]
)
#: stacks the fold models are adapted to without labels (adapt.unsupervised.stacks)
ADAPT_STACKS = adapt_stacks(
    STACKS, ADAPT["unsupervised"]["stacks"], sheet_path=config["stacks"]
)
for _stack, _arch in [
    *((s, ADAPT["finetune"]["arch"]) for s in FINETUNE_STACKS),
    *((s, ADAPT["unsupervised"]["arch"]) for s in ADAPT_STACKS),
]:
    if _arch not in archs_for(STACKS.loc[_stack, "task"]):
        raise ValueError(
            f"adapt names the architecture {_arch!r}, which is not trained for task "
            f"{STACKS.loc[_stack, 'task']!r} of stack {_stack!r}; name one of "
            f"{archs_for(STACKS.loc[_stack, 'task'])}"
        )
for (
    _stack
) in ADAPT_STACKS:  # rule infer also predicts the stack with the adapted models
    _adapted = f"{ADAPT['unsupervised']['arch']}{ADAPTED}"
    INFERENCE_STORES[_stack][
        _adapted
    ] = f"results/inference/{_stack}/{_adapted}.ome.zarr"


rule adapt:
    input:
        stack="results/stacks/{stack}.ome.zarr",
        # the pyramid level rule infer reads the stack at (inference.scale: auto)
        scale=lambda wc: (
            f"results/scale/{wc.stack}.json" if INFERENCE["scale"] == "auto" else []
        ),
        manifest="results/splits/{task}.tsv",
        sha256="results/splits/{task}.tsv.sha256",
        data=lambda wc: augmented_files(wc.task),
        checkpoints=expand(
            "results/models/{{task}}/{{arch}}/fold{fold}/best.pt",
            fold=range(config["splits"]["folds"]),
        ),
        # the classical baseline's settings, fitted on synthetic folds (teacher: classical
        # or agreement)
        classical=lambda wc: (
            f"results/metrics/{wc.task}/classical/fold0.json"
            if ADAPT["unsupervised"]["teacher"] != "ensemble"
            else []
        ),
    output:
        checkpoints=expand(
            "results/models/{{task}}/{{arch}}-adapted/{{stack}}/fold{fold}/best.pt",
            fold=range(config["splits"]["folds"]),
        ),
        table=report(
            "results/models/{task}/{arch}-adapted/{stack}/adaptation.tsv",
            caption="../report/adaptation_table.rst",
            category="6. Real stacks",
            subcategory="{stack}",
        ),
    log:
        "logs/adapt/{task}/{arch}/{stack}.log",
    benchmark:
        "benchmarks/rules/adapt/{task}/{arch}/{stack}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    params:
        task=lambda wc: wc.task,
        settings={
            k: v
            for k, v in ADAPT["unsupervised"].items()
            if k not in ("stacks", "arch")
        },
        seed=lambda wc: job_seed("adapt", wc.task, wc.arch, wc.stack),
        tolerance_px=config["evaluation"]["boundary_tolerance_px"],
        device=config["training"]["device"],
    script:
        "../scripts/adapt.py"


rule finetune_curve:
    input:
        stack="results/stacks/{stack}.ome.zarr",
        # the pyramid level rule infer reads the stack at (inference.scale: auto)
        scale=lambda wc: (
            f"results/scale/{wc.stack}.json" if INFERENCE["scale"] == "auto" else []
        ),
        checkpoint=lambda wc: (
            f"results/models/{STACKS.loc[wc.stack, 'task']}/{wc.arch}/fold0/best.pt"
        ),
    output:
        table=report(
            "results/metrics/real/{stack}/finetune_{arch}.tsv",
            caption="../report/finetune_table.rst",
            category="6. Real stacks",
            subcategory="{stack}",
        ),
        figure=report(
            "results/figures/finetune_curve_{stack}_{arch}.png",
            caption="../report/finetune_curve.rst",
            category="6. Real stacks",
            subcategory="{stack}",
        ),
    log:
        "logs/finetune_curve/{stack}/{arch}.log",
    benchmark:
        "benchmarks/rules/finetune_curve/{stack}/{arch}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=3000,
        runtime=60,
    params:
        settings=ADAPT["finetune"],
        seed=lambda wc: job_seed("finetune_curve", wc.stack, wc.arch),
        device=config["training"]["device"],
    script:
        "../scripts/finetune_curve.py"


all_targets.extend(
    f"results/figures/finetune_curve_{stack}_{ADAPT['finetune']['arch']}.png"
    for stack in FINETUNE_STACKS
)
