"""One logging set-up for every rule script, and plain-text progress lines for long jobs."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable

__all__ = ["FORMAT", "log_to", "format_duration", "Progress"]

#: one line per record: time, level, the module that logged it, the message
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to(path: str | os.PathLike) -> None:
    """Send stderr and grainflow's log records to a rule's log file.

    Parameters
    ----------
    path : path-like
        The rule's ``log:`` file, truncated. Warnings (which go to stderr)
        land there too.

    Notes
    -----
    grainflow's own loggers report at INFO; other libraries at WARNING, so
    that a rule's log holds what grainflow did and what went wrong. Long jobs
    report their progress in plain lines (:class:`Progress`), not bars.
    """
    sys.stderr = open(path, "w", buffering=1)  # noqa: SIM115 (lives as long as the process)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("grainflow").setLevel(logging.INFO)


def format_duration(seconds: float) -> str:
    """A duration as a reader takes it in: ``"42s"``, ``"3m05s"``, ``"2h07m"`` (``"?"`` if unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Count work done and log it as plain lines: ``what k/n (p%): detail; elapsed, ETA``.

    Parameters
    ----------
    total : int
        Units of work in all (epochs, blocks).
    what : str
        What is counted, e.g. ``"epoch"`` or ``"stack 'steel': block"``.
    logger : logging.Logger
        Where the lines go (a rule's log file, through :func:`log_to`).
    done : int
        Units already done before this process began (a resumed run); the rate,
        and so the time left, is measured on this process's units only.
    every_s : float
        Least seconds between two lines, and before the first (0: every unit).
    final_line : bool
        Log the last unit whatever the time (False: a caller that reports the
        end itself, e.g. an epoch inside a training run).
    clock : callable
        Seconds, monotonic (a test passes a fake one).

    Examples
    --------
    >>> import logging
    >>> ticks = iter([0.0, 30.0, 60.0])
    >>> p = Progress(2, what="block", logger=logging.getLogger("x"), clock=lambda: next(ticks))
    >>> p.update(detail="plane 1")
    'block 1/2 (50%): plane 1; elapsed 30s, ETA 30s'
    >>> p.update()
    'block 2/2 (100%); elapsed 1m00s, done'
    """

    def __init__(
        self,
        total: int,
        *,
        what: str,
        logger: logging.Logger,
        done: int = 0,
        every_s: float = 0.0,
        final_line: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ):
        if total < 0 or not 0 <= done <= max(total, 0):
            raise ValueError(f"need 0 <= done <= total, got {done=}, {total=}")
        self.total, self.what, self.logger = int(total), what, logger
        self.done, self._first = int(done), int(done)
        self.every_s, self.final_line, self._clock = float(every_s), final_line, clock
        self.start = self._last_line = clock()

    @property
    def elapsed(self) -> float:
        """Seconds since this object was made."""
        return self._clock() - self.start

    def eta(self, elapsed: float | None = None) -> float:
        """Seconds left at this process's mean rate (NaN before the first unit)."""
        elapsed = self.elapsed if elapsed is None else elapsed
        here = self.done - self._first
        return math.nan if here <= 0 else elapsed / here * (self.total - self.done)

    def update(self, n: int = 1, *, detail: str | Callable[[], str] = "") -> str | None:
        """Count ``n`` more units; log and return a line when one is due, else None.

        ``detail`` (or what it returns, called only when a line is due) follows
        the count, e.g. the epoch's loss and score.
        """
        self.done = min(self.done + int(n), self.total)
        now = self._clock()
        finished = self.done >= self.total
        if not (finished and self.final_line) and now - self._last_line < self.every_s:
            return None
        self._last_line = now
        elapsed = now - self.start
        detail = detail() if callable(detail) else detail
        percent = 100 * self.done / self.total if self.total else 100.0
        line = f"{self.what} {self.done}/{self.total} ({percent:.0f}%)"
        line += f": {detail}" if detail else ""
        line += f"; elapsed {format_duration(elapsed)}, "
        line += "done" if finished else f"ETA {format_duration(self.eta(elapsed))}"
        self.logger.info("%s", line)
        return line
