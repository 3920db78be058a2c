# Adapting the synthetic-trained networks to a real stack: few-label fine-tuning
# cross-validated over the sheet's groups (a learning curve against labelled images).

from grainflow.adaptation.finetune import finetune_stacks

ADAPT = config["adapt"]
#: labelled stacks the learning curve is measured on (adapt.finetune.stacks)
FINETUNE_STACKS = finetune_stacks(
    STACKS, ADAPT["finetune"]["stacks"], sheet_path=config["stacks"]
)


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
