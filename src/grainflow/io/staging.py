"""Writes that a failed or concurrent job cannot leave half done."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "staged_dir", "replace_dir", "remove_stale"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Move the finished folder ``tmp`` onto ``out``, replacing an old ``out``.

    The old folder is first moved aside, so ``out`` is never a mix of old and
    new files; what was moved aside is removed afterwards.
    """
    tmp, out = Path(tmp), Path(out)
    if out.exists() or out.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``out``, moved onto it if the block succeeds, removed if not.

    Folders left beside ``out`` by a killed run are removed first
    (:func:`remove_stale`); the old ``out`` is replaced by :func:`replace_dir`.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale(out: Path) -> None:
    """Remove the temporary folders of ``out`` that a killed writer left beside it.

    Writers of ``out`` build it in ``.{out.name}.*.tmp`` beside it and swap an
    old copy through ``.{out.name}.*.old`` (:func:`grainflow.io.staging.replace_dir`);
    with one writer per output (one Snakemake job), any such folder found
    when a writer starts is left by a killed run.

    Parameters
    ----------
    out : Path
        The output folder (e.g. a ``.ome.zarr`` store); it need not exist.
    """
    for stale in out.parent.glob(f".{glob.escape(out.name)}.*"):
        if stale.is_dir() and stale.suffix in (".tmp", ".old"):
            logger.info("removing %s, left by an interrupted run", stale)
            shutil.rmtree(stale, ignore_errors=True)
