"""Synthesis invariants: labels agree with boundaries, requested statistics are met, seeds reproduce."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import regionprops

from conftest import tiny_config
from grainflow.seeds import derive_seed
from grainflow.synth import imaging
from grainflow.synth.bicrystal import bicrystal
from grainflow.synth.phases import particles
from grainflow.synth.specimen import render, synthesize_specimen
from grainflow.synth.stats import grain_count_density
from grainflow.synth.tessellation import boundary_mask, polycrystal


def test_derive_seed_is_stable_and_distinct():
    # pinned: a change here would silently change every run's data
    assert derive_seed(1, "synthesize", "grains", "s00") == derive_seed(
        1, "synthesize", "grains", "s00"
    )
    seeds = {
        derive_seed(1, "synthesize", t, s) for t in ("grains", "phases") for s in ("s00", "s01")
    }
    assert len(seeds) == 4
    assert derive_seed(1, "a", "bc") != derive_seed(1, "ab", "c")
    with pytest.raises(TypeError):
        derive_seed("1", "a")


@pytest.mark.parametrize("dispersion", [0.0, 0.4])
@pytest.mark.parametrize("elongation", [1.0, 2.5])
def test_polycrystal_grains_are_connected_and_sequential(dispersion, elongation):
    labels = polycrystal(
        (96, 96),
        grain_diameter_px=14,
        dispersion=dispersion,
        elongation=elongation,
        angle_deg=30,
        rng=0,
    )
    assert labels.dtype == np.uint32
    ids = np.unique(labels)
    assert ids[0] == 1 and np.array_equal(ids, np.arange(1, ids[-1] + 1))
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        assert ndi.label(labels[sl] == i)[1] == 1


@pytest.mark.parametrize(
    ("diameter", "dispersion"), [(10.0, 0.0), (16.0, 0.0), (16.0, 0.5), (24.0, 0.3)]
)
def test_polycrystal_meets_requested_grain_size(diameter, dispersion):
    # planimetric count (edge grains half) over several fields: mean grain area = pi d^2 / 4
    density = np.mean(
        [
            grain_count_density(
                polycrystal((192, 192), grain_diameter_px=diameter, dispersion=dispersion, rng=seed)
            )
            for seed in range(4)
        ]
    )
    measured = np.sqrt(4 / (np.pi * density))
    assert measured == pytest.approx(diameter, rel=0.08)


def test_laguerre_dispersion_widens_size_distribution():
    def cv(dispersion):
        areas = []
        for seed in range(3):
            lab = polycrystal((192, 192), grain_diameter_px=16, dispersion=dispersion, rng=seed)
            edge = np.unique(np.r_[lab[0], lab[-1], lab[:, 0], lab[:, -1]])
            areas += [r.area for r in regionprops(lab) if r.label not in edge]
        return np.std(areas) / np.mean(areas)

    assert cv(0.6) > 1.5 * cv(0.0)


def test_elongated_grains_point_along_the_requested_angle():
    labels = polycrystal((192, 192), grain_diameter_px=18, elongation=3.0, angle_deg=0.0, rng=1)
    props = [r for r in regionprops(labels) if r.area > 50]
    ratio = np.median([r.axis_major_length / r.axis_minor_length for r in props])
    # skimage orientation: angle between the row axis and the major axis; 0 deg (along
    # columns) means |orientation| near pi/2
    orient = np.median([abs(r.orientation) for r in props])
    assert ratio > 2.0
    assert orient > np.deg2rad(70)


def test_boundary_mask_agrees_with_labels():
    labels = polycrystal((64, 64), grain_diameter_px=12, rng=3)
    for width in (1, 2, 3, 4):
        mask = boundary_mask(labels, width_px=width)
        # every pair of 4-neighbours in different grains has a boundary pixel
        for a, b, ma, mb in (
            (labels[1:], labels[:-1], mask[1:], mask[:-1]),
            (labels[:, 1:], labels[:, :-1], mask[:, 1:], mask[:, :-1]),
        ):
            differ = a != b
            assert np.all(ma[differ] | mb[differ])
        # every region left between boundaries lies inside one grain
        interior, n = ndi.label(~mask)
        for i in range(1, n + 1):
            assert len(np.unique(labels[interior == i])) == 1
    widths = [boundary_mask(labels, width_px=w).mean() for w in (1, 2, 3, 4)]
    assert widths == sorted(widths) and len(set(widths)) == 4
    # both sides marked: nearly twice one side (less where boundaries meet)
    assert 1.4 * widths[0] < widths[1] <= 2 * widths[0]


def test_boundary_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="width_px"):
        boundary_mask(np.ones((8, 8), int), width_px=0)
    with pytest.raises(ValueError, match="2-D"):
        boundary_mask(np.ones((2, 8, 8), int))
    with pytest.raises(ValueError, match="grain_diameter_px"):
        polycrystal((32, 32), grain_diameter_px=1)


@pytest.mark.parametrize("morphology", ["cuboid", "blob", "faceted"])
@pytest.mark.parametrize("fraction", [0.1, 0.35, 0.6])
def test_particles_meet_area_fraction_and_never_touch(morphology, fraction):
    ids = particles(
        (128, 128), area_fraction=fraction, particle_diameter_px=14, morphology=morphology, rng=5
    )
    assert (ids > 0).mean() == pytest.approx(fraction, abs=0.01)
    # no two particles touch: growing each by one pixel overlaps no other particle
    grown = ndi.grey_dilation(ids, size=(3, 3))
    touching = (ids > 0) & (grown != ids)
    assert not touching.any()
    assert np.array_equal(np.unique(ids), np.arange(ids.max() + 1))


def test_particle_size_follows_request():
    for d in (8.0, 16.0):
        ids = particles(
            (256, 256),
            area_fraction=0.3,
            particle_diameter_px=d,
            dispersion=0.0,
            morphology="cuboid",
            rng=2,
        )
        areas = np.bincount(ids.ravel())[1:]
        interior = [
            r.area
            for r in regionprops(ids)
            if min(r.bbox[:2]) > 0 and r.bbox[2] < 256 and r.bbox[3] < 256
        ]
        assert np.sqrt(4 * np.mean(interior) / np.pi) == pytest.approx(d, rel=0.15)
        assert len(areas) > 10


def test_bicrystal_corner_is_the_lecture_image():
    labels = bicrystal((64, 64), geometry="corner")
    assert labels[:32].max() == 1 and labels[:, :32].max() == 1
    assert np.all(labels[32:, 32:] == 2)
    b = boundary_mask(labels, width_px=2)
    assert b[40:, 31:33].all() and b[31:33, 40:].all()  # vertical and horizontal segments


def test_bicrystal_straight_boundary_angle():
    labels = bicrystal((64, 64), geometry="straight", angle_deg=90.0)
    assert np.all(labels[:, :31] == labels[0, 0]) and np.all(labels[:, 33:] != labels[0, 0])
    with pytest.raises(ValueError, match="geometry"):
        bicrystal((64, 64), geometry="wavy")


def test_scan_shifts_move_image_and_labels_together():
    labels = polycrystal((64, 64), grain_diameter_px=12, rng=4)
    shifts = imaging.row_shifts(64, drift_px=4, jitter_px=1.0, rng=0)
    assert shifts.min() < 0 < shifts.max()
    moved = imaging.shift_rows(labels, shifts)
    r, c = 20, 30
    assert moved[r, c] == labels[r, np.clip(c - shifts[r], 0, 63)]


@pytest.mark.parametrize("task", ["grains", "phases", "kernels"])
def test_specimen_is_deterministic_with_metadata(task):
    settings = tiny_config()["synthesize"][task]
    a, pa = synthesize_specimen(task, "s01", settings, seed=11)
    b, pb = synthesize_specimen(task, "s01", settings, seed=11)
    c, _ = synthesize_specimen(task, "s01", settings, seed=12)
    assert pa == pb
    n = settings["sessions_per_specimen"] * settings["images_per_session"]
    assert len(a) == n
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image)
        assert all(np.array_equal(x.labels[k], y.labels[k]) for k in x.labels)
    assert not np.array_equal(a[0].image, c[0].image)
    size = settings["image_size_px"]
    for s in a:
        assert s.image.shape == (size, size) and s.image.dtype == np.float32
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert s.specimen == "s01" and s.session in {"b0", "b1"}
        assert s.image_id.startswith(f"{task}/s01/{s.session}/")
        assert s.params and s.modality == s.params["modality"]
    assert len({s.image_id for s in a}) == n and len({s.seed for s in a}) == n
    # any image is regenerated alone from its recorded parameters and seed
    s = a[-1]
    image, labels = render(
        task,
        s.params,
        shape=s.image.shape,
        boundary_width_px=settings.get("boundary_width_px", 2),
        seed=s.seed,
    )
    assert np.array_equal(image, s.image)


def test_images_of_a_specimen_share_statistics_and_sessions_differ():
    settings = {**tiny_config()["synthesize"]["grains"], "image_size_px": 96}
    samples, spec = synthesize_specimen("grains", "s00", settings, seed=3)
    diam = {s.params["grain_diameter_px"] for s in samples}
    assert diam == {spec["grain_diameter_px"]}
    modalities = {s.session: s.modality for s in samples}
    assert set(modalities.values()) == {"sem", "optical"}  # sessions image differently
    # labels line up with the image: boundaries are darker than interiors in optical images
    optical = [s for s in samples if s.modality == "optical"]
    for s in optical:
        b = s.labels["boundaries"].astype(bool)
        assert s.image[b].mean() < s.image[~b].mean() - 0.05


def test_specimen_name_must_be_well_formed():
    with pytest.raises(ValueError, match="specimen names"):
        synthesize_specimen("grains", "specimen1", tiny_config()["synthesize"]["grains"], seed=1)
    with pytest.raises(ValueError, match="task"):
        synthesize_specimen("grain", "s00", tiny_config()["synthesize"]["grains"], seed=1)


@pytest.mark.parametrize(  # sem_precipitates, sem_superalloy; nanoparticles on a support
    "task, index", [("phases", 0), ("phases", 1), ("nanoparticles", 0)]
)
def test_particle_images_record_whether_their_particles_are_dark(task, index):
    settings = {**tiny_config()["synthesize"][task], "image_size_px": 96}
    settings["sessions_per_specimen"] = 8  # both polarities (bright field: one session in four)
    samples, _ = synthesize_specimen(task, f"s{index:02d}", settings, seed=6)
    seen = set()
    for s in samples:
        particle = s.labels["phase"].astype(bool)
        if particle.sum() < 20 or (~particle).sum() < 20:
            continue
        inside, outside = s.image[particle].mean(), s.image[~particle].mean()
        assert s.params["particles_dark"] == (inside < outside), (s.image_id, inside, outside)
        seen.add(s.params["particles_dark"])
    assert seen == {True, False}
