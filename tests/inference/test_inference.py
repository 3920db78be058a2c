"""Inference on real stacks: OME-Zarr output, block edges, labels across blocks, robustness."""

import hashlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import tifffile
import torch
import zarr
from scipy import ndimage

from grainflow import __version__
from grainflow.checkpoint import (
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from grainflow.inference.ensemble import load_ensemble
from grainflow.inference.labels import label_plane, labels_from_probability
from grainflow.inference.stack import infer_stack
from grainflow.models.registry import build_model
from grainflow.normalize import normalize_image
from grainflow.stacks.importer import import_stack
from grainflow.synth.tessellation import boundary_mask, polycrystal

KWARGS = {"depth": 2, "base_channels": 4, "norm": "batch", "residual": False}
GEOMETRY = {
    "tile_px": 64,
    "overlap_px": 16,
    "margin_px": 4,
    "batch_size": 4,
    "device": "cpu",
    "progress": False,
}


def _micrograph(shape, seed):
    """A grey polycrystal: bright grains, dark boundaries, noise (uint16)."""
    rng = np.random.default_rng(seed)
    grains = polycrystal(shape, grain_diameter_px=18, rng=seed)
    image = 0.6 + 0.3 * rng.random(grains.max() + 1)[grains]
    image[boundary_mask(grains, width_px=2)] = 0.2
    image = ndimage.gaussian_filter(image, 1.0) + rng.normal(0, 0.03, shape)
    return (np.clip(image, 0, 1) * 60000).astype(np.uint16)


def _stack(path, shape, *, planes=2, seed=0, task="grains"):
    tiff = path.parent / f"{path.name}.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(tiff, np.stack([_micrograph(shape, seed + z) for z in range(planes)]))
    import_stack(
        tiff,
        path,
        stack=path.name.removesuffix(".ome.zarr"),
        task=task,
        pixel_size_um=0.5,
        chunk=64,
        pyramid_min_px=64,
        block=128,
    )
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    return _stack(tmp_path_factory.mktemp("stacks") / "poly.ome.zarr", (150, 170))


def random_checkpoint(path, stack, *, seed: int, fold: int = 0, task: str = "grains"):
    """A light random U-Net whose P(boundary) straddles 0.5 on the stack's first plane."""
    plane = normalize_image(zarr.open_group(str(stack), mode="r")["s0"][0, :128, :128])
    torch.manual_seed(seed)
    model = build_model("unet", **KWARGS).eval()
    with torch.inference_mode():
        logits = model(torch.from_numpy(plane[None, None]))[0]
        model.head.bias[1] -= float(torch.median(logits[1] - logits[0]))
    ckpt = make_checkpoint(
        model=model,
        model_name="unet",
        model_kwargs=KWARGS,
        epoch=1,
        step=1,
        config={"norm_percentiles": (1.0, 99.0)},
        extra={"task": task, "fold": fold},
        with_rng=False,
    )
    return save_checkpoint(path, ckpt)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, stack):
    """Two random 'fold' U-Nets whose P(boundary) straddles 0.5 on the stack's images."""
    folder = tmp_path_factory.mktemp("models")
    return [
        random_checkpoint(folder / f"fold{fold}.pt", stack, seed=fold, fold=fold)
        for fold in range(2)
    ]


def _infer(stack, checkpoints, out, **options):
    return infer_stack(stack, checkpoints, out, model="unet", **{**GEOMETRY, **options})


def _read_back(store):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nodes = list(Reader(parse_url(str(store)))())
    labels = {
        n.metadata["name"]: n for n in nodes if any(type(s).__name__ == "Label" for s in n.specs)
    }
    return nodes[0], labels


# ----------------------------------------------------------------------------- the store


