"""Validation of the run configuration.

It is checked before any job starts. Every problem is reported at once, each
naming the file, the key (as a dotted path), what is wrong and how to fix it,
so a user can fix them all in one edit. ``python -m grainflow.config FILE...``
checks the config files and their stacks sheet
(:func:`grainflow.stacks.sheet.read_stacks`) without Snakemake.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import jsonschema
import yaml

from grainflow.schema import SCHEMA_DIR, ConfigError, dotted_path, load_schema
from grainflow.stacks.sheet import read_stacks

__all__ = [
    "ConfigError",
    "load_config_file",
    "check_config_files",
    "validate_config",
    "stack_tasks",
    "SCHEMA_DIR",
]

_README = "See config/README.md for every key, its type and its allowed values."


# ---------------------------------------------------------------------------------------------
# config files


class _Refused(yaml.constructor.ConstructorError):
    """YAML that parses but that grainflow refuses; the message says why and what to do."""


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` may be overridden: that is what it is for
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key; the base class says so with its line
                continue
            if first is not key_node.start_mark:
                raise _Refused(
                    None,
                    None,
                    f"key {key!r} is given twice in one block (first on line {first.line + 1}); "
                    "YAML would silently keep only the last one, so delete or merge one of them",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep)

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:  # e.g. 2026-13-01: a date in form only
            raise _Refused(
                None,
                None,
                f"{node.value!r} reads as a date, but is not one ({exc}); write it in quotes",
                node.start_mark,
            ) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictLoader.construct_yaml_timestamp)


def _yaml_problem(path: Path, error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else f"{path}"
    what = (
        " ".join(
            str(part)
            for part in (getattr(error, "context", None), getattr(error, "problem", None))
            if part
        )
        or str(error).splitlines()[0]
    )
    if isinstance(error, _Refused):
        return f"{where}: {what}"
    hint = "check the indentation (spaces only) and the brackets, quotes and colons here"
    if "'\\t'" in what:
        hint = "YAML indents with spaces: replace the tab by spaces"
    elif mark and mark.line > 0:
        hint += " and on the line before"
    return f"{where}: not valid YAML ({what}); {hint}"


def load_config_file(path: str | os.PathLike) -> dict:
    """Read one config file (YAML or JSON, as Snakemake does) into a dict.

    Raises :class:`ConfigError` naming the file, and the line and column of a
    YAML mistake, for: a file that is not valid YAML, a key given twice in one
    block, an empty file, and a top level that is not a mapping of keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}, line {line}: not UTF-8 text (byte {exc.object[exc.start]:#04x}); "
            "save the file as UTF-8"
        ) from None
    try:
        config = json.loads(text)  # Snakemake tries JSON first
    except ValueError:
        try:
            config = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader
        except yaml.YAMLError as exc:
            raise ConfigError(_yaml_problem(path, exc)) from None
    if config is None:
        raise ConfigError(
            f"{path} is empty (or only comments); fill it with 'key: value' lines as in "
            "config/config.yaml (a file given with --configfile needs only the keys it changes)"
        )
    if not isinstance(config, dict):
        kind = {list: "a list ('- item' lines)", str: "a single text"}.get(
            type(config), f"a single {type(config).__name__}"
        )
        raise ConfigError(
            f"{path}: the top level is {kind}, not a mapping of keys to values; write "
            "'key: value' lines at the left margin, as in config/config.yaml"
        )
    return config


def check_config_files(*paths: str | os.PathLike) -> None:
    """:func:`load_config_file` on every path that exists; one :class:`ConfigError` for all.

    For the Snakefile, before its ``configfile:`` directive: Snakemake's own
    message for these mistakes names neither the file nor the line. Paths that
    do not exist are left to Snakemake.
    """
    problems = []
    for path in paths:
        if Path(path).exists():
            try:
                load_config_file(path)
            except ConfigError as exc:
                problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))


# ---------------------------------------------------------------------------------------------
# the configuration


