"""Validation of the run configuration and the stacks sheet.

Both are checked before any job starts. Every problem is reported at once,
each naming the file, the key (as a dotted path) and what is wrong, so a user
can fix them all in one edit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

__all__ = ["ConfigError", "validate_config", "read_stacks", "SCHEMA_DIR"]

#: the JSON Schemas of the config and the stacks sheet, shipped inside the package
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


class ConfigError(ValueError):
    """A configuration or stacks sheet that grainflow cannot run with."""


def _load_schema(name: str, schema_dir: Path | None) -> dict:
    path = Path(schema_dir or SCHEMA_DIR) / name
    with open(path) as f:
        return yaml.safe_load(f)


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _message(error: jsonschema.ValidationError) -> str:
    where = _where(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return (
            f"{where}: unknown key(s) {', '.join(map(repr, extra))}; "
            f"allowed here: {', '.join(allowed)}"
        )
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not one of {error.validator_value}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{where}: {error.instance!r} is out of range ({error.message.split(' is ', 1)[-1]})"
    return f"{where}: {error.message}"


def _non_finite(config, prefix: str = "") -> list[str]:
    """Every NaN or infinite number in ``config`` (YAML's .nan and .inf pass any minimum)."""
    if isinstance(config, Mapping):
        items = ((f"{prefix}{k}", v) for k, v in config.items())
    elif isinstance(config, list):
        items = ((f"{prefix.rstrip('.')}[{i}]", v) for i, v in enumerate(config))
    else:
        return []
    problems = []
    for path, value in items:
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{path}: {value} is not a finite number")
        else:
            problems += _non_finite(value, f"{path}.")
    return problems


def _check_ranges(config: Mapping, prefix: str = "") -> list[str]:
    problems = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            problems += _check_ranges(value, f"{path}.")
        elif (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and value[0] > value[1]
        ):
            problems.append(f"{path}: range {value} has low > high; write [low, high]")
    return problems


def _cross_key_problems(config: Mapping) -> list[str]:
    """Rules that join several keys of a config the schema has accepted."""
    problems = []
    inference = config["inference"]
    if inference["overlap_px"] >= inference["tile_px"]:
        problems.append(
            f"inference.overlap_px: {inference['overlap_px']} must be smaller than "
            f"inference.tile_px ({inference['tile_px']})"
        )
    if inference["shards"] > 1 and inference["scale"] != "none":
        problems.append(
            f"inference.scale: {inference['scale']!r} is not yet supported with "
            f"inference.shards {inference['shards']}; set inference.scale: none"
        )
    diffraction = config.get("diffraction") or {}
    if diffraction.get("enabled"):
        classifiers = set(diffraction["archs"])
        shared = sorted(classifiers & set(config["training"]["archs"]))
        if shared:
            problems.append(
                f"diffraction.archs: {shared} also name U-Nets in training.archs; give the "
                "classifiers other names (they name folders beside the U-Nets')"
            )
        if diffraction["scan"]["arch"] not in classifiers:
            problems.append(
                f"diffraction.scan.arch: {diffraction['scan']['arch']!r} is not one of "
                f"diffraction.archs ({', '.join(sorted(classifiers))})"
            )
    return problems


def validate_config(config: Mapping, *, source: str = "config", schema_dir=None) -> None:
    """Raise :class:`ConfigError` listing every problem of ``config``.

    Parameters
    ----------
    config : mapping
        The merged configuration (``config/config.yaml`` plus overrides).
    source : str
        Where it came from, named in the message.
    """
    schema = _load_schema("config.schema.yaml", schema_dir)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.absolute_path))
    problems = _non_finite(config)
    problems += [_message(e) for e in errors]
    if not errors:
        problems += _check_ranges(config) + _cross_key_problems(config)
    if problems:
        lines = "\n  - ".join(problems)
        raise ConfigError(
            f"{source} is not a valid grainflow configuration:\n  - {lines}\n"
            "See config/README.md for every key, its type and its allowed values."
        )


def read_stacks(
    path: str | os.PathLike, *, schema_dir=None, check_paths: bool = True
) -> pd.DataFrame:
    """Read and validate the stacks sheet (TSV), one row per real image stack.

    Raises :class:`ConfigError` naming the file, the row and the column of
    each problem. Relative paths are read relative to the current directory
    (the workflow's working directory).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"stacks sheet {path} does not exist; create it (see config/README.md) or set "
            "'stacks' in the config to its path"
        )
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    except Exception as exc:  # pandas raises several types for malformed TSV
        raise ConfigError(f"stacks sheet {path} is not a readable TSV file: {exc}") from exc
    schema = _load_schema("stacks.schema.yaml", schema_dir)
    known = list(schema["properties"])
    unknown = [c for c in table.columns if c not in known]
    problems = [f"unknown column(s) {unknown}; allowed: {known}"] if unknown else []
    for col in schema["required"]:
        if col not in table.columns:
            problems.append(f"missing required column {col!r}")
    if problems:
        raise ConfigError(f"stacks sheet {path}: " + "; ".join(problems))
    validator = jsonschema.Draft202012Validator(schema)
    rows = []
    for i, raw in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        row = {k: (v.strip() if v.strip() else None) for k, v in raw.items()}
        if row.get("pixel_size_um") is not None:
            try:
                row["pixel_size_um"] = float(row["pixel_size_um"])
            except ValueError:
                problems.append(
                    f"line {i}, column 'pixel_size_um': {raw['pixel_size_um']!r} is not a number"
                )
                continue
            if not math.isfinite(row["pixel_size_um"]):
                problems.append(
                    f"line {i} ({row.get('stack')}), column 'pixel_size_um': "
                    f"{raw['pixel_size_um']!r} is not a finite number; give the size of a "
                    "pixel in micrometres, or leave the field empty if it is unknown"
                )
                continue
        for error in validator.iter_errors(row):
            col = ".".join(map(str, error.absolute_path)) or "row"
            problems.append(f"line {i} ({row.get('stack')}), column {col!r}: {error.message}")
        if check_paths:
            for col in ("path", "ground_truth"):
                p = row.get(col)
                if p and not Path(p).exists():
                    problems.append(
                        f"line {i} ({row.get('stack')}), column {col!r}: {p} does not exist"
                    )
        rows.append(row)
    names = [r["stack"] for r in rows]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"stack names must be unique; repeated: {dupes}")
    if problems:
        lines = "\n  - ".join(problems)
        raise ConfigError(f"stacks sheet {path} has problems:\n  - {lines}")
    return pd.DataFrame(rows, columns=known).set_index("stack", drop=False)
