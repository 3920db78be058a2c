"""Physical scale: feature lengths, the pyramid level chosen, and inference at that level."""

import math

import numpy as np
import pytest
import zarr
from scipy import ndimage

from grainflow.inference.scale import feature_length_px, median_feature_length_px, scale_level
from grainflow.inference.stack import infer_stack, open_inference, upsample_probabilities
from grainflow.synth.imaging import render_sem_phases
from grainflow.synth.phases import particles


def _phase(diameter, seed=0, size=256):
    ids = particles((size, size), area_fraction=0.35, particle_diameter_px=diameter, rng=seed)
    return (ids > 0).astype(float)


def test_feature_length_follows_the_feature_size():
    small = median_feature_length_px([_phase(12, s) for s in range(3)])
    large = median_feature_length_px([_phase(36, s) for s in range(3)])
    assert large / small == pytest.approx(3.0, rel=0.2)


def test_feature_length_of_an_image_is_that_of_its_labels():
    phase = _phase(24, seed=4)
    image = render_sem_phases(phase > 0, rng=1, dose=30.0, read_noise=0.03)  # noisy
    assert feature_length_px(image) == pytest.approx(feature_length_px(phase), rel=0.1)


def test_feature_length_of_a_constant_image_is_nan():
    for value, shape in ((3.0, (32, 32)), (0.3, (33, 41)), (1 / 3, (50, 37))):
        assert math.isnan(feature_length_px(np.full(shape, value)))
    with pytest.raises(ValueError, match="2-D"):
        feature_length_px(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="no image with a measurable"):
        median_feature_length_px([np.zeros((8, 8))])


@pytest.mark.parametrize(
    ("real", "trained", "levels", "expected"),
    [
        (40.0, 10.0, 4, 2),
        (10.0, 40.0, 4, 0),
        (1000.0, 10.0, 3, 2),
        (27.0, 15.0, 4, 1),
        (20, 15, 4, 0),
    ],
)
def test_scale_level_is_the_nearest_power_of_two_within_the_pyramid(
    real, trained, levels, expected
):
    assert scale_level(real, trained, levels=levels) == expected


def test_scale_level_refuses_nonsense():
    with pytest.raises(ValueError, match="positive"):
        scale_level(0.0, 10.0, levels=3)
    with pytest.raises(ValueError, match="levels"):
        scale_level(10.0, 10.0, levels=0)


