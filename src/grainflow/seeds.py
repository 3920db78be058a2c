"""Deterministic seeds derived from a base seed and names (never Python's ``hash()``).

Every Snakemake job derives its seed from the config's base seed and its own
wildcards, so that any job reproduces alone, in any order, on any machine.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

__all__ = ["specimen_index", "derive_seed", "as_rng"]


def derive_seed(base: int, *parts: object) -> int:
    """Return a 63-bit seed derived from ``base`` and ``parts``.

    Parameters
    ----------
    base : int
        The run's base seed (``seed`` in the config).
    *parts : object
        Names that identify the job, e.g. ``("synthesize", "grains", "s03")``.
        Converted with ``str``; order matters.

    Returns
    -------
    seed : int
        A non-negative integer below 2**63, stable across processes and
        Python versions.

    Examples
    --------
    >>> derive_seed(1, "synthesize", "grains", "s00") == derive_seed(1, "synthesize", "grains", "s00")
    True
    >>> derive_seed(1, "a") != derive_seed(2, "a")
    True
    """
    if isinstance(base, bool) or not isinstance(base, (int, np.integer)):
        raise TypeError(f"base seed must be an integer, got {base!r}")
    text = "\x1f".join([str(int(base)), *map(str, parts)])
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def as_rng(rng: int | np.random.Generator | None) -> np.random.Generator:
    """Return a ``Generator`` from a seed or pass a ``Generator`` through."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


_SPECIMEN = re.compile(r"^s(\d+)$")


def specimen_index(name: str) -> int:
    """Index of a specimen named like ``"s03"``."""
    m = _SPECIMEN.match(name)
    if not m:
        raise ValueError(f"specimen names look like 's00', 's01', ...; got {name!r}")
    return int(m.group(1))
