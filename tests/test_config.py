"""The config schema and the stacks sheet reject realistic mistakes with a clear message."""

import copy
import re

import numpy as np
import pytest
import yaml

from conftest import ROOT, make_workdir, snakemake, tiny_config
from grainflow.config import load_config_file, validate_config
from grainflow.config import main as config_main
from grainflow.schema import SCHEMA_DIR, ConfigError
from grainflow.stacks.sheet import read_stacks


def test_shipped_configs_are_valid():
    with open(ROOT / "config" / "config.yaml") as f:
        default = yaml.safe_load(f)
    validate_config(default)
    with open(ROOT / "config" / "full.yaml") as f:
        full = yaml.safe_load(f)
    merged = copy.deepcopy(default)
    for task, block in full["synthesize"].items():
        merged["synthesize"][task].update(block)
    validate_config(merged)
    validate_config(tiny_config())


def test_full_yaml_merged_as_snakemake_merges_it_is_valid(monkeypatch):
    monkeypatch.chdir(ROOT)  # the stacks sheet's paths are relative to the repository
    assert config_main(["config/config.yaml", "config/full.yaml"]) == 0


def _broken(path, value):
    config = tiny_config()
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return config


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        # a typo in a key name
        ("synthesize.grains.specimen", 4, "unknown key(s) 'specimen'"),
        # a number written as a string
        (
            "synthesize.phases.specimens",
            "6",
            "synthesize.phases.specimens: '6' is not of type 'integer'",
        ),
        # out of range
        (
            "synthesize.grains.boundary_width_px",
            0,
            "synthesize.grains.boundary_width_px: 0 is out of range",
        ),
        (
            "synthesize.phases.area_fraction",
            [0.1, 0.95],
            "synthesize.phases.area_fraction[1]: 0.95 is out of range",
        ),
        # a device name from another tool
        ("training.device", "gpu", "training.device: 'gpu' is not one of ['auto', 'cpu', 'cuda']"),
        # a range written high-to-low
        (
            "synthesize.grains.grain_diameter_px",
            [30, 10],
            "synthesize.grains.grain_diameter_px: range [30, 10] has low > high",
        ),
        (
            "synthesize.diffraction.ring_image_size_px",
            16,
            "synthesize.diffraction.ring_image_size_px: 16 is out of range",
        ),
        (
            "synthesize.diffraction.ring_image_size_px",
            128.5,
            "synthesize.diffraction.ring_image_size_px: 128.5 is not of type 'integer'",
        ),
        # a required key deleted
        ("seed", KeyError, "seed: missing; this key is required"),
        ("synthesize.grains.specimens", KeyError, "synthesize.grains.specimens: missing"),
        # a modality that does not exist
        ("synthesize.grains.modalities", ["sem", "afm"], "'afm' is not one of ['sem', 'optical']"),
        # a task that does not exist
        ("tasks", ["grains", "segmentation"], "'segmentation' is not one of"),
    ],
)
def test_bad_config_names_the_key(path, value, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(_broken(path, value), source="my.yaml")
    message = str(info.value)
    assert expected in message
    assert "my.yaml" in message and "config/README.md" in message


def test_every_problem_is_reported_at_once():
    config = _broken("training.device", "gpu")
    config["synthesize"]["grains"]["specimens"] = 0
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert "training.device" in str(info.value) and "synthesize.grains.specimens" in str(info.value)


def test_shipped_stacks_sheet_is_valid(tmp_path):
    stacks = read_stacks(ROOT / "config" / "stacks.tsv")
    assert list(stacks.index) == ["nist_steel", "nasa_superalloy", "stem_nanoparticles"]
    for column in ("path", "ground_truth"):
        assert all((ROOT / p).exists() for p in stacks[column] if isinstance(p, str) and p)
    stacks = read_stacks(make_workdir(tmp_path) / "config" / "stacks.tsv")
    assert list(stacks.index) == ["nist_steel", "nasa_superalloy"]  # the tiny runs' stacks
    assert stacks.loc["nist_steel", "pixel_size_um"] == pytest.approx(0.2252)
    assert np.isnan(stacks.loc["nasa_superalloy", "pixel_size_um"])  # unknown: sizes in pixels
    assert stacks.loc["nasa_superalloy", "particles"] == "dark"  # the sheet says: gamma-prime dark


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda rows: rows[1].__setitem__(3, "0"), "pixel_size_um"),
        (lambda rows: rows[1].__setitem__(3, "abc"), "'abc' is not a number"),
        (
            lambda rows: rows[1].__setitem__(2, "/nonexistent/steel.tif"),
            "/nonexistent/steel.tif does not exist",
        ),
        (lambda rows: rows[1].__setitem__(1, "grain"), "'grain' is not one of"),
        (lambda rows: rows[2].__setitem__(0, "nist_steel"), "repeated: ['nist_steel']"),
        (lambda rows: rows[1].__setitem__(0, "steel sample"), "does not match"),
        # rows[1] is nist_steel (grains), rows[2] nasa_superalloy (phases); column 6: particles
        (
            lambda rows: rows[1].__setitem__(6, "dark"),
            "only phases and nanoparticles stacks have particles",
        ),
        (lambda rows: rows[2].__setitem__(6, "grey"), "column 'particles': 'grey' does not match"),
        (lambda rows: rows[2].__setitem__(6, "dark:(spot"), "not a regular expression"),
    ],
)
def test_bad_stacks_sheet_names_line_and_column(tmp_path, edit, expected):
    d = make_workdir(tmp_path)
    sheet = d / "config" / "stacks.tsv"
    rows = [line.split("\t") for line in sheet.read_text().splitlines()]
    edit(rows)
    sheet.write_text("\n".join("\t".join(r) for r in rows) + "\n")
    with pytest.raises(ConfigError) as info:
        read_stacks(sheet)
    assert expected in str(info.value)
    assert str(sheet) in str(info.value)


