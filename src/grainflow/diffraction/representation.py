"""The forms a pattern reaches the networks in: angular spectrum, log-polar, radial profile."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from grainflow.augment import apply_transform

__all__ = [
    "FORMS",
    "DEFAULT_REPRESENTATION",
    "INVARIANT_FORMS",
    "LOG_POLAR_R_MIN_PX",
    "HIGHPASS_SIGMA_COLUMNS",
    "PROFILE_BINS",
    "MODEL_FORMS",
    "rotate_pattern",
    "log_polar",
    "angular_spectrum",
    "log_polar_highpass",
    "radial_profile",
    "representation_of",
    "model_representation",
    "model_kinds",
    "form_px",
    "represent",
    "checkpoint_representation",
    "checkpoint_kinds",
    "checkpoint_form_px",
]


#: forms in which a pattern can reach the models; see :func:`represent`
FORMS = ("angular_spectrum", "log_polar_highpass", "log_polar", "cartesian", "radial_profile")

#: the form of each pattern kind unless configured (``diffraction.representation``)
DEFAULT_REPRESENTATION = {"spot": "angular_spectrum", "ring": "log_polar_highpass"}

#: forms that ignore rotations and mirrors: their items are prepared once, without augmentation
INVARIANT_FORMS = ("angular_spectrum", "radial_profile")

#: models that read only some pattern kinds, and the form of each kind they read; every other
#: model reads every kind in the configured forms (:func:`model_representation`)
MODEL_FORMS = {"ring_profile": {"ring": "radial_profile"}}

#: pattern side at which the lengths below hold; at other sides they scale with it
BASE_PX = 64

LOG_POLAR_R_MIN_PX = 2.0  # inside the first ring (>= 5 px) and about the beam stop's radius

HIGHPASS_SIGMA_COLUMNS = 3.0  # radial background of log_polar_highpass: Gaussian over 3 columns

PROFILE_BINS = 128  # log-radius bins of radial_profile, at any pattern side
PROFILE_R_MIN_PX = 3.0  # inside the first ring (>= 5 px)
PROFILE_BACKGROUND_BINS = 6.0  # radial background of radial_profile: Gaussian over 6 bins


def _r_min(image: np.ndarray, r_min_px: float | None, at_base: float) -> float:
    return at_base * min(image.shape) / BASE_PX if r_min_px is None else float(r_min_px)


def _border_median(image: np.ndarray) -> float:
    return float(np.median(np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])))


def rotate_pattern(image: np.ndarray, angle_deg: float) -> np.ndarray:
    """``image`` (H, W) turned counter-clockwise about its centre; outside: its border median."""
    op = {
        "name": "rotate",
        "params": {
            "angle_deg": float(angle_deg),
            "fill": "constant",
            "fill_value": _border_median(image),
        },
    }
    return apply_transform(image, {}, {"ops": [op]})[0]


@functools.lru_cache(maxsize=8)
def _log_polar_grid(
    in_shape: tuple[int, int],
    out_shape: tuple[int, int],
    r_min_px: float,
    oversample: tuple[int, int],
):
    rows, cols = out_shape
    n_phi, n_r = 2 * rows * oversample[0], cols * oversample[1]  # full circle, supersampled
    phi = (np.arange(n_phi) + 0.5) / n_phi * 2 * np.pi
    r_max = min(in_shape) / 2.0
    r = r_min_px * (r_max / r_min_px) ** ((np.arange(n_r) + 0.5) / n_r)
    centre_r, centre_c = (in_shape[0] - 1) / 2.0, (in_shape[1] - 1) / 2.0
    return np.stack(
        [centre_r - r[None, :] * np.sin(phi[:, None]), centre_c + r[None, :] * np.cos(phi[:, None])]
    )


def log_polar(
    image: np.ndarray,
    *,
    r_min_px: float | None = None,
    oversample: tuple[int, int] = (4, 2),
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """A centred pattern resampled on a log-polar grid about its centre.

    Parameters
    ----------
    image : ndarray of shape (H, W)
        Centred at ``((H - 1) / 2, (W - 1) / 2)`` (the direct beam).
    r_min_px : float, optional
        Smallest radius, pixels; the largest is ``min(H, W) / 2``. Default
        :data:`LOG_POLAR_R_MIN_PX` at a 64-px pattern, in proportion at other
        sides (the same radius ratios at any pattern side).
    oversample : (int, int)
        Samples per output pixel along the azimuth and the radius (bilinear,
        then averaged: anti-aliasing).
    shape : (int, int), optional
        Output (azimuths, radii); default the image's shape.

    Returns
    -------
    ndarray of shape ``shape``, float32
        Row ``i`` of ``A`` rows: azimuth ``φ = 180° (i + ½) / A``
        counter-clockwise from +x, each the mean of ``φ`` and ``φ + 180°``
        (Friedel pairs: a kinematic pattern is centrosymmetric, and a
        beam-stop arm is averaged with the open side). Column ``j`` of ``R``:
        radius ``r_min (r_max / r_min)^((j + ½) / R)``. A rotation of the
        pattern is a cyclic shift of the rows, a change of camera length a
        shift of the columns.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 4:
        raise ValueError(f"log_polar needs one pattern (H, W) with H, W >= 4, got {image.shape=}")
    r_min_px = _r_min(image, r_min_px, LOG_POLAR_R_MIN_PX)
    if not 0 < r_min_px < min(image.shape) / 2:
        raise ValueError(f"r_min_px must be in (0, {min(image.shape) / 2}), got {r_min_px=}")
    rows, cols = image.shape if shape is None else (int(shape[0]), int(shape[1]))
    grid = _log_polar_grid(
        image.shape, (rows, cols), float(r_min_px), tuple(int(v) for v in oversample)
    )
    v = ndi.map_coordinates(image, grid, order=1, mode="nearest")
    half = v.shape[0] // 2
    v = 0.5 * (v[:half] + v[half:])  # φ and φ + 180°
    return v.reshape(rows, oversample[0], cols, oversample[1]).mean(axis=(1, 3)).astype(np.float32)


