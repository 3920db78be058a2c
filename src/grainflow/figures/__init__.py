"""Figures of the synthetic data, the training and the real stacks.

Each figure is a function that returns a matplotlib ``Figure``; rule scripts
save it with :func:`save_figure`, the one way figures are written.
"""

from __future__ import annotations

import os

from matplotlib.figure import Figure

from grainflow.io.staging import atomic_path

__all__ = ["save_figure"]


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> None:
    """Save ``fig`` to ``path`` atomically (the format follows the file's extension)."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
