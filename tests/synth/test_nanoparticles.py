"""Nanoparticles on a support: labels that match the particles, both imaging modes."""

import numpy as np
import pytest

from grainflow.synth.nanoparticles import StemOptics, render_stem, supported_particles


def stem_settings(*, sessions: int, images: int, size: int, diameter_px=(3, 64)) -> dict:
    """``synthesize.nanoparticles`` settings of one specimen."""
    return {
        "specimens": 1,
        "sessions_per_specimen": sessions,
        "images_per_session": images,
        "image_size_px": size,
        "particle_diameter_px": list(diameter_px),
    }


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
    optics = StemOptics(bright_field=bright_field, blur_px=0.0, dose=1e6)
    image = render_stem(support, thickness, rng=0, optics=optics)
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

    settings = stem_settings(sessions=4, images=1, size=96, diameter_px=[3, 30])
    samples, spec = synthesize_specimen("nanoparticles", "s00", settings, seed=2)
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

    settings = stem_settings(sessions=1, images=2, size=64)
    samples, spec = synthesize_specimen("nanoparticles", "s00", settings, seed=2)
    write_specimen(
        tmp_path / "s00.h5", samples, task="nanoparticles", specimen="s00", specimen_params=spec
    )
    row = specimen_statistics([tmp_path / "s00.h5"]).iloc[0]
    assert row["morphology"] == "supported" and np.isnan(row["requested_area_fraction"])
    lo, hi = spec["diameter_px"]
    assert lo <= row["requested_diameter_px"] <= hi


def test_particle_snr_hand_worked_and_falls_with_the_dose():
    from grainflow.synth.nanoparticles import particle_snr

    ids = np.zeros((40, 40), np.uint32)
    ids[10:16, 10:16] = 1  # 36 px
    ids[25:27, 25:27] = 2  # 4 px
    support = np.ones(ids.shape)
    thickness = 4.0 * (ids > 0)
    settings = dict(support_signal=0.3, particle_signal=0.05, saturation=0.9, background=0.03)
    clean = dict(speckle=0.0, blur_px=0.0, read_noise=0.01)

    def tone(mass):
        return 0.03 + 0.9 * (1 - np.exp(-mass / 0.9))

    contrast, around = tone(0.3 + 0.05 * 4) - tone(0.3), tone(0.3)
    for dose in (20.0, 500.0):
        snr = particle_snr(
            ids, support, thickness, optics=StemOptics(**settings, **clean, dose=dose)
        )
        for k, n in ((1, 36), (2, 4)):
            expected = contrast / np.sqrt((around / dose + 0.01**2) / n)
            assert snr[k] == pytest.approx(expected, rel=1e-9)
    assert snr[0] == 0
    # speckle on the support hides a small particle more than a large one
    speckled = particle_snr(
        ids, support, thickness, optics=StemOptics(**settings, speckle=0.2, blur_px=0.0, dose=500.0)
    )
    assert speckled[2] / snr[2] < speckled[1] / snr[1] < 1


def test_visible_particles_drop_the_faint_and_renumber():
    from grainflow.synth.nanoparticles import visible_particles

    ids = np.array([[0, 1, 1], [2, 0, 3], [3, 3, 0]], np.uint32)
    kept = visible_particles(ids, np.array([0.0, 7.0, 2.0, 5.0]), 5.0)
    np.testing.assert_array_equal(kept, [[0, 1, 1], [0, 0, 2], [2, 2, 0]])


def test_labels_keep_only_visible_particles_and_the_image_is_unchanged():
    from grainflow.synth.specimen import synthesize_specimen

    settings = stem_settings(sessions=2, images=2, size=96, diameter_px=[3, 12])
    every, _ = synthesize_specimen("nanoparticles", "s00", settings, seed=5)
    seen, _ = synthesize_specimen(
        "nanoparticles", "s00", {**settings, "visibility_snr": 5.0}, seed=5
    )
    dropped = 0
    for a, b in zip(every, seen):
        np.testing.assert_array_equal(a.image, b.image)
        assert b.params["visibility_snr"] == 5.0 and a.params["visibility_snr"] == 0.0
        ids_a, ids_b = a.labels["particle_ids"], b.labels["particle_ids"]
        assert np.all(ids_a[ids_b > 0] > 0)  # a subset of the particles, each kept whole
        for k in np.unique(ids_b[ids_b > 0]):
            assert len(np.unique(ids_a[ids_b == k])) == 1
        np.testing.assert_array_equal(b.labels["phase"], ids_b > 0)
        dropped += int(ids_a.max()) - int(ids_b.max())
    assert dropped > 0  # small particles at a low dose: some are not seen


