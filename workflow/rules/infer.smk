# Real stacks through the trained networks: one inference store per stack x architecture
# (the fold ensemble), then metrology, scores against ground truth and figures per stack.
# With inference.shards = n > 1 each store is predicted by n infer_shard jobs (disjoint
# blocks, in parallel on a cluster) and assembled and labelled by one merge_shards job.
# With inference.trust.enabled the stores also hold the members' disagreement, compared
# with fresh synthetic images (rule trust_reference) by measure and the trust figure.

from grainflow.evaluation.real import real_headline
from grainflow.figures.scale import beside_real_headline
from grainflow.inference.scale import read_scale

INFERENCE = config["inference"]
TRUST = INFERENCE["trust"]
#: settings of rule infer that change its result (defaults for the keys added last)
INFERENCE_OPTIONS = {
    **{
        key: INFERENCE[key]
        for key in (
            "tile_px",
            "overlap_px",
            "margin_px",
            "block_px",
            "batch_size",
            "sigma_scale",
        )
    },
    "flips": INFERENCE["test_time_flips"],
    "whole_plane_max_px": INFERENCE["labels_whole_plane_max_px"],
    "labels_halo_px": INFERENCE["labels_halo_px"],
    "labels_split_px": INFERENCE["labels_split_px"],
    "labels_fill_holes": INFERENCE["labels_fill_holes"],
    "labels_min_particle_px": INFERENCE["labels_min_particle_px"],
    "trust": TRUST["enabled"],
    "uncertain_above": TRUST["uncertain_above"],
}
#: those of them that the labelling uses (rule merge_shards); the others, the prediction's
LABEL_OPTIONS = (
    "whole_plane_max_px",
    "labels_halo_px",
    "labels_split_px",
    "labels_fill_holes",
    "labels_min_particle_px",
    "uncertain_above",
)
SHARDS = INFERENCE["shards"]
#: inference stores of each stack whose task is run: {stack: {arch: store}}
INFERENCE_STORES = {
    stack: {
        arch: f"results/inference/{stack}/{arch}.ome.zarr"
        for arch in archs_for(STACKS.loc[stack, "task"])
    }
    for stack in STACKS.index
    if STACKS.loc[stack, "task"] in TASKS and archs_for(STACKS.loc[stack, "task"])
}


rule scale:
    input:
        stack="results/stacks/{stack}.ome.zarr",
        specimens=lambda wc: synthetic_files(STACKS.loc[wc.stack, "task"]),
    output:
        json="results/scale/{stack}.json",
    log:
        "logs/scale/{stack}.log",
    benchmark:
        "benchmarks/rules/scale/{stack}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        crop_px=2048,
        # a level the user set for this stack (inference.scale_levels), else None
        level=lambda wc: INFERENCE.get("scale_levels", {}).get(wc.stack),
    script:
        "../scripts/scale.py"


if SHARDS == 1:

    rule infer:
        input:
            stack="results/stacks/{stack}.ome.zarr",
            # the pyramid level to read the stack at (inference.scale: auto) or none
            scale=lambda wc: (
                f"results/scale/{wc.stack}.json"
                if INFERENCE["scale"] == "auto"
                else []
            ),
            checkpoints=infer_checkpoints,
        output:
            store=directory("results/inference/{stack}/{arch}.ome.zarr"),
        log:
            "logs/infer/{stack}/{arch}.log",
        benchmark:
            "benchmarks/rules/infer/{stack}/{arch}.tsv"
        wildcard_constraints:
            arch=INFER_MODELS,
        conda:
            "../../environment.yml"
        threads: 2
        resources:
            gpu=1,
            mem_mb=3000,
            runtime=120,
        params:
            options=INFERENCE_OPTIONS,
            device=config["training"]["device"],
            scale=lambda wc, input: (
                read_scale(input.scale) if input.scale else {"level": 0}
            ),
        script:
            "../scripts/infer.py"

else:

    rule infer_shard:
        input:
            stack="results/stacks/{stack}.ome.zarr",
            checkpoints=infer_checkpoints,
        output:
            # the probabilities of shard {shard}'s blocks only
            store=temp(
                directory("results/inference/{stack}/{arch}.shards/{shard}.zarr")
            ),
        log:
            "logs/infer_shard/{stack}/{arch}/{shard}.log",
        benchmark:
            "benchmarks/rules/infer_shard/{stack}/{arch}/{shard}.tsv"
        wildcard_constraints:
            arch=INFER_MODELS,
        conda:
            "../../environment.yml"
        threads: 2
        resources:
            gpu=1,
            mem_mb=3000,
            runtime=120,
        params:
            shard=lambda wc: int(wc.shard),
            shards=SHARDS,
            options={
                k: v for k, v in INFERENCE_OPTIONS.items() if k not in LABEL_OPTIONS
            },
            device=config["training"]["device"],
        script:
            "../scripts/infer_shard.py"

    rule merge_shards:
        input:
            stack="results/stacks/{stack}.ome.zarr",
            shards=expand(
                "results/inference/{{stack}}/{{arch}}.shards/{shard}.zarr",
                shard=range(SHARDS),
            ),
        output:
            store=directory("results/inference/{stack}/{arch}.ome.zarr"),
        log:
            "logs/merge_shards/{stack}/{arch}.log",
        benchmark:
            "benchmarks/rules/merge_shards/{stack}/{arch}.tsv"
        wildcard_constraints:
            arch=INFER_MODELS,
        conda:
            "../../environment.yml"
        threads: 1
        resources:
            mem_mb=3000,
            runtime=120,
        params:
            options={k: INFERENCE_OPTIONS[k] for k in LABEL_OPTIONS},
        script:
            "../scripts/merge_shards.py"


