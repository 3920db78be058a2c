"""The stacks sheet: read and checked before any job starts, and its rows as the rules see them."""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jsonschema
import pandas as pd

from grainflow.schema import ConfigError, dotted_path, load_schema
from grainflow.stacks.reader import StackError, source_files
from grainflow.tasks import segments_particles

__all__ = ["read_stacks", "sheet_row", "sheet_inputs"]


_SHEET_COLUMNS = (
    "path",
    "task",
    "pixel_size_um",
    "ground_truth",
    "group",
    "particles",
    "description",
)


def _sheet_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's UTF-8 export starts with a BOM
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"stacks sheet {path}, line {line}: not UTF-8 text (byte {data[exc.start]:#04x}); "
            "save it as UTF-8 tab-separated text"
        ) from None
    return [line.removesuffix("\r") for line in text.split("\n")]


def _skipped(line: str) -> bool:
    """Blank lines, lines of only spaces and tabs, and comments (# first) are not rows."""
    return not line.strip() or line.lstrip().startswith("#")


def _header_problems(header: list[str], line: int, known: Sequence, required: Sequence) -> list:
    problems = []
    if len(header) == 1 and any(sep in header[0] for sep in (",", ";", " ")):
        return [
            f"line {line} (the header) has no tabs: the sheet is tab-separated (TSV); separate "
            f"its columns ({', '.join(known)}) with tabs, not commas, semicolons or spaces"
        ]
    for i, name in enumerate(header, start=1):
        if not name:
            problems.append(
                f"line {line} (the header), field {i}: empty column name (a tab too many?)"
            )
    repeated = sorted({n for n in header if n and header.count(n) > 1})
    if repeated:
        problems.append(f"line {line} (the header): column(s) {repeated} appear twice")
    unknown = [c for c in header if c and c not in known]
    if unknown:
        problems.append(f"unknown column(s) {unknown}; allowed: {list(known)}")
    for col in required:
        if col not in header:
            problems.append(f"missing required column {col!r}")
    return problems


def _unrun(task: str, tasks: Sequence[str]) -> str:
    if task == "diffraction":
        return "'diffraction' stacks are not run while diffraction.enabled is false"
    listed = ", ".join(t for t in tasks if t != "diffraction")
    return f"{task!r} is not one of the config's tasks ({listed}), so nothing would run on it"


def _particles_problem(row: Mapping) -> str | None:
    """What is wrong with a row's ``particles`` cell (its form the schema checks), or None."""
    value = row.get("particles")
    if value is None:
        return None
    if not segments_particles(row["task"]):
        return (
            f"{value!r} given for a {row['task']!r} stack; only phases and nanoparticles "
            "stacks have particles whose polarity matters: leave the cell empty"
        )
    _, _, pattern = value.partition(":")
    if pattern:
        try:
            re.compile(pattern)
        except re.error as exc:
            return (
                f"{pattern!r} is not a regular expression ({exc}); write e.g. dark:^PtC for "
                "dark particles in the planes whose file names start with PtC"
            )
    return None