def test_output_is_an_ome_zarr_image_with_labels_and_provenance(tmp_path, stack, checkpoints):
    out = tmp_path / "inference" / "poly" / "unet.ome.zarr"
    summary = _infer(stack, checkpoints, out, block_px=64)
    image, labels = _read_back(out)
    assert [tuple(d.shape) for d in image.data] == [
        (2, 2, 150, 170),
        (2, 2, 75, 85),
        (2, 2, 38, 43),
    ]
    axes = image.metadata["axes"]
    assert [a["name"] for a in axes] == ["c", "z", "y", "x"] and axes[0]["type"] == "channel"
    assert axes[2]["unit"] == axes[3]["unit"] == "micrometer"
    transforms = image.metadata["coordinateTransformations"]
    assert transforms[0] == [{"type": "scale", "scale": [1.0, 1.0, 0.5, 0.5]}]
    assert transforms[1][0]["scale"] == [1.0, 1.0, 1.0, 1.0]
    assert image.metadata["channel_names"] == ["P(interior)", "P(boundary)"]
    assert sorted(labels) == ["boundaries", "grain_ids"]
    for node in labels.values():
        assert [tuple(d.shape) for d in node.data] == [(2, 150, 170), (2, 75, 85), (2, 38, 43)]
        assert node.metadata["coordinateTransformations"][1] == [
            {"type": "scale", "scale": [1.0, 1.0, 1.0]}
        ]
    # probabilities: in [0, 1], summing to 1 on every level
    for level in image.data:
        p = np.asarray(level)
        assert p.min() >= 0.0 and p.max() <= 1.0
        np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-5)
    p1 = np.asarray(image.data[0])[1]
    assert 0.1 < (p1 > 0.5).mean() < 0.9  # the fixture's models give structured label maps
    # labels are those of the cross-validated evaluation
    for z in range(2):
        ref = labels_from_probability("grains", p1[z])
        np.testing.assert_array_equal(
            np.asarray(labels["boundaries"].data[0])[z], ref["boundaries"]
        )
        np.testing.assert_array_equal(np.asarray(labels["grain_ids"].data[0])[z], ref["grain_ids"])
    # provenance
    attrs = zarr.open_group(str(out), mode="r").attrs["grainflow"]
    assert attrs == {k: summary[k] for k in attrs}
    assert [c["sha256"] for c in attrs["checkpoints"]] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in checkpoints
    ]
    assert [c["fold"] for c in attrs["checkpoints"]] == [0, 1]
    assert (attrs["tile_px"], attrs["overlap_px"], attrs["margin_px"], attrs["block_px"]) == (
        64,
        16,
        4,
        64,
    )
    assert attrs["blend"]["window"] == "gaussian" and attrs["blend"]["sigma_scale"] == 0.125
    assert attrs["version"] == __version__ and attrs["task"] == "grains"
    raw = zarr.open_group(str(stack), mode="r")["s0"][1].astype(np.float32)
    lo, hi = np.percentile(raw, (1, 99))
    assert attrs["planes"][1]["norm_low"] == pytest.approx(lo)
    assert attrs["planes"][1]["norm_high"] == pytest.approx(hi)
    assert attrs["planes"][0]["blocks"] == 9  # 150 x 170 in 64 px blocks
    assert not any(p.name.endswith((".tmp", ".old")) for p in out.parent.iterdir())


def test_block_edges_are_seamless_and_labels_consistent_across_them(
    tmp_path, stack, checkpoints, caplog
):
    blocked = tmp_path / "blocked.ome.zarr"
    whole = tmp_path / "whole.ome.zarr"
    with caplog.at_level(logging.INFO, logger="grainflow"):
        a = _infer(
            stack,
            checkpoints,
            blocked,
            block_px=64,
            whole_plane_max_px=0,
            labels_halo_px=16,
            progress=True,
        )
    # progress: one count over the stack's planes, in plain lines
    assert re.search(r"stack '\w+': block 18/18 \(100%\); elapsed \d+s, done", caplog.text)
    b = _infer(stack, checkpoints, whole, block_px=256)
    assert a["planes"][0]["blocks"] == 9 and b["planes"][0]["blocks"] == 1
    assert a["planes"][0]["labelling"] == "block-wise"
    assert b["planes"][0]["labelling"] == "whole plane"
    pa = zarr.open_group(str(blocked), mode="r")
    pb = zarr.open_group(str(whole), mode="r")
    # every block uses the whole-plane tiles: the block size changes nothing, so no seam
    np.testing.assert_allclose(pa["s0"][:], pb["s0"][:], atol=1e-6)
    # block-wise labels (3 x 3 blocks, merged across edges) = labels of the whole plane
    p1 = pa["s0"][1]
    for z in range(2):
        ref = labels_from_probability("grains", p1[z])
        np.testing.assert_array_equal(pa["labels/grain_ids/s0"][z], ref["grain_ids"])
        np.testing.assert_array_equal(pa["labels/boundaries/s0"][z], ref["boundaries"])
    assert "scratch" not in pa  # the working array is not left in the output


def _polycrystal_probability(shape, seed):
    rng = np.random.default_rng(seed)
    b = boundary_mask(polycrystal(shape, grain_diameter_px=20, rng=seed), width_px=2)
    prob = ndimage.gaussian_filter(b.astype(float), 1.0) + 0.05 * rng.random(shape)
    return (prob / prob.max()).astype(np.float32)


