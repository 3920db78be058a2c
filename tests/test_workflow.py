"""The workflow itself: a dry run of the whole DAG, tiny real runs, and what a rerun redoes."""

import re

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import make_workdir, snakemake, tiny_config

pytestmark = pytest.mark.workflow


def test_dry_run_of_the_whole_dag(workdir):
    result = snakemake(workdir, "--dry-run", "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout + result.stderr
    for rule in ("synthesize", "synthetic_examples", "synthetic_statistics", "all"):
        assert rule in out
    # one synthesize job per specimen of every task
    cfg = tiny_config()["synthesize"]
    tasks = (*tiny_config()["tasks"], "kernels", "diffraction")
    assert "nanoparticles" in tasks
    n = sum(cfg[t]["specimens"] for t in tasks)
    table = out[out.index("Job stats:") :]
    assert any(line.split()[:2] == ["synthesize", str(n)] for line in table.splitlines())


def test_bad_config_stops_before_any_job(tmp_path):
    config = tiny_config()
    config["synthesize"]["grains"]["specimen"] = 4  # a typo
    workdir = make_workdir(tmp_path / "bad", config)
    result = snakemake(workdir, "--cores", "1")
    assert result.returncode != 0
    assert "synthesize.grains: unknown key(s) 'specimen'" in result.stderr
    assert not (workdir / "results").exists()


def test_tiny_synthesis_run(workdir):
    targets = ["results/figures/synthetic_examples.png", "results/figures/synthetic_statistics.png"]
    result = snakemake(workdir, "--cores", "2", *targets)
    assert result.returncode == 0, result.stderr[-4000:]
    for t in targets:
        assert (workdir / t).stat().st_size > 10_000
    with h5py.File(workdir / "results/synthetic/grains/s01.h5") as f:
        assert f["images"].shape == (4, 64, 64)
        assert f["images"].compression == "gzip" and f["images"].chunks == (1, 64, 64)
        assert f["labels/grain_ids"].dtype == np.uint32
        assert f["labels/boundaries"].dtype == np.uint8
        assert [s.decode() for s in f["meta/specimen"][()]] == ["s01"] * 4
        assert sorted({s.decode() for s in f["meta/session"][()]}) == ["b0", "b1"]
        assert f.attrs["task"] == "grains"
    stats = pd.read_csv(workdir / "results/tables/synthetic_statistics.tsv", sep="\t")
    grains = stats[stats.task == "grains"]
    assert len(grains) == 3 and len(stats[stats.task == "phases"]) == 3
    # 64 px fields hold few grains: a loose check that the grain size is what was asked
    assert np.all(np.abs(grains.measured_diameter_px / grains.requested_diameter_px - 1) < 0.3)
    # a second run has nothing to do
    again = snakemake(workdir, "--cores", "2", "--dry-run", *targets)
    assert "Nothing to be done" in again.stdout + again.stderr
    # the report builds from what exists
    report = snakemake(workdir, "--cores", "1", "--report", "results/report.html", *targets)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (workdir / "results/report.html").stat().st_size > 50_000


def test_synthesis_is_reproducible_across_runs(tmp_path):
    digests = []
    for name in ("a", "b"):
        workdir = make_workdir(tmp_path / name)
        result = snakemake(workdir, "--cores", "1", "results/synthetic/phases/s02.h5")
        assert result.returncode == 0, result.stderr[-3000:]
        with h5py.File(workdir / "results/synthetic/phases/s02.h5") as f:
            digests.append((f["images"][()].tobytes(), f["labels/particle_ids"][()].tobytes()))
    assert digests[0] == digests[1]


def test_tiny_run_of_everything(tiny_run):
    """The whole default DAG on the tiny config, then the report (the shared run of conftest)."""
    tiny_run.check()
    workdir = tiny_run.workdir
    tasks = tiny_config()["tasks"]
    assert tasks == ["grains", "phases", "nanoparticles"]
    for task in tasks:
        manifest = pd.read_csv(workdir / f"results/splits/{task}.tsv", sep="\t")
        assert sorted(manifest.fold.unique()) == [0, 1, 2]
        # no specimen in two folds, copies with their originals
        assert manifest.groupby("specimen").fold.nunique().max() == 1
        assert (workdir / f"results/splits/{task}.tsv.sha256").exists()
    for task in tasks:
        score = "boundary_f1" if task == "grains" else "iou"
        for model in ("classical", "unet"):
            cv = pd.read_csv(workdir / f"results/metrics/{task}/{model}/cv.tsv", sep="\t")
            folds = cv[cv.fold.astype(str).str.isdigit()]
            assert len(folds) == 3 and folds[score].between(0.0, 1.0).all()
        for fold in range(3):
            history = pd.read_csv(
                workdir / f"results/models/{task}/unet/fold{fold}/history.tsv", sep="\t"
            )
            assert list(history.epoch) == [1, 2]
    for stack in ("nist_steel", "nasa_superalloy"):
        assert (workdir / f"results/stacks/{stack}.ome.zarr/zarr.json").exists()
    figures = sorted(p.name for p in (workdir / "results/figures").glob("*.png"))
    assert "anatomy_kernels.png" in figures and "synthetic_examples.png" in figures
    html = (workdir / "results/report.html").read_text(errors="replace")
    for category in (
        "Summary",
        "Synthetic data",
        "CNN anatomy",
        "Augmentation and splits",
        "Training",
        "Cross-validated results",
        "Real stacks",
        "Diffraction",
        "Provenance",
    ):
        assert category in html


def _planned_jobs(result) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a ``snakemake --dry-run`` lists."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", result.stdout + result.stderr):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if not head:
            continue
        found = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        wildcards = dict(kv.split("=", 1) for kv in found.group(1).split(", ")) if found else {}
        jobs.append((head.group(1), wildcards))
    return jobs


def test_rerunning_without_changes_does_nothing(tiny_run):
    tiny_run.check()
    again = snakemake(tiny_run.workdir, "--dry-run", "--cores", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


def test_one_hyperparameter_reruns_only_the_jobs_it_affects(tiny_run, tmp_path):
    """More epochs for unet: its training and everything downstream, nothing upstream."""
    tiny_run.check()
    config = tiny_config()
    config["training"]["archs"]["unet"]["epochs"] += 1
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(tiny_run.workdir, "--dry-run", "--cores", "2", "--configfile", str(changed))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _planned_jobs(result)
    rules = {rule for rule, _ in jobs}
    # every fold of every task retrains, and what reads the models follows
    assert [rule for rule, _ in jobs].count("train") == 3 * len(config["tasks"]) == 9
    assert {
        "train",
        "evaluate_model",
        "aggregate_metrics",
        "training_curves",
        "infer",
        "measure",
        "summary_table",
        "provenance",
    } <= rules
    # nothing upstream of training, and nothing of the classical baseline
    upstream = {
        "synthesize",
        "augment",
        "split",
        "baseline",
        "leakage",
        "fold_table",
        "import_stack",
        "synthetic_examples",
        "synthetic_statistics",
        "synthetic_statistics_figure",
        "augmentation_figure",
        "leakage_figure",
        "anatomy_kernels",
        "anatomy_numbers",
    }
    assert not rules & upstream, sorted(rules & upstream)
    assert not [j for j in jobs if j[1].get("model") == "classical"], jobs
    assert all(w.get("arch", "unet") in ("unet", "unet-adapted") for _, w in jobs)