def test_support_texture_mottles_the_support_at_the_particle_scale():
    from scipy import ndimage as ndi

    def fine_variation(texture):
        support, ids, _ = supported_particles(
            (128, 128),
            diameter_px=(4.0, 10.0),
            per_10k_px=10.0,
            support_coverage=1.0,
            support_scale_px=200.0,
            support_texture=texture,
            support_texture_px=6.0,
            rng=4,
        )
        present = np.unique(ids)
        np.testing.assert_array_equal(present, np.arange(len(present)))
        detail = support - ndi.gaussian_filter(support, 12.0)
        return float(detail[16:-16, 16:-16].std()), float(support.mean())

    smooth, mean_smooth = fine_variation(0.0)
    mottled, mean_mottled = fine_variation(0.4)
    assert mottled > 3 * smooth
    assert mean_mottled == pytest.approx(mean_smooth, rel=0.15)  # the same support, mottled


def test_touching_particles_are_kept_apart_in_the_phase_label():
    from skimage.measure import label

    from grainflow.synth.nanoparticles import separated_phase

    ids = np.zeros((20, 30), np.uint32)
    yy, xx = np.mgrid[:20, :30]
    ids[(yy - 10) ** 2 + (xx - 9) ** 2 < 36] = 1
    ids[(yy - 10) ** 2 + (xx - 18) ** 2 < 36] = 2  # overlaps the first, drawn on top
    ids[2:4, 26:28] = 3  # alone: untouched
    union = separated_phase(ids, 0)
    np.testing.assert_array_equal(union, ids > 0)
    assert label(union, connectivity=1).max() == 2
    for gap in (1, 2):
        phase = separated_phase(ids, gap)
        assert phase.dtype == np.uint8 and np.all(phase <= (ids > 0))
        assert label(phase, connectivity=1).max() == 3  # the pair is two particles now
        np.testing.assert_array_equal(phase[ids == 3], 1)
        # the gap is where the two meet: every removed pixel has the other particle near
        removed = (ids > 0) & (phase == 0)
        assert set(np.unique(ids[removed])) == {1, 2}
        assert np.all(np.abs(np.argwhere(removed)[:, 1] - 12) <= 1 + 2 * gap)


def test_the_stem_particles_phase_label_follows_the_contact_gap():
    from skimage.measure import label

    from grainflow.synth.specimen import synthesize_specimen

    settings = stem_settings(sessions=1, images=3, size=96, diameter_px=[6, 20])
    joined, _ = synthesize_specimen("nanoparticles", "s00", settings, seed=3)
    apart, _ = synthesize_specimen(
        "nanoparticles", "s00", {**settings, "contact_gap_px": 1}, seed=3
    )
    for a, b in zip(joined, apart):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.labels["particle_ids"], b.labels["particle_ids"])
        assert b.params["contact_gap_px"] == 1
        assert np.all(b.labels["phase"] <= a.labels["phase"])
        assert (
            label(b.labels["phase"], connectivity=1).max()
            >= label(a.labels["phase"], connectivity=1).max()
        )


def test_the_particle_signal_follows_physical_thickness_not_pixels():
    from grainflow.synth.specimen import _physical_signal, synthesize_specimen

    assert _physical_signal(0.06, 12.0, 6.0) == pytest.approx(0.03)  # twice the pixels: half
    assert _physical_signal(0.06, 4.0, 6.0) == 0.06  # finer than the reference: as drawn
    assert _physical_signal(0.06, 12.0, 0.0) == 0.06  # off
    # the smallest particles are 24 px wide
    settings = stem_settings(sessions=2, images=1, size=192, diameter_px=[24, 64])
    drawn, spec = synthesize_specimen("nanoparticles", "s00", settings, seed=5)
    physical, _ = synthesize_specimen(
        "nanoparticles", "s00", {**settings, "signal_reference_px": 6}, seed=5
    )
    for a, b in zip(drawn, physical):
        scale = 6 / spec["diameter_px"][0]
        assert b.params["particle_signal"] == pytest.approx(a.params["particle_signal"] * scale)
        assert not np.array_equal(a.image, b.image)
        # the same particles, fainter: the label keeps those an observer still sees
        ids_a, ids_b = a.labels["particle_ids"], b.labels["particle_ids"]
        assert np.all((ids_b > 0) <= (ids_a > 0))
        assert ids_b.max() > 3
        inside = ids_a > 0
        contrast = [x.image[inside].mean() - x.image[~inside].mean() for x in (a, b)]
        assert abs(contrast[1]) < abs(contrast[0])
