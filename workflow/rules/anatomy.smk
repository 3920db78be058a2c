# CNN anatomy: the teaching example's hand-set kernels, worked examples, output sizes, pooling,
# parameter counts, receptive fields, feature maps, a designed boundary detector and the
# U-Net encoder's shapes, each computed by grainflow (numbers in captions come from
# results/tables/anatomy_numbers.json, computed with the figures' own seeds).

from grainflow.anatomy.studies import SEED_NAMES as ANATOMY_SEED_NAMES
from grainflow.anatomy.studies import read_numbers

ANATOMY_NUMBERS = "results/tables/anatomy_numbers.json"
#: seeds of the anatomy figures, shared by the numbers table and the figures
ANATOMY_SEEDS = {name: job_seed("anatomy", name) for name in ANATOMY_SEED_NAMES}
#: the grains U-Net of fold 0 whose feature maps the anatomy section shows (or none)
TRAINED_FEATURE_MODEL = [
    f"results/models/grains/{arch}/fold0/best.pt"
    for arch in (archs_for("grains") if "grains" in TASKS else [])[:1]
]


rule anatomy_numbers:
    output:
        json=ANATOMY_NUMBERS,
    log:
        "logs/anatomy/numbers.log",
    benchmark:
        "benchmarks/rules/anatomy/numbers.tsv"
    conda:
        "../../environment.yml"
    params:
        settings=config["anatomy"],
        seeds=ANATOMY_SEEDS,
    script:
        "../scripts/anatomy_numbers.py"


rule anatomy_kernels:
    output:
        fig=report(
            "results/figures/anatomy_kernels.png",
            caption="../report/anatomy_kernels.rst",
            category="2. CNN anatomy",
        ),
    log:
        "logs/anatomy/kernels.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/anatomy_kernels.py"


rule anatomy_feature_maps:
    input:
        numbers=ANATOMY_NUMBERS,
    output:
        fig=report(
            "results/figures/anatomy_feature_maps.png",
            caption="../report/anatomy_feature_maps.rst",
            category="2. CNN anatomy",
        ),
    log:
        "logs/anatomy/feature_maps.log",
    benchmark:
        "benchmarks/rules/anatomy/feature_maps.tsv"
    conda:
        "../../environment.yml"
    params:
        image_size_px=config["anatomy"]["image_size_px"],
        grain_diameter_px=config["anatomy"]["grain_diameter_px"],
        seed=ANATOMY_SEEDS["examples"],
        numbers=lambda wc, input: read_numbers(input.numbers),
    script:
        "../scripts/anatomy_feature_maps.py"


rule anatomy_correlation:
    input:
        numbers=ANATOMY_NUMBERS,
    output:
        fig=report(
            "results/figures/anatomy_correlation.png",
            caption="../report/anatomy_correlation.rst",
            category="2. CNN anatomy",
        ),
    log:
        "logs/anatomy/correlation.log",
    benchmark:
        "benchmarks/rules/anatomy/correlation.tsv"
    conda:
        "../../environment.yml"
    params:
        image_size_px=config["anatomy"]["image_size_px"],
        grain_diameter_px=config["anatomy"]["grain_diameter_px"],
        seed=ANATOMY_SEEDS["examples"],
        numbers=lambda wc, input: read_numbers(input.numbers),
    script:
        "../scripts/anatomy_correlation.py"


rule anatomy_output_size:
    input:
        numbers=ANATOMY_NUMBERS,
    output:
        fig=report(
            "results/figures/anatomy_output_size.png",
            caption="../report/anatomy_output_size.rst",
            category="2. CNN anatomy",
        ),
    log:
        "logs/anatomy/output_size.log",
    conda:
        "../../environment.yml"
    params:
        numbers=lambda wc, input: read_numbers(input.numbers),
    script:
        "../scripts/anatomy_output_size.py"


rule anatomy_pooling:
    input:
        numbers=ANATOMY_NUMBERS,
    output:
        fig=report(
            "results/figures/anatomy_pooling.png",
            caption="../report/anatomy_pooling.rst",
            category="2. CNN anatomy",
        ),
    log:
        "logs/anatomy/pooling.log",
    conda:
        "../../environment.yml"
    params:
        numbers=lambda wc, input: read_numbers(input.numbers),
    script:
        "../scripts/anatomy_pooling.py"


rule anatomy_parameters:
    input:
        numbers=ANATOMY_NUMBERS,
    output:
        fig=report(
            "results/figures/anatomy_parameters.png",
            caption="../report/anatomy_parameters.rst",
            category="2. CNN anatomy",
        ),
    log:
        "logs/anatomy/parameters.log",
    conda:
        "../../environment.yml"
    params:
        settings=config["anatomy"]["parameter_counts"],
        numbers=lambda wc, input: read_numbers(input.numbers),
    script:
        "../scripts/anatomy_parameters.py"


