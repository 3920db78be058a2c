"""Grain-size metrology: ASTM E112 table, hand-worked tilings, the synthesiser's grain size."""

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import cKDTree
from skimage.segmentation import relabel_sequential

from grainflow.evaluation import metrology as m

# ASTM E112 Table 4 (uniform, randomly oriented, equiaxed grains): G, N_A (grains/mm² at 1x),
# mean lineal intercept (mm). N_A = 15.50 * 2**(G - 1): G = 1 <-> 15.50 mm⁻² by definition
# (N_AE = 2**(G-1) grains/in² at 100x; 1 in²at 100x = 645.16/1e4 mm²).
E112_TABLE = [
    (0.0, 7.75, 0.320),
    (0.5, 10.96, 0.269),
    (1.0, 15.50, 0.226),
    (2.0, 31.00, 0.160),
    (3.0, 62.00, 0.113),
    (4.0, 124.0, 0.0800),
    (5.0, 248.0, 0.0566),
    (6.0, 496.0, 0.0400),
    (7.0, 992.0, 0.0283),
    (8.0, 1984.0, 0.0200),
    (9.0, 3968.0, 0.0141),
    (10.0, 7936.0, 0.0100),
    (11.0, 15873.0, 0.00707),
    (12.0, 31746.0, 0.00500),
    (13.0, 63492.0, 0.00354),
    (14.0, 126984.0, 0.00250),
]


@pytest.mark.parametrize(("g", "na", "ell"), E112_TABLE)
def test_e112_table_within_001_g(g, na, ell):
    assert abs(m.g_from_na(na) - g) < 0.01
    assert abs(m.g_from_intercept(ell) - g) < 0.01


def test_e112_definition_and_inverses():
    # N_AE = 2**(G - 1) per in² at 100x, i.e. 2**(G - 1) * 1e4 / 645.16 per mm² at 1x
    g = np.arange(0, 15)
    na = 2.0 ** (g - 1) * 1e4 / 645.16
    np.testing.assert_allclose(m.g_from_na(na), g, atol=2e-3)
    np.testing.assert_allclose(m.g_from_na(m.na_from_g(g)), g, atol=1e-12)
    np.testing.assert_allclose(m.g_from_intercept(m.intercept_from_g(g)), g, atol=1e-12)
    assert np.isnan(m.g_from_na(0.0))


