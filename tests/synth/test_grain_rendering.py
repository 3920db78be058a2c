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
