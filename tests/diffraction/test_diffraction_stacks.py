"""Real diffraction stacks: a simulated scan file prepared, classified, tabled and mapped."""

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import ndimage as ndi

from conftest import ROOT, make_workdir, snakemake, tiny_config
from grainflow.checkpoint import make_checkpoint, save_checkpoint
from grainflow.diffraction.data import CLASSES
from grainflow.diffraction.real import classify_stack, prepare_stack, read_prepared
from grainflow.diffraction.scan import read_scan_map, synthetic_scan
from grainflow.models.registry import build_model
from grainflow.stacks.reader import StackError

ZOOM = 2.5  # frame pixels per pixel of the 64-px training pattern
OFFSET = (21, 5)  # where the zoomed 160-px pattern sits in the 192-px frame
BEAM = (OFFSET[0] + ZOOM * 64 / 2 - 0.5, OFFSET[1] + ZOOM * 64 / 2 - 0.5)  # (100.5, 84.5)


def physics():
    with open(ROOT / "config" / "config.yaml") as f:
        return yaml.safe_load(f)["synthesize"]["diffraction"]


def simulated_scan(shape=(3, 4)):
    """Frames made by the project's simulator (every session with a beam stop), zoomed 2.5
    times onto 192-px frames with the direct beam 16 px up and 11 px left of the middle."""
    settings = {**physics(), "beam_stop_probability": 1.0, "dose_counts": [300.0, 300.0]}
    counts, truth, _, info = synthetic_scan(settings, scan_shape=shape, grain_diameter_px=2, rng=3)
    assert info["session"]["beam_stop"]
    frames = np.zeros((*shape, 192, 192), np.uint16)
    side = int(64 * ZOOM)
    for index in np.ndindex(*shape):
        zoomed = np.clip(np.rint(ndi.zoom(counts[index], ZOOM, order=1)), 0, 65535)
        frames[index][OFFSET[0] : OFFSET[0] + side, OFFSET[1] : OFFSET[1] + side] = zoomed
    return frames, truth


def write_hspy(path, frames, *, step_nm=5.0):
    from rsciio.hspy import file_writer

    nav = [("y", "nm"), ("x", "nm")][-(frames.ndim - 2) :] if frames.ndim > 2 else []
    axes = [
        {"name": n, "size": s, "scale": step_nm, "offset": 0.0, "units": u, "navigate": True}
        for (n, u), s in zip(nav, frames.shape[:-2])
    ]
    axes += [
        {"name": n, "size": s, "scale": 0.02, "offset": 0.0, "units": "1/Å", "navigate": False}
        for n, s in zip(("ky", "kx"), frames.shape[-2:])
    ]
    file_writer(
        str(path),
        {
            "data": frames,
            "axes": axes,
            "metadata": {
                "General": {"title": "scan"},
                "Signal": {"signal_type": "electron_diffraction"},
                "Acquisition_instrument": {"TEM": {"camera_length": 250.0}},
            },
            "original_metadata": {},
            "tmp_parameters": {},
            "attributes": {"_lazy": False},
            "models": {},
            "learning_results": {},
            "package_info": {"name": "grainflow-tests", "version": "0"},
        },
    )
    return path


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory):
    frames, truth = simulated_scan()
    return write_hspy(tmp_path_factory.mktemp("scan") / "scan.hspy", frames), frames