def _square_grid(side, shape, offset):
    """Square grains of ``side`` px; the field starts ``offset`` px into the grid."""
    r = np.arange(offset[0], offset[0] + shape[0])
    c = np.arange(offset[1], offset[1] + shape[1])
    return ((r[:, None] // side) * 1000 + c[None, :] // side + 1).astype(np.uint32)


def test_planimetric_square_grid_hand_worked():
    # 56 x 56 field cut through the middle of 8-px grains: 6x6 inside, 24 halves, 4 quarters
    lab = _square_grid(8, (56, 56), (4, 4))
    p = m.planimetric(lab, pixel_size_um=2.0)
    assert (p.n_inside, p.n_edge, p.n_corner) == (36, 24, 4)
    assert p.n_equivalent == 49.0  # = 56² / 8²: exact
    assert p.na_per_mm2 == pytest.approx(1 / (16e-3) ** 2)  # one grain per (16 µm)²
    assert p.mean_grain_area_um2 == pytest.approx(256.0)
    assert p.g == pytest.approx(3.321928 * np.log10(1 / 0.016**2) - 2.954)


def test_planimetric_pixel_size_for_g5():
    # grains of side 1/sqrt(N_A(G=5)) mm (about 1/sqrt(248.0 mm⁻²)) are ASTM G = 5
    side_um = 1000 / np.sqrt(m.na_from_g(5.0))
    assert side_um == pytest.approx(1000 / np.sqrt(248.0), rel=1e-4)
    lab = _square_grid(10, (60, 60), (5, 5))
    assert m.planimetric(lab, pixel_size_um=side_um / 10).g == pytest.approx(5.0, abs=1e-5)


def test_planimetric_ignores_boundary_label_zero():
    lab = _square_grid(8, (56, 56), (4, 4)).astype(np.int64)
    lab[4::8] = 0  # a line of "boundary" pixels along each horizontal boundary
    assert m.planimetric(lab, pixel_size_um=1.0).n_equivalent == 49.0


def test_intercept_square_grid_hand_worked():
    # 100 x 120 field, grid of 8 px starting 3 rows / 5 columns in: a horizontal line
    # crosses the vertical boundaries at columns 3, 11, ..., 115 (15 crossings in 120 px),
    # a vertical line crosses rows 5, 13, ..., 93 (12 crossings in 100 px)
    lab = _square_grid(8, (100, 120), (3, 5))
    res = m.lineal_intercept(
        lab, pixel_size_um=1.0, directions_deg=(0, 90), lines_per_direction=7, circles=False
    )
    t = res.table.groupby("pattern")[["length_mm", "intercepts"]].sum()
    assert t.loc["line 0°", "intercepts"] == 7 * 15
    assert t.loc["line 90°", "intercepts"] == 7 * 12
    assert t.loc["line 0°", "length_mm"] == pytest.approx(7 * 0.120)
    assert res.mean_intercept_mm == pytest.approx((0.84 + 0.70) / (105 + 84))
    assert res.n_fields == 1 and np.isnan(res.ci95_mm)


def test_intercept_square_grid_diagonals_and_circles():
    # 45° lines cross sqrt(2)/side boundaries per unit length; circles sample all
    # directions, mean intercept pi * side / 4 (Cauchy: pi A / P). The offset keeps the
    # central diagonals off the grid's corners (a line through a 4-grain junction counts
    # one intercept where a line beside it counts two)
    lab = _square_grid(8, (160, 160), (3, 6))
    res = m.lineal_intercept(lab, pixel_size_um=1.0, lines_per_direction=9)
    t = res.table.groupby("pattern")[["length_mm", "intercepts"]].sum()
    ell = t["length_mm"] / t["intercepts"] * 1000
    assert ell["line 45°"] == pytest.approx(8 / np.sqrt(2), rel=0.03)
    assert ell["line 135°"] == pytest.approx(8 / np.sqrt(2), rel=0.03)
    assert ell["circles"] == pytest.approx(np.pi * 8 / 4, rel=0.03)


def _hexagons(a, shape, offset=(3.3, 4.7)):
    """Voronoi cells of a triangular lattice of spacing ``a`` (neighbours along +col)."""
    i, j = np.mgrid[-3 : shape[0] // a * 2 + 3, -3 : shape[1] // a + 3]
    rows = (i * a * np.sqrt(3) / 2).ravel() + offset[0]
    cols = (j * a + (i % 2) * a / 2).ravel() + offset[1]
    pts = np.column_stack([rows, cols])
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    _, owner = cKDTree(pts).query(np.column_stack([rr.ravel(), cc.ravel()]))
    return relabel_sequential(owner.reshape(shape) + 1)[0]


def test_hexagonal_tiling():
    a = 12.0
    lab = _hexagons(a, (180, 180))
    # cell area sqrt(3)/2 a²
    p = m.planimetric(lab, pixel_size_um=1.0)
    assert p.mean_grain_area_um2 == pytest.approx(np.sqrt(3) / 2 * a**2, rel=0.03)
    # boundary length per area L_A = 2 / a, in three families (edges at 30°, 90°, 150°):
    # a line at angle theta crosses (L_A / 3) sum |sin(theta - phi)| boundaries per length
    res = m.lineal_intercept(lab, pixel_size_um=1.0, lines_per_direction=25)
    t = res.table.groupby("pattern")[["length_mm", "intercepts"]].sum()
    ell = t["length_mm"] / t["intercepts"] * 1000
    phi = np.deg2rad([30, 90, 150])
    for theta in (0, 45, 90, 135):
        rate = 2 / (3 * a) * np.abs(np.sin(np.deg2rad(theta) - phi)).sum()
        assert ell[f"line {theta}°"] == pytest.approx(1 / rate, rel=0.03), theta
    assert ell["circles"] == pytest.approx(np.pi * a / 4, rel=0.03)  # isotropic: pi A / P


def test_intercept_fields_ci_and_relative_accuracy():
    fields = [_square_grid(8, (64, 64), (o, o + 1)) for o in range(0, 8, 2)]
    fields.append(_square_grid(10, (64, 64), (1, 2)))
    res = m.lineal_intercept(fields, pixel_size_um=1.0)
    assert res.n_fields == 5
    ells = res.field_intercepts_mm
    half = stats.t.ppf(0.975, 4) * np.std(ells, ddof=1) / np.sqrt(5)
    assert res.mean_intercept_mm == pytest.approx(ells.mean())
    assert res.ci95_mm == pytest.approx(half)
    assert res.relative_accuracy_pct == pytest.approx(100 * half / ells.mean())
    assert res.g == pytest.approx(m.g_from_intercept(ells.mean()))
    lo, hi = res.g_ci95
    assert lo < res.g < hi


def test_single_grain_has_no_intercepts():
    res = m.lineal_intercept(np.ones((32, 32), np.uint32), pixel_size_um=1.0)
    assert res.n_intercepts == 0 and np.isnan(res.mean_intercept_mm)


def test_distribution_aspect_ratio_and_orientation():
    lab = np.zeros((40, 60), np.uint32)
    lab[10:14, 10:50] = 1  # 4 x 40 bar along +col
    lab[20:36, 20:24] = 2  # 16 x 4 bar along rows
    lab[0:5, 0:5] = 3  # at the edge
    t = m.region_table(lab, pixel_size_um=0.5)
    assert t["area_um2"].tolist() == [40.0, 16.0, 6.25]
    assert t["ecd_um"].iloc[0] == pytest.approx(np.sqrt(4 * 40 / np.pi))
    # inertia of the pixel centres of a 40 x 4 box: variances (40² - 1)/12 and (4² - 1)/12
    assert t["aspect_ratio"].iloc[0] == pytest.approx(np.sqrt((40**2 - 1) / (4**2 - 1)))
    assert t["orientation_deg"].iloc[0] == pytest.approx(0.0, abs=1e-6)
    assert t["orientation_deg"].iloc[1] == pytest.approx(90.0, abs=1e-6)
    assert t["edge"].tolist() == [False, False, True]
    assert m.grain_size_distribution(lab, pixel_size_um=0.5)["label"].tolist() == [1, 2]


def test_lognormal_fit_recovers_parameters():
    x = stats.lognorm(0.4, scale=12.0).rvs(4000, random_state=np.random.default_rng(0))
    fit = m.fit_lognormal(x)
    assert fit.sigma == pytest.approx(0.4, rel=0.05)
    assert fit.median == pytest.approx(12.0, rel=0.03)
    assert fit.mean == pytest.approx(12.0 * np.exp(0.08), rel=0.03)
    assert fit.frozen().median() == pytest.approx(fit.median)
    with pytest.raises(ValueError, match="positive"):
        m.fit_lognormal([1.0, -2.0])


def test_phases_area_fraction_and_particles():
    phase = np.zeros((20, 20), np.uint8)
    phase[2:6, 2:6] = 1
    phase[10:12, 10:18] = 1
    phase[18:, 18:] = 1
    assert m.area_fraction(phase) == pytest.approx((16 + 16 + 4) / 400)
    t = m.particle_size_distribution(phase, pixel_size_um=2.0)
    assert sorted(t["area_um2"]) == [16.0, 64.0, 64.0]
    assert len(m.particle_size_distribution(phase, pixel_size_um=2.0, exclude_edge=True)) == 2


def test_bad_input():
    with pytest.raises(ValueError, match="pixel_size_um"):
        m.planimetric(np.ones((4, 4), int), pixel_size_um=0)
    with pytest.raises(ValueError, match="2-D"):
        m.planimetric(np.ones(4, int), pixel_size_um=1)
    with pytest.raises(ValueError, match="integers"):
        m.region_table(np.ones((4, 4)), pixel_size_um=1)


@pytest.mark.parametrize(
    ("d", "dispersion", "elongation"), [(16, 0.0, 1.0), (12, 0.3, 1.0), (14, 0.0, 2.5)]
)
def test_against_synthesiser_grain_size(d, dispersion, elongation):
    from grainflow.synth.tessellation import polycrystal

    areas, ells = [], []
    for seed in range(2):
        lab = polycrystal(
            (160, 160),
            grain_diameter_px=d,
            dispersion=dispersion,
            elongation=elongation,
            angle_deg=30.0,
            rng=seed,
        )
        areas.append(m.planimetric(lab, pixel_size_um=1.0).mean_grain_area_um2)
        ells.append(m.lineal_intercept(lab, pixel_size_um=1.0).mean_intercept_mm * 1000)
    area = np.pi * d**2 / 4  # the synthesiser's definition of grain_diameter_px
    assert np.mean(areas) == pytest.approx(area, rel=0.08)
    if elongation == 1.0:
        # equiaxed cells lie between Poisson-Voronoi (pi/4 sqrt(A)) and hexagons (x 1.075)
        assert 0.97 * np.pi / 4 * np.sqrt(area) < np.mean(ells) < 1.1 * np.pi / 4 * np.sqrt(area)
    else:
        dist = m.grain_size_distribution(lab, pixel_size_um=1.0)
        assert dist["aspect_ratio"].median() == pytest.approx(elongation, rel=0.15)
        assert dist["orientation_deg"].median() == pytest.approx(30.0, abs=5)


def test_field_grid_tiles_the_image():
    fields = m.field_grid((10, 7), (3, 2))
    assert len(fields) == 6
    cover = np.zeros((10, 7), int)
    for rs, cs in fields:
        cover[rs, cs] += 1
    np.testing.assert_array_equal(cover, 1)
    assert [(rs.start, rs.stop) for rs, _ in fields[::2]] == [(0, 3), (3, 7), (7, 10)]
    with pytest.raises(ValueError, match="grid"):
        m.field_grid((10, 7), (0, 2))


def test_e112_statistics_hand_worked_on_fields():
    # two planes of 8-px square grains, each cut into 2 x 2 fields of 32 x 32 px aligned
    # with the grains: every field holds 4 x 4 whole grains (16 per field), 1 µm pixels
    lab = _square_grid(8, (64, 64), (0, 0))
    res = m.e112_statistics([lab, lab], pixel_size_um=1.0, grid=(2, 2))
    assert res.n_fields == 8
    # Jeffries per field: 2 x 2 grains inside, 8 on an edge (1/2 each), 4 holding a
    # corner (1/4 each): 4 + 4 + 1 = 9 per (32 µm)²
    assert res.na_per_mm2 == pytest.approx(9 / 0.032**2)
    assert res.na_ci95 == 0.0 and res.planimetric_ra_pct == 0.0  # identical fields
    assert res.g_planimetric == pytest.approx(m.g_from_na(9 / 0.032**2))
    assert res.g_planimetric_ci95 == pytest.approx((res.g_planimetric,) * 2)
    one = m.lineal_intercept(lab[:32, :32], pixel_size_um=1.0)
    assert res.intercept_mm == pytest.approx(one.mean_intercept_mm)
    assert res.g_intercept == pytest.approx(one.g)
    assert res.g_difference == pytest.approx(res.g_planimetric - res.g_intercept)


def test_e112_statistics_confidence_from_differing_fields():
    a = _square_grid(8, (64, 64), (4, 4))
    b = _square_grid(16, (64, 64), (8, 8))
    res = m.e112_statistics([a, b, a], pixel_size_um=0.5, grid=(2, 2))
    fields = [f[rs, cs] for f in (a, b, a) for rs, cs in m.field_grid((64, 64), (2, 2))]
    na = np.array([m.planimetric(f, pixel_size_um=0.5).na_per_mm2 for f in fields])
    half = stats.t.ppf(0.975, 11) * na.std(ddof=1) / np.sqrt(12)
    assert res.na_per_mm2 == pytest.approx(na.mean())
    assert res.na_ci95 == pytest.approx(half)
    assert res.planimetric_ra_pct == pytest.approx(100 * half / na.mean())
    lo, hi = res.g_planimetric_ci95
    assert lo < res.g_planimetric < hi  # fewer grains per mm², smaller G
    lo, hi = res.g_intercept_ci95
    assert lo < res.g_intercept < hi
    with pytest.raises(ValueError, match="plane"):
        m.e112_statistics([], pixel_size_um=1.0)
