"""Progress lines for long jobs' logs (grainflow.logs)."""

import logging

import pytest

from grainflow.logs import Progress, format_duration


def test_format_duration():
    assert [format_duration(s) for s in (0, 42.4, 59.6, 185, 7620, 90061)] == [
        "0s",
        "42s",
        "1m00s",
        "3m05s",
        "2h07m",
        "25h01m",
    ]
    assert format_duration(float("nan")) == format_duration(-1) == "?"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_lines_elapsed_and_time_left(caplog):
    clock = Clock()
    log = logging.getLogger("grainflow.test")
    # a resumed run: 2 of 5 epochs done before; the rate counts this process's epochs only
    epochs = Progress(5, what="epoch", logger=log, done=2, clock=clock)
    with caplog.at_level(logging.INFO, logger="grainflow"):
        clock.now += 60
        line = epochs.update(detail="train loss 0.5000, score 0.9000")
        assert line == "epoch 3/5 (60%): train loss 0.5000, score 0.9000; elapsed 1m00s, ETA 2m00s"
        clock.now += 120
        assert epochs.update() == "epoch 4/5 (80%); elapsed 3m00s, ETA 1m30s"
        clock.now += 30
        assert epochs.update() == "epoch 5/5 (100%); elapsed 3m30s, done"
    assert [r.getMessage() for r in caplog.records] == [
        "epoch 3/5 (60%): train loss 0.5000, score 0.9000; elapsed 1m00s, ETA 2m00s",
        "epoch 4/5 (80%); elapsed 3m00s, ETA 1m30s",
        "epoch 5/5 (100%); elapsed 3m30s, done",
    ]
    assert "\r" not in caplog.text  # plain lines: a log file is not a terminal


def test_progress_logs_at_most_every_interval_and_the_last_unit():
    clock = Clock()
    calls = []
    blocks = Progress(10, what="block", logger=logging.getLogger("x"), every_s=30, clock=clock)
    lines = []
    for _ in range(10):
        clock.now += 7
        lines.append(blocks.update(detail=lambda: calls.append(1) or "plane 1"))
    logged = [k + 1 for k, line in enumerate(lines) if line]
    assert logged == [5, 10]  # 35 s, then the last block (70 s)
    assert len(calls) == 2  # the detail is made only for a line
    assert lines[4] == "block 5/10 (50%): plane 1; elapsed 35s, ETA 35s"
    # final_line=False: the caller reports the end itself
    quiet = Progress(
        2, what="batch", logger=logging.getLogger("x"), every_s=30, clock=clock, final_line=False
    )
    assert quiet.update() is None and quiet.update() is None
    with pytest.raises(ValueError, match="done <= total"):
        Progress(3, what="x", logger=logging.getLogger("x"), done=4)