def test_upsampling_keeps_constants_and_linear_ramps():
    rows, cols = 64, 48
    ramp = np.add.outer(np.arange(rows) * 0.01, np.arange(cols) * 0.02).astype(np.float32)
    coarse = ramp.reshape(rows // 2, 2, cols // 2, 2).mean(axis=(1, 3))  # a 2 x 2 mean level
    fine = np.zeros((2, 1, rows, cols), np.float32)
    upsample_probabilities(
        np.stack([coarse, np.full_like(coarse, 0.25)])[:, None], fine, factor=2, block=16
    )
    assert np.allclose(fine[1], 0.25)
    inner = (slice(1, -1), slice(1, -1))  # beyond the outermost coarse centres the edge repeats
    assert np.allclose(fine[0, 0][inner], ramp[inner], atol=1e-6)


def test_infer_at_a_coarser_level_writes_the_full_grid(tmp_path):
    from test_inference import _stack

    stack = _stack(tmp_path / "stacks" / "poly.ome.zarr", (150, 170))
    levels = len([k for k in zarr.open_group(str(stack), mode="r") if k.startswith("s")])
    assert levels >= 2
    ckpt = _checkpoint(tmp_path)
    options = dict(tile_px=64, overlap_px=16, margin_px=4, batch_size=4, device="cpu")
    out = tmp_path / "level1.ome.zarr"
    summary = infer_stack(
        stack, [ckpt], out, level=1, scale={"why": "test"}, progress=False, **options
    )
    attrs, image, labels = open_inference(out)
    assert image.shape == (2, 2, 150, 170)
    assert summary["scale"] == {"level": 1, "factor": 2, "why": "test"}
    assert attrs["scale"]["level"] == 1
    assert "scratch_probabilities" not in zarr.open_group(str(out), mode="r")
    p = image[:]
    assert np.allclose(p.sum(axis=0), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="pyramid level"):
        infer_stack(stack, [ckpt], tmp_path / "x.ome.zarr", level=levels, progress=False, **options)


def test_specks_are_dropped_at_the_size_of_the_level_read(tmp_path):
    """labels_min_particle_px counts pixels of the level read: 4x as many at full resolution."""
    from test_inference import _stack, random_checkpoint

    stack = _stack(tmp_path / "stacks" / "blobs.ome.zarr", (150, 170), task="phases")
    ckpt = random_checkpoint(tmp_path / "fold0.pt", stack, seed=0, task="phases")
    options = dict(tile_px=64, overlap_px=16, margin_px=4, batch_size=4, device="cpu")
    masks = {}
    for min_px in (0, 4):
        out = tmp_path / f"min{min_px}.ome.zarr"
        summary = infer_stack(
            stack, [ckpt], out, level=1, labels_min_particle_px=min_px, progress=False, **options
        )
        assert summary["labels"]["min_particle_px"] == 4 * min_px
        _, _, labels = open_inference(out)
        masks[min_px] = labels["phase"][:] > 0
        ids = labels["particle_ids"][:]
        np.testing.assert_array_equal(masks[min_px], ids > 0)
    for z in range(2):
        regions, n = ndimage.label(masks[0][z])
        sizes = np.bincount(regions.ravel())
        assert (sizes[1:] < 16).any() and (sizes[1:] >= 16).any()  # specks and particles
        np.testing.assert_array_equal(masks[4][z], (sizes >= 16)[regions] & masks[0][z])
    with pytest.raises(ValueError, match="labels_min_particle_px"):
        infer_stack(stack, [ckpt], tmp_path / "x.ome.zarr", labels_min_particle_px=-1, **options)


def _checkpoint(tmp_path):
    import torch

    from grainflow.checkpoint import make_checkpoint, save_checkpoint
    from grainflow.models.registry import build_model

    kwargs = {"depth": 2, "base_channels": 4}
    torch.manual_seed(0)
    model = build_model("unet", **kwargs)
    path = tmp_path / "best.pt"
    save_checkpoint(
        path,
        make_checkpoint(
            model=model,
            model_name="unet",
            model_kwargs=kwargs,
            epoch=1,
            step=1,
            extra={"task": "grains", "fold": 0},
        ),
    )
    return path


def test_choose_level_measures_and_honours_a_level_set_by_the_user(tmp_path):
    from test_inference import _stack

    from grainflow.inference.scale import choose_level
    from grainflow.io.hdf5 import Sample, write_specimen

    stack = _stack(tmp_path / "stacks" / "poly.ome.zarr", (150, 170))
    image = _phase(12, size=64).astype(np.float32)
    labels = {"phase": image.astype(np.uint8), "particle_ids": image.astype(np.uint32)}
    sample = Sample(
        image=image,
        labels=labels,
        image_id="phases/s00/b0/i00",
        specimen="s00",
        session="b0",
        seed=1,
    )
    write_specimen(tmp_path / "s00.h5", [sample], task="phases", specimen="s00")
    estimated = choose_level(stack, [tmp_path / "s00.h5"])
    assert estimated["method"].startswith("first zero") and estimated["feature_length_px"] > 0
    chosen = choose_level(stack, [tmp_path / "s00.h5"], level=1)
    assert (chosen["level"], chosen["factor"]) == (1, 2)
    assert chosen["method"] == "set in the config (inference.scale_levels)"
    assert chosen["feature_length_px"] == estimated["feature_length_px"]  # still measured
    with pytest.raises(ValueError, match="inference.scale_levels sets level 9"):
        choose_level(stack, [tmp_path / "s00.h5"], level=9)