@pytest.mark.parametrize("task", ["grains", "phases"])
def test_block_wise_labels_equal_whole_plane_labels(task):
    prob = _polycrystal_probability((200, 230), seed=1)
    if task == "phases":  # blobs crossing block edges
        prob = ndimage.gaussian_filter(np.random.default_rng(2).normal(size=prob.shape), 5)
        prob = ((prob - prob.min()) / np.ptp(prob)).astype(np.float32)
    ref = labels_from_probability(task, prob)
    names = ("boundaries", "grain_ids") if task == "grains" else ("phase", "particle_ids")
    out = {n: np.zeros(prob.shape, np.uint32) for n in names}
    summary = label_plane(task, prob, out, block=48, halo=16, whole_plane_max_px=0)
    assert summary == {"mode": "block-wise", "n_objects": int(ref[names[1]].max())}
    for n in names:  # same objects, same numbers (raster order of first pixel)
        np.testing.assert_array_equal(out[n], ref[n])
    # control: labelled block by block without the merge, objects crossing edges split
    naive, offset = np.zeros(prob.shape, np.int64), 0
    for r in range(0, 200, 48):
        for c in range(0, 230, 48):
            ids = labels_from_probability(task, prob[r : r + 48, c : c + 48])[names[1]]
            naive[r : r + 48, c : c + 48] = np.where(ids > 0, ids.astype(np.int64) + offset, 0)
            offset += int(ids.max())
    assert len(np.unique(naive[naive > 0])) > ref[names[1]].max() + 10


def test_grain_watershed_needs_its_halo():
    prob = _polycrystal_probability((200, 230), seed=0)
    ref = labels_from_probability("grains", prob)["grain_ids"]
    out = {
        "boundaries": np.zeros(prob.shape, np.uint8),
        "grain_ids": np.zeros(prob.shape, np.uint32),
    }
    label_plane("grains", prob, out, block=48, halo=0, whole_plane_max_px=0)
    # boundary pixels at block edges flooded from one side only: some differ
    assert 0 < np.count_nonzero(out["grain_ids"] != ref) < 0.01 * prob.size


def test_seeds_are_kept_or_dropped_by_their_whole_size():
    prob = np.ones((16, 16), np.float32)  # all boundary...
    prob[7:9, 7:9] = 0.0  # ...but one 2 x 2 interior seed on the corner of 4 blocks
    out = {"boundaries": np.zeros((16, 16), np.uint8), "grain_ids": np.zeros((16, 16), np.uint32)}
    summary = label_plane(
        "grains", prob, out, block=8, halo=4, whole_plane_max_px=0, min_grain_px=4
    )
    assert summary["n_objects"] == 1  # 1 px in each block, 4 in all: kept
    np.testing.assert_array_equal(out["grain_ids"], 1)
    summary = label_plane(
        "grains", prob, out, block=8, halo=4, whole_plane_max_px=0, min_grain_px=5
    )
    assert summary["n_objects"] == 0  # too small: no seed, one grain as for a whole plane
    np.testing.assert_array_equal(out["grain_ids"], 1)
    assert out["boundaries"].sum() == 16 * 16 - 4


# ----------------------------------------------------------------------------- robustness


def test_stack_smaller_than_a_tile(tmp_path, checkpoints):
    small = _stack(tmp_path / "small.ome.zarr", (40, 50), planes=1, seed=5)
    out = tmp_path / "small_unet.ome.zarr"
    _infer(small, checkpoints, out, block_px=64)
    probs = zarr.open_group(str(out), mode="r")["s0"][:]
    assert probs.shape == (2, 1, 40, 50)
    # reference: the normalised plane padded by reflection to the tile, predicted, cropped
    plane = normalize_image(zarr.open_group(str(small), mode="r")["s0"][0])
    padded = np.pad(plane, ((0, 24), (0, 14)), mode="reflect")
    ensemble = load_ensemble(checkpoints, device="cpu")
    ref = ensemble(padded[None, None])[0, :, :40, :50]
    np.testing.assert_allclose(probs[:, 0], ref, atol=1e-5)


_KILLED = """
import sys, time
import grainflow.inference.stack as inference

def stall(*args, **kwargs):  # after the probabilities: hang until killed
    open(sys.argv[3], "w").close()
    time.sleep(120)

inference.label_plane = stall
inference.infer_stack(sys.argv[1], sys.argv[4:], sys.argv[2], tile_px=64, overlap_px=16,
                      margin_px=4, block_px=64, device="cpu", progress=False)
"""