def _message(error: jsonschema.ValidationError) -> tuple[tuple, str]:
    """The key path that ``error`` is about and its message, which starts with that path."""
    parts = tuple(error.absolute_path)
    where = dotted_path(parts) or "(top level)"
    if "propertyNames" in error.schema_path:
        rule = error.schema.get("description") or f"matching {error.validator_value!r}"
        return (
            *parts,
            error.instance,
        ), f"{where}: {error.instance!r} is not an allowed name here ({rule})"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted((k for k in error.instance if k not in allowed), key=str)
        return (*parts, extra[0]), (
            f"{where}: unknown key(s) {', '.join(map(repr, extra))}; "
            f"allowed here: {', '.join(allowed)}"
        )
    if error.validator == "required":
        missing = ast.literal_eval(error.message.removesuffix(" is a required property"))
        return parts, (
            f"{dotted_path((*parts, missing))}: missing; this key is required (add it, as in "
            "config/config.yaml)"
        )
    if error.validator == "enum":
        return parts, f"{where}: {error.instance!r} is not one of {error.validator_value}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bound = error.message.split(" is ", 1)[-1]
        return parts, f"{where}: {error.instance!r} is out of range ({bound})"
    if error.validator == "type" and error.instance is None:
        return parts, (
            f"{where}: empty (YAML reads 'key:' with nothing after it as null); "
            f"give a value of type {error.validator_value!r}"
        )
    if error.validator == "type" and isinstance(error.instance, str):
        try:
            float(error.instance)
        except ValueError:
            pass
        else:
            return parts, f"{where}: {error.message}; write numbers without quotes"
    return parts, f"{where}: {error.message}"


def _walk_problems(config, path: tuple = ()) -> list[tuple[tuple, str]]:
    """Keys that are not text, and NaN or infinite numbers (YAML's .nan passes any minimum)."""
    problems = []
    if isinstance(config, Mapping):
        items = list(config.items())
        for key, _ in items:
            if not isinstance(key, str):
                problems.append(
                    (
                        (*path, key),
                        f"{dotted_path(path) or '(top level)'}: key {key!r} is not text (YAML reads "
                        "yes/no/on/off, numbers and dates as such); write it in quotes",
                    )
                )
    elif isinstance(config, list):
        items = list(enumerate(config))
    else:
        return []
    for key, value in items:
        here = (*path, key)
        if isinstance(value, float) and not math.isfinite(value):
            problems.append((here, f"{dotted_path(here)}: {value} is not a finite number"))
        else:
            problems += _walk_problems(value, here)
    return problems


def _check_ranges(config: Mapping, path: tuple = ()) -> list[tuple[tuple, str]]:
    problems = []
    for key, value in config.items():
        here = (*path, key)
        if isinstance(value, Mapping):
            problems += _check_ranges(value, here)
        elif (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and value[0] > value[1]
        ):
            problems.append(
                (here, f"{dotted_path(here)}: range {value} has low > high; write [low, high]")
            )
    return problems


def _cross_key_problems(config: Mapping) -> list[tuple[tuple, str]]:
    """Rules that join several keys of a config the schema has accepted."""
    problems = []
    inference = config["inference"]
    if inference["overlap_px"] >= inference["tile_px"]:
        problems.append(
            (
                ("inference", "overlap_px"),
                f"inference.overlap_px: {inference['overlap_px']} must be smaller than "
                f"inference.tile_px ({inference['tile_px']})",
            )
        )
    if inference["shards"] > 1 and inference["scale"] != "none":
        problems.append(
            (
                ("inference", "scale"),
                f"inference.scale: {inference['scale']!r} is not yet supported with "
                f"inference.shards {inference['shards']}; set inference.scale: none",
            )
        )
    problems += _pattern_size_problems(config)
    for task in config["tasks"]:
        for where in (
            ("synthesize",),
            ("evaluation", "baseline"),
            ("inference", "labels_split_px"),
        ):
            block = config
            for key in where:
                block = block[key]
            if task not in block:
                problems.append(
                    (
                        (*where, task),
                        f"{dotted_path((*where, task))} is missing, but tasks names {task}: add "
                        "it (config/config.yaml has it) or drop the task",
                    )
                )
    diffraction = config["diffraction"]
    if diffraction["enabled"]:
        classifiers = set(diffraction["archs"])
        shared = sorted(classifiers & set(config["training"]["archs"]))
        if shared:
            problems.append(
                (
                    ("diffraction", "archs", shared[0]),
                    f"diffraction.archs: {shared} also name U-Nets in training.archs; give the "
                    "classifiers other names (they name folders beside the U-Nets')",
                )
            )
        from grainflow.diffraction.representation import MODEL_FORMS

        if "diffraction" not in config["synthesize"]:
            problems.append(
                (
                    ("synthesize", "diffraction"),
                    "synthesize.diffraction is missing, but diffraction.enabled is true: add "
                    "the crystals' settings (config/config.yaml has them) or set "
                    "diffraction.enabled: false",
                )
            )
        modalities = config["synthesize"].get("diffraction", {}).get("modalities", [])
        for name, arch in diffraction["archs"].items():
            kinds = sorted(MODEL_FORMS.get(arch["model"], modalities))
            if modalities and not set(kinds) & set(modalities):
                problems.append(
                    (
                        ("diffraction", "archs", name, "model"),
                        f"diffraction.archs.{name}: {arch['model']} reads {kinds} patterns, and "
                        f"synthesize.diffraction.modalities ({modalities}) makes none; add them "
                        "or drop the architecture",
                    )
                )
        for block in ("scan", "stacks"):
            arch = diffraction["archs"].get(diffraction[block]["arch"])
            kinds = MODEL_FORMS.get(arch["model"]) if arch else None
            if kinds and diffraction[block]["modality"] not in kinds:
                problems.append(
                    (
                        ("diffraction", block, "arch"),
                        f"diffraction.{block}.arch: {diffraction[block]['arch']!r} "
                        f"({arch['model']}) reads {sorted(kinds)} patterns only, and "
                        f"diffraction.{block}.modality is {diffraction[block]['modality']!r}; "
                        "choose another architecture or modality",
                    )
                )
            if diffraction[block]["arch"] not in classifiers:
                problems.append(
                    (
                        ("diffraction", block, "arch"),
                        f"diffraction.{block}.arch: {diffraction[block]['arch']!r} is not one "
                        f"of diffraction.archs ({', '.join(sorted(classifiers))})",
                    )
                )
    return problems + _training_problems(config)