def test_stacks_sheet_with_unknown_column(tmp_path):
    sheet = tmp_path / "stacks.tsv"
    sheet.write_text("stack\ttask\tpath\tpixelsize\nx\tgrains\t.\t1\n")
    with pytest.raises(ConfigError, match=r"unknown column\(s\) \['pixelsize'\]"):
        read_stacks(sheet)


def test_missing_stacks_sheet(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_stacks(tmp_path / "nope.tsv")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"inference.overlap_px": 256}, "inference.overlap_px: 256 must be smaller"),
        ({"diffraction.scan.arch": "vgg"}, "diffraction.scan.arch: 'vgg' is not one of"),
        (
            {"inference.shards": 3, "inference.scale": "auto"},
            "inference.scale: 'auto' is not yet supported with inference.shards 3",
        ),
        # each pattern kind's size must hold several orders of its first-order range
        (
            {"synthesize.diffraction.ring_image_size_px": 48},
            r"synthesize.diffraction.ring_first_order_px: a first order at up to 18 px leaves "
            r"fewer than four orders inside a 48-px ring pattern \(ring_image_size_px\); keep it "
            r"at most 12 px or raise ring_image_size_px",
        ),
        (
            {
                "synthesize.diffraction.image_size_px": 32,
                "synthesize.diffraction.first_order_px": [6, 9],
            },
            r"synthesize.diffraction.first_order_px: .* inside a 32-px spot pattern",
        ),
        # a ring-only model cannot map a spot scan, nor learn without rings
        (
            {
                "diffraction.archs.ring": {"model": "ring_profile", "epochs": 1},
                "diffraction.scan.arch": "ring",
            },
            r"diffraction.scan.arch: 'ring' \(ring_profile\) reads \['ring'\] patterns only",
        ),
        (
            {
                "diffraction.archs.ring": {"model": "ring_profile", "epochs": 1},
                "synthesize.diffraction.modalities": ["spot"],
            },
            r"diffraction.archs.ring: ring_profile reads \['ring'\] patterns",
        ),
    ],
)
def test_cross_key_rules_name_every_key_before_any_job(edit, expected):
    config = tiny_config()
    config["diffraction"]["enabled"] = True
    for path, value in edit.items():
        node = config
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    with pytest.raises(ConfigError, match=expected):
        validate_config(config)