def read_stacks(
    path: str | os.PathLike,
    *,
    tasks: Sequence[str] | None = None,
    skip_unrun_tasks: bool = False,
    warn: Callable[[str], None] | None = None,
    schema_dir=None,
    check_paths: bool = True,
) -> pd.DataFrame:
    """Read and validate the stacks sheet (TSV), one row per real image stack.

    Parameters
    ----------
    path : path
        The sheet: tab-separated UTF-8 text, the header first. Blank lines,
        lines of only spaces and tabs, and lines whose first character other
        than a space is ``#`` are skipped; every other line is a row with
        exactly the header's number of fields (no quoting: a quote is text).
    tasks : sequence of str, optional
        The config's ``tasks``: a row of another task (or of ``diffraction``,
        which has no stage for real stacks) is refused, or skipped with
        ``skip_unrun_tasks``. None accepts every task of the schema.
    skip_unrun_tasks : bool
        Skip such rows instead, passing one message per row to ``warn``.
    warn : callable, optional
        Receives the message of each skipped row (Snakemake's logger in the
        workflow); by default it goes to standard error.
    check_paths : bool
        Refuse rows whose ``path`` or ``ground_truth`` does not exist.

    Raises
    ------
    ConfigError
        Naming the file, and the line and column of each problem. Relative
        paths are read relative to the current directory (the workflow's
        working directory).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"stacks sheet {path} does not exist; create it (see config/README.md) or set "
            "'stacks' in the config to its path"
        )
    schema = load_schema("stacks.schema.yaml", schema_dir)
    known, required = list(schema["properties"]), list(schema["required"])
    lines = _sheet_lines(path)
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if not _skipped(line)]
    if not numbered:
        raise ConfigError(
            f"stacks sheet {path} is empty; its first line is the header, the column names "
            f"separated by tabs (at least {', '.join(required)}); see config/README.md"
        )
    (head_line, head), *body = numbered
    header = [name.strip() for name in head.split("\t")]
    problems = _header_problems(header, head_line, known, required)
    if problems:
        raise ConfigError(f"stacks sheet {path}: " + "; ".join(problems))

    validator = jsonschema.Draft202012Validator(schema)
    rows, names = [], {}
    for i, line in body:
        cells = line.split("\t")
        first = cells[0].strip()
        where = f"line {i} ({first})" if first else f"line {i}"
        if len(cells) != len(header):
            n = abs(len(cells) - len(header))
            tabs = f"{n} tab{'s' * (n > 1)}"
            if len(cells) < len(header):
                fix = f"{tabs} missing: every column needs its tab, an empty cell too"
            elif not cells[-1].strip():
                fix = f"{tabs} too many: remove the tab(s) at the end of the line"
            else:
                fix = f"{tabs} too many: a cell holds a tab, or two tabs stand where one should"
            problems.append(
                f"{where}: {len(cells)} fields, but the header (line {head_line}) has "
                f"{len(header)}: {', '.join(header)}; {fix}"
            )
            continue
        row = {k: (v.strip() or None) for k, v in zip(header, cells, strict=True)}
        row_problems = []
        for col in required:
            if row.get(col) is None:
                row_problems.append(f"{where}, column {col!r}: empty, but every row needs it")
        if row.get("pixel_size_um") is not None:
            raw = row["pixel_size_um"]
            try:
                row["pixel_size_um"] = float(raw)
            except ValueError:
                row_problems.append(f"{where}, column 'pixel_size_um': {raw!r} is not a number")
                row["pixel_size_um"] = None
            else:
                if not math.isfinite(row["pixel_size_um"]):
                    row_problems.append(
                        f"{where}, column 'pixel_size_um': {raw!r} is not a finite number; give "
                        "the size of a pixel in micrometres, or leave the field empty if it is "
                        "unknown"
                    )
                    row["pixel_size_um"] = None
        for error in validator.iter_errors(row):
            col = dotted_path(error.absolute_path) or "row"
            if not (col in required and error.instance is None):
                row_problems.append(f"{where}, column {col!r}: {error.message}")
        problems += row_problems
        if row_problems:
            continue
        names.setdefault(row["stack"], []).append(i)
        if tasks is not None and row["task"] not in tasks:
            why = _unrun(row["task"], tasks)
            if skip_unrun_tasks:
                message = f"stacks sheet {path}, {where}: skipped: {why} (stacks_skip_unrun_tasks)"
                (warn or (lambda m: print(m, file=sys.stderr)))(message)
                continue
            fix = "remove the row or comment it out with '#'"
            if row["task"] != "diffraction":
                fix = f"add {row['task']} to tasks, or {fix}"
            else:
                fix = f"set diffraction.enabled: true, or {fix}"
            problems.append(
                f"{where}, column 'task': {why}; {fix}, or set stacks_skip_unrun_tasks: true in "
                "the config to skip such rows with a warning"
            )
            continue
        if row["task"] == "diffraction" and row.get("ground_truth"):
            problems.append(
                f"{where}, column 'ground_truth': a diffraction stack takes no ground truth "
                "(its frames are classified, not scored); leave the cell empty"
            )
            continue
        particles = _particles_problem(row)
        if particles:
            problems.append(f"{where}, column 'particles': {particles}")
            continue
        if check_paths:
            for col in ("path", "ground_truth"):
                p = row.get(col)
                if p and not Path(p).exists():
                    problems.append(f"{where}, column {col!r}: {p} does not exist")
        rows.append(row)
    dupes = {n: at for n, at in names.items() if len(at) > 1}
    if dupes:
        at = "; ".join(f"{n!r} on lines {', '.join(map(str, at))}" for n, at in dupes.items())
        problems.append(f"stack names must be unique; repeated: {sorted(dupes)} ({at})")
    if problems:
        listed = "\n  - ".join(problems)
        raise ConfigError(f"stacks sheet {path} has problems:\n  - {listed}")
    return pd.DataFrame(rows, columns=known).set_index("stack", drop=False)


def sheet_row(table, stack: str) -> dict:
    """One row of the stacks sheet as a plain dict, empty cells (None or NaN) as None.

    Parameters
    ----------
    table : DataFrame
        The sheet from :func:`read_stacks`, indexed by stack name.
    stack : str
        The stack's name.
    """
    if stack not in table.index:
        raise StackError(f"stack {stack!r} is not in the stacks sheet; known: {list(table.index)}")
    row = table.loc[stack]
    out = {}
    for key in _SHEET_COLUMNS:
        value = row.get(key)
        empty = value is None or (isinstance(value, float) and math.isnan(value))
        out[key] = None if empty else value
    return out


def sheet_inputs(table, stack: str, column: str) -> list[str]:
    """The files that a stack's ``column`` ("path" or "ground_truth") is read from.

    For a workflow rule's input, so that a change of any source file reruns
    the import. Empty when the cell is empty.
    """
    value = sheet_row(table, stack)[column]
    return [str(p) for p in source_files(value)] if value else []
