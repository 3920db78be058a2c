"""Diffraction simulator: d-spacings and absences against hand-worked cases, symmetry, seeds."""

import math

import numpy as np
import pytest

from grainflow.diffraction.crystal import (
    PSEUDO_RATIOS,
    SYSTEMS,
    Crystal,
    _pseudo_symmetric,
    electron_wavelength_A,
    point_group,
    random_crystal,
    reflections,
    scattering_factor,
    zone_axes,
    zone_family,
)
from grainflow.diffraction.simulate import (
    detector_counts,
    pattern_size,
    ring_intensity,
    spot_intensity,
    synthesize_diffraction_specimen,
)
from grainflow.io.hdf5 import read_specimen, write_specimen
from grainflow.synth.specimen import TASKS, synthesize_specimen

CU = 29


def one_atom(system, centring, a, c=None):
    return Crystal(system, centring, a, a, c or a, basis=((CU, 0.0, 0.0, 0.0),), b_factor_A2=0.5)


def present(crystal, g_max=2.0):
    hkl, _, _ = reflections(crystal, g_max)
    return {tuple(int(v) for v in x) for x in hkl}


@pytest.mark.parametrize(
    ("centring", "shown", "absent"),
    [
        (
            "F",
            [(1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1), (2, 2, 2)],
            [(1, 0, 0), (1, 1, 0), (2, 1, 0), (2, 1, 1)],
        ),
        ("I", [(1, 1, 0), (2, 0, 0), (2, 1, 1), (2, 2, 0)], [(1, 0, 0), (1, 1, 1), (2, 1, 0)]),
        ("P", [(1, 0, 0), (1, 1, 0), (1, 1, 1), (2, 0, 0)], []),
    ],
)
def test_cubic_absences_follow_the_centring(centring, shown, absent):
    found = present(one_atom("cubic", centring, 3.6))
    for h in shown:
        assert h in found and h[::-1] in found and tuple(-v for v in h) in found
    for h in absent:
        assert h not in found


def test_fcc_d_spacings_and_first_rings():
    a = 3.615  # copper
    cu = one_atom("cubic", "F", a)
    # d = a / sqrt(h² + k² + l²): 2.087, 1.808, 1.278 Å
    assert cu.d_spacing([(1, 1, 1), (2, 0, 0), (2, 2, 0)]) == pytest.approx(
        [a / math.sqrt(3), a / 2, a / math.sqrt(8)]
    )
    ring_params = {
        "camera_length_mm": 500.0,
        "voltage_kv": 200.0,
        "detector_pixel_mm": 0.48,
        "ring_sigma_px": 0.8,
        "crystallite_nm": 20.0,
        "texture": 0.0,
    }
    _, info = ring_intensity(cu, ring_params, size=64)
    rings = info["rings"]
    d = np.sort(rings[:, 1])[::-1]
    assert d[:3] == pytest.approx([a / math.sqrt(3), a / 2, a / math.sqrt(8)], rel=1e-5)
    # radii in pixels: L λ / (p d)
    scale = 500.0 * electron_wavelength_A(200.0) / 0.48
    assert np.sort(rings[:, 0])[:3] == pytest.approx(scale / d[:3])
    # camera length fitted to the first ring: 111 at 7 px, 200 at 7 * 2 / sqrt(3) px
    _, info = ring_intensity(cu, {**ring_params, "first_order_px": 7.0}, size=64)
    assert np.sort(info["rings"][:, 0])[:2] == pytest.approx([7.0, 14 / math.sqrt(3)])
    assert info["camera_length_mm"] == pytest.approx(
        7.0 * a / math.sqrt(3) * 0.48 / electron_wavelength_A(200.0)
    )


def test_hexagonal_d_spacing_formula():
    a, c = 3.21, 5.21  # magnesium
    mg = one_atom("hexagonal", "P", a, c)
    hkl = np.array([(1, 0, 0), (0, 0, 2), (1, 0, 1), (1, 1, 0), (1, 0, 3), (2, -1, 2)])
    h, k, l = hkl.T  # noqa: E741 (Miller indices)
    expected = 1 / np.sqrt(4 / 3 * (h**2 + h * k + k**2) / a**2 + l**2 / c**2)
    assert mg.d_spacing(hkl) == pytest.approx(expected)
    assert mg.d_spacing([(1, 0, 0)])[0] == pytest.approx(a * math.sqrt(3) / 2)


