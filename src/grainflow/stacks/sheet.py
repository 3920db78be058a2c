"""Rows of the stacks sheet as the workflow's rules see them."""

from __future__ import annotations

import math

from grainflow.stacks.reader import StackError, source_files

__all__ = ["sheet_row", "sheet_inputs"]


_SHEET_COLUMNS = (
    "path",
    "task",
    "pixel_size_um",
    "ground_truth",
    "group",
    "particles",
    "description",
)


def sheet_row(table, stack: str) -> dict:
    """One row of the stacks sheet as a plain dict, empty cells (None or NaN) as None.

    Parameters
    ----------
    table : DataFrame
        The sheet from :func:`grainflow.config.read_stacks`, indexed by stack name.
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
