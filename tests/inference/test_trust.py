"""The trust map: members' disagreement, in the store beside unchanged probabilities."""

import numpy as np
import pytest
import tifffile
import torch
import zarr
from test_inference import GEOMETRY, _micrograph, _stack, random_checkpoint

from grainflow.inference.ensemble import load_ensemble
from grainflow.inference.shards import infer_shard, merge_shards
from grainflow.inference.stack import infer_stack
from grainflow.inference.trust import (
    REFERENCE_MIN_FRACTION,
    beyond_reference,
    disagreement,
    plane_trust,
)
from grainflow.stacks.importer import import_stack

# ----------------------------------------------------------------------------- the measure


def test_identical_members_disagree_by_zero():
    rng = np.random.default_rng(0)
    p = rng.dirichlet((1, 1, 1), size=(2, 5, 4)).transpose(0, 3, 1, 2)  # (N, C, H, W)
    np.testing.assert_array_equal(disagreement([p, p.copy()]), 0.0)  # (p + p) / 2 == p
    d = disagreement([p, p.copy(), p.copy()])
    assert d.shape == (2, 5, 4)
    np.testing.assert_allclose(d, 0.0, atol=1e-15)  # (p + p + p) / 3: rounding only


def test_hand_worked_disagreement_of_one_hot_members():
    a = np.array([1.0, 0.0]).reshape(1, 2, 1, 1)
    b = np.array([0.0, 1.0]).reshape(1, 2, 1, 1)
    # two opposite members: mean (1/2, 1/2), each at total-variation distance 1/2
    assert disagreement([a, b]).item() == pytest.approx(0.5)
    # three members, two alike: mean (1/3, 2/3); distances 2/3, 1/3, 1/3 -> 4/9
    assert disagreement([a, b, b]).item() == pytest.approx(4 / 9)
    # the bound 1 - 1/M: M members, each sure of its own class of M
    eye = [np.eye(4)[m].reshape(1, 4, 1, 1) for m in range(4)]
    assert disagreement(eye).item() == pytest.approx(1 - 1 / 4)
    # torch tensors give the same
    t = disagreement([torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(b)])
    assert isinstance(t, torch.Tensor) and t.item() == pytest.approx(4 / 9)


def test_plane_trust_counts_pixels_above_the_threshold_block_by_block():
    d = np.zeros((10, 7), np.float32)
    d[:3, :] = 0.3  # 21 of 70 pixels
    d[9, 6] = 0.1  # exactly at the threshold: not above it
    for block in (3, 100):
        got = plane_trust(d, uncertain_above=0.1, block=block)
        assert got["uncertain_fraction"] == pytest.approx(21 / 70)
        assert got["disagreement_mean"] == pytest.approx((21 * 0.3 + 0.1) / 70, rel=1e-6)


def test_beyond_reference_needs_a_clear_margin():
    ref = {"uncertain_fraction_p99": 0.05}
    assert beyond_reference(0.11, ref, factor=2.0)
    assert not beyond_reference(0.09, ref, factor=2.0)
    assert not beyond_reference(float("nan"), ref, factor=2.0)
    tiny = {"uncertain_fraction_p99": 0.0}  # a reference of nothing uncertain
    assert not beyond_reference(REFERENCE_MIN_FRACTION / 2, tiny, factor=2.0)
    assert beyond_reference(2 * REFERENCE_MIN_FRACTION, tiny, factor=2.0)


# ----------------------------------------------------------------------------- the ensemble


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    return _stack(tmp_path_factory.mktemp("stacks") / "poly.ome.zarr", (150, 170))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, stack):
    folder = tmp_path_factory.mktemp("models")
    return [random_checkpoint(folder / f"fold{f}.pt", stack, seed=f, fold=f) for f in range(2)]


def test_the_ensemble_appends_the_disagreement_and_keeps_the_probabilities(checkpoints):
    batch = np.random.default_rng(1).random((3, 1, 64, 64), dtype=np.float32)
    for flips in (False, True):
        ensemble = load_ensemble(checkpoints, device="cpu", flips=flips)
        plain = ensemble(batch)
        both = ensemble.with_disagreement()(batch)
        assert both.shape == (3, 3, 64, 64) and ensemble.n_members == 2 * (4 if flips else 1)
        np.testing.assert_array_equal(both[:, :2], plain)
        assert 0 < both[:, 2].mean() and both[:, 2].max() <= 1 - 1 / ensemble.n_members
    one = load_ensemble(checkpoints[:1], device="cpu").with_disagreement()
    np.testing.assert_array_equal(one(batch)[:, 2], 0.0)  # one member agrees with itself


# ----------------------------------------------------------------------------- the store


def _group(path):
    return zarr.open_group(str(path), mode="r")


