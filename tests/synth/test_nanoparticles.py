"""Nanoparticles on a support: labels that match the particles, both imaging modes."""

import numpy as np
import pytest

from grainflow.synth.nanoparticles import render_stem, supported_particles


@pytest.fixture(scope="module")
def specimen():
    return supported_particles(
        (160, 160), diameter_px=(4.0, 16.0), per_10k_px=20.0, support_coverage=0.6, rng=3
    )


def test_particles_are_numbered_one_to_n_and_have_thickness_where_labelled(specimen):
    support, ids, thickness = specimen
    present = np.unique(ids)
    np.testing.assert_array_equal(present, np.arange(len(present)))  # 0, 1, ..., n
    assert len(present) > 20
    assert np.all(thickness[ids > 0] >= 0) and np.all(thickness[ids == 0] == 0)
    assert 0.4 < np.mean(support > 0) < 0.8  # about the requested coverage
    # particles sit on the support (or beside another particle that does)
    assert np.mean(support[ids > 0] > 0) > 0.8


def test_clusters_make_particles_touch(specimen):
    from skimage.measure import label

    _, ids, _ = specimen
    components = label(ids > 0, connectivity=1).max()
    assert components < ids.max()  # some particles touch or overlap another


@pytest.mark.parametrize("bright_field", [False, True])
def test_haadf_particles_bright_bright_field_particles_dark(specimen, bright_field):
    support, ids, thickness = specimen
    image = render_stem(support, thickness, rng=0, bright_field=bright_field, blur_px=0.0, dose=1e6)
    assert image.dtype == np.float32 and image.min() >= 0 and image.max() <= 1
    big = thickness > 4  # particle centres, away from their blurred edges
    on_support = (support > 0.3) & (ids == 0)
    vacuum = support == 0
    particle, matrix, empty = image[big].mean(), image[on_support].mean(), image[vacuum].mean()
    if bright_field:
        assert particle < matrix < empty
    else:
        assert particle > matrix > empty


def test_same_seed_same_specimen_and_bad_sizes_refused():
    a = supported_particles((64, 64), diameter_px=(3.0, 8.0), per_10k_px=30.0, rng=1)
    b = supported_particles((64, 64), diameter_px=(3.0, 8.0), per_10k_px=30.0, rng=1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="diameter_px"):
        supported_particles((64, 64), diameter_px=(8.0, 3.0), per_10k_px=1.0, rng=1)


def test_the_stem_particles_modality_records_its_parameters():
    from grainflow.synth.specimen import synthesize_specimen

    settings = {
        "specimens": 1,
        "sessions_per_specimen": 4,
        "images_per_session": 1,
        "image_size_px": 96,
        "modalities": ["stem_particles"],
        "area_fraction": [0.1, 0.5],
        "particle_diameter_px": [14, 56],
        "nanoparticle_diameter_px": [3, 30],
    }
    samples, spec = synthesize_specimen("phases", "s00", settings, seed=2)
    lo, hi = spec["diameter_px"]
    assert 3 <= lo <= hi <= 30
    modes = set()
    for sample in samples:
        assert sample.params["modality"] == "stem_particles"
        assert np.array_equal(sample.labels["particle_ids"] > 0, sample.labels["phase"] > 0)
        modes.add(sample.params["bright_field"])
    assert modes <= {False, True}


def test_specimen_statistics_read_a_nanoparticle_specimen(tmp_path):
    from grainflow.io.hdf5 import write_specimen
    from grainflow.synth.specimen import synthesize_specimen
    from grainflow.synth.stats import specimen_statistics

    settings = {
        "specimens": 1,
        "sessions_per_specimen": 1,
        "images_per_session": 2,
        "image_size_px": 64,
        "modalities": ["stem_particles"],
        "area_fraction": [0.1, 0.5],
        "particle_diameter_px": [14, 56],
    }
    samples, spec = synthesize_specimen("phases", "s00", settings, seed=2)
    write_specimen(
        tmp_path / "s00.h5", samples, task="phases", specimen="s00", specimen_params=spec
    )
    row = specimen_statistics([tmp_path / "s00.h5"]).iloc[0]
    assert row["morphology"] == "supported" and np.isnan(row["requested_area_fraction"])
    lo, hi = spec["diameter_px"]
    assert lo <= row["requested_diameter_px"] <= hi
