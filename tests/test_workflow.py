"""The workflow itself: a dry run of the whole DAG, and a tiny real run of the synthesis rules."""

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
    n = sum(cfg[t]["specimens"] for t in ("grains", "phases", "kernels"))
    table = out[out.index("Job stats:"):]
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


def test_tiny_run_of_everything(workdir):
    """The whole default DAG on the tiny config, then the report."""
    result = snakemake(workdir, "--cores", "2", timeout=1200)
    assert result.returncode == 0, result.stderr[-6000:]
    for task in ("grains", "phases"):
        manifest = pd.read_csv(workdir / f"results/splits/{task}.tsv", sep="\t")
        assert sorted(manifest.fold.unique()) == [0, 1, 2]
        # no specimen in two folds, copies with their originals
        assert manifest.groupby("specimen").fold.nunique().max() == 1
        assert (workdir / f"results/splits/{task}.tsv.sha256").exists()
    for task in ("grains", "phases"):
        score = "boundary_f1" if task == "grains" else "iou"
        for model in ("classical", "unet"):
            cv = pd.read_csv(workdir / f"results/metrics/{task}/{model}/cv.tsv", sep="\t")
            folds = cv[cv.fold.astype(str).str.isdigit()]
            assert len(folds) == 3 and folds[score].between(0.0, 1.0).all()
        for fold in range(3):
            history = pd.read_csv(workdir / f"results/models/{task}/unet/fold{fold}/history.tsv", sep="\t")
            assert list(history.epoch) == [1, 2]
    for stack in ("nist_steel", "nasa_superalloy"):
        assert (workdir / f"results/stacks/{stack}.ome.zarr/zarr.json").exists()
    figures = sorted(p.name for p in (workdir / "results/figures").glob("*.png"))
    assert "anatomy_kernels.png" in figures and "synthetic_examples.png" in figures
    report = snakemake(workdir, "--cores", "1", "--report", "results/report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (workdir / "results/report.html").read_text(errors="replace")
    for category in ("Synthetic data", "CNN anatomy", "Augmentation and splits", "Training",
                     "Cross-validated results"):
        assert category in html