@pytest.mark.parametrize("level", [0, 1])
def test_the_trust_map_is_stored_and_leaves_the_probabilities_unchanged(
    tmp_path, stack, checkpoints, level
):
    options = dict(model="unet", block_px=64, level=level, **GEOMETRY)
    off = infer_stack(stack, checkpoints, tmp_path / "off.ome.zarr", **options)
    on = infer_stack(
        stack, checkpoints, tmp_path / "on.ome.zarr", trust=True, uncertain_above=2e-4, **options
    )
    a, b = _group(tmp_path / "off.ome.zarr"), _group(tmp_path / "on.ome.zarr")
    assert "disagreement" not in a and "trust" not in off
    for k in range(3):  # probabilities and labels, every level: the same bytes
        assert a[f"s{k}"][:].tobytes() == b[f"s{k}"][:].tobytes()
        for name in ("boundaries", "grain_ids"):
            np.testing.assert_array_equal(a[f"labels/{name}/s{k}"][:], b[f"labels/{name}/s{k}"][:])
        d = b[f"disagreement/s{k}"]
        assert d.shape == b[f"s{k}"].shape[1:] and d.dtype == np.float32
        assert d.chunks == b[f"s{k}"].chunks[1:]
    d = b["disagreement/s0"][:]
    assert 0 < d.mean() and d.max() <= 0.5  # two members (random models: about 1e-4)
    assert on["trust"]["members"] == 2 and on["trust"]["uncertain_above"] == 2e-4
    datasets = b["disagreement"].attrs["ome"]["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["s0", "s1", "s2"]
    for z, plane in enumerate(on["planes"]):
        expected = plane_trust(d[z], uncertain_above=2e-4)
        assert plane["uncertain_fraction"] == pytest.approx(expected["uncertain_fraction"])
        assert plane["disagreement_mean"] == pytest.approx(expected["disagreement_mean"])
        assert 0 < plane["uncertain_fraction"] < 1


def test_one_job_and_merged_shards_give_the_same_trust_map(tmp_path, stack, checkpoints):
    options = dict(model="unet", block_px=64, **GEOMETRY)
    one = infer_stack(stack, checkpoints, tmp_path / "one.ome.zarr", trust=True, **options)
    shards = [tmp_path / "shards" / f"{k}.zarr" for k in range(3)]
    for k, path in enumerate(shards):
        infer_shard(stack, checkpoints, path, shard=k, shards=3, trust=True, **options)
    merged = merge_shards(stack, shards[::-1], tmp_path / "merged.ome.zarr")
    a, b = _group(tmp_path / "one.ome.zarr"), _group(tmp_path / "merged.ome.zarr")
    for k in range(3):
        np.testing.assert_array_equal(a[f"disagreement/s{k}"][:], b[f"disagreement/s{k}"][:])
        np.testing.assert_array_equal(a[f"s{k}"][:], b[f"s{k}"][:])
    # the whole plane in one block: the same map (blocks are computed from whole-plane tiles)
    whole = {**options, "block_px": 256}
    infer_stack(stack, checkpoints, tmp_path / "whole.ome.zarr", trust=True, **whole)
    np.testing.assert_allclose(
        _group(tmp_path / "whole.ome.zarr")["disagreement/s0"][:],
        a["disagreement/s0"][:],
        rtol=0,
        atol=1e-6,
    )
    assert merged["trust"] == one["trust"]
    for p, q in zip(merged["planes"], one["planes"]):
        assert p["uncertain_fraction"] == q["uncertain_fraction"]


def test_the_uncertain_fraction_of_a_padded_plane_leaves_the_padding_out(tmp_path):
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", _micrograph((150, 170), 1))
    tifffile.imwrite(tmp_path / "images" / "b.tif", _micrograph((90, 100), 2))
    settings = dict(task="grains", chunk=64, pyramid_min_px=64, block=128)
    import_stack(tmp_path / "images", tmp_path / "mixed.ome.zarr", stack="mixed", **settings)
    import_stack(
        tmp_path / "images" / "b.tif", tmp_path / "alone.ome.zarr", stack="alone", **settings
    )
    ckpts = [
        random_checkpoint(tmp_path / f"fold{f}.pt", tmp_path / "mixed.ome.zarr", seed=f, fold=f)
        for f in range(2)
    ]
    options = dict(model="unet", block_px=64, trust=True, uncertain_above=1e-4, **GEOMETRY)
    mixed = infer_stack(tmp_path / "mixed.ome.zarr", ckpts, tmp_path / "m.ome.zarr", **options)
    alone = infer_stack(tmp_path / "alone.ome.zarr", ckpts, tmp_path / "a.ome.zarr", **options)
    d = _group(tmp_path / "m.ome.zarr")["disagreement/s0"][1]
    assert not d[90:].any() and not d[:, 100:].any()  # the padding holds 0
    got, ref = mixed["planes"][1], alone["planes"][0]
    assert got["uncertain_fraction"] == pytest.approx(ref["uncertain_fraction"], abs=1e-9)
    assert got["disagreement_mean"] == pytest.approx(ref["disagreement_mean"], rel=1e-5)
    assert got["uncertain_fraction"] > 0


# ----------------------------------------------------------------------------- out of distribution


def _trained_checkpoints(folder, *, folds=3, steps=60):
    """Tiny U-Nets trained for a second each on their own synthetic micrographs."""
    from grainflow.checkpoint import make_checkpoint, save_checkpoint
    from grainflow.models.registry import build_model
    from grainflow.normalize import normalize_image
    from grainflow.synth.tessellation import boundary_mask, polycrystal

    kwargs = {"depth": 2, "base_channels": 4, "norm": "batch", "residual": False}
    paths = []
    for fold in range(folds):
        images, targets = [], []
        for seed in range(10 * fold, 10 * fold + 8):
            image = _micrograph((64, 64), seed)
            grains = polycrystal((64, 64), grain_diameter_px=18, rng=seed)
            images.append(normalize_image(image))
            targets.append(boundary_mask(grains, width_px=2).astype(np.int64))
        x = torch.from_numpy(np.stack(images)[:, None])
        y = torch.from_numpy(np.stack(targets))
        torch.manual_seed(fold)
        model = build_model("unet", **kwargs)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        batches = torch.Generator().manual_seed(fold)
        for _ in range(steps):
            i = torch.randint(0, len(x), (4,), generator=batches)
            loss = torch.nn.functional.cross_entropy(model(x[i]), y[i])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        ckpt = make_checkpoint(
            model=model.eval(),
            model_name="unet",
            model_kwargs=kwargs,
            epoch=1,
            step=steps,
            config={"norm_percentiles": (1.0, 99.0)},
            extra={"task": "grains", "fold": fold},
            with_rng=False,
        )
        paths.append(save_checkpoint(folder / f"fold{fold}.pt", ckpt))
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from grainflow.runtime import torch_threads

    with torch_threads(1):  # about 2 s; many threads on a shared CPU take far longer
        return _trained_checkpoints(tmp_path_factory.mktemp("trained"))


def test_a_plane_out_of_distribution_has_more_uncertain_pixels(tmp_path, trained):
    """In-distribution planes, then the same inverted (dark grains, bright boundaries), then noise."""
    normal = [_micrograph((96, 96), 100 + z) for z in range(3)]
    inverted = [np.iinfo(np.uint16).max - p for p in normal]
    noise = [
        np.random.default_rng(z).integers(0, 60000, (96, 96), dtype=np.uint16) for z in range(2)
    ]
    tifffile.imwrite(tmp_path / "mixed.tif", np.stack([*normal, *inverted, *noise]))
    import_stack(
        tmp_path / "mixed.tif",
        tmp_path / "mixed.ome.zarr",
        stack="mixed",
        task="grains",
        chunk=64,
        pyramid_min_px=64,
        block=128,
    )
    summary = infer_stack(
        tmp_path / "mixed.ome.zarr",
        trained,
        tmp_path / "out.ome.zarr",
        trust=True,
        uncertain_above=0.1,
        block_px=64,
        **GEOMETRY,
    )
    fractions = [p["uncertain_fraction"] for p in summary["planes"]]
    inside, outside = max(fractions[:3]), min(fractions[3:])
    assert inside < 0.1 and outside > 2 * inside, fractions
    reference = {"uncertain_fraction_p99": inside}
    flagged = [beyond_reference(f, reference, factor=2.0) for f in fractions]
    assert flagged == [False] * 3 + [True] * 5


def test_the_synthetic_reference_is_small_and_reproducible(trained):
    from grainflow.inference.reference import trust_reference

    settings = {
        "specimens": 3,
        "sessions_per_specimen": 2,
        "images_per_session": 2,
        "image_size_px": 64,
        "tessellation": ["voronoi"],
        "modalities": ["sem", "optical"],
        "grain_diameter_px": [14, 20],
        "dispersion": [0.2, 0.4],
        "elongation": [1.5, 2.0],
        "elongated_fraction": 0.0,
        "boundary_width_px": 2,
    }
    options = dict(seed=11, n_images=3, uncertain_above=0.1, device="cpu", tile_px=64)
    options.update(overlap_px=16, margin_px=4, batch_size=4)
    a = trust_reference("grains", settings, trained, **options)
    b = trust_reference("grains", settings, trained, **options)
    assert a == b
    assert len(a["uncertain_fraction"]) == 3 and a["members"] == 3
    assert 0 <= a["uncertain_fraction_p50"] <= a["uncertain_fraction_p95"]
    assert a["uncertain_fraction_p95"] <= a["uncertain_fraction_p99"] <= 1
    c = trust_reference("grains", settings, trained, **{**options, "seed": 12})
    assert c["uncertain_fraction"] != a["uncertain_fraction"]  # fresh images per seed