def _pattern_size_problems(config: Mapping) -> list[tuple[tuple, str]]:
    """Each pattern kind's first order must leave several orders inside its pattern size."""
    problems = []
    settings = config["synthesize"].get("diffraction")
    if not settings:
        return problems
    for kind, size_key, range_key in (
        ("spot", "image_size_px", "first_order_px"),
        ("ring", "ring_image_size_px", "ring_first_order_px"),
    ):
        size, high = settings[size_key], settings[range_key][1]
        if high > size / 4:
            problems.append(
                (
                    ("synthesize", "diffraction", range_key),
                    f"synthesize.diffraction.{range_key}: a first order at up to {high:g} px "
                    f"leaves fewer than four orders inside a {size}-px {kind} pattern "
                    f"({size_key}); keep it at most {size / 4:g} px or raise {size_key}",
                )
            )
    return problems


def _training_problems(config: Mapping) -> list[tuple[tuple, str]]:
    """Build every model and training setting a job will build, as the jobs do.

    ``TrainConfig`` refuses e.g. ``min_lr`` above ``lr`` (the defaults
    included), and a model refuses arguments it does not take (``dropout``
    for ``resnet18``); models are built on the meta device, so without memory
    or time.
    """
    import torch

    from grainflow.diffraction.train import classifier_config
    from grainflow.models.registry import build_model
    from grainflow.training.config import TrainConfig, arch_settings

    fields = {f.name for f in dataclasses.fields(TrainConfig)}

    blocks = [
        (("training", "archs", name), arch_settings, arch, config["training"])
        for name, arch in config["training"]["archs"].items()
    ]
    diffraction = config["diffraction"]
    if diffraction["enabled"]:
        shared = {**config["training"], **diffraction["training"]}
        blocks += [
            (("diffraction", "archs", name), classifier_config, arch, shared)
            for name, arch in diffraction["archs"].items()
        ]
        pretrain, transfer = diffraction["pretrain"], diffraction["transfer"]
        if diffraction["pretrained"] == "grainflow":  # as the jobs diffraction_pretrain ...
            resnet = {"model": "resnet18", "epochs": pretrain["epochs"], "lr": pretrain["lr"]}
            blocks.append((("diffraction", "pretrain"), classifier_config, resnet, shared))
        if transfer["strategies"]:  # ... and diffraction_transfer build theirs
            resnet = {"model": "resnet18", "lr": transfer["lr"]}
            blocks.append((("diffraction", "transfer"), classifier_config, resnet, shared))
    problems = []
    for parts, settings, arch, shared in blocks:
        try:
            name, kwargs, _ = settings(arch, shared=shared, threads=1, seed=0)
            with torch.device("meta"):
                build_model(name, **kwargs)
        except Exception as exc:  # whatever the job would stop with
            message = str(exc).removeprefix("training.")
            if not isinstance(exc, ValueError):
                message = f"{type(exc).__name__}: {message}"
            field = message.split(" ", 1)[0]
            if field in fields and field not in arch and field not in shared:
                message += f" ({field} is not set, so its default applies)"
            problems.append((parts, f"{dotted_path(parts)}: {message}"))
    return problems


