"""Augmentation: determinism, provenance, and labels that stay on the image's edges."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.filters import sobel
from skimage.segmentation import find_boundaries

from grainflow.augment import (
    GEOMETRIC,
    TRANSFORMS,
    AugmentSettings,
    apply_transform,
    augment_file,
    augment_sample,
    augment_specimen,
    augmentation_figure,
    describe_transform,
    sample_transform,
)
from grainflow.io.hdf5 import Sample, SpecimenFile, read_specimen, write_specimen
from grainflow.synth.tessellation import boundary_mask, polycrystal

PHOTOMETRIC = [t for t in TRANSFORMS if t not in GEOMETRIC]
# strong enough that every transform visibly moves or changes pixels on a 64 x 64 image
STRONG = AugmentSettings(elastic_alpha_px=4.0, elastic_sigma_px=6.0, jitter_px=1.5)


def render(grain_ids: np.ndarray) -> np.ndarray:
    """Piecewise-constant image: each grain its own grey level (golden-ratio spread)."""
    return (0.15 + 0.7 * ((grain_ids * 0.6180339887) % 1.0)).astype(np.float32)


def grain_sample(seed: int = 0, shape=(64, 64), k: int = 0) -> Sample:
    ids = polycrystal(shape, grain_diameter_px=14, rng=seed)
    return Sample(
        image=render(ids),
        labels={"grain_ids": ids, "boundaries": boundary_mask(ids, width_px=2).astype(np.uint8)},
        image_id=f"grains/s00/b0/i{k:02d}",
        specimen="s00",
        session="b0",
        seed=seed,
        modality="sem",
        params={"grain_diameter_px": 14.0},
    )


def specimen(n: int = 2) -> SpecimenFile:
    return SpecimenFile(
        task="grains",
        specimen="s00",
        samples=[grain_sample(seed=i, k=i) for i in range(n)],
        specimen_params={"grain_diameter_px": 14.0},
        version="test",
    )


def one(name: str, sample: Sample, *, settings=STRONG, seed: int = 3, **override):
    params = sample_transform(name, sample.image.shape, settings=settings, rng=seed)
    params.update(override)
    return apply_transform(sample.image, sample.labels, {"ops": [{"name": name, "params": params}]})


def misalignment(image: np.ndarray, boundaries: np.ndarray) -> tuple[float, float]:
    """(fraction of strong edges off the boundary map, edge contrast on/off boundaries).

    Strong edges are pixels whose Sobel magnitude exceeds 0.02 (a step between two grains
    of the piecewise-constant image gives >= 0.03 there).
    """
    grad = sobel(image.astype(np.float64))
    near = ndi.binary_dilation(boundaries.astype(bool), structure=np.ones((3, 3), bool))
    far = ndi.distance_transform_edt(~boundaries.astype(bool)) > 2
    strong = grad > 0.02
    off = float((strong & ~near).sum() / max(strong.sum(), 1))
    ratio = float(grad[boundaries.astype(bool)].mean() / max(grad[far].mean(), 1e-9))
    return off, ratio


# --- determinism and provenance ----------------------------------------------------------


def test_same_seed_same_copies_other_seed_other_copies():
    a = augment_specimen(specimen(), copies=3, transforms=TRANSFORMS, rng=7)
    b = augment_specimen(specimen(), copies=3, transforms=TRANSFORMS, rng=7)
    c = augment_specimen(specimen(), copies=3, transforms=TRANSFORMS, rng=8)
    assert [s.image_id for s in a] == [s.image_id for s in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        for name in x.labels:
            np.testing.assert_array_equal(x.labels[name], y.labels[name])
        assert x.transform == y.transform and x.seed == y.seed
    assert any(x.transform != z.transform for x, z in zip(a, c))


def test_originals_kept_and_copies_named_and_recorded():
    out = augment_specimen(
        specimen(2), copies=3, transforms=["dihedral", "gamma"], rng=1, ops_per_copy=2
    )
    assert len(out) == 2 * (1 + 3)
    originals = [s for s in out if s.original_id == s.image_id]
    assert [s.image_id for s in originals] == ["grains/s00/b0/i00", "grains/s00/b0/i01"]
    for s, src in zip(originals, specimen(2).samples):
        assert s.transform == {}
        np.testing.assert_array_equal(s.image, src.image)
    copies = [s for s in out if s.original_id != s.image_id]
    assert [s.image_id for s in copies[:3]] == [f"grains/s00/b0/i00/a{k:02d}" for k in range(3)]
    for s in copies:
        assert s.image_id.startswith(s.original_id + "/a")
        assert (s.specimen, s.session, s.modality) == ("s00", "b0", "sem")
        assert s.transform["name"] == "dihedral+gamma"  # applied in the fixed order
        assert [op["name"] for op in s.transform["ops"]] == ["dihedral", "gamma"]
        assert s.image.dtype == np.float32 and 0 <= s.image.min() <= s.image.max() <= 1


def test_recorded_transform_replays_the_copy_exactly():
    src = grain_sample(seed=4)
    for copy in augment_sample(
        src, copies=6, transforms=TRANSFORMS, rng=11, ops_per_copy=3, settings=STRONG
    ):
        image, labels = apply_transform(src.image, src.labels, copy.transform)
        np.testing.assert_array_equal(image, copy.image)
        for name in labels:
            np.testing.assert_array_equal(labels[name], copy.labels[name])
        assert describe_transform(copy.transform).count(",") == 2


def test_augment_file_round_trip(tmp_path):
    src, dst = tmp_path / "s00.h5", tmp_path / "aug" / "s00.h5"
    samples = specimen(2).samples
    write_specimen(src, samples, task="grains", specimen="s00", specimen_params={"d": 14.0})
    n = augment_file(
        src,
        dst,
        copies=2,
        transforms=TRANSFORMS,
        seed=5,
        settings={"jitter_px": 1.0, "not_a_setting": 1},
    )
    back = read_specimen(dst)
    assert n == len(back.samples) == 6
    assert (back.task, back.specimen, back.specimen_params) == ("grains", "s00", {"d": 14.0})
    assert back.samples[0].original_id == back.samples[0].image_id
    assert back.samples[1].original_id == samples[0].image_id
    with pytest.raises(ValueError, match="already holds augmented copies"):
        augment_file(dst, tmp_path / "again.h5", copies=1, transforms=["gamma"], seed=1)


# --- labels stay aligned -----------------------------------------------------------------


def test_alignment_check_detects_a_misplaced_boundary_map():
    s = grain_sample(seed=2)
    off, ratio = misalignment(s.image, s.labels["boundaries"])
    assert off == 0.0 and ratio > 100
    off, ratio = misalignment(s.image, np.roll(s.labels["boundaries"], 2, axis=1))
    assert off > 0.1 and ratio < 50  # a boundary map 2 px off fails both thresholds below


GEOMETRIC_CASES = [
    ("dihedral", {}),
    ("rotate", {"fill": "reflect"}),
    ("rotate", {"fill": "constant"}),
    ("rotate", {"fill": "nearest"}),
    ("zoom", {}),
    ("elastic", {}),
    ("scan_jitter", {}),
]


@pytest.mark.parametrize(("name", "override"), GEOMETRIC_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boundaries_stay_on_the_image_edges_after_geometric_transforms(name, override, seed):
    s = grain_sample(seed=seed)
    image, labels = one(name, s, seed=seed + 10, **override)
    assert not np.array_equal(image, s.image)  # something moved
    off, ratio = misalignment(image, labels["boundaries"])
    assert off < 0.01, f"{off:.1%} of the image's edges lie off the boundary map"
    assert ratio > 100
    # the boundary map has the width the synthesis gave it, around the new grains
    np.testing.assert_array_equal(
        labels["boundaries"], boundary_mask(labels["grain_ids"], width_px=2)
    )


@pytest.mark.parametrize(("name", "override"), GEOMETRIC_CASES)
def test_each_grain_id_covers_one_uniform_region_after_geometric_transforms(name, override):
    s = grain_sample(seed=5)
    image, labels = one(name, s, seed=21, **override)
    ids = labels["grain_ids"]
    present = np.unique(ids[ids > 0])
    # every id is one 4-connected piece (mirrored copies of a grain get their own id)
    assert sum(ndi.label(ids == i)[1] for i in present) == len(present)
    # grain interiors (> 2 px from any edge of the new label map) have one grey level each
    interior = ndi.distance_transform_edt(~find_boundaries(ids, mode="thick")) > 2
    interior &= ids > 0
    counts = ndi.sum(interior, ids, present)
    present = present[counts > 0]  # slivers have no interior
    assert len(present) > 10
    with np.errstate(invalid="ignore"):  # scipy divides by the counts of absent labels too
        std = ndi.standard_deviation(image, ids * interior, present)
        means = ndi.mean(image, ids * interior, present)
    assert np.max(std) < 1e-3
    # and it is the grey level the original gave that grain
    assert np.all(np.min(np.abs(means[:, None] - np.unique(s.image)[None, :]), axis=1) < 1e-3)


def test_rotate_by_90_degrees_is_a_quarter_turn():
    s = grain_sample(seed=1)
    image, labels = one("rotate", s, angle_deg=90.0)
    np.testing.assert_allclose(image, np.rot90(s.image), atol=1e-6)
    np.testing.assert_array_equal(labels["boundaries"], np.rot90(s.labels["boundaries"]))
    quarter, _ = one("dihedral", s, quarter_turns=1, flip=False)
    np.testing.assert_array_equal(quarter, np.rot90(s.image))


def test_rotate_with_constant_fill_leaves_corners_unlabelled():
    s = grain_sample(seed=1)
    image, labels = one("rotate", s, angle_deg=45.0, fill="constant", fill_value=0.0)
    assert image[0, 0] == 0.0 and image[-1, -1] == 0.0
    assert labels["grain_ids"][0, 0] == 0 and labels["grain_ids"][32, 32] > 0


def test_dihedral_keeps_the_shape_of_non_square_images():
    s = grain_sample(seed=1, shape=(48, 64))
    turns = {
        sample_transform("dihedral", (48, 64), settings=STRONG, rng=i)["quarter_turns"]
        for i in range(40)
    }
    assert turns <= {0, 2} and len(turns) == 2
    for k in range(6):
        copy = augment_sample(s, copies=1, transforms=["dihedral", "rotate"], rng=k)[0]
        assert copy.image.shape == copy.labels["grain_ids"].shape == (48, 64)


@pytest.mark.parametrize("name", PHOTOMETRIC)
def test_photometric_transforms_never_touch_labels(name):
    s = grain_sample(seed=3)
    image, labels = one(name, s)
    assert not np.array_equal(image, s.image)
    for key in s.labels:
        np.testing.assert_array_equal(labels[key], s.labels[key])
    assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0


def test_phase_maps_move_with_their_particles():
    rr, cc = np.mgrid[0:64, 0:64]
    ids = np.zeros((64, 64), np.uint32)
    for i, (r, c) in enumerate([(15, 20), (40, 45), (50, 12)], start=1):
        ids[(rr - r) ** 2 + (cc - c) ** 2 < 49] = i
    image = np.where(ids > 0, 0.8, 0.3).astype(np.float32)
    s = Sample(
        image=image,
        labels={"phase": (ids > 0).astype(np.uint8), "particle_ids": ids},
        image_id="phases/s00/b0/i00",
        specimen="s00",
        session="b0",
        seed=0,
    )
    for name in ("rotate", "elastic", "dihedral", "scan_jitter"):
        out, labels = one(name, s, seed=4)
        np.testing.assert_array_equal(labels["phase"], (labels["particle_ids"] > 0))
        inside = ndi.binary_erosion(labels["phase"].astype(bool), iterations=2)
        outside = ndi.binary_erosion(~labels["phase"].astype(bool), iterations=2)
        np.testing.assert_allclose(out[inside], 0.8, atol=1e-4)
        np.testing.assert_allclose(out[outside], 0.3, atol=1e-4)


# --- photometric transforms: hand-worked numbers -----------------------------------------


def flat(value=0.5, shape=(64, 64)) -> Sample:
    return Sample(
        image=np.full(shape, value, np.float32),
        labels={},
        image_id="x",
        specimen="s00",
        session="b0",
        seed=0,
    )


def test_photometric_numbers():
    img, _ = one("gamma", flat(0.25), gamma=2.0)
    np.testing.assert_allclose(img, 0.0625, rtol=1e-6)
    ramp = Sample(
        image=np.tile(np.linspace(0.2, 0.6, 64, dtype=np.float32), (64, 1)),
        labels={},
        image_id="r",
        specimen="s00",
        session="b0",
        seed=0,
    )
    img, _ = one("contrast", ramp, factor=2.0)  # about the mean 0.4: 0.2 -> 0.0, 0.6 -> 0.8
    np.testing.assert_allclose(img[0, [0, -1]], [0.0, 0.8], atol=1e-6)
    img, _ = one("brightness_drift", flat(0.5), amplitude=0.1, angle_deg=0.0)
    np.testing.assert_allclose(img[:, 0], 0.45, atol=1e-6)  # a left-to-right ramp of 0.1
    np.testing.assert_allclose(img[:, -1], 0.55, atol=1e-6)
    img, _ = one("brightness_drift", flat(0.5), amplitude=0.1, angle_deg=90.0)
    np.testing.assert_allclose(img[-1, :], 0.45, atol=1e-6)  # 90°: brighter towards the top
    img, _ = one("blur", flat(0.5), sigma_px=2.0)
    np.testing.assert_allclose(img, 0.5, atol=1e-6)


def test_noise_has_the_requested_statistics():
    big = flat(0.5, shape=(256, 256))
    img, _ = one("poisson_noise", big, counts=100.0)  # var = 0.5 / 100
    assert abs(img.mean() - 0.5) < 0.003 and abs(img.std() - np.sqrt(0.005)) < 0.004
    assert np.allclose(img * 100, np.round(img * 100), atol=1e-3)  # whole counts
    img, _ = one("gaussian_noise", big, sigma=0.05)
    assert abs(img.mean() - 0.5) < 0.002 and abs(img.std() - 0.05) < 0.002


# --- bad input ---------------------------------------------------------------------------


def test_bad_input_is_a_clear_error():
    s = grain_sample()
    with pytest.raises(ValueError, match="unknown transforms"):
        augment_sample(s, copies=1, transforms=["flip"], rng=0)
    with pytest.raises(ValueError, match="copies must be >= 0"):
        augment_sample(s, copies=-1, transforms=["gamma"], rng=0)
    with pytest.raises(ValueError, match="need at least one transform"):
        augment_sample(s, copies=2, transforms=[], rng=0)
    with pytest.raises(ValueError, match="fill must be one of"):
        AugmentSettings(fill="wrap")
    with pytest.raises(ValueError, match="gamma_max"):
        AugmentSettings(gamma_max=0.5)
    with pytest.raises(ValueError, match="label 'boundaries' has shape"):
        apply_transform(s.image, {"boundaries": s.labels["boundaries"][:10]}, {})
    assert augment_sample(s, copies=0, transforms=[], rng=0) == []


def test_augmentation_figure_shows_the_original_and_its_copies():
    samples = augment_specimen(specimen(2), copies=5, transforms=TRANSFORMS, rng=2)
    fig = augmentation_figure(samples, original_id="grains/s00/b0/i01", columns=3)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titled) == 6 and titled[0] == "original"
    assert "5 augmented copies" in fig.get_suptitle()
    with pytest.raises(ValueError, match="no image"):
        augmentation_figure(samples, original_id="nope")


def test_zoom_magnifies_a_window_and_its_labels():
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 20) ** 2 + (xx - 24) ** 2 <= 6**2).astype(np.uint32)
    image = np.where(disc > 0, 0.8, 0.2).astype(np.float32)
    labels = {"phase": disc.astype(np.uint8), "particle_ids": disc}
    zoom = {"name": "zoom", "params": {"factor": 2.0, "origin_px": [8.0, 12.0]}}
    out, new = apply_transform(image, labels, {"ops": [zoom]})
    # the window rows 8-40, cols 12-44 fills the image: the disc's centre (20, 24) moves to
    # (2 x (20 - 8), 2 x (24 - 12)) = (24, 24) and its area grows 4 times
    assert new["phase"].sum() == pytest.approx(4 * disc.sum(), rel=0.05)
    r, c = np.argwhere(new["phase"] > 0).mean(axis=0)
    assert (r, c) == pytest.approx((24.0, 24.0), abs=0.6)
    np.testing.assert_array_equal(new["particle_ids"] > 0, new["phase"] > 0)
    assert new["particle_ids"].max() == 1 and out.dtype == np.float32
    core = ndi.binary_erosion(new["phase"] > 0, iterations=2)
    np.testing.assert_allclose(out[core], 0.8, atol=1e-6)  # the interior keeps its tone
    # drawn factors stay in [1, zoom_max], windows inside the image
    for seed in range(20):
        p = sample_transform("zoom", (64, 48), settings=AugmentSettings(zoom_max=3.0), rng=seed)
        assert 1.0 <= p["factor"] <= 3.0
        assert all(0 <= o <= n - n / p["factor"] for o, n in zip(p["origin_px"], (64, 48)))
    with pytest.raises(ValueError, match="zoom_max"):
        AugmentSettings(zoom_max=0.5)
