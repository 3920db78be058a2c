"""grainflow.report.provenance: git state, benchmark run times per rule, seeds, the written files."""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from grainflow.report.provenance import (
    git_state,
    hardware,
    job_seeds,
    package_versions,
    read_benchmarks,
    runtime_table,
    write_provenance,
)
from grainflow.seeds import derive_seed

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
PATTERNS = {
    "train": "benchmarks/rules/train/{task,[a-z]+}/{arch}/fold{fold,\\d+}.tsv",
    "anatomy_numbers": "benchmarks/rules/anatomy/numbers.tsv",
    "synthesize": "benchmarks/rules/synthesize/{task}/{specimen}.tsv",
}


def _bench(root, rel, *rows):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        BENCH_HEADER + "".join(f"{s}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t1\n" for s, rss in rows)
    )
    return path


def test_benchmarks_are_assigned_to_their_rules_and_summed(tmp_path):
    _bench(tmp_path, "benchmarks/rules/train/grains/unet/fold0.tsv", (100.0, 900.0))
    _bench(tmp_path, "benchmarks/rules/train/grains/unet/fold1.tsv", (50.0, 1000.0))
    # a benchmark with repeats: the job's time is their sum
    _bench(tmp_path, "benchmarks/rules/synthesize/grains/s00.tsv", (2.0, 90.0), (4.0, 95.0))
    _bench(tmp_path, "benchmarks/rules/anatomy/numbers.tsv", (30.0, "-"))
    _bench(tmp_path, "benchmarks/rules/gone/old.tsv", (6.0, 10.0))  # a rule no longer there
    jobs = read_benchmarks("benchmarks/rules", PATTERNS, workdir=tmp_path)
    assert len(jobs) == 5
    by_file = jobs.set_index("file")
    train0 = by_file.loc["benchmarks/rules/train/grains/unet/fold0.tsv"]
    assert train0["rule"] == "train" and train0["job"] == "task=grains, arch=unet, fold=0"
    assert by_file.loc["benchmarks/rules/synthesize/grains/s00.tsv", "s"] == 6.0
    assert by_file.loc["benchmarks/rules/anatomy/numbers.tsv", "rule"] == "anatomy_numbers"
    assert pd.isna(by_file.loc["benchmarks/rules/anatomy/numbers.tsv", "max_rss_mb"])
    assert by_file.loc["benchmarks/rules/gone/old.tsv", "rule"] == "?"
    table = runtime_table(jobs).set_index("rule")
    assert list(table.index) == ["train", "anatomy_numbers", "?", "synthesize", "all"]
    assert table.loc["train", "jobs"] == 2 and table.loc["train", "total_s"] == 150.0
    assert table.loc["train", "total_min"] == 2.5 and table.loc["train", "mean_s"] == 75.0
    assert table.loc["train", "max_s"] == 100.0 and table.loc["train", "max_rss_mb"] == 1000.0
    assert table.loc["all", "jobs"] == 5 and table.loc["all", "total_s"] == 192.0


def test_no_benchmarks_give_empty_tables(tmp_path):
    jobs = read_benchmarks("benchmarks/rules", PATTERNS, workdir=tmp_path)
    assert jobs.empty and list(jobs.columns) == ["rule", "job", "file", "s", "max_rss_mb"]
    assert runtime_table(jobs).empty


def test_a_file_that_is_no_benchmark_is_refused(tmp_path):
    path = tmp_path / "benchmarks/rules/anatomy/numbers.tsv"
    path.parent.mkdir(parents=True)
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="no column 's'"):
        read_benchmarks("benchmarks/rules", PATTERNS, workdir=tmp_path)


def test_job_seeds_are_the_derived_seeds():
    seeds = job_seeds(7, [("train", "grains", "unet", 0), ("synthesize", "phases", "s02")])
    assert list(seeds["job"]) == ["train grains unet 0", "synthesize phases s02"]
    # the rules pass folds as strings: the derivation must not care
    assert seeds["seed"].iloc[0] == derive_seed(7, "train", "grains", "unet", "0")
    assert seeds["seed"].iloc[1] == derive_seed(7, "synthesize", "phases", "s02")


def test_git_state_outside_a_repository(tmp_path):
    state = git_state(tmp_path)
    assert state["commit"] is None and state["dirty"] is None
    assert state["note"] in ("not a git repository", "git is not installed")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_state_of_a_repository_with_and_without_changes(tmp_path):
    def git(*args):
        subprocess.run(
            ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    (tmp_path / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "first")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (tmp_path / "untracked.txt").write_text("results are not code\n")
    state = git_state(tmp_path / ".")
    assert state == {"commit": head, "branch": "main", "dirty": False, "note": ""}
    (tmp_path / "a.txt").write_text("two\n")
    assert git_state(tmp_path)["dirty"] is True


def test_versions_and_hardware_are_reported():
    versions = package_versions(["numpy", "surely-not-a-package-name"])
    assert versions["numpy"].split(".")[0].isdigit()
    assert versions["surely-not-a-package-name"] == "not installed"
    machine = hardware()
    assert machine["logical_cores"] >= machine["usable_cores"] >= 1
    assert machine["memory_gib"] > 0 and isinstance(machine["gpus"], list) and machine["cpu"]


def test_write_provenance_writes_every_file(tmp_path):
    _bench(tmp_path, "benchmarks/rules/train/grains/unet/fold0.tsv", (120.0, 900.0))
    config = {"seed": 11, "tasks": ["grains"], "training": {"archs": {"unet": {"epochs": 2}}}}
    out = tmp_path / "results/provenance"
    record = write_provenance(
        html_path=out / "provenance.html",
        runtimes_path=out / "runtimes.tsv",
        config_path=out / "config.yaml",
        json_path=out / "provenance.json",
        config=config,
        seed_jobs=[("train", "grains", "unet", 0)],
        benchmark_root="benchmarks/rules",
        benchmark_patterns=PATTERNS,
        repository=tmp_path,
        workdir=tmp_path,
    )
    assert yaml.safe_load((out / "config.yaml").read_text()) == config
    saved = json.loads((out / "provenance.json").read_text())
    assert saved == record and saved["seed"] == 11
    assert saved["seeds"] == [
        {"job": "train grains unet 0", "seed": derive_seed(11, "train", "grains", "unet", "0")}
    ]
    runtimes = pd.read_csv(out / "runtimes.tsv", sep="\t")
    assert list(runtimes["rule"]) == ["train", "all"] and runtimes["total_min"].iloc[0] == 2.0
    page = (out / "provenance.html").read_text()
    for text in (
        "Run times per rule",
        "120 s = 2.0 min",
        "Package versions",
        "Hardware",
        "Seeds",
        "epochs: 2",
        "none: not a git repository",
    ):
        assert text in page, text
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "provenance.html",
        "provenance.json",
        "runtimes.tsv",
    ]  # no temp files left


def test_write_provenance_needs_a_seed(tmp_path):
    with pytest.raises(ValueError, match="no 'seed'"):
        write_provenance(
            html_path=tmp_path / "a",
            runtimes_path=tmp_path / "b",
            config_path=tmp_path / "c",
            json_path=tmp_path / "d",
            config={},
            seed_jobs=[],
            benchmark_root="x",
            benchmark_patterns={},
            repository=tmp_path,
            workdir=tmp_path,
        )