def test_c_centring_removes_h_plus_k_odd():
    xtal = Crystal("orthorhombic", "C", 3.1, 4.7, 5.9, basis=((CU, 0, 0, 0),))
    found = present(xtal, 1.5)
    assert all((h + k) % 2 == 0 for h, k, _ in found)
    assert (0, 0, 1) in found and (1, 1, 0) in found and (1, 0, 0) not in found


def test_point_groups_preserve_the_metric():
    for system, order in zip(SYSTEMS, (48, 24, 8)):
        ops = point_group(system)
        assert len(ops) == order
        direct = random_crystal(system, rng=1).direct()
        g = direct @ direct.T  # metric tensor
        for m in ops:
            assert m.T @ g @ m == pytest.approx(g)


def test_random_crystals_respect_margins_and_distances():
    rng = np.random.default_rng(0)
    assert PSEUDO_RATIOS == pytest.approx((1.0, math.sqrt(3), 2.0))
    for _ in range(20):
        xtal = random_crystal("orthorhombic", rng=rng, settings={"orthorhombic_margin": 0.15})
        a, b, c = sorted((xtal.a, xtal.b, xtal.c))
        for r in (b / a, c / b, c / a):
            # no pseudo-square net (1; 2 for a C-centred zone's halved side), no orthohexagonal cell
            assert all(abs(r / t - 1) >= 0.15 for t in (1, math.sqrt(3), 2))
    # a C-centred cell with b = 2c has a square [100] net (2b*, c*): not drawn
    assert _pseudo_symmetric((3.0, 8.0, 4.0), 0.1) and not _pseudo_symmetric((3.0, 3.6, 8.0), 0.1)
    with pytest.raises(ValueError, match="orthorhombic_margin") as err:
        random_crystal(
            "orthorhombic",
            rng=0,
            settings={"orthorhombic_abc_A": [4.0, 5.0], "orthorhombic_margin": 0.3},
        )
    assert "1, √3 and 2" in str(err.value)  # the ratios it keeps away from: PSEUDO_RATIOS
    cubic = random_crystal("cubic", rng=3, settings={"basis_atoms": [3, 3]})
    z, pos = cubic.cell()
    assert len(cubic.basis) >= 1 and len(z) == len(pos)
    with pytest.raises(ValueError, match="system"):
        random_crystal("monoclinic", rng=0)


def test_wavelength_and_scattering_factor():
    assert electron_wavelength_A(200) == pytest.approx(0.02508, abs=2e-5)
    assert electron_wavelength_A(300) == pytest.approx(0.01969, abs=2e-5)
    s = np.array([0.0, 0.2, 1.0, 3.0])
    f = scattering_factor(29, s)
    assert np.all(np.diff(f) < 0) and scattering_factor(79, 0.5) > scattering_factor(29, 0.5)
    # Rutherford limit Z / (8 π² a0 s²) at large s
    rutherford = 29 / (8 * np.pi**2 * 0.529177 * 5.0**2)
    assert scattering_factor(29, 5.0) == pytest.approx(rutherford, rel=0.01)


def spot_params(**kw):
    p = {
        "zone_axis": [0, 0, 1],
        "tilt_mrad": 0.0,
        "rotation_deg": 0.0,
        "camera_length_mm": 500.0,
        "voltage_kv": 200.0,
        "detector_pixel_mm": 0.48,
        "relrod_inv_A": 0.03,
        "spot_sigma_px": 0.8,
        "dynamical_gamma": 1.0,
        "intensity_spread": 0.0,
        "central_ratio": 10.0,
        "background": 0.02,
        "background_decay_px": 10.0,
        "beam_stop": False,
        "dose_counts": None,
    }
    return {**p, **kw}


