"""One logging set-up for every rule script."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["FORMAT", "log_to"]

#: one line per record: time, level, the module that logged it, the message
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to(path: str | os.PathLike) -> None:
    """Send stderr and grainflow's log records to a rule's log file.

    Parameters
    ----------
    path : path-like
        The rule's ``log:`` file, truncated. Progress bars and warnings (which
        go to stderr) land there too.

    Notes
    -----
    grainflow's own loggers report at INFO; other libraries at WARNING, so
    that a rule's log holds what grainflow did and what went wrong.
    """
    sys.stderr = open(path, "w", buffering=1)  # noqa: SIM115 (lives as long as the process)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("grainflow").setLevel(logging.INFO)