def _key_lines(path: Path) -> dict[tuple, int]:
    """The line of every key and list item of a YAML (or JSON) file, by key path."""
    lines = {}
    try:
        loader = _StrictLoader(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return lines

    def walk(node, parts):
        if isinstance(node, yaml.MappingNode):
            for key_node, value in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = loader.construct_object(key_node, deep=True)
                try:
                    lines[(*parts, key)] = key_node.start_mark.line + 1
                except TypeError:  # unhashable
                    continue
                walk(value, (*parts, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*parts, i)] = item.start_mark.line + 1
                walk(item, (*parts, i))

    try:
        walk(loader.get_single_node(), ())
    except yaml.YAMLError:
        pass
    finally:
        loader.dispose()
    return lines


def _origin(parts: tuple, files: Sequence[tuple[str, dict]]) -> str:
    """``file, line N: `` of the last file that sets the key ``parts`` (its block if it is missing)."""
    while parts:
        for name, lines in reversed(files):
            if parts in lines:
                return f"{name}, line {lines[parts]}: "
        parts = parts[:-1]
    return ""


def validate_config(
    config: Mapping,
    *,
    source: str = "config",
    files: Sequence[str | os.PathLike] = (),
    schema_dir=None,
) -> None:
    """Raise :class:`ConfigError` listing every problem of ``config``.

    Parameters
    ----------
    config : mapping
        The merged configuration (``config/config.yaml`` plus overrides).
    source : str
        Where it came from, named in the message.
    files : sequence of path
        The config files merged into ``config``, in the order they were
        merged; each problem then names the file and line that set its key.

    Notes
    -----
    The schema first (types, ranges, unknown and missing keys, at every
    level); when it passes, ranges written high-to-low, the rules that join
    several keys, and every training setting and model as the jobs build them.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"{source}: the configuration is not a mapping of keys to values")
    validator = jsonschema.Draft202012Validator(load_schema("config.schema.yaml", schema_dir))
    errors = sorted(
        validator.iter_errors(dict(config)), key=lambda e: [str(p) for p in e.absolute_path]
    )
    problems = _walk_problems(config) + [_message(e) for e in errors]
    if not problems:
        problems += _check_ranges(config) + _cross_key_problems(config)
    if problems:
        lines = [(str(f), _key_lines(Path(f))) for f in files if Path(f).is_file()]
        listed = "\n  - ".join(_origin(parts, lines) + text for parts, text in problems)
        raise ConfigError(
            f"{source} is not a valid grainflow configuration:\n  - {listed}\n{_README}"
        )


# ---------------------------------------------------------------------------------------------
# the runs' stacks


def stack_tasks(config: Mapping) -> list[str]:
    """The tasks whose real stacks a run processes: the config's ``tasks``, and
    ``diffraction`` when ``diffraction.enabled``."""
    return [*config["tasks"], *(["diffraction"] if config["diffraction"]["enabled"] else [])]


# ---------------------------------------------------------------------------------------------
# python -m grainflow.config


def _merge(base: dict, update: Mapping) -> dict:
    """Snakemake's update_config: nested mappings merged, anything else replaced."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m grainflow.config [FILE...]``: check config files and their stacks sheet.

    The files are merged in order, as ``snakemake --configfile`` merges them
    over ``config/config.yaml`` (the default when no file is given).
    """
    files = list(argv if argv is not None else sys.argv[1:]) or ["config/config.yaml"]
    try:
        check_config_files(*files)
        config = {}
        for f in files:
            _merge(config, load_config_file(f))
        validate_config(config, source=" + ".join(files), files=files)
        read_stacks(
            config["stacks"],
            tasks=stack_tasks(config),
            skip_unrun_tasks=config.get("stacks_skip_unrun_tasks", False),
        )
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{' + '.join(files)}: valid, and so is the stacks sheet {config['stacks']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
