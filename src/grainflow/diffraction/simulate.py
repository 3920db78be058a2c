"""Kinematic spot and ring patterns of a crystal, as a detector counts them."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping

import numpy as np
from scipy import ndimage as ndi

from grainflow.diffraction.crystal import (
    DEFAULT_SETTINGS,
    SYSTEMS,
    Crystal,
    electron_wavelength_A,
    log_uniform_in,
    random_crystal,
    reflections,
    uniform_in,
    zone_axes,
    zone_family,
)
from grainflow.io.hdf5 import Sample
from grainflow.logs import Progress
from grainflow.seeds import as_rng, derive_seed, specimen_index

__all__ = [
    "MODALITIES",
    "ZONE_AXES",
    "READ_NOISE_COUNTS",
    "PSF_SIGMA_PX",
    "BEAM_STOP_RADIUS_PX",
    "FIT_G_MAX",
    "camera_length_mm",
    "pattern_size",
    "spot_intensity",
    "ring_intensity",
    "detector_counts",
    "log_normalize",
    "render_pattern",
    "synthesize_diffraction_specimen",
    "pretraining_samples",
]

logger = logging.getLogger(__name__)


MODALITIES = ("spot", "ring")

ZONE_AXES = ("principal", "low_index", "random")

READ_NOISE_COUNTS = 1.0

PSF_SIGMA_PX = 0.4

BEAM_STOP_RADIUS_PX = (1.2, 2.5)  # covers the direct beam, not the first-order spots (>= 3.5 px)


def _frame(size: int):
    centre = (size - 1) / 2.0
    r, c = np.mgrid[0:size, 0:size].astype(float)
    return centre, r - centre, c - centre


def _in_plane_basis(n: np.ndarray, rotation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([1.0, 0, 0]) if abs(n[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = helper - (helper @ n) * n
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    t = math.radians(rotation_deg)
    return math.cos(t) * e1 + math.sin(t) * e2, -math.sin(t) * e1 + math.cos(t) * e2


def _beam_direction(crystal: Crystal, p: Mapping) -> np.ndarray:
    if p.get("zone_axis") is not None:
        n = np.asarray(p["zone_axis"], dtype=float) @ crystal.direct()
    else:
        n = np.asarray(p["beam_direction"], dtype=float)
    n = n / np.linalg.norm(n)
    tilt = 1e-3 * float(p.get("tilt_mrad", 0.0))  # radians
    if tilt:
        e1, e2 = _in_plane_basis(n, float(p.get("tilt_azimuth_deg", 0.0)))
        n = math.cos(tilt) * n + math.sin(tilt) * e1
    return n / np.linalg.norm(n)


FIT_G_MAX = 2.0  # 1/Å: the first reflection of any crystal here lies within


def _scale_px(p: Mapping) -> float:
    """Pixels per 1/Å on the detector: camera constant L λ over the pixel size."""
    return p["camera_length_mm"] * electron_wavelength_A(p["voltage_kv"]) / p["detector_pixel_mm"]


def _fitted_scale(g: np.ndarray, strength: np.ndarray, p: Mapping, *, rel: float = 0.01) -> float:
    """Pixels per 1/Å that put the first reflection (``strength >= rel max``) at ``first_order_px``.

    Without ``first_order_px`` in ``p`` the camera length ``camera_length_mm`` gives the scale.
    """
    if p.get("first_order_px") is None:
        return _scale_px(p)
    keep = (strength >= rel * strength.max()) & (g > 1e-9) if len(g) else np.zeros(0, bool)
    if not keep.any():  # nothing excited (a random orientation far from any zone)
        return p["first_order_px"] / 0.5
    return float(p["first_order_px"] / g[keep].min())


def camera_length_mm(scale_px_per_inv_A: float, p: Mapping) -> float:
    """Camera length (mm) that gives ``scale_px_per_inv_A`` (pixels per 1/Å) on this detector."""
    return scale_px_per_inv_A * p["detector_pixel_mm"] / electron_wavelength_A(p["voltage_kv"])


def spot_intensity(crystal: Crystal, p: Mapping, *, size: int, rng) -> tuple[np.ndarray, dict]:
    """Diffracted intensity of a zone-axis spot pattern (no direct beam, no noise).

    Parameters
    ----------
    crystal : Crystal
    p : mapping
        ``zone_axis`` [uvw] (or ``beam_direction`` Cartesian), ``tilt_mrad``,
        ``tilt_azimuth_deg``, ``rotation_deg``, ``voltage_kv``,
        ``detector_pixel_mm``, ``relrod_inv_A``, ``spot_sigma_px``,
        ``dynamical_gamma``, ``intensity_spread``, and either
        ``first_order_px`` (the camera length is chosen so that the
        shortest excited reflection with ``|F|² >= 1 %`` of the strongest
        lies this far from the centre) or ``camera_length_mm``.
    size : int
        Side of the square pattern, pixels.
    rng : int or Generator
        Draws the log-normal intensity factors.

    Returns
    -------
    image : ndarray of shape (size, size), float64
    info : dict
        ``spots`` (n, 3): row, column (pixels) and integrated intensity of
        each spot drawn; ``scale_px_per_inv_A``; ``camera_length_mm``.

    Notes
    -----
    Selected-area electron diffraction. The beam runs along a zone axis [uvw]
    (``zone_axes``: ``principal``, the system's axes of highest symmetry, cubic
    〈001〉, hexagonal [001], orthorhombic [100], [010], [001]; ``low_index``, any
    [uvw] with |u|, |v|, |w| ≤ ``max_zone_index``; ``random``, a uniformly random
    direction), tilted off it by up to ``tilt_mrad``. A reflection ``g`` with
    excitation error ``s_g = -(g·n) - λ|g|²/2`` (``n`` the beam direction) has
    intensity ``|F|^(2γ) exp(-s_g² / 2σ_s²)`` times a log-normal factor: ``σ_s`` is
    the effective relrod length (thin-foil shape function, beam convergence, foil
    bending), ``γ`` in [0.5, 1] mimics dynamical scattering (Blackman: strong beams
    grow like ``|F|`` rather than ``|F|²``) and the log-normal spread its thickness-
    and orientation-dependent scatter. Spots are Gaussians at ``L λ g / p`` pixels
    from the centre (binned detector pixel ``p``), in a random in-plane rotation.

    As an operator does, the camera length ``L`` is chosen for each pattern so that
    its first reflection lies ``first_order_px`` from the centre (recorded as
    ``camera_length_mm``); absolute d-spacings are therefore not in the image, only
    their ratios and angles, which is what the crystal system is read from. The
    default, 3.5–5 px on a 64-px pattern (a short camera length showing many
    orders), puts neighbouring spots within the receptive field of the
    DiffractionCNN's second convolution (8 px) and several periods of the net within
    that of its third (18 px). ``spot_sigma_px`` (0.4–0.7 px) keeps spots 3.5 px
    apart resolved.
    """
    rng = as_rng(rng)
    centre, dr, dc = _frame(size)
    n = _beam_direction(crystal, p)
    lam = electron_wavelength_A(p["voltage_kv"])
    sigma_s = p["relrod_inv_A"]
    e1, e2 = _in_plane_basis(_beam_direction(crystal, {**p, "tilt_mrad": 0.0}), p["rotation_deg"])

    def excitation(g):  # Gaussian in the excitation error s_g = -(g·n) - λ|g|²/2
        s_g = -(g @ n) - 0.5 * lam * np.sum(g**2, axis=1)
        return np.exp(-0.5 * (s_g / sigma_s) ** 2)

    def excited(g):  # the only reflections that can be drawn (weight > 1e-3) and some margin
        return excitation(g) > 1e-4

    if p.get("first_order_px") is not None:
        _, g0, f0 = reflections(crystal, FIT_G_MAX, select=excited)
        scale = _fitted_scale(np.hypot(g0 @ e1, g0 @ e2), f0 * excitation(g0), p)
    else:
        scale = _scale_px(p)
    sig = p["spot_sigma_px"]
    g_max = (centre + 4 * sig) * math.sqrt(2) / scale
    _, g, f2 = reflections(crystal, g_max, select=excited)
    weight = excitation(g)
    col, row = centre + scale * (g @ e1), centre - scale * (g @ e2)
    keep = (
        (weight > 1e-3)
        & (np.abs(col - centre) < centre + 4 * sig)
        & (np.abs(row - centre) < centre + 4 * sig)
    )
    spread = np.exp(p["intensity_spread"] * rng.standard_normal(len(f2)))
    amp = (f2 ** p["dynamical_gamma"]) * weight * spread
    # Σ_k a_k G(r - y_k) G(c - x_k): separable Gaussians, one matrix product
    pixels = np.arange(size, dtype=float)
    gy = np.exp(-((pixels[None, :] - row[keep][:, None]) ** 2) / (2 * sig**2))  # (n, H)
    gx = np.exp(-((pixels[None, :] - col[keep][:, None]) ** 2) / (2 * sig**2))  # (n, W)
    image = (gy * (amp[keep] / (2 * np.pi * sig**2))[:, None]).T @ gx
    return image, {
        "spots": np.stack([row[keep], col[keep], amp[keep]], axis=1),
        "scale_px_per_inv_A": scale,
        "camera_length_mm": camera_length_mm(scale, p),
    }


def ring_intensity(crystal: Crystal, p: Mapping, *, size: int) -> tuple[np.ndarray, dict]:
    """Diffracted intensity of a polycrystalline ring pattern (no direct beam, no noise).

    Parameters
    ----------
    crystal : Crystal
    p : mapping
        ``voltage_kv``, ``detector_pixel_mm``, ``ring_sigma_px`` (detector
        broadening), ``crystallite_nm`` (size broadening 1/D), ``texture``
        (largest ring modulation), ``texture_azimuth_deg``, ``texture_seed``,
        and either ``first_order_px`` (the first ring with ``1 %`` of the
        strongest ring's intensity lies this far from the centre) or
        ``camera_length_mm``.
    size : int

    Returns
    -------
    image : ndarray of shape (size, size), float64
    info : dict
        ``rings`` (n, 3): radius (pixels), d-spacing (Å) and integrated
        intensity ``m |F|² d`` of each ring; ``scale_px_per_inv_A``;
        ``camera_length_mm``.

    Notes
    -----
    Polycrystalline electron diffraction. Every ``|g|`` (reflections of equal
    ``|g|`` summed, which counts the multiplicity, accidental coincidences
    included) gives a ring of radius ``L λ |g| / p`` whose integrated intensity is
    ``m |F|² d`` (Vainshtein), spread around its circumference, with a Gaussian
    radial profile (detector and crystallite-size broadening), and modulated by
    texture ``1 + t_k cos 2(φ - φ0)`` (uneven ring intensity of a textured film).
    The default ``ring_first_order_px`` (5–9 px) leaves six to ten rings resolved
    inside the frame.
    """

    def rings(g_max):
        _, g, f2 = reflections(crystal, g_max)
        norm = np.round(np.linalg.norm(g, axis=1), 6)
        gs, inverse = np.unique(norm, return_inverse=True)
        total = np.bincount(inverse, weights=f2)  # m |F|² (coincident reflections add)
        return gs, total / gs  # integrated intensity m |F|² d

    centre, dr, dc = _frame(size)
    if p.get("first_order_px") is not None:
        scale = _fitted_scale(*rings(FIT_G_MAX), p)
    else:
        scale = _scale_px(p)
    gs, strength = rings((centre * math.sqrt(2) + 4 * p["ring_sigma_px"]) / scale)
    radius = scale * gs
    size_sigma = scale * 1.0 / (10.0 * p["crystallite_nm"])  # Δg = 1/D, D in Å
    sig = math.hypot(p["ring_sigma_px"], size_sigma)
    r = np.hypot(dr, dc)
    phi = np.arctan2(-dr, dc)
    trng = np.random.default_rng(int(p.get("texture_seed", 0)))
    amps = p["texture"] * trng.uniform(0, 1, len(gs))
    phi0 = math.radians(p.get("texture_azimuth_deg", 0.0))
    image = np.zeros((size, size))
    for rk, ik, tk in zip(radius, strength, amps):
        profile = np.exp(-0.5 * ((r - rk) / sig) ** 2) / (math.sqrt(2 * np.pi) * sig)
        image += ik / (2 * np.pi * rk) * profile * (1 + tk * np.cos(2 * (phi - phi0)))
    return image, {
        "rings": np.stack([radius, 1.0 / gs, strength], axis=1),
        "scale_px_per_inv_A": scale,
        "camera_length_mm": camera_length_mm(scale, p),
    }


def _beam_stop(size: int, p: Mapping) -> np.ndarray:
    """Transmission (1 open, 0.002 behind the stop): a disc at the centre, an arm to the edge."""
    out = np.ones((size, size))
    if not p.get("beam_stop"):
        return out
    _, dr, dc = _frame(size)
    t = math.radians(p["beam_stop_angle_deg"])
    along = dc * math.cos(t) - dr * math.sin(t)
    across = dc * math.sin(t) + dr * math.cos(t)
    radius, half = p["beam_stop_radius_px"], p["beam_stop_radius_px"] * 0.45
    blocked = (np.hypot(dr, dc) <= radius) | ((along >= 0) & (np.abs(across) <= half))
    out[blocked] = 0.002
    return out


def detector_counts(diffracted: np.ndarray, p: Mapping, *, rng) -> np.ndarray:
    """Counts on the detector: direct beam, background, PSF, beam stop, Poisson and read noise.

    ``diffracted`` is scaled so that its brightest pixel (after the PSF) holds
    ``dose_counts`` counts; ``dose_counts=None`` gives the noiseless expectation.

    Notes
    -----
    A bright central beam (blocked by a beam stop, a disc with an arm to the edge,
    in a fraction of sessions), a diffuse inelastic background ``exp(-r / r0)``, a
    Gaussian point-spread function, Poisson noise and Gaussian read noise (1
    count). :func:`render_pattern` then stores ``log(1 + counts)`` scaled to [0, 1]
    (:func:`log_normalize`), centred at ``((H - 1) / 2, (W - 1) / 2)`` so that
    ``np.rot90`` is a rotation about the direct beam.
    """
    rng = as_rng(rng)
    size = diffracted.shape[0]
    _, dr, dc = _frame(size)
    r = np.hypot(dr, dc)
    peak = diffracted.max() if diffracted.max() > 0 else 1.0
    central = p["central_ratio"] * peak * np.exp(-0.5 * (r / 0.8) ** 2)
    background = p["background"] * peak * np.exp(-r / p["background_decay_px"])
    total = ndi.gaussian_filter(diffracted + central + background, PSF_SIGMA_PX, mode="reflect")
    blurred_peak = ndi.gaussian_filter(diffracted, PSF_SIGMA_PX, mode="reflect").max()
    total = total * _beam_stop(size, p)
    dose = p.get("dose_counts")
    if dose is None:
        return total / max(blurred_peak, 1e-300)
    counts = rng.poisson(total * dose / max(blurred_peak, 1e-300)).astype(float)
    counts += rng.normal(0.0, READ_NOISE_COUNTS, counts.shape)
    return np.clip(counts, 0.0, None)


def log_normalize(counts: np.ndarray) -> np.ndarray:
    """``log(1 + counts)`` scaled to [0, 1] (min to 0, max to 1), float32.

    Works on any array of non-negative intensities, e.g. a detector frame of a
    scan; a constant frame gives zeros.
    """
    v = np.log1p(np.clip(np.asarray(counts, dtype=np.float64), 0.0, None))
    lo, hi = v.min(), v.max()
    return ((v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)).astype(np.float32)


def render_pattern(params: Mapping, *, shape, seed: int, info: dict | None = None) -> np.ndarray:
    """Render one pattern from its full parameter set (crystal, session, image) and seed.

    Parameters
    ----------
    params : mapping
        :meth:`Crystal.to_dict` plus the session's and image's parameters.
    shape : (H, W)
    seed : int
    info : dict, optional
        Filled with the rendering's derived values (``scale_px_per_inv_A``,
        ``camera_length_mm``).

    Returns
    -------
    image : ndarray of shape ``shape``, float32 in [0, 1]
    """
    size = int(shape[0])
    if tuple(shape) != (size, size) or size < 8:
        raise ValueError(f"diffraction patterns are square and at least 8 px, got {shape=}")
    rng = np.random.default_rng(seed)
    crystal = Crystal.from_dict(params)
    if params["modality"] == "spot":
        diffracted, derived = spot_intensity(crystal, params, size=size, rng=rng)
    elif params["modality"] == "ring":
        diffracted, derived = ring_intensity(crystal, params, size=size)
    else:
        raise ValueError(f"modality must be one of {MODALITIES}, got {params['modality']!r}")
    if info is not None:
        info.update(
            scale_px_per_inv_A=float(derived["scale_px_per_inv_A"]),
            camera_length_mm=float(derived["camera_length_mm"]),
        )
    return log_normalize(detector_counts(diffracted, params, rng=rng))


def pattern_size(settings: Mapping, modality: str) -> int:
    """Side (pixels) of the patterns of ``modality``: ``image_size_px`` for spots, ``ring_image_size_px`` for rings.

    Notes
    -----
    Each pattern kind has the size it needs. A ring pattern's crystal system is in
    the ratios of its ring radii, which a ring broadened by the detector (0.5–1.2 px)
    gives only to a fraction of a pixel: 64-px rings limit even a network that reads
    the whole profile to about 95 % (docs/diffraction.md), 128-px rings do not. Both
    kinds cover the same detector: a ring pattern's binned pixel is
    ``detector_pixel_mm × image_size_px / ring_image_size_px``, and its lengths in
    pixels (``ring_first_order_px``, ``ring_sigma_px``) are pixels of the ring pattern.
    """
    s = {**DEFAULT_SETTINGS, **dict(settings)}
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return int(s["image_size_px" if modality == "spot" else "ring_image_size_px"])


def _settings(settings: Mapping) -> dict:
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(
            f"unknown synthesize.diffraction keys {unknown}; known: {sorted(DEFAULT_SETTINGS)}"
        )
    s = {**DEFAULT_SETTINGS, **settings}
    if s["zone_axes"] not in ZONE_AXES:
        raise ValueError(f"zone_axes must be one of {ZONE_AXES}, got {s['zone_axes']!r}")
    bad = [m for m in s["modalities"] if m not in MODALITIES]
    if bad or not s["modalities"]:
        raise ValueError(f"modalities must be from {MODALITIES}, got {s['modalities']!r}")
    return s


def _session_params(modality: str, s: Mapping, rng) -> dict:
    common = {
        "modality": modality,
        "voltage_kv": float(s["voltage_kv"]),
        "first_order_px": uniform_in(
            rng, s["first_order_px" if modality == "spot" else "ring_first_order_px"]
        ),
        # the same detector for both kinds, binned to each kind's pattern size
        "detector_pixel_mm": float(s["detector_pixel_mm"])
        * int(s["image_size_px"])
        / pattern_size(s, modality),
        "central_ratio": log_uniform_in(rng, (5.0, 50.0)),
        "background": log_uniform_in(rng, s["background"]),
        "background_decay_px": uniform_in(rng, (6.0, 20.0)),
        "beam_stop": bool(rng.random() < s["beam_stop_probability"]),
        "beam_stop_radius_px": uniform_in(rng, BEAM_STOP_RADIUS_PX),
        "beam_stop_angle_deg": uniform_in(rng, (0.0, 360.0)),
        "dose_counts": log_uniform_in(rng, s["dose_counts"]),
    }
    if modality == "spot":
        return {
            **common,
            "relrod_inv_A": uniform_in(rng, s["relrod_inv_A"]),
            "spot_sigma_px": uniform_in(rng, s["spot_sigma_px"]),
            "dynamical_gamma": uniform_in(rng, s["dynamical_gamma"]),
            "intensity_spread": float(s["intensity_spread"]),
        }
    return {
        **common,
        "ring_sigma_px": uniform_in(rng, s["ring_sigma_px"]),
        "crystallite_nm": log_uniform_in(rng, s["crystallite_nm"]),
        "texture": uniform_in(rng, s["texture"]),
    }


def _image_params(crystal: Crystal, modality: str, s: Mapping, rng) -> dict:
    out = {"rotation_deg": uniform_in(rng, (0.0, 360.0))}
    if modality == "ring":
        return {
            **out,
            "texture_azimuth_deg": uniform_in(rng, (0.0, 180.0)),
            "texture_seed": int(rng.integers(0, 2**31 - 1)),
        }
    out["tilt_mrad"] = uniform_in(rng, (0.0, s["tilt_mrad"]))
    out["tilt_azimuth_deg"] = uniform_in(rng, (0.0, 360.0))
    if s["zone_axes"] == "random":
        v = rng.standard_normal(3)
        out.update(
            zone_axis=None, beam_direction=(v / np.linalg.norm(v)).tolist(), zone_family="random"
        )
        return out
    axes = zone_axes(crystal.system, s["zone_axes"], max_index=int(s["max_zone_index"]))
    uvw = axes[_draw_axis(crystal.system, axes, s["zone_draw"], rng)] * int(rng.choice([-1, 1]))
    out.update(
        zone_axis=[int(v) for v in uvw],
        beam_direction=None,
        zone_family=zone_family(crystal.system, uvw),
    )
    return out


@functools.cache
def _families(system: str, axes: tuple[tuple[int, int, int], ...]) -> tuple[str, ...]:
    return tuple(zone_family(system, uvw) for uvw in axes)


def _draw_axis(system: str, axes: np.ndarray, draw: str, rng: np.random.Generator) -> int:
    """Index of the zone axis drawn: uniformly over the axes, or over the families first.

    ``family`` draws a zone family uniformly, then one of its axes, so that a family
    of few axes (hexagonal [0001]) is as frequent as one of many (cubic <111>, four
    axes); with one axis per family (``principal``) both draws are the same.
    """
    if draw == "axis":
        return int(rng.integers(len(axes)))
    if draw != "family":
        raise ValueError(f"zone_draw must be 'family' or 'axis', got {draw!r}")
    families = _families(system, tuple(map(tuple, np.asarray(axes).tolist())))
    names = list(dict.fromkeys(families))
    chosen = names[int(rng.integers(len(names)))]
    members = [i for i, f in enumerate(families) if f == chosen]
    return members[int(rng.integers(len(members)))] if len(members) > 1 else members[0]


def synthesize_diffraction_specimen(
    specimen: str,
    settings: Mapping,
    *,
    seed: int,
    progress: bool = False,
    task: str = "diffraction",
) -> tuple[list[Sample], dict]:
    """All patterns of one crystal: its sessions (spot or ring) and their orientations.

    Parameters
    ----------
    specimen : str
        ``"s00"``, ``"s01"``, ...; specimen ``i`` is of system ``SYSTEMS[i % 3]``.
    settings : mapping
        The config's ``synthesize.diffraction`` block (see :data:`DEFAULT_SETTINGS`).
    seed : int
        The job's seed.
    progress : bool
        Log the patterns done and the time left, a line at most every 30 s.
    task : str
        Prefix of the image ids (``"{task}/{specimen}/{session}/i{k:02d}"``).

    Returns
    -------
    samples : list of Sample
        ``labels == {}``; ``params`` holds the crystal (``crystal_system``,
        ``class_index``, ``bravais``, lattice, basis), the session and the
        image parameters; ``modality`` is ``"spot"`` or ``"ring"``.
    specimen_params : dict
        The crystal (:meth:`Crystal.to_dict`).

    Notes
    -----
    Each *specimen* of the ``diffraction`` task is one crystal (lattice, centring, a
    few atoms in the basis, :func:`~grainflow.diffraction.crystal.random_crystal`),
    imaged in several *sessions* (a spot or a ring pattern, camera length, noise,
    beam stop), each image in a new orientation. Labels are free: the crystal
    system is a parameter (``params["crystal_system"]``, ``params["class_index"]``),
    and the images carry no label maps.
    """

    s = _settings(settings)
    index = specimen_index(specimen)
    system = SYSTEMS[index % len(SYSTEMS)]
    crystal = random_crystal(
        system, rng=np.random.default_rng(derive_seed(seed, "specimen", specimen)), settings=s
    )
    spec = crystal.to_dict()
    n_sessions, n_images = int(s["sessions_per_specimen"]), int(s["images_per_session"])
    bar = None
    if progress:
        bar = Progress(
            n_sessions * n_images, what=f"{task}/{specimen}: pattern", logger=logger, every_s=30
        )
    samples = []
    for b in range(n_sessions):
        session = f"b{b}"
        modality = s["modalities"][(index + b) % len(s["modalities"])]
        sess = _session_params(modality, s, np.random.default_rng(derive_seed(seed, "session", b)))
        for k in range(n_images):
            img_seed = derive_seed(seed, "image", b, k)
            extra = _image_params(
                crystal, modality, s, np.random.default_rng(derive_seed(img_seed, "p"))
            )
            params = {**spec, **sess, **extra}
            derived: dict = {}
            size = pattern_size(s, modality)
            image = render_pattern(params, shape=(size, size), seed=img_seed, info=derived)
            params.update(derived)  # the camera length the first order asked for
            samples.append(
                Sample(
                    image=image,
                    labels={},
                    image_id=f"{task}/{specimen}/{session}/i{k:02d}",
                    specimen=specimen,
                    session=session,
                    seed=img_seed,
                    modality=modality,
                    params=params,
                    original_id="",
                )
            )
            if bar is not None:
                bar.update()
    return samples, spec


def pretraining_samples(
    settings: Mapping,
    *,
    crystals: int,
    images_per_crystal: int,
    seed: int,
    progress: bool = False,
) -> list[Sample]:
    """A large labelled set for pretraining, from crystals of its own (none in the CV data).

    Crystal ``i`` is specimen ``"s{i:04d}"`` of task ``"pretrain"`` with the job's
    own ``seed``; its ``images_per_crystal`` patterns are spread over the
    settings' sessions (spot and ring).
    """
    if crystals < 1 or images_per_crystal < 1:
        raise ValueError(
            f"need crystals >= 1 and images_per_crystal >= 1, got {crystals=}, "
            f"{images_per_crystal=}"
        )
    s = _settings(settings)
    n_sessions = int(s["sessions_per_specimen"])
    per_session = max(1, math.ceil(images_per_crystal / n_sessions))
    s = {**s, "images_per_session": per_session}
    out: list[Sample] = []
    bar = None
    if progress:
        bar = Progress(crystals, what="pretraining crystal", logger=logger, every_s=30)
    for i in range(crystals):
        samples, _ = synthesize_diffraction_specimen(
            f"s{i:04d}", s, seed=derive_seed(seed, "crystal", i), task="pretrain"
        )
        out += samples[:images_per_crystal]
        if bar is not None:
            bar.update()
    return out
