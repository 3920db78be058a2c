"""Deterministic offline augmentation of images together with their labels.

Each augmented copy applies a short chain of transforms (:data:`TRANSFORMS`), in a fixed
physical order, to the image and, for the geometric ones, to its labels; the recorded chain
replays the copy exactly (:func:`apply_transform`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as connected_label

from grainflow.io.hdf5 import Sample, SpecimenFile, read_specimen, write_specimen
from grainflow.seeds import as_rng
from grainflow.synth.imaging import shift_rows
from grainflow.synth.tessellation import boundary_mask

__all__ = [
    "TRANSFORMS",
    "GEOMETRIC",
    "AugmentSettings",
    "sample_transform",
    "apply_transform",
    "augment_sample",
    "augment_specimen",
    "augment_file",
    "describe_transform",
    "augmentation_figure",
]

#: All transforms, in the order in which a chain applies them.
TRANSFORMS = (
    "dihedral",
    "rotate",
    "zoom",
    "elastic",
    "gamma",
    "contrast",
    "brightness_drift",
    "blur",
    "scan_jitter",
    "poisson_noise",
    "gaussian_noise",
)
#: Transforms that move pixels (and therefore labels).
GEOMETRIC = frozenset({"dihedral", "rotate", "zoom", "elastic", "scan_jitter"})
FILLS = ("reflect", "constant", "nearest")
# scipy "constant" (not "grid-constant"): a sample outside the pixel centres gets the fill
# value outright, for the image and the labels alike, so their edges coincide
_SCIPY_MODE = {"reflect": "reflect", "constant": "constant", "nearest": "nearest"}


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges from which each transform draws its parameters (the config's ``augment`` block).

    Intensities are in image units (the image is in [0, 1]); lengths in pixels.
    """

    fill: str = "reflect"  # pixels from outside the image: reflect | constant | nearest
    fill_value: float = 0.0  # image value for fill="constant" (labels get 0)
    rotate_max_deg: float = 180.0  # rotate: angle uniform in [-max, max] degrees
    zoom_max: float = 2.0  # zoom: magnification log-uniform in [1, zoom_max]
    elastic_alpha_px: float = 3.0  # elastic: largest displacement, drawn in [alpha/2, alpha] px
    elastic_sigma_px: float = 10.0  # elastic: smoothness (Gaussian sigma of the field) in px
    gamma_max: float = 1.5  # gamma: exponent log-uniform in [1/gamma_max, gamma_max]
    contrast_min: float = 0.7  # contrast: factor about the mean, uniform in [min, max]
    contrast_max: float = 1.3
    drift_max: float = 0.1  # brightness_drift: end-to-end ramp amplitude, |a| <= drift_max
    blur_sigma_max_px: float = 1.0  # blur: sigma uniform in [max/4, max] px
    jitter_px: float = 0.7  # scan_jitter: std of the per-line shift in px (rounded to whole px)
    poisson_counts_min: float = 20.0  # poisson_noise: counts per unit intensity, log-uniform
    poisson_counts_max: float = 200.0
    noise_sigma_max: float = 0.05  # gaussian_noise: std uniform in [max/4, max]

    def __post_init__(self):
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill=}")
        checks = {
            "rotate_max_deg": 0 <= self.rotate_max_deg <= 180,
            "zoom_max": 1 <= self.zoom_max <= 8,
            "elastic_alpha_px": self.elastic_alpha_px >= 0,
            "elastic_sigma_px": self.elastic_sigma_px > 0,
            "gamma_max": self.gamma_max >= 1,
            "contrast_min": 0 < self.contrast_min <= self.contrast_max,
            "drift_max": 0 <= self.drift_max <= 1,
            "blur_sigma_max_px": self.blur_sigma_max_px >= 0,
            "jitter_px": self.jitter_px >= 0,
            "poisson_counts_min": 0 < self.poisson_counts_min <= self.poisson_counts_max,
            "noise_sigma_max": self.noise_sigma_max >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                value = getattr(self, name)
                raise ValueError(f"augment setting {name} is out of range, got {value!r}")

    @classmethod
    def from_mapping(cls, mapping: Mapping | None) -> AugmentSettings:
        """Settings from a config mapping; keys that are not settings are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (mapping or {}).items() if k in names})


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**63 - 1))


def sample_transform(name: str, shape: tuple[int, int], *, settings: AugmentSettings, rng) -> dict:
    """Draw the parameters of one transform.

    Parameters
    ----------
    name : str
        One of :data:`TRANSFORMS`.
    shape : tuple of int (H, W)
        Image shape in pixels (odd quarter turns are drawn only if H == W).
    settings : AugmentSettings
    rng : int or Generator

    Returns
    -------
    params : dict
        JSON-serialisable parameters; random fields carry their own ``seed``.
    """
    rng = as_rng(rng)
    s = settings
    if name == "dihedral":
        square = shape[0] == shape[1]
        choices = [
            (k, f)
            for k in range(4)
            for f in (False, True)
            if (k, f) != (0, False) and (square or k % 2 == 0)
        ]
        k, flip = choices[int(rng.integers(len(choices)))]
        return {"quarter_turns": k, "flip": flip}
    if name == "rotate":
        angle = float(rng.uniform(-s.rotate_max_deg, s.rotate_max_deg))
        return {"angle_deg": angle, "fill": s.fill, "fill_value": float(s.fill_value)}
    if name == "zoom":
        factor = float(np.exp(rng.uniform(0.0, np.log(s.zoom_max))))
        return {
            "factor": factor,
            # top left corner of the magnified window, within the image
            "origin_px": [float(rng.uniform(0.0, n - n / factor)) for n in shape],
        }
    if name == "elastic":
        return {
            "alpha_px": float(rng.uniform(0.5, 1.0) * s.elastic_alpha_px),
            "sigma_px": float(s.elastic_sigma_px),
            "fill": s.fill,
            "fill_value": float(s.fill_value),
            "seed": _seed(rng),
        }
    if name == "gamma":
        lg = np.log(s.gamma_max)
        return {"gamma": float(np.exp(rng.uniform(-lg, lg)))}
    if name == "contrast":
        return {"factor": float(rng.uniform(s.contrast_min, s.contrast_max))}
    if name == "brightness_drift":
        return {
            "amplitude": float(rng.uniform(-s.drift_max, s.drift_max)),
            "angle_deg": float(rng.uniform(0, 360)),
        }
    if name == "blur":
        return {"sigma_px": float(rng.uniform(0.25, 1.0) * s.blur_sigma_max_px)}
    if name == "scan_jitter":
        return {"jitter_px": float(s.jitter_px), "seed": _seed(rng)}
    if name == "poisson_noise":
        lo, hi = np.log(s.poisson_counts_min), np.log(s.poisson_counts_max)
        return {"counts": float(np.exp(rng.uniform(lo, hi))), "seed": _seed(rng)}
    if name == "gaussian_noise":
        return {"sigma": float(rng.uniform(0.25, 1.0) * s.noise_sigma_max), "seed": _seed(rng)}
    raise ValueError(f"transform must be one of {TRANSFORMS}, got {name=}")


# --- geometric helpers -------------------------------------------------------------------


def _remap(image, labels, coords, *, fill, fill_value):
    """Resample image (order 1) and labels (order 0) at ``coords`` of shape (2, H, W)."""
    mode = _SCIPY_MODE[fill]
    out = ndi.map_coordinates(image.astype(np.float64), coords, order=1, mode=mode, cval=fill_value)
    new = {
        name: ndi.map_coordinates(arr, coords, order=0, mode=mode, cval=0)
        for name, arr in labels.items()
    }
    return out, new


def _rotation_coords(shape, angle_deg):
    """Source coordinates of a counter-clockwise (on screen) rotation about the centre."""
    rows, cols = shape
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float64)
    cr, cc = (rows - 1) / 2, (cols - 1) / 2
    t = np.deg2rad(angle_deg)
    # rows point down: with angle_deg=90 this is np.rot90 (the pixel below the centre
    # moves to its right)
    dr, dc = r - cr, c - cc
    src_r = cr + np.cos(t) * dr + np.sin(t) * dc
    src_c = cc - np.sin(t) * dr + np.cos(t) * dc
    return np.stack([src_r, src_c])


def _zoom_coords(shape, *, factor, origin_px):
    """Source coordinates of a window of ``shape / factor`` pixels from ``origin_px`` (its
    top left corner), magnified to ``shape`` (pixel centres at ``i + 0.5``)."""
    axes = [o + (np.arange(n) + 0.5) / factor - 0.5 for n, o in zip(shape, origin_px)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def _elastic_coords(shape, *, alpha_px, sigma_px, seed):
    rng = np.random.default_rng(seed)
    field = np.stack(
        [
            ndi.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="reflect")
            for _ in range(2)
        ]
    )
    peak = np.abs(field).max()
    field *= alpha_px / peak if peak > 0 else 0.0
    grid = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    return grid + field


def _jitter_shifts(rows, *, jitter_px, seed):
    rng = np.random.default_rng(seed)
    return np.rint(rng.normal(0.0, jitter_px, rows)).astype(int)


def _boundary_width(labels: Mapping[str, np.ndarray]) -> int | None:
    """Width with which ``boundaries`` was made from ``grain_ids``, or None."""
    if "boundaries" not in labels or "grain_ids" not in labels:
        return None
    target = labels["boundaries"].astype(bool)
    for width in range(1, 16):
        if np.array_equal(boundary_mask(labels["grain_ids"], width_px=width), target):
            return width
    return None


def _tidy_labels(labels: dict, width: int | None) -> dict:
    """Renumber instance maps into 4-connected pieces; recompute boundaries if known."""
    out = {}
    for name, arr in labels.items():
        if name.endswith("_ids"):
            out[name] = connected_label(arr, background=0, connectivity=1).astype(arr.dtype)
        else:
            out[name] = arr
    if width is not None:
        out["boundaries"] = boundary_mask(out["grain_ids"], width_px=width).astype(
            labels["boundaries"].dtype
        )
    return out


# --- one transform -----------------------------------------------------------------------


def _apply_one(name, params, image, labels, width):
    """Apply one transform. ``image`` float64 (H, W); returns (image, labels)."""
    p = params
    if name == "dihedral":

        def f(a):
            a = np.rot90(a, int(p["quarter_turns"]))
            return np.ascontiguousarray(a[:, ::-1] if p["flip"] else a)

        return f(image), {k: f(v) for k, v in labels.items()}
    if name == "zoom":
        coords = _zoom_coords(image.shape, factor=p["factor"], origin_px=p["origin_px"])
        image, new = _remap(image, labels, coords, fill="nearest", fill_value=0.0)
        return image, _tidy_labels(new, width)
    if name in ("rotate", "elastic"):
        if name == "rotate":
            coords = _rotation_coords(image.shape, p["angle_deg"])
        else:
            coords = _elastic_coords(
                image.shape, alpha_px=p["alpha_px"], sigma_px=p["sigma_px"], seed=p["seed"]
            )
        image, new = _remap(image, labels, coords, fill=p["fill"], fill_value=p["fill_value"])
        return image, _tidy_labels(new, width)
    if name == "scan_jitter":
        shifts = _jitter_shifts(image.shape[0], jitter_px=p["jitter_px"], seed=p["seed"])
        new = {k: shift_rows(v, shifts) for k, v in labels.items()}
        return shift_rows(image, shifts), _tidy_labels(new, width)
    # photometric: labels untouched
    if name == "gamma":
        image = np.clip(image, 0, 1) ** p["gamma"]
    elif name == "contrast":
        m = image.mean()
        image = m + p["factor"] * (image - m)
    elif name == "brightness_drift":
        rows, cols = image.shape
        r = np.arange(rows)[:, None] / max(rows - 1, 1) - 0.5
        c = np.arange(cols)[None, :] / max(cols - 1, 1) - 0.5
        t = np.deg2rad(p["angle_deg"])
        image = image + p["amplitude"] * (np.cos(t) * c - np.sin(t) * r)
    elif name == "blur":
        image = ndi.gaussian_filter(image, p["sigma_px"], mode="reflect")
    elif name == "poisson_noise":
        rng = np.random.default_rng(p["seed"])
        image = rng.poisson(np.clip(image, 0, None) * p["counts"]) / p["counts"]
    elif name == "gaussian_noise":
        rng = np.random.default_rng(p["seed"])
        image = image + rng.normal(0.0, p["sigma"], image.shape)
    else:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {name=}")
    return np.clip(image, 0.0, 1.0), labels


def apply_transform(
    image: np.ndarray, labels: Mapping[str, np.ndarray], transform: Mapping
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Apply a recorded transform chain to an image and its labels.

    Parameters
    ----------
    image : ndarray of shape (H, W), float in [0, 1]
    labels : dict of str -> ndarray of shape (H, W)
        Integer label maps; they are resampled with nearest-neighbour interpolation.
    transform : dict
        ``{"name": "a+b", "ops": [{"name": "a", "params": {...}}, ...]}`` as recorded in
        :attr:`grainflow.io.hdf5.Sample.transform`; ``{}`` is the identity.

    Returns
    -------
    image : ndarray of shape (H, W), float32 in [0, 1]
    labels : dict of str -> ndarray of shape (H, W), same dtypes as the input

    Notes
    -----
    A chain applies its transforms in the order of :data:`TRANSFORMS`:

    1. geometric, to the image *and* its labels: ``dihedral`` (one of the seven
       non-identity flips/rotations by multiples of 90°; the odd rotations only for
       square images, so the shape never changes), ``rotate`` (an arbitrary angle about
       the image centre: physical for diffraction patterns and for a specimen turned on
       the stage), ``zoom`` (a window of 1/``factor`` of the image, magnified to fill it,
       noise and blur included: the same specimen imaged at a finer pixel than the
       microscope resolves, as large particles in an oversampled micrograph look; a
       ``boundaries`` map keeps its width), ``elastic`` (a smooth random displacement field, Gaussian-filtered
       white noise scaled so that its largest component is ``alpha_px`` pixels);
    2. photometric, to the image only: ``gamma``, ``contrast`` (about the image mean),
       ``brightness_drift`` (a linear ramp in a random direction), ``blur`` (Gaussian
       point-spread function);
    3. the scan and detector, last, as in the microscope: ``scan_jitter`` (each scan
       line shifted by a whole number of pixels, image and labels alike, the edge value
       repeated as in :func:`grainflow.synth.imaging.shift_rows`), ``poisson_noise``
       (shot noise at a dose in counts per unit intensity), ``gaussian_noise`` (read
       noise).

    The image is resampled with order 1 (bilinear), label maps with order 0 (nearest
    neighbour) through the same coordinates, so labels never take values that are not in
    the original. Pixels from outside the image (``rotate``, ``elastic``) are filled by
    ``fill="reflect"`` (scipy's half-sample mirror, labels mirrored the same way),
    ``"nearest"`` (the edge pixel repeated) or ``"constant"`` (image ``fill_value``,
    labels 0 = "no label"; physical for diffraction patterns, whose background is dark;
    the edge of the filled region then counts as a grain boundary, as it is an edge in
    the image too).

    After a resampling transform, instance maps (names ending in ``_ids``) are
    renumbered so that every 4-connected piece has its own id (a mirrored copy of a
    grain is a separate grain), and a ``boundaries`` map made from ``grain_ids`` by
    :func:`grainflow.synth.tessellation.boundary_mask` is recomputed from the
    transformed ``grain_ids`` with the same width; if the width cannot be recognised,
    the boundary map is resampled with order 0 instead.

    Every transform is a pure function of the image, the labels and its parameters
    (random fields carry their own seed), so a copy's record, e.g.
    ``{"name": "elastic+gamma", "ops": [{"name": "elastic", "params": {...}},
    {"name": "gamma", "params": {...}}]}``, reproduces it exactly.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got {image.shape=}")
    for name, arr in labels.items():
        if arr.shape != image.shape:
            raise ValueError(f"label {name!r} has shape {arr.shape}, image has {image.shape}")
    ops = list(transform.get("ops", []))
    width = _boundary_width(labels) if any(op["name"] in GEOMETRIC for op in ops) else None
    out = image.astype(np.float64)
    new = dict(labels)
    for op in ops:
        out, new = _apply_one(op["name"], op["params"], out, new, width)
    dtypes = {k: v.dtype for k, v in labels.items()}
    return out.astype(np.float32), {k: v.astype(dtypes[k], copy=False) for k, v in new.items()}


def describe_transform(transform: Mapping) -> str:
    """A short human-readable summary, e.g. ``"rotate 37°, gamma 0.82"``."""
    if not transform.get("ops"):
        return "original"
    units = {
        "dihedral": lambda p: f"rot {90 * p['quarter_turns']}°" + (" + flip" if p["flip"] else ""),
        "rotate": lambda p: f"rotate {p['angle_deg']:.0f}°",
        "zoom": lambda p: f"zoom ×{p['factor']:.2f}",
        "elastic": lambda p: f"elastic {p['alpha_px']:.1f} px",
        "gamma": lambda p: f"gamma {p['gamma']:.2f}",
        "contrast": lambda p: f"contrast ×{p['factor']:.2f}",
        "brightness_drift": lambda p: f"drift {p['amplitude']:+.2f}",
        "blur": lambda p: f"blur {p['sigma_px']:.1f} px",
        "scan_jitter": lambda p: f"jitter {p['jitter_px']:.1f} px",
        "poisson_noise": lambda p: f"shot noise {p['counts']:.0f} counts",
        "gaussian_noise": lambda p: f"noise σ {p['sigma']:.3f}",
    }
    return ", ".join(units[op["name"]](op["params"]) for op in transform["ops"])


# --- samples and specimens ---------------------------------------------------------------


def _check_names(transforms: Sequence[str]) -> list[str]:
    names = list(transforms)
    unknown = [t for t in names if t not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown transforms {unknown}; choose from {list(TRANSFORMS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"transforms must not repeat, got {names=}")
    return names


def augment_sample(
    sample: Sample,
    *,
    copies: int,
    transforms: Sequence[str],
    rng,
    ops_per_copy: int = 2,
    settings: AugmentSettings | None = None,
) -> list[Sample]:
    """Augmented copies of one original image (the original itself is not included).

    Parameters
    ----------
    sample : Sample
        An original (its ``image_id`` becomes the copies' ``original_id``).
    copies : int
        Number of copies, >= 0.
    transforms : sequence of str
        Names from :data:`TRANSFORMS` that copies may use.
    rng : int or Generator
    ops_per_copy : int
        Transforms chained in each copy, drawn without repetition from ``transforms``
        (capped at ``len(transforms)``) and applied in the order of :data:`TRANSFORMS`.
    settings : AugmentSettings, optional

    Returns
    -------
    copies : list of Sample
        ``image_id`` = ``f"{original_id}/a{k:02d}"``; ``seed`` = the copy's own seed;
        ``transform`` = the chain that :func:`apply_transform` replays.
    """
    names = _check_names(transforms)
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies=}")
    if copies and not names:
        raise ValueError(f"{copies=} augmented copies need at least one transform")
    if ops_per_copy < 1:
        raise ValueError(f"ops_per_copy must be >= 1, got {ops_per_copy=}")
    settings = settings or AugmentSettings()
    rng = as_rng(rng)
    original_id = sample.original_id or sample.image_id
    order = {n: i for i, n in enumerate(TRANSFORMS)}
    out = []
    for k in range(copies):
        seed = _seed(rng)
        crng = np.random.default_rng(seed)
        chosen = crng.choice(len(names), size=min(ops_per_copy, len(names)), replace=False)
        chain = sorted((names[i] for i in chosen), key=order.__getitem__)
        ops = [
            {
                "name": n,
                "params": sample_transform(n, sample.image.shape, settings=settings, rng=crng),
            }
            for n in chain
        ]
        transform = {"name": "+".join(chain), "ops": ops}
        image, labels = apply_transform(sample.image, sample.labels, transform)
        out.append(
            replace(
                sample,
                image=image,
                labels=labels,
                image_id=f"{original_id}/a{k:02d}",
                seed=seed,
                params=dict(sample.params),
                original_id=original_id,
                transform=transform,
            )
        )
    return out


def augment_specimen(
    specimen_file: SpecimenFile | str | os.PathLike,
    *,
    copies: int,
    transforms: Sequence[str],
    rng,
    ops_per_copy: int = 2,
    settings: AugmentSettings | Mapping | None = None,
) -> list[Sample]:
    """The originals of a specimen, each followed by its augmented copies.

    Parameters
    ----------
    specimen_file : SpecimenFile or path
        A synthetic specimen, as read by :func:`grainflow.io.hdf5.read_specimen`.
    copies : int
        Augmented copies per original image.
    transforms : sequence of str
        Names from :data:`TRANSFORMS`.
    rng : int or Generator
        The job's seed; each original gets its own stream, so the result depends only on
        the seed and the file.
    ops_per_copy : int
        Transforms chained in each copy.
    settings : AugmentSettings or mapping, optional
        Parameter ranges (the config's ``augment`` block).

    Returns
    -------
    samples : list of Sample
        ``len(originals) * (1 + copies)`` samples. Originals keep their image, labels and
        seed, with ``original_id == image_id`` and ``transform == {}``.
    """
    if not isinstance(specimen_file, SpecimenFile):
        specimen_file = read_specimen(specimen_file)
    if not isinstance(settings, AugmentSettings):
        settings = AugmentSettings.from_mapping(settings)
    _check_names(transforms)
    originals = [
        s for s in specimen_file.samples if not s.original_id or s.original_id == s.image_id
    ]
    if len(originals) != len(specimen_file.samples):
        raise ValueError(
            f"specimen {specimen_file.specimen!r} already holds augmented copies; "
            "augment the synthetic file, not an augmented one"
        )
    streams = as_rng(rng).spawn(len(originals))
    out = []
    for sample, stream in zip(originals, streams):
        out.append(replace(sample, original_id=sample.image_id, transform={}))
        out.extend(
            augment_sample(
                sample,
                copies=copies,
                transforms=transforms,
                rng=stream,
                ops_per_copy=ops_per_copy,
                settings=settings,
            )
        )
    return out


def augment_file(
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    copies: int,
    transforms: Sequence[str],
    seed: int,
    ops_per_copy: int = 2,
    settings: AugmentSettings | Mapping | None = None,
) -> int:
    """Augment the specimen file ``source`` and write originals + copies to ``target``.

    The output is written atomically by :func:`grainflow.io.hdf5.write_specimen` and keeps
    the task, specimen and specimen parameters of the source. Returns the number of
    images written.
    """
    sf = read_specimen(source)
    samples = augment_specimen(
        sf,
        copies=copies,
        transforms=transforms,
        rng=seed,
        ops_per_copy=ops_per_copy,
        settings=settings,
    )
    write_specimen(
        target, samples, task=sf.task, specimen=sf.specimen, specimen_params=sf.specimen_params
    )
    return len(samples)


def augmentation_figure(
    samples: Sequence[Sample], *, original_id: str | None = None, columns: int = 4
):
    """One original image and its augmented copies, with its labels outlined.

    Parameters
    ----------
    samples : sequence of Sample
        Originals and copies, as :func:`augment_specimen` returns or an augmented file holds.
    original_id : str, optional
        Which original to show (default: the first).
    columns : int
        Panels per row.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Each panel shows the image (grey, intensity 0 to 1) with the outlines of its
        label map in red (``grain_ids`` or ``phase``), titled with its transform; the
        outlines lying on the image's edges in every panel is the alignment check.
    """
    from matplotlib.figure import Figure
    from skimage.segmentation import find_boundaries

    if not samples:
        raise ValueError("no samples to show")
    if original_id is None:
        original_id = samples[0].original_id or samples[0].image_id
    group = [s for s in samples if s.image_id == original_id or s.original_id == original_id]
    group.sort(key=lambda s: (s.image_id != original_id, s.image_id))
    if not group:
        raise ValueError(f"no image {original_id!r} among the samples")
    n = len(group)
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    fig = Figure(figsize=(2.3 * cols, 2.5 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, s in zip(axes, group):
        ax.imshow(s.image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        name = next((k for k in ("grain_ids", "phase", "particle_ids") if k in s.labels), None)
        if name is not None:
            edges = find_boundaries(s.labels[name], mode="inner")
            overlay = np.zeros((*edges.shape, 4))
            overlay[edges] = (1.0, 0.1, 0.1, 0.55)
            ax.imshow(overlay, interpolation="nearest")
        text = describe_transform(s.transform) if s.image_id != original_id else "original"
        ax.set_title(text.replace(", ", "\n"), fontsize=7)
        ax.set_axis_off()
    for ax in axes[n:]:
        ax.set_axis_off()
    h, w = group[0].image.shape
    fig.suptitle(
        f"{original_id}: {n - 1} augmented copies ({h} × {w} px; red: label outlines)", fontsize=9
    )
    return fig
