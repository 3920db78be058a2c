"""Writes that a failed or concurrent job cannot leave half done."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_path", "staged_dir", "replace_dir", "remove_stale", "owner_tag"]

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
        old = Path(
            tempfile.mkdtemp(prefix=f".{out.name}.{owner_tag()}.", suffix=".old", dir=out.parent)
        )
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


#: how old another machine's temporary folder must be before a writer removes it (seconds)
FOREIGN_STALE_S = 24 * 3600
_OWNER = re.compile(r"\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+\.(?:tmp|old)$")


def owner_tag() -> str:
    """This process's tag in temporary folder names: host name (dots made _) and pid."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@contextlib.contextmanager
def staged_dir(
    out: str | os.PathLike, *, check: Callable[[Path], None] | None = None
) -> Iterator[Path]:
    """A temporary folder beside ``out``, moved onto it if the block succeeds, removed if not.

    Parameters
    ----------
    out : path-like
        The folder to write (e.g. an OME-Zarr store).
    check : callable, optional
        Called with the finished temporary folder before it takes ``out``'s name;
        it raises when the folder is incomplete (then ``out`` is left as it was).

    Notes
    -----
    The temporary folder's name carries its owner (:func:`owner_tag`). Folders left
    beside ``out`` by writers that are gone are removed first (:func:`remove_stale`);
    a second writer of the same output leaves a living writer's folder alone, and the
    last to finish wins with a complete store of its own.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{out.name}.{owner_tag()}.", suffix=".tmp", dir=out.parent)
    )
    try:
        yield tmp
        if check is not None:
            check(tmp)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale(out: Path) -> None:
    """Remove the temporary folders of ``out`` whose writers are gone.

    Writers of ``out`` build it in ``.{out.name}.{host}-{pid}.*.tmp`` beside it and
    swap an old copy through ``.{out.name}.{host}-{pid}.*.old``
    (:func:`staged_dir`, :func:`replace_dir`). A folder is removed when its writer
    is a process of this host that no longer runs, when it names no writer (left by
    an older grainflow), or when another host's folder is older than
    :data:`FOREIGN_STALE_S`; each removal is logged.

    Parameters
    ----------
    out : Path
        The output folder (e.g. a ``.ome.zarr`` store); it need not exist.
    """
    out = Path(out)
    here = owner_tag().rsplit("-", 1)[0]
    for stale in out.parent.glob(f".{glob.escape(out.name)}.*"):
        if not stale.is_dir() or stale.suffix not in (".tmp", ".old"):
            continue
        match = _OWNER.search(stale.name[len(out.name) + 1 :])
        if match is None:
            why = "left by an interrupted run"
        elif match["host"] == here:
            if _alive(int(match["pid"])):
                logger.info("leaving %s: its writer (pid %s) is still running", stale, match["pid"])
                continue
            why = f"its writer (pid {match['pid']}) is gone"
        else:
            age = time.time() - stale.stat().st_mtime
            if age < FOREIGN_STALE_S:
                logger.info("leaving %s: written %.0f s ago on host %s", stale, age, match["host"])
                continue
            why = f"written on host {match['host']} {age / 3600:.0f} h ago"
        logger.info("removing %s: %s", stale, why)
        shutil.rmtree(stale, ignore_errors=True)