def test_cubic_001_spot_pattern_has_fourfold_symmetry():
    xtal = random_crystal("cubic", rng=5, settings={"basis_atoms": [3, 3]})
    diffracted, info = spot_intensity(xtal, spot_params(), size=64, rng=0)
    spots = info["spots"]
    image = detector_counts(diffracted, spot_params(), rng=0)
    assert len(spots) > 8
    np.testing.assert_allclose(np.rot90(image), image, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(image[:, ::-1], image, rtol=1e-9, atol=1e-12)  # m-3m: mirrors too
    # an orthorhombic [001] pattern is not 4-fold
    ortho = Crystal("orthorhombic", "P", 3.0, 4.2, 5.0, basis=((CU, 0, 0, 0),))
    o, _ = spot_intensity(ortho, spot_params(), size=64, rng=0)
    assert not np.allclose(np.rot90(o), o, rtol=1e-3)


def test_fcc_001_first_order_is_200_at_the_fitted_radius():
    cu = one_atom("cubic", "F", 3.615)
    _, info = spot_intensity(cu, spot_params(first_order_px=6.0), size=64, rng=0)
    row, col, _ = info["spots"].T
    radius = np.hypot(row - 31.5, col - 31.5)
    # 200-type spots (no 100, no 110 in FCC) at 6 px, 220 at 6 sqrt(2) px, 400 at 12 px
    assert np.sort(radius)[:4] == pytest.approx([6.0] * 4)
    assert np.sort(radius)[4:8] == pytest.approx([6 * math.sqrt(2)] * 4)
    assert np.sort(radius)[8:12] == pytest.approx([12.0] * 4)


def test_hexagonal_0001_spots_have_sixfold_symmetry():
    xtal = random_crystal("hexagonal", rng=2)
    _, info = spot_intensity(xtal, spot_params(spot_sigma_px=0.6), size=64, rng=0)
    spots = info["spots"]
    centre = 31.5
    xy = np.stack([spots[:, 1] - centre, centre - spots[:, 0]], axis=1)
    inner = np.linalg.norm(xy, axis=1) < 25  # away from the frame's corners
    t = np.deg2rad(60)
    rotated = xy[inner] @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    dist = np.linalg.norm(rotated[:, None] - xy[None], axis=-1).min(axis=1)
    assert inner.sum() >= 6 and dist.max() < 1e-6


def test_cubic_111_pattern_is_as_sixfold_as_hexagonal_0001():
    # why zone_axes "low_index" is ill-posed: with Friedel's law the 3-fold [111] axis of m-3m
    # gives a 6-fold net and 6-fold intensities, the same 2-D symmetry as hexagonal [0001]
    xtal = random_crystal("cubic", rng=4, centring="P", settings={"basis_atoms": [2, 2]})
    _, info = spot_intensity(
        xtal,
        spot_params(zone_axis=[1, 1, 1], spot_sigma_px=0.6, camera_length_mm=300.0),
        size=64,
        rng=0,
    )
    row, col, amp = info["spots"].T
    xy = np.stack([col - 31.5, 31.5 - row], axis=1)
    # the zero-order Laue zone (weak spots of the upper layer, 3-fold, are left out)
    inner = (np.linalg.norm(xy, axis=1) < 25) & (amp > 0.05 * amp.max())
    t = np.deg2rad(60)
    turned = xy[inner] @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    dist = np.linalg.norm(turned[:, None] - xy[inner][None], axis=-1)
    assert inner.sum() >= 12 and dist.min(axis=1).max() < 1e-6
    np.testing.assert_allclose(amp[inner][dist.argmin(axis=1)], amp[inner], rtol=1e-6)


def test_zone_axes_and_families():
    assert len(zone_axes("cubic", "low_index", max_index=1)) == 13
    assert zone_family("cubic", [0, -1, 1]) == "<011>"
    assert zone_family("hexagonal", [0, 0, 1]) == "<0001>"
    # 3-index [100] = 4-index [2-1-10] and [110] = [11-20], one family; [1-10] = [1-100] ~ [10-10]
    assert zone_family("hexagonal", [1, 0, 0]) == zone_family("hexagonal", [1, 1, 0]) == "<11-20>"
    assert zone_family("hexagonal", [1, -1, 0]) == "<10-10>"
    # mmm does not permute the axes: [100], [010] and [001] are three families
    assert [zone_family("orthorhombic", v) for v in ([-1, 0, 0], [0, 1, 0], [0, 0, -1])] == [
        "<100>",
        "<010>",
        "<001>",
    ]
    with pytest.raises(ValueError, match="zone axes"):
        zone_axes("cubic", "random")


def test_specimen_is_deterministic_labelled_and_round_trips(tmp_path):
    settings = {"images_per_session": 2, "sessions_per_specimen": 2}
    a, spec = synthesize_diffraction_specimen("s04", settings, seed=11)
    b, _ = synthesize_specimen("diffraction", "s04", settings, seed=11)  # through the dispatcher
    assert "diffraction" in TASKS
    assert [s.image_id for s in a] == [
        "diffraction/s04/b0/i00",
        "diffraction/s04/b0/i01",
        "diffraction/s04/b1/i00",
        "diffraction/s04/b1/i01",
    ]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        # each pattern kind at its own size: spots 64 px, rings 128 px (the defaults)
        side = {"spot": 64, "ring": 128}[x.modality]
        assert x.labels == {} and x.image.dtype == np.float32 and x.image.shape == (side, side)
        assert 0.0 <= x.image.min() and x.image.max() == pytest.approx(1.0)
    assert spec["crystal_system"] == "hexagonal" and spec["class_index"] == 1  # 4 % 3
    assert {s.modality for s in a} == {"spot", "ring"}
    c, _ = synthesize_diffraction_specimen("s04", settings, seed=12)
    assert not np.array_equal(a[0].image, c[0].image)
    write_specimen(tmp_path / "s04.h5", a, task="diffraction", specimen="s04", specimen_params=spec)
    back = read_specimen(tmp_path / "s04.h5")
    assert back.samples[2].params["crystal_system"] == "hexagonal" and back.samples[2].labels == {}
    for x, y in zip(back.samples, a):  # one file holds both sizes, read back at their own
        np.testing.assert_array_equal(x.image, y.image)
    subset = read_specimen(tmp_path / "s04.h5", indices=[3, 0]).samples
    assert [x.image.shape for x in subset] == [a[3].image.shape, a[0].image.shape]


def test_pattern_sizes_per_kind():
    settings = {"images_per_session": 1, "sessions_per_specimen": 2}
    sizes = {"image_size_px": 48, "ring_image_size_px": 96, "ring_first_order_px": [8.0, 12.0]}
    samples, _ = synthesize_diffraction_specimen("s01", {**settings, **sizes}, seed=5)
    assert {s.modality: s.image.shape for s in samples} == {"spot": (48, 48), "ring": (96, 96)}
    assert pattern_size(sizes, "spot") == 48 and pattern_size(sizes, "ring") == 96
    # the same detector: a ring pattern's binned pixel is finer by the ratio of the sizes
    ring = next(s for s in samples if s.modality == "ring")
    spot = next(s for s in samples if s.modality == "spot")
    assert ring.params["detector_pixel_mm"] == pytest.approx(spot.params["detector_pixel_mm"] / 2)
    with pytest.raises(ValueError, match="modality"):
        pattern_size(sizes, "powder")


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown synthesize.diffraction keys"):
        synthesize_diffraction_specimen("s00", {"zone_axis": "random"}, seed=0)
    with pytest.raises(ValueError, match="zone_axes"):
        synthesize_diffraction_specimen("s00", {"zone_axes": "any"}, seed=0)
    with pytest.raises(ValueError, match="specimen names"):
        synthesize_diffraction_specimen("x1", {}, seed=0)


def test_spot_and_ring_sessions_draw_their_own_first_order():
    settings = {
        "images_per_session": 1,
        "sessions_per_specimen": 2,
        "first_order_px": [4.0, 4.0],
        "ring_first_order_px": [8.0, 8.0],
    }
    samples, _ = synthesize_diffraction_specimen("s02", settings, seed=3)
    first = {s.modality: s.params["first_order_px"] for s in samples}
    assert first == {"spot": 4.0, "ring": 8.0}
