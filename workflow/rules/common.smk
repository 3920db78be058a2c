# Validation of the config and the stacks sheet, seeds, wildcard constraints and targets.

from pathlib import Path

from grainflow.config import read_stacks, validate_config
from grainflow.seeds import derive_seed
from grainflow.synth.stats import summarize_statistics
from grainflow.figures_training import training_summary

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"

validate_config(
    config,
    source="the configuration (config/config.yaml and overrides)",
    schema_dir=SCHEMAS,
)
STACKS = read_stacks(config["stacks"], schema_dir=SCHEMAS)

#: segmentation tasks of this run
TASKS = list(config["tasks"])
#: every task that has synthetic data
SYNTH_TASKS = [*TASKS, "kernels"]


wildcard_constraints:
    task="[a-z]+",
    specimen=r"s\d+",
    fold=r"\d+",
    arch="|".join(config["training"]["archs"]),


def specimens(task):
    """Names of the specimens of a task: s00, s01, ..."""
    n = config["synthesize"][task]["specimens"]
    return [f"s{i:02d}" for i in range(n)]


def job_seed(*parts):
    """The seed of one job, derived from the base seed and the job's names."""
    return derive_seed(config["seed"], *parts)


def synthetic_files(task):
    return [f"results/synthetic/{task}/{s}.h5" for s in specimens(task)]


def augmented_files(task):
    return [f"results/augmented/{task}/{s}.h5" for s in specimens(task)]


def archs_for(task):
    """Names of the architectures (config training.archs) trained on a task."""
    return [
        name
        for name, arch in config["training"]["archs"].items()
        if task in arch["tasks"]
    ]


def training_shared():
    """Training settings shared by all architectures (config training without archs).

    gpus_per_job is left out: it asks for resources and does not change a result.
    """
    return {
        k: v
        for k, v in config["training"].items()
        if k not in ("archs", "gpus_per_job")
    }


# CNN anatomy: seeds of its figures and the numbers its captions quote

ANATOMY_SEED_NAMES = ("examples", "receptive_field", "hierarchy", "designed_kernel")


def anatomy_seeds():
    """Seeds of the anatomy figures, shared by the numbers table and the figures."""
    return {name: job_seed("anatomy", name) for name in ANATOMY_SEED_NAMES}


def read_anatomy_numbers(path):
    """The numbers the anatomy captions quote (read when the figure job runs)."""
    import json

    with open(path) as f:
        return json.load(f)


def trained_feature_model():
    """The grains U-Net of fold 0 whose feature maps the anatomy section shows (or none)."""
    archs = archs_for("grains") if "grains" in TASKS else []
    return [f"results/models/grains/{archs[0]}/fold0/best.pt"] if archs else []


#: final outputs; each rule file adds its own
all_targets = []