def test_a_classifier_may_not_share_a_unet_name():
    config = tiny_config()
    config["diffraction"]["enabled"] = True
    unet = next(iter(config["training"]["archs"]))
    config["diffraction"]["archs"][unet] = {"model": "diffraction_cnn"}
    with pytest.raises(ConfigError, match=rf"diffraction.archs: \['{unet}'\] also name U-Nets"):
        validate_config(config)


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda c: c["inference"].update(sigma_scale=float("nan")), "inference.sigma_scale: nan"),
        (lambda c: c.update(seed=float("inf")), "seed: inf"),
        (
            lambda c: c["synthesize"]["grains"]["grain_diameter_px"].__setitem__(0, float("nan")),
            r"synthesize.grains.grain_diameter_px\[0\]: nan",
        ),
    ],
    ids=["number", "integer key", "inside a list"],
)
def test_non_finite_numbers_are_refused_by_name(edit, where):
    config = tiny_config()
    edit(config)  # YAML's .nan and .inf pass every minimum and maximum of the schema
    with pytest.raises(ConfigError, match=where + " is not a finite number"):
        validate_config(config)


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_non_finite_pixel_size_is_refused_with_its_line(tmp_path, value):
    sheet = tmp_path / "stacks.tsv"
    sheet.write_text(
        "stack\ttask\tpath\tpixel_size_um\tground_truth\tgroup\tdescription\n"
        f"a\tgrains\t{tmp_path}\t{value}\t\t\tx\n"
    )
    with pytest.raises(
        ConfigError, match=rf"line 2 \(a\), column 'pixel_size_um': '{value}' is not a finite"
    ):
        read_stacks(sheet)


# --- every block closed, every key described and documented ------------------------------------


def _schema_nodes(schema):
    """(dotted path, node) of every subschema of the config schema, $refs resolved."""

    def resolve(node):
        if "$ref" not in node:
            return node
        target = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}

    def walk(node, path):
        node = resolve(node)
        yield path, node
        for name, child in node.get("properties", {}).items():
            yield from walk(child, f"{path}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{path}.<name>")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")
        for alternative in node.get("oneOf", []):
            yield from walk(alternative, path)

    yield from walk(schema, "config")


def test_every_block_of_the_config_schema_is_closed_and_described():
    schema = yaml.safe_load((SCHEMA_DIR / "config.schema.yaml").read_text())
    open_blocks, undescribed, unbounded = [], [], []
    for path, node in _schema_nodes(schema):
        if node.get("type") == "object" and node.get("additionalProperties", True) is True:
            open_blocks.append(path)
        for name, child in node.get("properties", {}).items():
            if "description" not in child and "$ref" not in child:
                undescribed.append(f"{path}.{name}")
        if node.get("type") in ("number", "integer"):
            if not {"minimum", "exclusiveMinimum"} & set(node) or not {
                "maximum",
                "exclusiveMaximum",
            } & set(node):
                unbounded.append(path)
    assert open_blocks == [] and undescribed == [] and unbounded == []


def test_every_config_key_is_documented_in_the_readme():
    schema = yaml.safe_load((SCHEMA_DIR / "config.schema.yaml").read_text())
    readme = (ROOT / "config" / "README.md").read_text()
    words = set()
    for span in re.findall(r"`([^`]+)`", readme):
        words.update(re.split(r"[\s.,/]+", span))
    names = {name for _, node in _schema_nodes(schema) for name in node.get("properties", {})}
    assert sorted(names - words) == []