def test_a_killed_infer_leaves_no_output_and_reruns_cleanly(tmp_path, stack, checkpoints):
    out = tmp_path / "inference" / "unet.ome.zarr"
    flag = tmp_path / "stalled"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(stack), str(out), str(flag), *map(str, checkpoints)]
    )
    try:
        deadline = time.monotonic() + 50
        while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flag.exists(), "the job did not get to the labelling"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # nothing there that a rerun could trust
    leftovers = [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and (leftovers[0] / "s0").is_dir()
    _infer(stack, checkpoints, out, block_px=64)  # the rerun
    assert sorted(p.name for p in out.parent.iterdir()) == ["unet.ome.zarr"]
    image, labels = _read_back(out)
    np.testing.assert_allclose(np.asarray(image.data[0]).sum(axis=0), 1.0, atol=1e-5)
    # a failed run keeps the previous output
    with pytest.raises(ValueError, match="integer >= 8"):
        _infer(stack, checkpoints, out, tile_px=4)
    assert (out / "zarr.json").is_file()


# ----------------------------------------------------------------------------- ensemble


def test_ensemble_is_the_mean_of_the_folds_and_flips_commute(checkpoints):
    x = np.random.default_rng(0).normal(size=(2, 1, 16, 16)).astype(np.float32)
    plain = load_ensemble(checkpoints, device="cpu")
    assert plain.task == "grains" and plain.n_classes == 2
    # the trained models as saved (batch norm unfolded, plain memory layout): the ensemble's
    # folded, channels_last copies compute the same function
    trained = [model_from_checkpoint(load_checkpoint(p)).eval() for p in checkpoints]
    with torch.inference_mode():
        ref = np.mean([torch.softmax(m(torch.from_numpy(x)), 1).numpy() for m in trained], axis=0)
    np.testing.assert_allclose(plain(x), ref, atol=1e-5)
    assert plain(x).flags.c_contiguous
    flips = load_ensemble(checkpoints, device="cpu", flips=True)
    y = flips(x)
    np.testing.assert_allclose(flips(x[..., ::-1].copy()), y[..., ::-1], atol=1e-6)
    np.testing.assert_allclose(flips(x[..., ::-1, :].copy()), y[..., ::-1, :], atol=1e-6)
    assert np.abs(y - plain(x)).max() > 1e-3  # the flips do something


def test_bad_checkpoints_and_stacks_are_refused(tmp_path, stack, checkpoints):
    with pytest.raises(ValueError, match="trained on task 'grains'"):
        load_ensemble(checkpoints, task="phases")
    with pytest.raises(ValueError, match="at least one checkpoint"):
        load_ensemble([])
    model = build_model("unet", **KWARGS)
    other = save_checkpoint(
        tmp_path / "other.pt",
        make_checkpoint(
            model=model,
            model_name="unet",
            model_kwargs=KWARGS,
            epoch=1,
            step=1,
            config={"norm_percentiles": (0.5, 99.5)},
            extra={"task": "grains", "fold": 2},
        ),
    )
    with pytest.raises(ValueError, match="different normalisations"):
        load_ensemble([*checkpoints, other])
    with pytest.raises(FileNotFoundError, match="import_stack"):
        _infer(tmp_path / "missing.ome.zarr", checkpoints, tmp_path / "x.ome.zarr")
    with pytest.raises(ValueError, match="overlap"):
        _infer(stack, checkpoints, tmp_path / "x.ome.zarr", overlap_px=64)
    with pytest.raises(ValueError, match="multiple of 4"):  # U-Nets of depth 2
        _infer(stack, checkpoints, tmp_path / "x.ome.zarr", tile_px=66)
    assert not any(tmp_path.glob("*x.ome.zarr*"))


# ----------------------------------------------------------------------------- workflow


@pytest.mark.workflow
def test_the_workflow_infers_every_stack_with_every_architecture_of_its_task(tmp_path):
    from conftest import make_workdir, snakemake

    workdir = make_workdir(tmp_path / "run")
    result = snakemake(
        workdir,
        "--dry-run",
        "--cores",
        "2",
        "results/metrics/real/nist_steel.tsv",
        "results/figures/real_overlays_nasa_superalloy.png",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout + result.stderr
    table = out[out.index("Job stats:") :]
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in table.splitlines()[2:]
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    # the tiny config adapts the fold models to nasa_superalloy: that stack is also inferred
    # with the adapted models (rule adapt), beside the trained ones
    assert counts["infer"] == 3 and counts["measure"] == 2 and counts["real_figures"] == 1
    assert counts["adapt"] == 1
    assert "results/inference/nasa_superalloy/unet-adapted.ome.zarr" in out
    assert "results/models/phases/unet-adapted/nasa_superalloy/fold2/best.pt" in out
    assert counts["train"] == 6  # both tasks' folds: each stack waits for its own task's models
    assert "results/inference/nist_steel/unet.ome.zarr" in out
    assert "results/models/grains/unet/fold2/best.pt" in out
