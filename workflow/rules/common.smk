# Validation of the config and the stacks sheet, seeds, wildcard constraints and targets.

from snakemake.logging import logger

from grainflow.config import stack_tasks, validate_config
from grainflow.stacks.sheet import read_stacks
from grainflow.seeds import derive_seed
from grainflow.tasks import task_info

#: the config files in the order Snakemake merged them: the Snakefile's, then --configfile's
CONFIG_FILES = [
    *(str(f) for f in workflow.configfiles if f not in workflow.overwrite_configfiles),
    *map(str, workflow.overwrite_configfiles),
]
validate_config(
    config,
    source=" + ".join(CONFIG_FILES)
    + (" + --config" if workflow.config_settings.config else ""),
    files=CONFIG_FILES,
)
#: the stacks sheet; rows of tasks this run does not run stop it, or are skipped with a warning
STACKS = read_stacks(
    config["stacks"],
    tasks=stack_tasks(config),
    skip_unrun_tasks=config.get("stacks_skip_unrun_tasks", False),
    warn=logger.warning,
)
_unknown = sorted(set(config["inference"].get("scale_levels", {})) - set(STACKS.index))
if _unknown:
    raise ValueError(
        f"inference.scale_levels names {_unknown}, which are not stacks of the sheet "
        f"{config['stacks']}; remove them from the config or add the stacks to the sheet"
    )

#: segmentation tasks of this run
TASKS = list(config["tasks"])
#: every task that has synthetic data
SYNTH_TASKS = [*TASKS, "kernels"]


wildcard_constraints:
    task="|".join([*SYNTH_TASKS, "diffraction"]),
    specimen=r"s\d+",
    fold=r"\d+",
    arch="|".join(config["training"]["archs"]),
    model="|".join([*config["training"]["archs"], "classical"]),


def job_seed(*parts):
    """The seed of one job, derived from the base seed and the job's names."""
    return derive_seed(config["seed"], *parts)


# names of the inputs and targets of several stages


def specimens(task):
    """Names of the specimens of a task: s00, s01, ..."""
    n = config["synthesize"][task]["specimens"]
    return [f"s{i:02d}" for i in range(n)]


def synthetic_files(task):
    """The synthetic specimen files of a task."""
    return [f"results/synthetic/{task}/{s}.h5" for s in specimens(task)]


def augmented_files(task):
    """The augmented specimen files of a task."""
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


def split_inputs(wc):
    """The specimen files a task's folds are drawn from (diffraction is not augmented)."""
    if wc.task == "diffraction":
        return synthetic_files("diffraction")
    return expand(AUGMENTED_FILE, task=wc.task, specimen=specimens(wc.task))


def split_settings(task):
    """Folds, grouping and stratification of a task's GroupKFold manifest.

    Diffraction folds are over crystals with the crystal systems balanced; the
    segmentation tasks balance what their table says (grainflow.tasks).
    """
    if task == "diffraction":
        return {
            "folds": config["diffraction"]["folds"],
            "group_by": "specimen",
            "stratify_by": "crystal_system",
        }
    return {
        "folds": config["splits"]["folds"],
        "group_by": config["splits"]["group_by"],
        "stratify_by": task_info(task).stratify_by,
    }


#: final outputs; each rule file adds its own
all_targets = []


#: an inference store's model name for the fold models adapted to its stack (rule adapt)
ADAPTED = "-adapted"
#: the model names rules infer and infer_shard take: an architecture, adapted or not
INFER_MODELS = "(?:{})(?:{})?".format("|".join(config["training"]["archs"]), ADAPTED)


def infer_checkpoints(wc):
    """The fold checkpoints an inference store is predicted with: trained, or adapted."""
    task, folds = STACKS.loc[wc.stack, "task"], range(config["splits"]["folds"])
    if wc.arch.endswith(ADAPTED):
        arch = wc.arch.removesuffix(ADAPTED)
        return [
            f"results/models/{task}/{arch}{ADAPTED}/{wc.stack}/fold{k}/best.pt"
            for k in folds
        ]
    return [f"results/models/{task}/{wc.arch}/fold{k}/best.pt" for k in folds]
