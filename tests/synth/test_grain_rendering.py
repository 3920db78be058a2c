"""Fast paths of the grain renderers against their direct definitions."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from grainflow.synth import imaging
from grainflow.synth.tessellation import polycrystal


@pytest.mark.parametrize("shape", [(64, 64), (37, 90)])
@pytest.mark.parametrize("sigma", [0.8, 3.0, 16.0, 60.0])  # 60: the kernel outgrows the period
def test_fft_gaussian_equals_the_direct_wrapped_filter(shape, sigma):
    noise = np.random.default_rng(0).standard_normal(shape)
    direct = ndi.gaussian_filter(noise, sigma, mode="wrap")
    np.testing.assert_allclose(imaging._gaussian_filter_wrap(noise, sigma), direct, atol=1e-12)


def test_triple_junctions_are_pixels_seeing_three_grains():
    labels = polycrystal((48, 56), grain_diameter_px=7, dispersion=0.6, rng=2)
    padded = np.pad(labels, 1, mode="edge")
    windows = np.stack([padded[i : i + 48, j : j + 56] for i in range(3) for j in range(3)])
    distinct = np.array([[len(np.unique(windows[:, r, c])) for c in range(56)] for r in range(48)])
    assert np.array_equal(imaging._triple_junctions(labels), distinct >= 3)


def test_spots_equal_spots_drawn_on_the_whole_image():
    shape = (40, 50)
    spots = imaging._spots(shape, count=6, radius_px=(0.8, 12.0), rng=np.random.default_rng(4))
    rng = np.random.default_rng(4)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    expected = np.zeros(shape)
    for _ in range(6):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r = rng.uniform(0.8, 12.0)
        expected = np.maximum(expected, np.clip(1.5 - np.hypot(y - cy, x - cx) / r, 0, 1))
    assert np.array_equal(spots, expected)


def test_each_boundary_has_one_strength_and_faint_ones_are_faint():
    from skimage.segmentation import find_boundaries

    from grainflow.synth.imaging import boundary_strength
    from grainflow.synth.tessellation import polycrystal

    labels = polycrystal((96, 96), grain_diameter_px=24, rng=2)
    edges = find_boundaries(labels, connectivity=1, mode="inner")
    all_faint = boundary_strength(labels, faint_fraction=1.0, rng=0)
    assert np.all((all_faint >= 0.1) & (all_faint <= 0.3))
    np.testing.assert_array_equal(boundary_strength(labels, faint_fraction=0.0, rng=0), 1.0)
    few_faint = boundary_strength(labels, faint_fraction=0.01, rng=0)
    assert np.mean((few_faint >= 0.4) & (few_faint <= 1.0)) > 0.9
    # one value per grain pair: the two sides of a boundary agree (but near triple
    # junctions, where a pixel's nearest other grain is ambiguous)
    strength = boundary_strength(labels, faint_fraction=0.5, rng=1)
    right = edges[:, :-1] & edges[:, 1:] & (labels[:, :-1] != labels[:, 1:])
    assert right.sum() > 100
    assert np.mean(strength[:, :-1][right] == strength[:, 1:][right]) > 0.8
    assert len(np.unique(strength[edges])) > 5


def test_distractors_change_the_image_not_the_grains():
    from grainflow.synth.specimen import render

    params = {
        "modality": "optical",
        "tessellation": "voronoi",
        "grain_diameter_px": 20.0,
        "dispersion": 0.0,
        "elongation": 1.0,
        "angle_deg": 0.0,
        "boundary_darkness": 0.6,
        "boundary_width_px": 1.0,
        "faint_fraction": 0.2,
        "faint_boundaries": 0.0,
        "shading": 0.0,
        "pit_probability": 0.0,
        "etch_pits": 0,
        "inclusions": 0,
        "dust": 0,
        "scratch_count": 0,
        "scratch_darkness": 0.3,
        "illumination_strength": 0.1,
        "blur_px": 0.8,
        "dose": 200.0,
        "read_noise": 0.01,
    }
    plain, labels = render("grains", params, shape=(96, 96), boundary_width_px=2, seed=3)
    busy = {**params, "etch_pits": 8, "scratch_count": 3, "shading": 0.1, "faint_boundaries": 0.3}
    image, same = render("grains", busy, shape=(96, 96), boundary_width_px=2, seed=3)
    for name in ("grain_ids", "boundaries"):
        np.testing.assert_array_equal(labels[name], same[name])
    assert np.abs(image - plain).mean() > 0.01