def random_checkpoints(folder, n=2):
    paths = []
    for k in range(n):
        torch.manual_seed(k)
        model = build_model("diffraction_cnn", num_classes=3)
        ckpt = make_checkpoint(
            model=model,
            model_name="diffraction_cnn",
            model_kwargs={"num_classes": 3},
            epoch=0,
            step=0,
            extra={
                "classes": list(CLASSES),
                "representation": {"spot": "angular_spectrum", "ring": "log_polar_highpass"},
            },
            with_rng=False,
        )
        paths.append(save_checkpoint(folder / f"fold{k}" / "best.pt", ckpt))
    return paths


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_scan_is_prepared_block_by_block_and_recorded(scan_file, tmp_path):
    path, frames = scan_file
    before = digest(path)
    attrs = prepare_stack(
        path,
        tmp_path / "prepared.zarr",
        tmp_path / "prepared.tsv",
        name="scan",
        modality="spot",
        settings=physics(),
        frames_per_block=8,  # two rows of the 4-wide scan at a time
    )
    assert digest(path) == before  # only read
    patterns, stored = read_prepared(tmp_path / "prepared.zarr")
    assert patterns.shape == (3, 4, 64, 64) and patterns.chunks == (2, 4, 64, 64)
    assert stored == attrs and attrs["is_scan"] and attrs["frames_per_block"] == 8
    assert attrs["scan_step_um"] == pytest.approx(0.005) and attrs["scan_step_from"] == "file"
    cal = attrs["source"]["calibration"]
    assert cal["reciprocal_px_inv_A"] == pytest.approx(0.02)
    assert cal["camera_length_mm"] == pytest.approx(250.0)
    values = np.asarray(patterns)
    assert values.min() >= 0 and values.max() <= 1 and np.all(values.max(axis=(2, 3)) == 1)
    table = pd.read_csv(tmp_path / "prepared.tsv", sep="\t")
    assert list(table["frame"]) == list(range(12))
    assert list(table["scan_row"]) == [0] * 4 + [1] * 4 + [2] * 4
    assert list(table["scan_col"]) == [0, 1, 2, 3] * 3
    # the beam found off the middle of the frame, the first order brought to the trained range
    assert np.all(np.abs(table["centre_row"] - BEAM[0]) < 3)
    assert np.all(np.abs(table["centre_col"] - BEAM[1]) < 3)
    assert np.all(np.isfinite(table["first_order_found_px"]))
    assert np.allclose(table["first_order_px"], 4.25)
    assert np.allclose(table["scale"], 4.25 / table["first_order_found_px"], rtol=1e-4)
    assert set(table["bin"]) <= {1, 2, 3, 4}