def angular_spectrum(
    image: np.ndarray, *, r_min_px: float | None = None, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Rotation-invariant form of a centred pattern: azimuthal harmonics by log radius.

    The pattern is resampled on a log-polar grid of ``2 H`` azimuths over
    180° (Friedel pairs averaged, :func:`log_polar`) by ``W`` radii; at each
    radius the magnitudes of the Fourier coefficients along the azimuth are
    kept, so a rotation (a cyclic shift of the azimuths) and a mirror (their
    reversal) leave the result unchanged.

    Returns
    -------
    ndarray of shape ``shape`` (default (H, W)), float32
        Row ``k``: harmonic ``m = 2k`` of the full circle (``k = 0``, the
        azimuthal mean, is the radial profile); column ``j``: the radius of
        :func:`log_polar`'s column ``j``. Values are ``log(1 + 10 |c_k| / c̄)``
        with ``c̄`` the mean of the radial profile, so that they do not
        depend on the pattern's overall intensity scale. An ``n``-fold net
        puts weight only on harmonics ``m`` divisible by ``n``.
    """
    image = np.asarray(image, dtype=np.float64)
    rows, cols = (image.shape if image.ndim == 2 else (0, 0)) if shape is None else shape
    polar = log_polar(image, r_min_px=r_min_px, shape=(2 * rows, cols))
    coeff = np.abs(np.fft.rfft(polar.astype(np.float64), axis=0))[:rows] / polar.shape[0]
    scale = coeff[0].mean()
    return np.log1p(10.0 * coeff / scale if scale > 0 else coeff).astype(np.float32)


def log_polar_highpass(
    image: np.ndarray,
    *,
    r_min_px: float | None = None,
    background_px: float = HIGHPASS_SIGMA_COLUMNS,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """:func:`log_polar` without its smooth radial background, scaled to zero mean and unit variance.

    Along each azimuth the log-polar pattern minus its Gaussian smoothing over
    ``background_px`` columns (the diffuse inelastic background and the
    tail of the direct beam, which change slowly with the radius, while a
    ring is one to two columns wide) — the background subtraction that
    precedes every ring-pattern analysis. Of ``shape`` (default the pattern's), float32.
    """
    polar = log_polar(image, r_min_px=r_min_px, shape=shape).astype(np.float64)
    flat = polar - ndi.gaussian_filter1d(polar, float(background_px), axis=1, mode="nearest")
    std = flat.std()
    return ((flat - flat.mean()) / std if std > 0 else np.zeros_like(flat)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _profile_weights(shape: tuple[int, int], bins: int, r_min_px: float):
    centre_r, centre_c = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(rr - centre_r, cc - centre_c).ravel()
    lo, hi = np.log(r_min_px), np.log(min(shape) / 2.0)
    u = (np.log(np.maximum(r, 1e-3)) - lo) / (hi - lo) * bins - 0.5
    i0 = np.floor(u).astype(np.int64)
    f = u - i0
    rows, cols, vals = [], [], []
    for i, w in ((i0, 1.0 - f), (i0 + 1, f)):  # each pixel onto its two nearest radius bins
        inside = (i >= 0) & (i < bins)
        rows.append(i[inside])
        cols.append(np.flatnonzero(inside))
        vals.append(w[inside])
    from scipy import sparse

    m = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(bins, r.size),
    )
    weight = np.asarray(m.sum(axis=1)).ravel()
    return sparse.diags(1.0 / np.maximum(weight, 1e-9)) @ m


def radial_profile(
    image: np.ndarray,
    *,
    bins: int = PROFILE_BINS,
    r_min_px: float | None = None,
    background_bins: float = PROFILE_BACKGROUND_BINS,
) -> np.ndarray:
    """The azimuthal mean of a centred pattern over log radius, background removed: (1, bins).

    Parameters
    ----------
    image : ndarray of shape (H, W)
        Centred at ``((H - 1) / 2, (W - 1) / 2)``.
    bins : int
        Log-spaced radius bins from ``r_min_px`` to ``min(H, W) / 2``.
    r_min_px : float, optional
        Default :data:`PROFILE_R_MIN_PX` at a 64-px pattern, in proportion at
        other sides.
    background_bins : float
        The smooth radial background (Gaussian over this many bins) is
        subtracted.

    Returns
    -------
    ndarray of shape (1, bins), float32
        Zero mean and unit variance.

    Notes
    -----
    Sub-pixel: every pixel adds to its two nearest bins in proportion to its
    distance from them (linear binning), so that a ring's radius is read to a
    fraction of a pixel. A rotation or mirror of the pattern leaves the profile
    unchanged; a change of camera length shifts it. The texture (the azimuthal
    modulation of a ring) is averaged out.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 8:
        raise ValueError(f"radial_profile needs one pattern (H, W), H, W >= 8, got {image.shape=}")
    r_min_px = _r_min(image, r_min_px, PROFILE_R_MIN_PX)
    if not 0 < r_min_px < min(image.shape) / 2:
        raise ValueError(f"r_min_px must be in (0, {min(image.shape) / 2}), got {r_min_px=}")
    profile = _profile_weights(image.shape, int(bins), float(r_min_px)) @ image.ravel()
    profile = profile - ndi.gaussian_filter1d(profile, float(background_bins), mode="nearest")
    std = profile.std()
    profile = (profile - profile.mean()) / std if std > 0 else np.zeros_like(profile)
    return profile[None].astype(np.float32)


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` binned (an integer factor) or interpolated (bilinear) to ``shape``."""
    if tuple(image.shape) == tuple(shape):
        return image
    fr, fc = image.shape[0] / shape[0], image.shape[1] / shape[1]
    if fr == fc and fr == int(fr) and fr > 1:
        f = int(fr)
        return image.reshape(shape[0], f, shape[1], f).mean(axis=(1, 3))
    return ndi.zoom(image, (1 / fr, 1 / fc), order=1, grid_mode=True, mode="nearest")


_FORM_FUNCTIONS = {
    "angular_spectrum": angular_spectrum,
    "log_polar": lambda image, shape=None: log_polar(image, shape=shape),
    "log_polar_highpass": log_polar_highpass,
    "cartesian": lambda image, shape=None: _resize(image, image.shape if shape is None else shape),
    "radial_profile": lambda image, shape=None: radial_profile(image),
}


def representation_of(value: str | Mapping[str, str] | None) -> dict[str, str]:
    """The form of each pattern kind, from a mapping ``{"spot": form, "ring": form}``.

    A missing kind keeps :data:`DEFAULT_REPRESENTATION`'s form. A plain string
    is the older single setting, which named the ring form (spots as
    recorded): checkpoints written before spots had a form of their own
    record one. ``None`` gives the defaults.
    """
    if value is None:
        return dict(DEFAULT_REPRESENTATION)
    if isinstance(value, str):
        if value not in FORMS:
            raise ValueError(f"representation must be one of {FORMS}, got {value!r}")
        return {"spot": "cartesian", "ring": value}
    unknown = sorted(set(value) - set(DEFAULT_REPRESENTATION))
    if unknown:
        raise ValueError(
            f"representation: unknown pattern kind(s) {unknown}; known: "
            f"{sorted(DEFAULT_REPRESENTATION)}"
        )
    out = {**DEFAULT_REPRESENTATION, **{str(k): str(v) for k, v in value.items()}}
    bad = {k: v for k, v in out.items() if v not in FORMS}
    if bad:
        raise ValueError(f"representation: forms must be one of {FORMS}, got {bad}")
    return out


def _form(image: np.ndarray, form: str, px: int | None = None) -> np.ndarray:
    """``image`` in ``form``, a 2-D form ``px × px`` (default the pattern's own side)."""
    if form == "cartesian" and px is None:
        return image
    return _FORM_FUNCTIONS[form](image, shape=None if px is None else (int(px), int(px)))


def model_representation(model: str, representation=None) -> dict[str, str]:
    """The pattern kinds ``model`` reads and the form of each.

    A model of :data:`MODEL_FORMS` reads only its kinds, in its own forms (the
    ``ring_profile`` network: ring patterns as their radial profile); every
    other model reads every kind in ``representation``
    (:func:`representation_of`).
    """
    if model in MODEL_FORMS:
        return dict(MODEL_FORMS[model])
    return representation_of(representation)


def model_kinds(model: str, modalities: Sequence[str]) -> list[str]:
    """The pattern kinds of ``modalities`` that ``model`` reads (``ring_profile``: rings only)."""
    return [m for m in modalities if m in MODEL_FORMS.get(model, modalities)]


def form_px(images) -> int:
    """Side of the 2-D forms of a set of patterns: the smallest pattern side among them.

    A dataset holding spot patterns of 64 px and ring patterns of 128 px
    reaches a 2-D model as 64 × 64 forms (the ring's log-polar form then
    spans the same radius ratios as at 64 px, each sample averaged over
    four times the pixels), so that every batch has one shape.
    """
    sides = {int(min(np.shape(im))) for im in images}
    if not sides:
        raise ValueError("no patterns")
    return min(sides)


def represent(
    images,
    modalities: Sequence[str],
    representation: str | Mapping[str, str] | None = None,
    *,
    px: int | None = None,
) -> np.ndarray:
    """Patterns as a model sees them: each in its kind's form (:func:`representation_of`).

    Parameters
    ----------
    images : ndarray of shape (N, H, W), or a sequence of (H_i, W_i) patterns
        Patterns of several sides (spots at 64 px, rings at 128 px) may be mixed.
    modalities : sequence of str
        ``"spot"`` or ``"ring"`` per pattern.
    representation : mapping or str, optional
    px : int, optional
        Side of the 2-D forms (:func:`form_px`: default the smallest pattern side;
        a checkpoint records the one it was trained on, :func:`checkpoint_form_px`).

    Returns
    -------
    ndarray of shape (N, px, px), or (N, 1, bins) for ``radial_profile``, float32

    Notes
    -----
    A pattern's crystal system is in the symmetry of its net (spots) or the ratio
    sequence of its radii (rings), not in its orientation or camera length, so the
    patterns reach the models in forms where those nuisances are gone or are shifts.
    The form is chosen per pattern kind (always known: a spot and a ring pattern are
    different experiments) and recorded in the checkpoint, so that evaluation and
    scan maps prepare patterns as in training (:func:`checkpoint_representation`).

    ``angular_spectrum`` (spots, :func:`angular_spectrum`)
        The magnitude of the Fourier series along the azimuth of the log-polar
        pattern: row ``k`` is the harmonic ``m = 2k`` (Friedel pairs averaged, so odd
        ones vanish), column the log radius. A rotation only changes the phases, so
        the form is invariant to it (and to a mirror); a square net puts weight only
        on rows ``k ≡ 0 (mod 2)`` (four-fold), a hexagonal net on ``k ≡ 0 (mod 3)``
        (six-fold), a rectangular one on every row: the rotational-symmetry analysis
        of 4D-STEM.
    ``log_polar`` (:func:`log_polar`)
        Rows the azimuth over 180°, columns log-spaced radii: a ring is a column, the
        ratio sequence of the radii a fixed pattern of column spacings, and the
        camera length and the in-plane rotation shifts along the columns and rows,
        which convolutions and global pooling ignore. It is the azimuthal
        integration every powder-ring analysis starts with, keeping the azimuth
        (texture) as the second axis.
    ``log_polar_highpass`` (rings, :func:`log_polar_highpass`)
        The same without the smooth radial background (diffuse inelastic scattering,
        the tail of the direct beam), scaled to zero mean and unit variance: the
        rings are what is left.
    ``cartesian``
        The pattern as recorded (the teaching example's set-up).

    docs/diffraction.md compares the forms' accuracies.
    """
    forms = representation_of(representation)
    if len(modalities) != len(images):
        raise ValueError(f"need one modality per pattern, got {len(modalities)} for {len(images)}")
    if len(images) == 0:
        return np.zeros((0, 0, 0), dtype=np.float32)
    px = form_px(images) if px is None else int(px)
    out = [
        _form(np.asarray(im, dtype=np.float32), forms[m], px) for im, m in zip(images, modalities)
    ]
    shapes = sorted({o.shape for o in out})
    if len(shapes) > 1:
        raise ValueError(
            f"the forms {sorted(set(forms[m] for m in modalities))} give inputs of shapes "
            f"{shapes}; one model reads one shape (radial_profile is for ring_profile only)"
        )
    return np.stack(out).astype(np.float32, copy=False)


def checkpoint_representation(checkpoint: Mapping) -> dict[str, str]:
    """The forms a classifier checkpoint was trained on (every kind Cartesian if none recorded)."""
    recorded = checkpoint.get("extra", {}).get("representation", "cartesian")
    return representation_of(recorded)


def checkpoint_kinds(checkpoint: Mapping) -> tuple[str, ...]:
    """The pattern kinds a classifier checkpoint reads (every kind if none recorded)."""
    return tuple(checkpoint.get("extra", {}).get("kinds", DEFAULT_REPRESENTATION))


def checkpoint_form_px(checkpoint: Mapping) -> int | None:
    """Side of the 2-D forms a classifier was trained on (None: each pattern's own side)."""
    px = checkpoint.get("extra", {}).get("form_px")
    return None if px is None else int(px)
