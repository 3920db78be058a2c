"""The shipped JSON Schemas and the error that the config and stacks sheet checks raise."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

import yaml

__all__ = ["SCHEMA_DIR", "ConfigError", "load_schema", "dotted_path"]

#: the JSON Schemas of the config and the stacks sheet, shipped inside the package
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


class ConfigError(ValueError):
    """A configuration or stacks sheet that grainflow cannot run with."""


@functools.lru_cache(maxsize=8)
def load_schema(name: str, schema_dir: Path | None) -> dict:
    """The parsed schema (cached: callers only read it)."""
    path = Path(schema_dir or SCHEMA_DIR) / name
    with open(path) as f:
        return yaml.safe_load(f)


def dotted_path(parts: Iterable) -> str:
    """``a.b[0].c`` from the path parts ``("a", "b", 0, "c")``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out
