"""The workflow passes Snakemake's linter and snakefmt (style of the rule files)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

BIN = Path(sys.executable).parent


def _tool(name):
    path = shutil.which(name, path=str(BIN))
    if path is None:
        pytest.fail(f"{name} is not installed in {BIN}; run `make test`, which installs it")
    return path


def test_snakemake_lint_is_clean():
    result = subprocess.run(
        [_tool("snakemake"), "--lint"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert (
        "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr
    ), result.stdout + result.stderr


def test_snakefmt_check_passes():
    rules = sorted(str(p) for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    result = subprocess.run(
        [_tool("snakefmt"), "--check", str(ROOT / "Snakefile"), *rules],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_passes(command):
    result = subprocess.run(
        [_tool("ruff"), *command, "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_test_module_has_its_own_basename():
    # pytest imports test modules by basename (no __init__.py): two equal names collide
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
