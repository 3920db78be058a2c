"""The polycrystal renderer against brute force: seeds, power cells, grain ids."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from grainflow.synth.tessellation import _power_cells, _seeds, polycrystal

CASES = [  # (dispersion, elongation, angle_deg): Voronoi and Laguerre, equiaxed and stretched
    (0.0, 1.0, 0.0),
    (0.0, 3.0, 30.0),
    (0.8, 1.0, 0.0),
    (0.8, 2.5, 120.0),
]


def _brute_force_owner(shape, stretch, centres, weights):
    """Index of the seed with the smallest |x - c|**2 - w, every pixel against every seed."""
    r, c = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    x0 = stretch[0, 0] * r + stretch[0, 1] * c
    x1 = stretch[1, 0] * r + stretch[1, 1] * c
    power = (x0[..., None] - centres[:, 0]) ** 2 + (x1[..., None] - centres[:, 1]) ** 2 - weights
    return power.argmin(axis=-1)


def _seeds_of(shape, dispersion, elongation, angle_deg, seed):
    return _seeds(
        shape,
        grain_diameter_px=9,
        dispersion=dispersion,
        elongation=elongation,
        angle_deg=angle_deg,
        rng=np.random.default_rng(seed),
    )


@pytest.mark.parametrize(("dispersion", "elongation", "angle_deg"), CASES)
@pytest.mark.parametrize("shape", [(48, 48), (37, 53)])  # whole tiles and cut tiles
def test_power_cells_equal_brute_force(dispersion, elongation, angle_deg, shape):
    for seed in range(3):
        stretch, centres, weights = _seeds_of(shape, dispersion, elongation, angle_deg, seed)
        expected = _brute_force_owner(shape, stretch, centres, weights)
        for tile in (4, 8, 16):
            owner = _power_cells(shape, stretch, centres, weights, tile=tile)
            assert np.array_equal(owner, expected)


@pytest.mark.parametrize(("dispersion", "elongation", "angle_deg"), CASES)
def test_polycrystal_grains_are_the_connected_pieces_of_brute_force_cells(
    dispersion, elongation, angle_deg
):
    shape = (40, 56)
    stretch, centres, weights = _seeds_of(shape, dispersion, elongation, angle_deg, 7)
    cells = _brute_force_owner(shape, stretch, centres, weights)
    labels = polycrystal(
        shape,
        grain_diameter_px=9,
        dispersion=dispersion,
        elongation=elongation,
        angle_deg=angle_deg,
        rng=7,
    )
    # each grain lies in one cell, and each 4-connected piece of a cell is one grain
    pairs = np.unique(np.stack([cells.ravel(), labels.ravel()]), axis=1)
    assert pairs.shape[1] == labels.max() == len(np.unique(labels))
    pieces = sum(ndi.label(cells == i)[1] for i in np.unique(cells))
    assert pieces == labels.max()


@pytest.mark.parametrize("dispersion", [0.0, 1.5])
def test_seed_disks_do_not_overlap(dispersion):
    _, centres, weights = _seeds_of((64, 64), dispersion, 2.0, 45.0, 3)
    radii = np.sqrt(weights)
    assert np.all(np.diff(radii) <= 0)  # placed largest first
    gap = np.hypot(*(centres[:, None] - centres[None]).transpose(2, 0, 1))
    gap -= radii[:, None] + radii[None]
    np.fill_diagonal(gap, np.inf)
    assert gap.min() >= -1e-9


def test_polycrystal_reproduces_from_its_seed():
    kwargs = {"grain_diameter_px": 10, "dispersion": 0.5, "elongation": 2.0, "angle_deg": 10}
    a = polycrystal((64, 80), rng=5, **kwargs)
    assert np.array_equal(a, polycrystal((64, 80), rng=5, **kwargs))
    assert not np.array_equal(a, polycrystal((64, 80), rng=6, **kwargs))