def test_the_diffraction_blocks_are_closed_too():
    config = tiny_config()
    config["diffraction"]["training"]["batchsize"] = 8
    config["diffraction"]["archs"]["resnet18"]["tranfser"] = "full"
    config["diffraction"]["archs"]["diffraction_cnn"]["model_kwargs"] = {"dropot": 0.2}
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert "diffraction.training: unknown key(s) 'batchsize'" in message
    assert "diffraction.archs.resnet18: unknown key(s) 'tranfser'" in message
    assert "diffraction.archs.diffraction_cnn.model_kwargs: unknown key(s) 'dropot'" in message


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (  # the classifiers' default min_lr is 1e-5
            lambda c: c["diffraction"]["archs"]["resnet18"].update(lr=1e-6),
            "diffraction.archs.resnet18: min_lr must not exceed lr",
        ),
        (
            lambda c: c["diffraction"]["archs"]["resnet18"].update(model_kwargs={"dropout": 0.2}),
            "diffraction.archs.resnet18: bad arguments for model 'resnet18'",
        ),
        (
            lambda c: c["training"]["archs"]["unet"].update(model="resunet"),
            "training.archs.unet: resunet always has residual encoder blocks",
        ),
        (
            lambda c: c["training"]["archs"]["unet"].update(norm_percentiles=[5, 5]),
            "training.archs.unet: norm_percentiles must be (low, high)",
        ),
    ],
)
def test_training_settings_are_built_as_the_jobs_build_them(edit, expected):
    config = tiny_config()
    edit(config)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        validate_config(config)


def test_a_problem_names_the_file_and_line_that_set_the_key(tmp_path):
    default = tmp_path / "config.yaml"
    default.write_text(yaml.safe_dump(tiny_config(), sort_keys=False))
    override = tmp_path / "override.yaml"
    override.write_text("seed: 1\ninference:\n  tile_px: 128\n  sigma_scale: 5\n")
    config = tiny_config()
    config["seed"] = 1
    config["inference"].update(tile_px=128, sigma_scale=5)
    with pytest.raises(ConfigError) as info:
        validate_config(config, source="both", files=[default, override])
    assert f"{override}, line 4: inference.sigma_scale: 5 is out of range" in str(info.value)


# --- config files: YAML mistakes named by file and line ----------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed: 7\n  bad: [1, 2\n", r"line 2, column 6: not valid YAML"),
        ("seed: 7\ntasks:\n\t- grains\n", r"line 3, column 1: .* replace the tab by spaces"),
        ("seed: 7\ntasks: [grains]\nseed: 8\n", r"line 3, column 1: key 'seed' is given twice"),
        ("seed: 2026-13-01\n", r"line 1, column 7: '2026-13-01' reads as a date, but is not one"),
        ("", r"is empty \(or only comments\)"),
        ("# all commented out\n", r"is empty \(or only comments\)"),
        ("- seed\n- tasks\n", r"the top level is a list \('- item' lines\), not a mapping"),
        ("grains\n", r"the top level is a single text, not a mapping"),
    ],
    ids=["syntax", "tab", "duplicate key", "no date", "empty", "comments", "list", "scalar"],
)
def test_a_yaml_mistake_names_file_and_line(tmp_path, text, expected):
    path = tmp_path / "my.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*" + expected):
        load_config_file(path)


def test_a_json_config_and_yaml_merge_keys_are_read(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"seed": 3}')
    assert load_config_file(path) == {"seed": 3}
    path = tmp_path / "c.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n")
    assert load_config_file(path)["other"] == {"x": 1, "y": 3}


def test_a_yaml_mistake_stops_snakemake_naming_file_and_line(tmp_path):
    workdir = make_workdir(tmp_path / "run")
    config = workdir / "config" / "config.yaml"
    config.write_text("seed: 7\n  bad: [1, 2\n" + config.read_text())
    result = snakemake(workdir, "--dry-run", "--cores", "1", timeout=120)
    assert result.returncode != 0
    assert "config/config.yaml, line 2, column 6: not valid YAML" in result.stdout + result.stderr


# --- the stacks sheet: fields, lines and tasks -----------------------------------------------------


HEADER = "stack\ttask\tpath\tpixel_size_um\tground_truth\tgroup\tdescription"


def _sheet(tmp_path, *rows, text=None):
    sheet = tmp_path / "stacks.tsv"
    sheet.write_text(text if text is not None else "\n".join([HEADER, *rows]) + "\n")
    return sheet


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("a\tgrains\t.\t1\t\t\tx\t", "line 2 (a): 8 fields, but the header (line 1) has 7"),
        ("a\tgrains\t.\t1\t\tx", "line 2 (a): 6 fields, but the header (line 1) has 7"),
        ("a\tgrains\t.\t1\t\t\tx\ty\tz", "2 tabs too many: a cell holds a tab"),
    ],
    ids=["extra tab at the end", "missing tab", "extra tabs inside"],
)
def test_a_row_with_a_wrong_number_of_fields_is_refused_by_line(tmp_path, row, expected):
    sheet = _sheet(tmp_path, row)
    with pytest.raises(ConfigError) as info:
        read_stacks(sheet, check_paths=False)
    message = str(info.value)
    assert str(sheet) in message and expected in message
    assert "stack, task, path, pixel_size_um, ground_truth, group, description" in message


