"""Grain-size and phase metrology from label maps (ASTM E112 and friends).

Functions take a label map in pixels and a pixel size in µm and report physical units
(µm, mm, mm⁻²). Label 0 is "no grain" (a boundary pixel or the matrix): it never counts as
a grain, and a test line passing through it steps from the grain before to the grain after.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from skimage.measure import label as connected_components
from skimage.measure import regionprops_table

__all__ = [
    "g_from_na",
    "g_from_intercept",
    "na_from_g",
    "intercept_from_g",
    "PlanimetricResult",
    "planimetric",
    "InterceptResult",
    "lineal_intercept",
    "intercept_pattern",
    "field_grid",
    "E112Statistics",
    "e112_statistics",
    "e112_from_fields",
    "region_table",
    "grain_size_distribution",
    "LognormalFit",
    "fit_lognormal",
    "area_fraction",
    "particle_size_distribution",
]

_PLANIMETRIC_SLOPE = 3.321928  # = 1 / log10(2)
_PLANIMETRIC_OFFSET = 2.954
_INTERCEPT_SLOPE = 6.643856  # = 2 / log10(2)
_INTERCEPT_OFFSET = 3.288


def _check_pixel_size(pixel_size_um: float) -> float:
    if not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be a positive number, got {pixel_size_um=}")
    return float(pixel_size_um)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or min(labels.shape) < 2:
        raise ValueError(f"labels must be a 2-D map of at least 2x2 pixels, got {labels.shape=}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype=}")
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got min {labels.min()}")
    return labels


# ------------------------------------------------------------------ E112 relations


def g_from_na(na_per_mm2):
    """ASTM grain size number G from grains per mm² (planimetric).

    Notes
    -----
    ASTM E112 in metric form at magnification 1x: ``G = 3.321928 log10(N_A) - 2.954``
    with ``N_A`` in grains/mm². It follows from the definition ``N_AE = 2**(G - 1)``
    grains per square inch at 100x: G = 1 is N_A = 15.50 mm⁻², and each step of G
    doubles N_A.
    """
    na = np.asarray(na_per_mm2, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = _PLANIMETRIC_SLOPE * np.log10(np.where(na > 0, na, np.nan)) - _PLANIMETRIC_OFFSET
    return g if g.ndim else float(g)


def g_from_intercept(mean_intercept_mm):
    """ASTM grain size number G from the mean lineal intercept in mm.

    Notes
    -----
    ASTM E112 in metric form at magnification 1x: ``G = -6.643856 log10(l) - 3.288``
    with the mean lineal intercept ``l`` in mm.
    """
    ell = np.asarray(mean_intercept_mm, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = -_INTERCEPT_SLOPE * np.log10(np.where(ell > 0, ell, np.nan)) - _INTERCEPT_OFFSET
    return g if g.ndim else float(g)


def na_from_g(g):
    """Grains per mm² for ASTM grain size number ``g`` (inverse of :func:`g_from_na`)."""
    out = 10.0 ** ((np.asarray(g, dtype=float) + _PLANIMETRIC_OFFSET) / _PLANIMETRIC_SLOPE)
    return out if out.ndim else float(out)


def intercept_from_g(g):
    """Mean lineal intercept in mm for ``g`` (inverse of :func:`g_from_intercept`)."""
    out = 10.0 ** (-(np.asarray(g, dtype=float) + _INTERCEPT_OFFSET) / _INTERCEPT_SLOPE)
    return out if out.ndim else float(out)


# --------------------------------------------------------------------- planimetric


@dataclass(frozen=True)
class PlanimetricResult:
    """Jeffries planimetric count of one field.

    Attributes
    ----------
    n_inside : int
        Grains that do not touch the field's edge.
    n_edge : int
        Grains cut by an edge of the field but holding no corner (count 1/2 each).
    n_corner : int
        Grains holding a corner pixel of the field (count 1/4 per corner held).
    n_equivalent : float
        ``n_inside + n_edge / 2 + corners / 4``.
    area_mm2 : float
        Field area.
    na_per_mm2 : float
        Grains per mm², ``n_equivalent / area_mm2``.
    g : float
        ASTM grain size number.
    """

    n_inside: int
    n_edge: int
    n_corner: int
    n_equivalent: float
    area_mm2: float
    na_per_mm2: float
    g: float

    @property
    def mean_grain_area_um2(self) -> float:
        """Mean grain area 1 / N_A, µm²."""
        return 1e6 / self.na_per_mm2 if self.na_per_mm2 > 0 else math.nan


def planimetric(labels: np.ndarray, *, pixel_size_um: float) -> PlanimetricResult:
    """ASTM E112 planimetric (Jeffries) grain count on a rectangular field.

    Grains wholly inside the field count 1, grains cut by an edge count 1/2,
    and each corner of the field counts 1/4 to the grain holding it (E112's
    rule for rectangular fields: the four corner grains together add one).

    Parameters
    ----------
    labels : ndarray of shape (M, N), int
        Grain ids > 0; 0 marks boundary pixels that belong to no grain.
    pixel_size_um : float
        Side of one pixel, µm.

    Returns
    -------
    PlanimetricResult
    """
    labels = _check_labels(labels)
    px = _check_pixel_size(pixel_size_um)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = border[border > 0]
    corners = np.array([labels[0, 0], labels[0, -1], labels[-1, 0], labels[-1, -1]])
    corners = corners[corners > 0]
    corner_ids = np.unique(corners)
    n_inside = len(ids) - len(border)
    n_edge = len(np.setdiff1d(border, corner_ids))
    n_eq = n_inside + 0.5 * n_edge + 0.25 * len(corners)
    area_mm2 = labels.size * (px / 1000.0) ** 2
    na = n_eq / area_mm2
    return PlanimetricResult(
        n_inside=int(n_inside),
        n_edge=int(n_edge),
        n_corner=int(len(corner_ids)),
        n_equivalent=float(n_eq),
        area_mm2=float(area_mm2),
        na_per_mm2=float(na),
        g=g_from_na(na) if na > 0 else math.nan,
    )


# ----------------------------------------------------------------- lineal intercept

# Diameters of E112's three concentric test circles (79.58, 53.05, 26.53 mm in
# the 500-mm pattern of its Fig. 5), relative to the largest.
_CIRCLE_RATIOS = (1.0, 53.05 / 79.58, 26.53 / 79.58)


@dataclass(frozen=True)
class _Path:
    name: str
    points: np.ndarray  # (K, 2) continuous (row, col) coordinates
    length_px: float
    closed: bool


def intercept_pattern(
    shape: tuple[int, int],
    *,
    directions_deg: Sequence[float] = (0.0, 45.0, 90.0, 135.0),
    lines_per_direction: int = 5,
    circles: bool = True,
    step_px: float = 0.25,
) -> list[_Path]:
    """The test lines and circles laid over a field of ``shape``.

    Parallel lines of each direction are evenly spaced across the field and
    clipped to it; the three circles are concentric at the field centre with
    E112's diameter ratios, the largest 95 % of the shorter side. Coordinates
    are continuous, pixel ``(i, j)`` covering ``[i, i+1) x [j, j+1)``.
    Directions are degrees counter-clockwise from the +column axis.
    """
    rows, cols = shape
    if lines_per_direction < 0:
        raise ValueError(f"lines_per_direction must be >= 0, got {lines_per_direction=}")
    if not 0 < step_px <= 0.5:
        raise ValueError(f"step_px must be in (0, 0.5], got {step_px=}")
    centre = np.array([rows / 2, cols / 2])
    paths = []
    for theta in directions_deg:
        t = np.deg2rad(theta)
        d = np.array([-np.sin(t), np.cos(t)])  # direction in (row, col)
        nrm = np.array([d[1], -d[0]])
        corners = np.array([[0, 0], [0, cols], [rows, 0], [rows, cols]], float) - centre
        proj = corners @ nrm
        lo, hi = proj.min(), proj.max()
        for k in range(lines_per_direction):
            offset = lo + (k + 0.5) * (hi - lo) / lines_per_direction
            p0 = centre + offset * nrm
            # clip the infinite line p0 + s d to the rectangle (Liang-Barsky)
            s_lo, s_hi = -np.inf, np.inf
            for axis, size in ((0, rows), (1, cols)):
                if abs(d[axis]) < 1e-12:
                    if not 0 <= p0[axis] < size:
                        s_lo, s_hi = 1.0, 0.0
                    continue
                a = (0 - p0[axis]) / d[axis]
                b = (size - p0[axis]) / d[axis]
                s_lo, s_hi = max(s_lo, min(a, b)), min(s_hi, max(a, b))
            length = s_hi - s_lo
            if length <= 1.0:
                continue
            n = int(np.ceil(length / step_px))
            s = s_lo + (np.arange(n) + 0.5) * length / n
            paths.append(_Path(f"line {theta:g}°", p0 + s[:, None] * d, float(length), False))
    if circles:
        r_max = 0.475 * min(rows, cols)
        for ratio in _CIRCLE_RATIOS:
            r = r_max * ratio
            circumference = 2 * np.pi * r
            n = int(np.ceil(circumference / step_px))
            phi = 2 * np.pi * np.arange(n) / n
            pts = centre + r * np.column_stack([-np.sin(phi), np.cos(phi)])
            paths.append(_Path("circles", pts, float(circumference), True))
    return paths


def _runs(seq: np.ndarray, step: float) -> tuple[list, list]:
    """Run-length encoding of a label sequence: (labels, lengths in pixels)."""
    change = np.flatnonzero(seq[1:] != seq[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(seq)]])) * step
    return seq[starts].tolist(), lengths.tolist()


def _intercepts(labels: np.ndarray, path: _Path, *, min_run_px: float) -> int:
    """Number of grain intercepts along one path.

    The path's label sequence is run-length encoded; an excursion A -> B -> A
    shorter than ``min_run_px`` is absorbed into A (a pixel staircase along a
    boundary at a shallow angle to the path would otherwise count as many
    crossings). An open line with P crossings has P intercepts (its two end
    pieces count 1/2 each); a closed circle has as many intercepts as crossings.
    """
    idx = np.floor(path.points).astype(int)
    idx[:, 0] = np.clip(idx[:, 0], 0, labels.shape[0] - 1)
    idx[:, 1] = np.clip(idx[:, 1], 0, labels.shape[1] - 1)
    seq = labels[idx[:, 0], idx[:, 1]]
    seq = seq[seq > 0]
    if seq.size == 0:
        return 0
    vals, lens = _runs(seq, path.length_px / len(path.points))
    if path.closed and len(vals) > 1:  # start the loop in its longest run
        k = int(np.argmax(lens))
        vals, lens = vals[k:] + vals[:k], lens[k:] + lens[:k]
        if vals[0] == vals[-1]:
            lens[0] += lens.pop()
            vals.pop()
    stack_v, stack_l = [], []
    for v, ln in zip(vals, lens):
        if len(stack_v) >= 2 and stack_v[-2] == v and stack_l[-1] < min_run_px:
            short = stack_l.pop()
            stack_v.pop()
            stack_l[-1] += short + ln
        elif stack_v and stack_v[-1] == v:
            stack_l[-1] += ln
        else:
            stack_v.append(v)
            stack_l.append(ln)
    n = len(stack_v)
    if path.closed:
        if n > 2 and stack_v[-1] == stack_v[0]:
            return n - 1
        return n if n > 1 else 0
    return n - 1


@dataclass(frozen=True)
class InterceptResult:
    """ASTM E112 lineal-intercept estimate over one or more fields.

    Attributes
    ----------
    mean_intercept_mm : float
        Mean of the fields' mean intercepts ℓ̄ (total length / intercepts per field).
    g : float
        ASTM grain size number from ``mean_intercept_mm``.
    n_fields : int
    field_intercepts_mm : ndarray of shape (n_fields,)
        ℓ̄ of each field.
    ci95_mm : float
        Half-width of the 95 % confidence interval of the mean, ``t s / sqrt(n)``
        (NaN for one field).
    relative_accuracy_pct : float
        %RA = 100 ci95 / ℓ̄ (E112 asks for 10 % or better).
    n_intercepts : int
        Intercepts counted over all fields.
    table : DataFrame
        One row per field and pattern element: field, pattern, length_mm, intercepts.
    """

    mean_intercept_mm: float
    g: float
    n_fields: int
    field_intercepts_mm: np.ndarray
    ci95_mm: float
    relative_accuracy_pct: float
    n_intercepts: int
    table: pd.DataFrame

    @property
    def g_ci95(self) -> tuple[float, float]:
        """G at the ends of the 95 % interval of ℓ̄ (larger ℓ̄ = smaller G)."""
        lo = self.mean_intercept_mm - self.ci95_mm
        hi = self.mean_intercept_mm + self.ci95_mm
        return g_from_intercept(hi), (g_from_intercept(lo) if lo > 0 else math.inf)


def lineal_intercept(
    fields: np.ndarray | Sequence[np.ndarray],
    *,
    pixel_size_um: float,
    directions_deg: Sequence[float] = (0.0, 45.0, 90.0, 135.0),
    lines_per_direction: int = 5,
    circles: bool = True,
    min_run_px: float = 1.5,
) -> InterceptResult:
    """ASTM E112 mean lineal intercept from straight test lines and test circles.

    Each field's ℓ̄ is its total test length divided by its number of grain
    intercepts (an open line's two end pieces count 1/2 each, so a line with
    ``P`` boundary crossings has ``P`` intercepts; a closed circle has as many
    intercepts as crossings). The result is the mean over fields with E112's
    95 % confidence interval and relative accuracy.

    Parameters
    ----------
    fields : ndarray of shape (M, N), or sequence of them
        Grain label maps (one per field); 0 = no grain (boundary pixels).
    pixel_size_um : float
        Side of one pixel, µm.
    directions_deg : sequence of float
        Directions of the straight test lines, degrees counter-clockwise from
        the +column axis. Use several directions: grains may be elongated.
    lines_per_direction : int
        Parallel lines per direction, evenly spaced over the field.
    circles : bool
        Also count on E112's three concentric circles (direction-free).
    min_run_px : float
        Excursions into a neighbouring grain and back that are shorter than
        this along the path are not counted (pixel staircases of boundaries
        at a shallow angle to the path).

    Returns
    -------
    InterceptResult
    """
    px = _check_pixel_size(pixel_size_um)
    if isinstance(fields, np.ndarray) and fields.ndim == 2:
        fields = [fields]
    if len(fields) == 0:
        raise ValueError("need at least one field")
    rows = []
    for f, lab in enumerate(fields):
        lab = _check_labels(lab)
        paths = intercept_pattern(
            lab.shape,
            directions_deg=directions_deg,
            lines_per_direction=lines_per_direction,
            circles=circles,
        )
        if not paths:
            raise ValueError(
                f"no test line fits field {f} of shape {lab.shape}; use more lines or circles"
            )
        for path in paths:
            rows.append(
                {
                    "field": f,
                    "pattern": path.name,
                    "length_mm": path.length_px * px / 1000.0,
                    "intercepts": _intercepts(lab, path, min_run_px=min_run_px),
                }
            )
    table = pd.DataFrame(rows)
    per_field = table.groupby("field")[["length_mm", "intercepts"]].sum()
    with np.errstate(divide="ignore"):
        ells = (per_field["length_mm"] / per_field["intercepts"].replace(0, np.nan)).to_numpy()
    n = len(ells)
    mean = float(np.mean(ells))
    if n > 1:
        s = float(np.std(ells, ddof=1))
        ci = float(stats.t.ppf(0.975, n - 1) * s / np.sqrt(n))
    else:
        ci = math.nan
    return InterceptResult(
        mean_intercept_mm=mean,
        g=g_from_intercept(mean),
        n_fields=n,
        field_intercepts_mm=ells,
        ci95_mm=ci,
        relative_accuracy_pct=100.0 * ci / mean if mean > 0 else math.nan,
        n_intercepts=int(table["intercepts"].sum()),
        table=table,
    )


# ------------------------------------------------------- statistics over fields (§15)


def field_grid(shape: tuple[int, int], grid: tuple[int, int]) -> list[tuple[slice, slice]]:
    """``grid[0] x grid[1]`` non-overlapping rectangular fields tiling an image of ``shape``
    (sides as equal as whole pixels allow), in raster order."""
    rows, cols = (int(n) for n in shape)
    gr, gc = (int(n) for n in grid)
    if gr < 1 or gc < 1 or gr > rows or gc > cols:
        raise ValueError(f"grid must hold 1 to {shape} fields a side, got {grid=}")
    r = np.linspace(0, rows, gr + 1).round().astype(int)
    c = np.linspace(0, cols, gc + 1).round().astype(int)
    return [(slice(r[i], r[i + 1]), slice(c[j], c[j + 1])) for i in range(gr) for j in range(gc)]


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and E112's 95 % confidence half-width ``t s / sqrt(n)`` (NaN for n < 2)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    if values.size < 2:
        return float(values.mean()), math.nan
    t = stats.t.ppf(0.975, values.size - 1)
    return float(values.mean()), float(t * values.std(ddof=1) / math.sqrt(values.size))


@dataclass(frozen=True)
class E112Statistics:
    """ASTM E112 §15 statistics of the planimetric and intercept estimates over fields.

    Attributes
    ----------
    n_fields : int
    na_per_mm2, na_ci95 : float
        Mean grains per mm² over the fields and its 95 % confidence half-width.
    g_planimetric : float
        G of the mean N_A.
    g_planimetric_ci95 : tuple of float
        G at the lower and upper end of the N_A interval.
    planimetric_ra_pct : float
        Relative accuracy 100 CI / mean of N_A (E112 asks for 10 % or better).
    intercept_mm, intercept_ci95_mm : float
        Mean lineal intercept over the fields and its 95 % confidence half-width.
    g_intercept : float
    g_intercept_ci95 : tuple of float
        G at the lower and upper end of the ℓ̄ interval (a longer ℓ̄, a smaller G).
    intercept_ra_pct : float
    g_difference : float
        ``g_planimetric - g_intercept``. The two estimates agree on a closed
        grain map of equiaxed grains; a planimetric G well below the intercept G
        means grains were merged (broken boundaries count as grains joined on the
        area but still cut the test lines).
    field_na_per_mm2, field_intercepts_mm : ndarray of shape (n_fields,)
        Each field's N_A and mean lineal intercept (NaN: no intercept).
    """

    n_fields: int
    na_per_mm2: float
    na_ci95: float
    g_planimetric: float
    g_planimetric_ci95: tuple[float, float]
    planimetric_ra_pct: float
    intercept_mm: float
    intercept_ci95_mm: float
    g_intercept: float
    g_intercept_ci95: tuple[float, float]
    intercept_ra_pct: float
    field_na_per_mm2: np.ndarray
    field_intercepts_mm: np.ndarray

    @property
    def g_difference(self) -> float:
        return self.g_planimetric - self.g_intercept


def e112_statistics(
    planes: np.ndarray | Sequence[np.ndarray],
    *,
    pixel_size_um: float,
    grid: tuple[int, int] = (3, 3),
    **intercept_options,
) -> E112Statistics:
    """Planimetric and intercept G with their 95 % confidence intervals from fields.

    Each plane is cut into ``grid`` fields (:func:`field_grid`); every field gets its
    own Jeffries count (:func:`planimetric`) and its own mean lineal intercept
    (:func:`lineal_intercept` with ``intercept_options``), and E112 §15's statistics
    are taken over all fields of all planes: mean, 95 % confidence half-width
    ``t(0.975, n-1) s / sqrt(n)`` and relative accuracy ``100 CI / mean``.

    Parameters
    ----------
    planes : ndarray of shape (M, N), or sequence of them
        Grain label maps; 0 = no grain.
    pixel_size_um : float
        Side of one pixel, µm.
    grid : tuple of int
        Fields per plane along rows and columns.

    Returns
    -------
    E112Statistics
    """
    px = _check_pixel_size(pixel_size_um)
    if isinstance(planes, np.ndarray) and planes.ndim == 2:
        planes = [planes]
    if len(planes) == 0:
        raise ValueError("need at least one plane")
    fields = [
        _check_labels(plane)[rs, cs]
        for plane in planes
        for rs, cs in field_grid(np.shape(plane), grid)
    ]
    na = np.array([planimetric(f, pixel_size_um=px).na_per_mm2 for f in fields])
    ells = lineal_intercept(fields, pixel_size_um=px, **intercept_options).field_intercepts_mm
    return e112_from_fields(na, ells)


def e112_from_fields(na_per_mm2: Sequence[float], intercepts_mm: Sequence[float]) -> E112Statistics:
    """:class:`E112Statistics` from per-field N_A (mm⁻²) and mean intercepts (mm), e.g.
    the fields of several planes pooled (:attr:`E112Statistics.field_na_per_mm2`)."""
    field_na = np.asarray(na_per_mm2, float)
    field_ell = np.asarray(intercepts_mm, float)
    if field_na.size == 0 or field_ell.size == 0:
        raise ValueError("need at least one field")
    na, na_ci = _mean_ci(field_na)
    ell, ell_ci = _mean_ci(field_ell)

    def g_na(value):
        return g_from_na(value) if value > 0 else math.nan

    def g_ell(value):
        return g_from_intercept(value) if value > 0 else math.inf

    return E112Statistics(
        n_fields=int(field_na.size),
        na_per_mm2=na,
        na_ci95=na_ci,
        g_planimetric=g_na(na),
        g_planimetric_ci95=(g_na(na - na_ci), g_na(na + na_ci)),
        planimetric_ra_pct=100.0 * na_ci / na if na > 0 else math.nan,
        intercept_mm=ell,
        intercept_ci95_mm=ell_ci,
        g_intercept=g_ell(ell) if ell > 0 else math.nan,
        g_intercept_ci95=(g_ell(ell + ell_ci), g_ell(ell - ell_ci)),
        intercept_ra_pct=100.0 * ell_ci / ell if ell > 0 else math.nan,
        field_na_per_mm2=field_na,
        field_intercepts_mm=field_ell,
    )


# ------------------------------------------------------------------ distributions


def region_table(labels: np.ndarray, *, pixel_size_um: float) -> pd.DataFrame:
    """Size and shape of every labelled region, in physical units.

    Parameters
    ----------
    labels : ndarray of shape (M, N), int
        Region ids > 0; 0 = background.
    pixel_size_um : float

    Returns
    -------
    DataFrame
        One row per region: ``label``, ``area_um2``, ``ecd_um`` (equivalent
        circle diameter), ``major_axis_um``, ``minor_axis_um``,
        ``aspect_ratio`` (major / minor of the inertia ellipse; NaN for a
        one-pixel-thin region), ``orientation_deg`` (of the major axis,
        counter-clockwise from +column), ``edge`` (touches the image border).
    """
    labels = _check_labels(labels)
    px = _check_pixel_size(pixel_size_um)
    props = regionprops_table(
        labels,
        properties=(
            "label",
            "area",
            "equivalent_diameter_area",
            "axis_major_length",
            "axis_minor_length",
            "orientation",
            "bbox",
        ),
    )
    p = pd.DataFrame(props)
    rows, cols = labels.shape
    major = p["axis_major_length"].to_numpy(float)
    minor = p["axis_minor_length"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where(minor > 0, major / np.where(minor > 0, minor, 1), np.nan)
    # skimage's orientation is the angle between the row axis and the major axis
    orientation = (np.rad2deg(p["orientation"].to_numpy(float)) + 90.0) % 180.0
    edge = (p["bbox-0"] == 0) | (p["bbox-1"] == 0) | (p["bbox-2"] == rows) | (p["bbox-3"] == cols)
    return pd.DataFrame(
        {
            "label": p["label"].astype(np.int64),
            "area_um2": p["area"].to_numpy(float) * px**2,
            "ecd_um": p["equivalent_diameter_area"].to_numpy(float) * px,
            "major_axis_um": major * px,
            "minor_axis_um": minor * px,
            "aspect_ratio": aspect,
            "orientation_deg": orientation,
            "edge": edge.to_numpy(bool),
        }
    )


def grain_size_distribution(
    labels: np.ndarray, *, pixel_size_um: float, exclude_edge: bool = True
) -> pd.DataFrame:
    """Equivalent-circle diameters and aspect ratios of the grains.

    Grains cut by the field edge are left out by default (their visible part
    is smaller than the grain), which biases towards small grains less than
    keeping them does at the usual field sizes. See :func:`region_table`
    for the columns; fit :func:`fit_lognormal` to ``ecd_um``.
    """
    table = region_table(labels, pixel_size_um=pixel_size_um)
    if exclude_edge:
        table = table[~table["edge"]].reset_index(drop=True)
    return table


@dataclass(frozen=True)
class LognormalFit:
    """Log-normal fit of a size distribution (``scipy.stats.lognorm`` with loc = 0).

    Attributes
    ----------
    sigma : float
        Standard deviation of log(size) (``s`` in scipy).
    median : float
        exp(mean of log(size)) (``scale`` in scipy), in the data's unit.
    n : int
        Number of sizes fitted.
    """

    sigma: float
    median: float
    n: int

    @property
    def mean(self) -> float:
        """Mean size, median * exp(sigma² / 2)."""
        return self.median * math.exp(self.sigma**2 / 2)

    def frozen(self):
        """The fitted distribution as a frozen ``scipy.stats.lognorm``."""
        return stats.lognorm(self.sigma, loc=0.0, scale=self.median)


def fit_lognormal(sizes: np.ndarray) -> LognormalFit:
    """Maximum-likelihood log-normal fit to positive sizes (e.g. ECD in µm).

    Parameters
    ----------
    sizes : ndarray of shape (K,)
        At least two positive, finite values.
    """
    x = np.asarray(sizes, dtype=float).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ValueError(
            f"need at least two positive finite sizes to fit, got {x.size} values, "
            f"min {x.min() if x.size else None}"
        )
    s, _, scale = stats.lognorm.fit(x, floc=0.0)
    return LognormalFit(sigma=float(s), median=float(scale), n=int(x.size))


# -------------------------------------------------------------------------- phases


def area_fraction(phase: np.ndarray) -> float:
    """Fraction of the field covered by phase 1 (``phase > 0``)."""
    phase = np.asarray(phase)
    if phase.size == 0:
        raise ValueError(f"phase map must not be empty, got {phase.shape=}")
    return float(np.count_nonzero(phase) / phase.size)


def particle_size_distribution(
    particles: np.ndarray, *, pixel_size_um: float, exclude_edge: bool = False
) -> pd.DataFrame:
    """Sizes and shapes of the particles of a two-phase structure.

    Parameters
    ----------
    particles : ndarray of shape (M, N)
        Particle ids (0 = matrix), or a boolean / 0-1 phase mask, which is
        split into 8-connected particles.
    pixel_size_um : float
    exclude_edge : bool
        Leave out particles cut by the field edge.

    Returns
    -------
    DataFrame
        As :func:`region_table`.
    """
    particles = np.asarray(particles)
    if particles.dtype == bool or (particles.size and particles.max() <= 1):
        particles = connected_components(particles > 0, connectivity=2)
    table = region_table(particles.astype(np.int64), pixel_size_um=pixel_size_um)
    if exclude_edge:
        table = table[~table["edge"]].reset_index(drop=True)
    return table