rule trust_reference:
    input:
        checkpoints=lambda wc: expand(
            "results/models/{task}/{arch}/fold{fold}/best.pt",
            task=wc.task,
            arch=wc.arch,
            fold=range(config["splits"]["folds"]),
        ),
    output:
        json="results/trust/{task}/{arch}.json",
    log:
        "logs/trust_reference/{task}/{arch}.log",
    benchmark:
        "benchmarks/rules/trust_reference/{task}/{arch}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=lambda wc: config["synthesize"][wc.task],
        # a seed no training job uses: fresh specimens the models never saw
        seed=lambda wc: job_seed("trust_reference", wc.task, wc.arch),
        n_images=TRUST["reference_images"],
        uncertain_above=TRUST["uncertain_above"],
        options={
            k: INFERENCE_OPTIONS[k]
            for k in (
                "tile_px",
                "overlap_px",
                "margin_px",
                "batch_size",
                "sigma_scale",
                "flips",
            )
        },
        device=config["training"]["device"],
    script:
        "../scripts/trust_reference.py"


rule measure:
    input:
        stack="results/stacks/{stack}.ome.zarr",
        inference=lambda wc: list(INFERENCE_STORES[wc.stack].values()),
        # the synthetic trust references of its architectures (none without the map);
        # models adapted to the stack are compared with their architecture's reference
        references=lambda wc: (
            [
                f"results/trust/{STACKS.loc[wc.stack, 'task']}/{arch.removesuffix(ADAPTED)}.json"
                for arch in INFERENCE_STORES[wc.stack]
            ]
            if TRUST["enabled"]
            else []
        ),
    output:
        metrics=report(
            "results/metrics/real/{stack}.tsv",
            caption="../report/real_metrics.rst",
            category="6. Real stacks",
            subcategory="{stack}",
        ),
        sizes="results/metrics/real/{stack}.sizes.tsv",
    log:
        "logs/measure/{stack}.log",
    benchmark:
        "benchmarks/rules/measure/{stack}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        models=lambda wc: list(INFERENCE_STORES[wc.stack]),
        tolerance_px=config["evaluation"]["boundary_tolerance_px"],
        iou_threshold=config["evaluation"]["match_iou"],
        flag_factor=TRUST["flag_factor"],
    script:
        "../scripts/measure.py"


rule real_figures:
    input:
        stack="results/stacks/{stack}.ome.zarr",
        inference=lambda wc: list(INFERENCE_STORES[wc.stack].values()),
        metrics="results/metrics/real/{stack}.tsv",
        sizes="results/metrics/real/{stack}.sizes.tsv",
    output:
        overlays=report(
            "results/figures/real_overlays_{stack}.png",
            caption="../report/real_overlays.rst",
            category="6. Real stacks",
            subcategory="{stack}",
        ),
        sizes=report(
            "results/figures/real_sizes_{stack}.png",
            caption="../report/real_sizes.rst",
            category="6. Real stacks",
            subcategory="{stack}",
        ),
    log:
        "logs/real_figures/{stack}.log",
    conda:
        "../../environment.yml"
    params:
        models=lambda wc: list(INFERENCE_STORES[wc.stack]),
        # read by the captions: numbers in captions come from the results
        headline=lambda wc, input: real_headline(input.metrics),
    script:
        "../scripts/real_figures.py"


rule real_trust:
    input:
        stack="results/stacks/{stack}.ome.zarr",
        inference=lambda wc: list(INFERENCE_STORES[wc.stack].values()),
        metrics="results/metrics/real/{stack}.tsv",
    output:
        figure=report(
            "results/figures/real_trust_{stack}.png",
            caption="../report/real_trust.rst",
            category="6. Real stacks",
            subcategory="{stack}",
        ),
    log:
        "logs/real_trust/{stack}.log",
    conda:
        "../../environment.yml"
    params:
        models=lambda wc: list(INFERENCE_STORES[wc.stack]),
        uncertain_above=TRUST["uncertain_above"],
        flag_factor=TRUST["flag_factor"],
        # read by the caption: numbers in captions come from the results
        headline=lambda wc, input: real_headline(input.metrics),
    script:
        "../scripts/real_trust.py"


rule synthetic_beside_real:
    input:
        stack="results/stacks/{stack}.ome.zarr",
        # the record rule infer takes the pyramid level from (inference.scale: auto)
        scale=lambda wc: (
            f"results/scale/{wc.stack}.json" if INFERENCE["scale"] == "auto" else []
        ),
        specimens=lambda wc: synthetic_files(STACKS.loc[wc.stack, "task"]),
    output:
        figure=report(
            "results/figures/synthetic_beside_real_{stack}.png",
            caption="../report/synthetic_beside_real.rst",
            category="6. Real stacks",
            subcategory="{stack}",
        ),
    log:
        "logs/synthetic_beside_real/{stack}.log",
    conda:
        "../../environment.yml"
    params:
        # the level rule infer reads the stack at (level 0: full resolution)
        scale=lambda wc, input: read_scale(input.scale) if input.scale else {"level": 0},
        # read by the caption: numbers in captions come from the results
        headline=lambda wc, input: beside_real_headline(
            input.stack, input.specimens, scale=input.scale or None
        ),
    script:
        "../scripts/synthetic_beside_real.py"


all_targets.extend(
    [
        *(f"results/metrics/real/{stack}.tsv" for stack in INFERENCE_STORES),
        *(
            f"results/figures/{fig}_{stack}.png"
            for stack in INFERENCE_STORES
            for fig in ("real_overlays", "real_sizes", "synthetic_beside_real")
        ),
        *(
            f"results/figures/real_trust_{stack}.png"
            for stack in INFERENCE_STORES
            if TRUST["enabled"]
        ),
    ]
)