def test_blank_whitespace_and_comment_lines_are_skipped_and_lines_still_count(tmp_path):
    text = "# real stacks\n" + HEADER + "\n\n  \t \t\n# a\tcomment\na\tgrains\t.\tabc\t\t\tx\n"
    sheet = _sheet(tmp_path, text=text)
    with pytest.raises(ConfigError, match=r"line 6 \(a\), column 'pixel_size_um': 'abc' is not"):
        read_stacks(sheet, check_paths=False)
    sheet = _sheet(tmp_path, text="\ufeff" + text.replace("abc", "1.5"))  # a spreadsheet's BOM
    assert read_stacks(sheet, check_paths=False).loc["a", "pixel_size_um"] == 1.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty; its first line is the header"),
        ("stack,task,path\na,grains,.\n", "line 1 (the header) has no tabs"),
        ("stack\ttask\ttask\tpath\n", "column(s) ['task'] appear twice"),
        (HEADER + "\t\n", "line 1 (the header), field 8: empty column name"),
        (
            HEADER + "\n\tgrains\t.\t\t\t\t\n",
            "line 2, column 'stack': empty, but every row needs it",
        ),
    ],
)
def test_a_malformed_sheet_is_named(tmp_path, text, expected):
    sheet = _sheet(tmp_path, text=text)
    with pytest.raises(ConfigError) as info:
        read_stacks(sheet, check_paths=False)
    assert str(sheet) in str(info.value) and expected in str(info.value)


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("phases", "'phases' is not one of the config's tasks (grains), so nothing would run"),
        ("diffraction", "'diffraction' stacks are not run while diffraction.enabled is false"),
    ],
)
def test_a_stack_of_a_task_not_run_is_refused_or_skipped(tmp_path, task, expected):
    sheet = _sheet(tmp_path, "a\tgrains\t.\t\t\t\tx", f"b\t{task}\t.\t\t\t\ty")
    with pytest.raises(ConfigError) as info:
        read_stacks(sheet, tasks=["grains"])
    assert f"line 3 (b), column 'task': {expected}" in str(info.value)
    assert "stacks_skip_unrun_tasks: true" in str(info.value)
    warnings = []
    table = read_stacks(sheet, tasks=["grains"], skip_unrun_tasks=True, warn=warnings.append)
    assert list(table.index) == ["a"]
    assert len(warnings) == 1 and f"{sheet}, line 3 (b): skipped" in warnings[0]


def test_a_stack_of_a_task_not_run_stops_snakemake_naming_its_line(tmp_path):
    config = tiny_config()
    config["tasks"] = ["grains"]
    workdir = make_workdir(tmp_path / "run", config)
    result = snakemake(workdir, "--dry-run", "--cores", "1", timeout=300)
    assert result.returncode != 0
    assert (
        "stacks sheet config/stacks.tsv has problems:\n  - line 3 (nasa_superalloy), "
        "column 'task': 'phases' is not one of the config's tasks (grains)"
    ) in result.stdout + result.stderr


def test_python_m_grainflow_config_checks_merged_files(tmp_path):
    workdir = make_workdir(tmp_path / "run")
    (workdir / "bad.yaml").write_text("inference:\n  tile_px: 16\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        assert config_main(["config/config.yaml"]) == 0
        assert config_main(["config/config.yaml", "bad.yaml"]) == 1


def test_the_diffraction_task_needs_its_crystals():
    config = tiny_config()
    config["diffraction"]["enabled"] = True
    del config["synthesize"]["diffraction"]
    with pytest.raises(ConfigError, match="synthesize.diffraction is missing, but diffraction"):
        validate_config(config)
    config["diffraction"]["enabled"] = False
    validate_config(config)