rule anatomy_diffraction_cnn:
    input:
        numbers=ANATOMY_NUMBERS,
    output:
        fig=report(
            "results/figures/anatomy_diffraction_cnn.png",
            caption="../report/anatomy_diffraction_cnn.rst",
            category="2. CNN anatomy",
        ),
    log:
        "logs/anatomy/diffraction_cnn.log",
    benchmark:
        "benchmarks/rules/anatomy/diffraction_cnn.tsv"
    conda:
        "../../environment.yml"
    params:
        input_px=config["anatomy"]["diffraction_input_px"],
        numbers=lambda wc, input: read_numbers(input.numbers),
    script:
        "../scripts/anatomy_diffraction_cnn.py"


rule anatomy_receptive_field:
    input:
        numbers=ANATOMY_NUMBERS,
    output:
        fig=report(
            "results/figures/anatomy_receptive_field.png",
            caption="../report/anatomy_receptive_field.rst",
            category="2. CNN anatomy",
        ),
    log:
        "logs/anatomy/receptive_field.log",
    benchmark:
        "benchmarks/rules/anatomy/receptive_field.tsv"
    conda:
        "../../environment.yml"
    params:
        image_size_px=config["anatomy"]["image_size_px"],
        grain_diameter_px=config["anatomy"]["grain_diameter_px"],
        seeds=ANATOMY_SEEDS,
        numbers=lambda wc, input: read_numbers(input.numbers),
    script:
        "../scripts/anatomy_receptive_field.py"


# Hook for the "after training" maps: once the train rule exists, add
#     trained="results/models/grains/unet/fold0/best.pt",
# to the inputs below; the script then shows the trained U-Net's encoder maps under the
# random CNN's (grainflow.anatomy.figures.feature_hierarchy(trained=...)).
rule anatomy_feature_hierarchy:
    input:
        # what training changes: a trained U-Net's maps below the random CNN's
        trained=TRAINED_FEATURE_MODEL,
    output:
        fig=report(
            "results/figures/anatomy_feature_hierarchy.png",
            caption="../report/anatomy_feature_hierarchy.rst",
            category="2. CNN anatomy",
        ),
    log:
        "logs/anatomy/feature_hierarchy.log",
    benchmark:
        "benchmarks/rules/anatomy/feature_hierarchy.tsv"
    conda:
        "../../environment.yml"
    params:
        image_size_px=config["anatomy"]["image_size_px"],
        grain_diameter_px=config["anatomy"]["grain_diameter_px"],
        channels=config["anatomy"]["random_cnn_channels"],
        seeds=ANATOMY_SEEDS,
    script:
        "../scripts/anatomy_feature_hierarchy.py"


rule anatomy_designed_kernel:
    input:
        numbers=ANATOMY_NUMBERS,
    output:
        fig=report(
            "results/figures/anatomy_designed_kernel.png",
            caption="../report/anatomy_designed_kernel.rst",
            category="2. CNN anatomy",
        ),
    log:
        "logs/anatomy/designed_kernel.log",
    benchmark:
        "benchmarks/rules/anatomy/designed_kernel.tsv"
    conda:
        "../../environment.yml"
    params:
        settings=config["anatomy"]["designed_kernel"],
        image_size_px=config["anatomy"]["image_size_px"],
        seed=ANATOMY_SEEDS["designed_kernel"],
        numbers=lambda wc, input: read_numbers(input.numbers),
    script:
        "../scripts/anatomy_designed_kernel.py"


rule anatomy_encoder:
    input:
        numbers=ANATOMY_NUMBERS,
    output:
        fig=report(
            "results/figures/anatomy_encoder.png",
            caption="../report/anatomy_encoder.rst",
            category="2. CNN anatomy",
        ),
    log:
        "logs/anatomy/encoder.log",
    benchmark:
        "benchmarks/rules/anatomy/encoder.tsv"
    conda:
        "../../environment.yml"
    params:
        encoder=config["anatomy"]["encoder"],
        numbers=lambda wc, input: read_numbers(input.numbers),
    script:
        "../scripts/anatomy_encoder.py"


all_targets.extend(
    [
        f"results/figures/anatomy_{name}.png"
        for name in (
            "kernels",
            "feature_maps",
            "correlation",
            "output_size",
            "pooling",
            "parameters",
            "diffraction_cnn",
            "receptive_field",
            "feature_hierarchy",
            "designed_kernel",
            "encoder",
        )
    ]
)