def test_a_failed_preparation_leaves_no_output(scan_file, tmp_path, monkeypatch):
    import grainflow.diffraction.prepare as prepare

    def broken(frames, *, out, **kwargs):
        out[0:1] = np.zeros((1, *out.shape[1:]), np.float32)  # one block written, then a failure
        raise ValueError("a frame is one 2-D array")

    monkeypatch.setattr(prepare, "prepare_frames", broken)
    with pytest.raises(StackError, match="stack 'scan': .*scan.hspy: cannot prepare its frames"):
        prepare_stack(
            scan_file[0], tmp_path / "p.zarr", tmp_path / "p.tsv", name="scan", modality="spot"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_sheet_scan_step_that_disagrees_with_the_file_is_refused(scan_file, tmp_path):
    with pytest.raises(StackError, match=r"pixel_size_um \(0\.01 um.*0\.005 um that scan\.hspy"):
        prepare_stack(
            scan_file[0],
            tmp_path / "p.zarr",
            tmp_path / "p.tsv",
            name="scan",
            modality="spot",
            scan_step_um=0.01,
        )
    assert not (tmp_path / "p.zarr").exists() and not (tmp_path / "p.tsv").exists()


def test_prepared_frames_are_classified_tabled_and_mapped_with_abstention(scan_file, tmp_path):
    prepare_stack(
        scan_file[0], tmp_path / "p.zarr", tmp_path / "p.tsv", name="scan", modality="spot"
    )
    ckpts = random_checkpoints(tmp_path / "models")
    summary = classify_stack(
        tmp_path / "p.zarr", tmp_path / "p.tsv", ckpts, tmp_path / "f.tsv", tmp_path / "m.ome.zarr"
    )
    table = pd.read_csv(tmp_path / "f.tsv", sep="\t", keep_default_na=False)
    probs = table[[f"p_{c}" for c in CLASSES]].to_numpy(float)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(table["confidence"].astype(float), probs.max(axis=1))
    assert list(table["predicted"]) == [CLASSES[k] for k in probs.argmax(axis=1)]
    assert not table["abstained"].astype(bool).any()  # no threshold: never abstains
    back, labels, attrs = read_scan_map(tmp_path / "m.ome.zarr")
    assert back.shape == (3, 3, 4) and attrs["is_scan"] and attrs["scan_step_um"] == 0.005
    assert attrs["models"] == 2 and attrs["threshold"] is None and summary["abstained"] == 0
    # a threshold between the confidences: the low ones abstain, blank in the table and the map
    threshold = float(np.median(probs.max(axis=1)))
    classify_stack(
        tmp_path / "p.zarr",
        tmp_path / "p.tsv",
        ckpts,
        tmp_path / "g.tsv",
        tmp_path / "n.ome.zarr",
        threshold=threshold,
    )
    table = pd.read_csv(tmp_path / "g.tsv", sep="\t", keep_default_na=False)
    low = probs.max(axis=1) < threshold
    assert low.any() and not low.all()
    assert list(table["abstained"].astype(bool)) == list(low)
    assert all(table["predicted"][low] == "")
    _, labels, attrs = read_scan_map(tmp_path / "n.ome.zarr")
    assert np.array_equal(labels.ravel() == 0, low) and attrs["abstained"] == int(low.sum())


def test_a_stack_of_frames_is_a_map_of_one_row(scan_file, tmp_path):
    frames = scan_file[1][0]  # (4, 192, 192): a frame series
    path = write_hspy(tmp_path / "series.hspy", frames)
    attrs = prepare_stack(path, tmp_path / "p.zarr", tmp_path / "p.tsv", name="s", modality="spot")
    assert not attrs["is_scan"]
    table = pd.read_csv(tmp_path / "p.tsv", sep="\t")
    assert list(table.columns[:2]) == ["frame", "centre_row"]  # no scan position
    classify_stack(
        tmp_path / "p.zarr",
        tmp_path / "p.tsv",
        random_checkpoints(tmp_path / "models", n=1),
        tmp_path / "f.tsv",
        tmp_path / "m.ome.zarr",
    )
    probs, labels, attrs = read_scan_map(tmp_path / "m.ome.zarr")
    assert probs.shape == (3, 1, 4) and not attrs["is_scan"] and attrs["scan_step_um"] is None


@pytest.mark.workflow
def test_a_diffraction_stack_runs_through_the_workflow(scan_file, tmp_path):
    """The sheet's diffraction row: frames read, prepared, classified, tabled and mapped."""
    config = tiny_config()
    config["diffraction"]["stacks"]["abstain"] = False  # the abstention jobs: a dry run below
    # this sheet holds only the scan: no image stack to adapt or fine-tune on
    config["adapt"]["finetune"]["stacks"] = []
    config["adapt"]["unsupervised"]["stacks"] = []
    workdir = make_workdir(tmp_path / "run", config)
    shutil.copy(scan_file[0], workdir / "scan.hspy")
    (workdir / "config" / "stacks.tsv").write_text(
        "stack\ttask\tpath\tpixel_size_um\tground_truth\tgroup\tdescription\n"
        "sim_scan\tdiffraction\tscan.hspy\t\t\t\tsimulated 4D-STEM scan\n"
    )
    target = "results/figures/diffraction_map_sim_scan.png"
    result = snakemake(workdir, "--cores", "2", target, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (workdir / target).stat().st_size > 10_000
    table = pd.read_csv(workdir / "results/metrics/real/sim_scan.frames.tsv", sep="\t")
    assert len(table) == 12 and {"scan_row", "scan_col", "predicted", "abstained"} <= set(table)
    assert np.all(np.abs(table["centre_row"] - BEAM[0]) < 3)
    assert (workdir / "results/inference/sim_scan/diffraction_cnn.ome.zarr").is_dir()
    assert not (workdir / "results/stacks").exists()  # no image import of a diffraction stack
    # with abstention, the classifier's threshold joins the DAG
    config["diffraction"]["stacks"]["abstain"] = True
    make_workdir(workdir, config)
    (workdir / "config" / "stacks.tsv").write_text(
        "stack\ttask\tpath\tpixel_size_um\tground_truth\tgroup\tdescription\n"
        "sim_scan\tdiffraction\tscan.hspy\t\t\t\tsimulated 4D-STEM scan\n"
    )
    dry = snakemake(workdir, "--dry-run", "--cores", "1", target, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "diffraction_abstention" in dry.stdout + dry.stderr
