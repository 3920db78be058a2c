# grainflow: CNNs for materials micrographs, trained on synthetic images with free labels.
# This file is the table of contents; rules live in workflow/rules/, logic in src/grainflow/.

from snakemake.utils import min_version

from grainflow.config import check_config_files

min_version("9.0")

# a YAML mistake named by file and line (Snakemake's own message names neither)
check_config_files("config/config.yaml", *workflow.overwrite_configfiles)


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/synthesize.smk"
include: "workflow/rules/augment.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/anatomy.smk"
include: "workflow/rules/stacks.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/diffraction.smk"
include: "workflow/rules/adapt.smk"
include: "workflow/rules/report.smk"  # last: its provenance job waits for every other target


rule all:
    default_target: True
    input:
        all_targets,
