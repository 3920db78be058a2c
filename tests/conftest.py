"""Shared fixtures: the repository, a tiny workflow working directory, snakemake runs,
and one finished tiny end-to-end run shared by the tests that need it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
BIN = Path(sys.executable).parent


def tiny_config() -> dict:
    """tests/data/tiny.yaml; its diffraction patterns keep config/config.yaml's physics."""
    with open(DATA / "tiny.yaml") as f:
        config = yaml.safe_load(f)
    with open(ROOT / "config" / "config.yaml") as f:
        physics = yaml.safe_load(f)["synthesize"]["diffraction"]
    config["synthesize"]["diffraction"] = {**physics, **config["synthesize"]["diffraction"]}
    return config


#: shipped stacks too big for the tiny runs (16 planes up to 2048 x 2048 px); their
#: mixed-size import, padding and box scoring are tested on small files instead
BIG_STACKS = ("stem_nanoparticles",)


def make_workdir(path: Path, config: dict | None = None) -> Path:
    """A working directory holding config/config.yaml (tiny) and a stacks sheet with absolute paths."""
    (path / "config").mkdir(parents=True, exist_ok=True)
    with open(path / "config" / "config.yaml", "w") as f:
        yaml.safe_dump(config or tiny_config(), f, sort_keys=False)
    sheet = (ROOT / "config" / "stacks.tsv").read_text().splitlines()
    out = [sheet[0]]
    for line in sheet[1:]:
        cells = line.split("\t")
        if cells[0] in BIG_STACKS:
            continue
        for i in (2, 4):  # path, ground_truth
            if cells[i]:
                cells[i] = str(ROOT / cells[i])
        out.append("\t".join(cells))
    (path / "config" / "stacks.tsv").write_text("\n".join(out) + "\n")
    return path


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run snakemake on the repository's Snakefile in ``workdir``, bounded by ``timeout -k``."""
    exe = shutil.which("snakemake", path=str(BIN)) or "snakemake"
    cmd = [
        "timeout",
        "-k",
        "10",
        str(timeout),
        exe,
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        *args,
    ]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)


@pytest.fixture
def workdir(tmp_path):
    return make_workdir(tmp_path / "run")


@dataclass(frozen=True)
class TinyRun:
    """A finished tiny end-to-end run: its working directory, the run and the report build."""

    workdir: Path
    run: subprocess.CompletedProcess
    report: subprocess.CompletedProcess | None

    def check(self) -> None:
        """Fail the calling test (with snakemake's output) unless the run and its report worked."""
        if self.run.returncode != 0:
            pytest.fail(f"the tiny run failed ({self.run.returncode=}):\n{self.run.stderr[-6000:]}")
        if self.report is None or self.report.returncode != 0:
            pytest.fail(f"the report of the tiny run failed:\n{self.report.stderr[-3000:]}")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """The whole default DAG on the tiny config (about 4 minutes on 2 cores), then its report.

    Run once per session and shared (tests/test_workflow.py, tests/test_report.py): tests
    only read it, dry-run it or copy it, never change its working directory.
    """
    workdir = make_workdir(tmp_path_factory.mktemp("tiny") / "run")
    run = snakemake(workdir, "--cores", "2", timeout=1200)
    report = None
    if run.returncode == 0:
        report = snakemake(workdir, "--cores", "1", "--report", "results/report.html")
    return TinyRun(workdir, run, report)
