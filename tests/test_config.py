"""The config schema and the stacks sheet reject realistic mistakes with a clear message."""

import copy

import numpy as np
import pytest
import yaml

from conftest import ROOT, make_workdir, tiny_config
from grainflow.config import ConfigError, read_stacks, validate_config


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
            "synthesize.phases.area_fraction.1: 0.95 is out of range",
        ),
        # a device name from another tool
        ("training.device", "gpu", "training.device: 'gpu' is not one of ['auto', 'cpu', 'cuda']"),
        # a range written high-to-low
        (
            "synthesize.grains.grain_diameter_px",
            [30, 10],
            "synthesize.grains.grain_diameter_px: range [30, 10] has low > high",
        ),
        # a required key deleted
        ("seed", KeyError, "'seed' is a required property"),
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
    stacks = read_stacks(make_workdir(tmp_path) / "config" / "stacks.tsv")
    assert list(stacks.index) == ["nist_steel", "nasa_superalloy"]
    assert stacks.loc["nist_steel", "pixel_size_um"] == pytest.approx(0.2252)
    assert np.isnan(stacks.loc["nasa_superalloy", "pixel_size_um"])  # unknown: sizes in pixels


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
