"""Polarity: phases networks shown their particles bright, on synthetic images and real stacks."""

import numpy as np
import pytest
import tifffile
import torch
import zarr
from scipy import ndimage

from grainflow.adaptation.planes import read_planes
from grainflow.checkpoint import make_checkpoint, save_checkpoint
from grainflow.inference.ensemble import load_ensemble
from grainflow.inference.stack import infer_stack
from grainflow.models.registry import build_model
from grainflow.normalize import normalize_image, polarity_view
from grainflow.stacks.importer import import_stack, plane_particles
from grainflow.stacks.reader import StackError

KWARGS = {"depth": 2, "base_channels": 4, "norm": "batch", "residual": False}
GEOMETRY = {"tile_px": 64, "overlap_px": 16, "margin_px": 4, "batch_size": 4, "device": "cpu"}


def _particles(shape=(96, 112), seed=0):
    """Dark discs on a bright matrix (uint16), and the disc mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, bool)
    for cy, cx in rng.uniform(8, np.array(shape) - 8, size=(12, 2)):
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(3, 7) ** 2
    image = np.where(mask, 0.3, 0.75) + rng.normal(0, 0.03, shape)
    return (np.clip(ndimage.gaussian_filter(image, 0.8), 0, 1) * 60000).astype(np.uint16), mask


def _import(tmp_path, name, planes, **kwargs):
    tiff = tmp_path / f"{name}.tif"
    tifffile.imwrite(tiff, np.stack(planes))
    out = tmp_path / f"{name}.ome.zarr"
    import_stack(tiff, out, stack=name, task="phases", chunk=64, pyramid_min_px=64, **kwargs)
    return out


def _checkpoint(path, *, polarity, fold=0):
    torch.manual_seed(fold)
    model = build_model("unet", **KWARGS).eval()
    with torch.no_grad():
        model.head.weight.mul_(50)  # a random net whose output follows its input
    config = {"norm_percentiles": (1.0, 99.0), "polarity": polarity}
    return save_checkpoint(
        path,
        make_checkpoint(
            model=model,
            model_name="unet",
            model_kwargs=KWARGS,
            epoch=1,
            step=1,
            config=config,
            extra={"task": "phases", "fold": fold},
            with_rng=False,
        ),
    )


def _probabilities(store):
    return np.asarray(zarr.open_group(str(store), mode="r")["s0"])


def test_the_view_inverts_dark_particles_and_commutes_with_normalisation():
    raw = np.random.default_rng(1).uniform(100, 4000, (32, 40))
    image = normalize_image(raw)
    assert polarity_view(image, particles_dark=True, polarity="learned") is image
    assert polarity_view(image, particles_dark=False, polarity="given") is image
    inverted = polarity_view(image, particles_dark=True, polarity="given")
    # the network sees the plane exactly as it would see the negative image, normalised
    np.testing.assert_allclose(inverted, normalize_image(raw.max() + raw.min() - raw), atol=1e-5)
    with pytest.raises(ValueError, match="unknown"):
        polarity_view(image, particles_dark=None, polarity="given")
    with pytest.raises(ValueError, match="polarity must be one of"):
        polarity_view(image, particles_dark=True, polarity="bright")


def test_the_sheet_cell_gives_each_plane_its_polarity():
    files = ["PtC1.jpg", "Cu1.jpg", "PtC2.jpg"]
    assert plane_particles(files, "dark", name="s") == [True, True, True]
    assert plane_particles(files, "bright", name="s") == [False, False, False]
    assert plane_particles(files, "dark:^PtC", name="s") == [True, False, True]
    assert plane_particles(files, "bright:^PtC", name="s") == [False, True, False]
    assert plane_particles(files, None, name="s") == [None] * 3
    assert plane_particles(files, "auto", name="s") == [None] * 3
    with pytest.raises(StackError, match="not a regular expression"):
        plane_particles(files, "dark:(PtC", name="s")
    with pytest.raises(StackError, match="not bright, dark"):
        plane_particles(files, "grey", name="s")


def test_import_records_the_sheets_polarity_or_estimates_it(tmp_path):
    dark, _ = _particles(seed=0)
    bright = (60000 - dark.astype(np.int64)).astype(np.uint16)
    estimated = _import(tmp_path, "est", [dark, bright])
    planes = dict(zarr.open_group(str(estimated), mode="r").attrs)["grainflow"]["planes"]
    assert [p["particles_dark"] for p in planes] == [True, False]
    assert {p["particles_from"] for p in planes} == {"estimated"}
    given = _import(tmp_path, "given", [dark, bright], particles="bright")
    planes = dict(zarr.open_group(str(given), mode="r").attrs)["grainflow"]["planes"]
    assert [p["particles_dark"] for p in planes] == [False, False]
    assert {p["particles_from"] for p in planes} == {"stacks sheet"}


def test_a_dark_stack_reaches_a_given_network_as_its_negative_would(tmp_path):
    image, _ = _particles(seed=2)
    negative = (60000 - image.astype(np.int64)).astype(np.uint16)
    dark = _import(tmp_path, "dark", [image], particles="dark")
    bright = _import(tmp_path, "bright", [negative], particles="bright")
    given = [_checkpoint(tmp_path / f"g{k}.pt", polarity="given", fold=k) for k in range(2)]
    learned = [_checkpoint(tmp_path / f"l{k}.pt", polarity="learned", fold=k) for k in range(2)]
    runs = {}
    for name, stack, ckpts in [
        ("dark", dark, given),
        ("bright", bright, given),
        ("dark_learned", dark, learned),
    ]:
        out = tmp_path / "inference" / f"{name}.ome.zarr"
        summary = infer_stack(stack, ckpts, out, model="unet", progress=False, **GEOMETRY)
        runs[name] = _probabilities(out)
        polarity = "learned" if name.endswith("learned") else "given"
        assert summary["normalization"]["polarity"] == polarity
        inverted = summary["planes"][0].get("inverted")
        assert inverted == {"dark": True, "bright": False, "dark_learned": None}[name]
    np.testing.assert_allclose(runs["dark"], runs["bright"], atol=1e-4)
    # the same weights shown the plane as imaged predict something else: the view matters
    assert np.abs(runs["dark_learned"] - runs["dark"]).max() > 0.01
    planes = read_planes(dark, polarity="given", with_truth=False)
    assert planes.particles_dark == [True]
    plane = normalize_image(image.astype(np.float32))
    np.testing.assert_allclose(planes.images[0], 1 - plane, atol=1e-6)
    np.testing.assert_allclose(planes.as_imaged(0), plane, atol=1e-6)


def test_given_networks_refuse_a_stack_without_polarity_and_mixed_ensembles(tmp_path):
    image, _ = _particles(seed=3)
    stack = _import(tmp_path, "old", [image], particles="dark")
    root = zarr.open_group(str(stack), mode="r+")
    info = dict(root.attrs)["grainflow"]
    for plane in info["planes"]:  # as an older grainflow imported it
        del plane["particles_dark"], plane["particles_from"]
    root.attrs["grainflow"] = info
    given = _checkpoint(tmp_path / "given.pt", polarity="given")
    with pytest.raises(ValueError, match=r"planes \[0\] of .*old.* re-import the stack"):
        infer_stack(stack, [given], tmp_path / "out.ome.zarr", model="unet", **GEOMETRY)
    assert not (tmp_path / "out.ome.zarr").exists()
    with pytest.raises(ValueError, match=r"planes \[0\] of .*old.* re-import the stack"):
        read_planes(stack, polarity="given")
    learned = _checkpoint(tmp_path / "learned.pt", polarity="learned", fold=1)
    with pytest.raises(ValueError, match="different polarities"):
        load_ensemble([given, learned])
