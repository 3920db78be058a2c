"""The classical baseline: it segments clean images, and its parameters come from training data."""

import numpy as np
import pytest

from grainflow.evaluation import baseline as b
from grainflow.evaluation.metrics import boundary_counts, instance_scores, pixel_counts
from grainflow.synth.imaging import render_sem_grains, render_sem_phases
from grainflow.synth.phases import particles
from grainflow.synth.tessellation import boundary_mask, polycrystal


@pytest.fixture(scope="module")
def grains():
    lab = polycrystal((96, 96), grain_diameter_px=20, rng=1)
    image = render_sem_grains(
        lab, rng=2, groove_depth=0.3, dose=400, read_noise=0.005, charging=0.0
    )
    return image, {"grain_ids": lab, "boundaries": boundary_mask(lab).astype(np.uint8)}


@pytest.fixture(scope="module")
def precipitates():
    ids = particles((96, 96), area_fraction=0.25, particle_diameter_px=12, rng=3)
    image = render_sem_phases(ids > 0, rng=4, matrix_tone=0.3, precipitate_tone=0.7, dose=300)
    return image, {"phase": (ids > 0).astype(np.uint8), "particle_ids": ids}


def test_grains_on_a_clean_image(grains):
    image, true = grains
    params = {"sigma_px": 1.0, "threshold_offset": -0.5, "marker_distance_px": 2.0}
    pred = b.apply_baseline("grains", image, params)
    assert set(pred) == {"grain_ids", "boundaries"}
    assert pred["grain_ids"].dtype == np.uint32 and pred["boundaries"].dtype == np.uint8
    ids = np.unique(pred["grain_ids"])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # every pixel in a grain
    np.testing.assert_array_equal(pred["boundaries"], boundary_mask(pred["grain_ids"]))
    assert boundary_counts(true["boundaries"], pred["boundaries"]).f1 > 0.9
    assert instance_scores(true["grain_ids"], pred["grain_ids"]).ari > 0.7


def test_marker_distance_bridges_gaps_in_boundaries():
    # four square grains whose boundary lines have 2-px gaps: the regions between the
    # lines are one, the cores farther than 2 px from the lines are four
    strength = np.zeros((40, 40))
    strength[20, :] = strength[:, 20] = 1.0
    strength[20, 4:6] = strength[4:6, 20] = strength[34:36, 20] = strength[20, 34:36] = 0.0
    p = {"min_grain_px": 8}
    assert b.grains_from_strength(strength, {**p, "marker_distance_px": 0})["grain_ids"].max() == 1
    four = b.grains_from_strength(strength, {**p, "marker_distance_px": 2})["grain_ids"]
    assert four.max() == 4
    assert len(np.unique(four[:20, :20])) == 1 and four[0, 0] != four[-1, -1]


def test_two_flat_grains_give_one_boundary():
    image = np.full((48, 48), 0.3, np.float32)
    image[:, 24:] = 0.7
    pred = b.segment_grains(image, {"sigma_px": 1.0, "min_grain_px": 16})
    assert pred["grain_ids"].max() == 2
    assert np.all(pred["grain_ids"][:, :20] == pred["grain_ids"][0, 0])
    assert np.all(pred["grain_ids"][:, 28:] != pred["grain_ids"][0, 0])


def test_uniform_image_is_one_grain():
    pred = b.segment_grains(np.full((32, 32), 0.5, np.float32))
    assert pred["grain_ids"].max() == 1 and pred["boundaries"].sum() == 0


@pytest.mark.parametrize("invert", [False, True])
def test_phases_auto_polarity_finds_particles(precipitates, invert):
    image, true = precipitates
    if invert:  # dark particles on a bright matrix
        image = 1 - image
    pred = b.apply_baseline("phases", image, {"polarity": "auto", "opening_radius_px": 1})
    assert set(pred) == {"phase", "particle_ids"}
    np.testing.assert_array_equal(pred["phase"], pred["particle_ids"] > 0)
    assert pixel_counts(true["phase"], pred["phase"]).iou()[1] > 0.9


def test_fit_chooses_on_training_data(precipitates):
    image, true = precipitates
    grid = {"polarity": ["dark", "bright"], "sigma_px": [1.0]}
    scores = b.grid_scores("phases", [image], [true], grid=grid)
    assert len(scores) == 2 and scores["score"].is_monotonic_increasing  # bright wins
    assert b.fit_baseline("phases", [image], [true], grid=grid)["polarity"] == "bright"
    assert b.fit_baseline("phases", [1 - image], [true], grid=grid)["polarity"] == "dark"


def test_fit_grains_returns_full_params_and_breaks_ties_in_grid_order(grains):
    image, true = grains
    grid = {"min_grain_px": [16, 16]}  # identical candidates
    params = b.fit_baseline("grains", [image], [true], grid=grid)
    assert params == b.DEFAULTS["grains"]
    table = b.grid_scores("grains", [image], [true], grid=grid)
    assert table["score"].iloc[0] == table["score"].iloc[1]


def test_bad_input():
    img = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match="task"):
        b.apply_baseline("kernels", img)
    with pytest.raises(ValueError, match="unknown grains baseline parameters"):
        b.apply_baseline("grains", img, {"sigma": 1})
    with pytest.raises(ValueError, match="threshold must be one of"):
        b.apply_baseline("phases", img, {"threshold": "magic"})
    with pytest.raises(ValueError, match="2-D"):
        b.apply_baseline("grains", np.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match="as many label dicts"):
        b.grid_scores("grains", [img], [], grid={})
    with pytest.raises(ValueError, match="lacks 'phase'"):
        b.grid_scores("phases", [img], [{"grain_ids": img}], grid={})
