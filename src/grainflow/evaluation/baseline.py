"""The classical baseline that the networks must beat: hand-set kernels put to work.

One pipeline per task (:func:`segment_grains`, :func:`segment_phases`) with a few
parameters, chosen on training images by the same summed counts that score the networks
(:func:`fit_baseline`) and applied by :func:`apply_baseline`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage import filters, morphology
from skimage.measure import label as connected_components
from skimage.segmentation import relabel_sequential, watershed
from sklearn.model_selection import ParameterGrid

from grainflow.evaluation.metrics import boundary_counts, pixel_counts
from grainflow.inference.labels import drop_small
from grainflow.synth.tessellation import boundary_mask
from grainflow.tasks import TASKS, check_task, segments_particles

__all__ = [
    "DEFAULTS",
    "THRESHOLDS",
    "edge_strength",
    "grains_from_strength",
    "segment_grains",
    "segment_phases",
    "particles_bright",
    "apply_baseline",
    "grid_scores",
    "fit_baseline",
    "best_params",
]


THRESHOLDS = {
    "otsu": filters.threshold_otsu,
    "li": filters.threshold_li,
    "yen": filters.threshold_yen,
    "triangle": filters.threshold_triangle,
    "mean": filters.threshold_mean,
}
EDGES = ("sobel", "log")
POLARITIES = ("auto", "bright", "dark")

#: Parameters of each pipeline and their defaults (the grid varies some of them).
DEFAULTS: dict[str, dict] = {
    "grains": {
        "sigma_px": 1.0,  # Gaussian smoothing / LoG scale, pixels
        "edge": "sobel",  # edge-strength kernel: "sobel" or "log"
        "threshold": "otsu",  # automatic threshold of the edge strength
        "threshold_offset": 0.0,  # added to the threshold, in standard deviations of the strength
        "marker_distance_px": 0.0,  # seeds lie farther than this from the thinned lines
        "min_grain_px": 16,  # seeds smaller than this are flooded by their neighbours
        "boundary_width_px": 2,  # width of the boundary map drawn from the grains
    },
    "phases": {
        "flatfield_sigma_px": 0.0,  # divide by a Gaussian blur of this scale (0 = off)
        "sigma_px": 1.0,  # Gaussian smoothing, pixels
        "threshold": "otsu",
        "threshold_offset": 0.0,  # in standard deviations of the smoothed image
        "polarity": "auto",  # particles are brighter, darker, or decided per image ("auto")
        "opening_radius_px": 1,  # binary opening with a disk of this radius (0 = off)
        "min_particle_px": 4,  # smaller particles are dropped
    },
}
DEFAULTS["nanoparticles"] = DEFAULTS["phases"]  # the same pipeline for particles on a support


def _check_task(task: str) -> None:
    check_task(task)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or min(image.shape) < 4:
        raise ValueError(f"image must be 2-D and at least 4x4 pixels, got {image.shape=}")
    if not np.all(np.isfinite(image)):
        raise ValueError("image holds NaN or infinite values")
    return image


def _params(task: str, params: Mapping | None) -> dict:
    """Defaults updated with ``params``; unknown names and bad values are errors."""
    _check_task(task)
    out = dict(DEFAULTS[task])
    unknown = set(params or {}) - set(out)
    if unknown:
        raise ValueError(
            f"unknown {task} baseline parameters {sorted(unknown)}; known: {sorted(out)}"
        )
    out.update(params or {})
    if out["threshold"] not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {sorted(THRESHOLDS)}, got {out['threshold']!r}")
    if out["sigma_px"] < 0:
        raise ValueError(f"sigma_px must be >= 0, got {out['sigma_px']=}")
    if task == "grains" and out["edge"] not in EDGES:
        raise ValueError(f"edge must be one of {EDGES}, got {out['edge']!r}")
    if segments_particles(task) and out["polarity"] not in POLARITIES:
        raise ValueError(f"polarity must be one of {POLARITIES}, got {out['polarity']!r}")
    return out


def _smooth(image: np.ndarray, sigma_px: float) -> np.ndarray:
    return filters.gaussian(image, sigma=sigma_px, preserve_range=True) if sigma_px > 0 else image


def _threshold(values: np.ndarray, method: str, offset_sd: float) -> float:
    if np.ptp(values) == 0:
        return float(values.flat[0])
    return float(THRESHOLDS[method](values)) + offset_sd * float(values.std())


# ---------------------------------------------------------------------------- grains


def edge_strength(image: np.ndarray, *, sigma_px: float = 1.0, edge: str = "sobel") -> np.ndarray:
    """Edge strength of a micrograph: high on grain boundaries.

    Parameters
    ----------
    image : ndarray of shape (M, N), float
    sigma_px : float
        Scale, pixels: Gaussian smoothing before the Sobel kernel, or the
        Laplacian-of-Gaussian scale.
    edge : {"sobel", "log"}
        ``"sobel"``: gradient magnitude (steps between grain tones, and both
        flanks of a boundary groove); ``"log"``: ``sigma² |∇²G * image|``,
        which peaks on thin dark or bright boundary lines.

    Returns
    -------
    strength : ndarray of shape (M, N), float32, >= 0
    """
    image = _check_image(image)
    if edge == "sobel":
        return filters.sobel(_smooth(image, sigma_px)).astype(np.float32)
    if edge == "log":
        s = max(sigma_px, 0.5)
        return (s**2 * np.abs(ndi.gaussian_laplace(image, s))).astype(np.float32)
    raise ValueError(f"edge must be one of {EDGES}, got {edge=}")


def grains_from_strength(
    strength: np.ndarray, params: Mapping | None = None
) -> dict[str, np.ndarray]:
    """Grains from an edge-strength map: threshold, thinning, seeds, watershed.

    Parameters
    ----------
    strength : ndarray of shape (M, N), float
        High on boundaries (:func:`edge_strength`).
    params : mapping, optional
        Any of ``DEFAULTS["grains"]`` (``sigma_px`` and ``edge`` are not used here).

    Returns
    -------
    labels : dict
        As :func:`segment_grains`.
    """
    p = _params("grains", params)
    mask = strength > _threshold(strength, p["threshold"], p["threshold_offset"])
    # thinning to one-pixel lines; padding first keeps lines that run into the image edge
    # from being shortened there (which would open a gap between two grains)
    pad = 4
    lines = morphology.skeletonize(np.pad(mask, pad, mode="edge"))[pad:-pad, pad:-pad]
    # seeds: pieces of the field farther than marker_distance_px from any line, so that a
    # gap in a boundary narrower than twice that distance does not merge two grains
    cores = ndi.distance_transform_edt(~lines) > float(p["marker_distance_px"])
    regions = drop_small(connected_components(cores, connectivity=1), int(p["min_grain_px"]))
    if regions.max() == 0:  # no closed region: the whole field is one grain
        regions = np.ones_like(regions)
    grains = watershed(strength, markers=regions, connectivity=1)
    grains = relabel_sequential(grains)[0].astype(np.uint32)
    width = int(p["boundary_width_px"])
    return {
        "grain_ids": grains,
        "boundaries": boundary_mask(grains, width_px=width).astype(np.uint8),
    }


def segment_grains(image: np.ndarray, params: Mapping | None = None) -> dict[str, np.ndarray]:
    """Grain map of a polycrystal micrograph by edge strength, threshold, thinning and watershed.

    Parameters
    ----------
    image : ndarray of shape (M, N), float in [0, 1]
    params : mapping, optional
        Any of ``DEFAULTS["grains"]``.

    Returns
    -------
    labels : dict
        ``grain_ids`` (uint32, 1..n, every pixel in a grain) and
        ``boundaries`` (uint8 0/1, ``boundary_width_px`` wide).

    Notes
    -----
    Gaussian smoothing, an edge-strength kernel (Sobel gradient magnitude, or the
    magnitude of the scale-normalised Laplacian of Gaussian), an automatic threshold,
    thinning to one-pixel lines, and a watershed of the edge strength into grains,
    seeded by the regions between the lines (or only their cores, farther than
    ``marker_distance_px`` from any line, which bridges short gaps in faint
    boundaries).
    """
    p = _params("grains", params)
    strength = edge_strength(image, sigma_px=p["sigma_px"], edge=p["edge"])
    return grains_from_strength(strength, p)


# ---------------------------------------------------------------------------- phases


def _flatfield(image: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px <= 0:
        return image
    background = filters.gaussian(image, sigma=sigma_px, preserve_range=True)
    return image / np.maximum(background, 1e-3) * float(background.mean())


def _particles_side(mask: np.ndarray) -> bool:
    """True if the foreground of ``mask`` looks like particles, not like the matrix.

    The matrix is connected: its largest connected piece holds most of it.
    Particles are many small pieces.
    """

    def largest_share(m):
        comp = connected_components(m, connectivity=1)
        if comp.max() == 0:
            return 0.0
        return np.bincount(comp.ravel())[1:].max() / m.sum()

    return largest_share(mask) <= largest_share(~mask)


def particles_bright(image: np.ndarray, *, sigma_px: float = 1.0) -> bool:
    """Whether the particles of a two-phase image are its brighter phase, from topology alone.

    The image, smoothed by ``sigma_px``, is split at its Otsu threshold; the side that
    falls into many small pieces is the particles, the side whose largest piece holds
    most of it the matrix (the classical baseline's ``polarity: auto``). Label-free; it
    fails where a third region (a vacuum, a support) takes one side of the threshold.
    """
    smooth = _smooth(_check_image(image), sigma_px)
    return _particles_side(smooth > _threshold(smooth, "otsu", 0.0))


def segment_phases(image: np.ndarray, params: Mapping | None = None) -> dict[str, np.ndarray]:
    """Particle (precipitate) map of a two-phase micrograph by thresholding and morphology.

    Parameters
    ----------
    image : ndarray of shape (M, N), float in [0, 1]
    params : mapping, optional
        Any of ``DEFAULTS["phases"]``.

    Returns
    -------
    labels : dict
        ``phase`` (uint8, 1 = particle) and ``particle_ids`` (uint32, 0 = matrix,
        one id per 4-connected particle).

    Notes
    -----
    Optional flat-field correction, Gaussian smoothing, an automatic threshold, the
    choice of which side of it is the particle phase, then morphological opening and
    size filtering.
    """
    p = _params("phases", params)
    image = _flatfield(_check_image(image), p["flatfield_sigma_px"])
    smooth = _smooth(image, p["sigma_px"])
    bright = smooth > _threshold(smooth, p["threshold"], p["threshold_offset"])
    if p["polarity"] == "bright":
        mask = bright
    elif p["polarity"] == "dark":
        mask = ~bright
    else:
        mask = bright if _particles_side(bright) else ~bright
    r = int(p["opening_radius_px"])
    if r > 0:
        mask = morphology.opening(mask, morphology.disk(r))
    ids = drop_small(connected_components(mask, connectivity=1), int(p["min_particle_px"]))
    ids = relabel_sequential(ids)[0].astype(np.uint32)
    return {"phase": (ids > 0).astype(np.uint8), "particle_ids": ids}


# ------------------------------------------------------------------------ public API


def apply_baseline(
    task: str, image: np.ndarray, params: Mapping | None = None
) -> dict[str, np.ndarray]:
    """Segment one image with the classical pipeline of ``task``.

    Parameters
    ----------
    task : {"grains", "phases", "nanoparticles"}
    image : ndarray of shape (M, N), float in [0, 1]
    params : mapping, optional
        Pipeline parameters (see :data:`DEFAULTS`), e.g. from :func:`fit_baseline`.

    Returns
    -------
    labels : dict of str -> ndarray of shape (M, N)
        The keys of the synthetic labels: grains -> ``grain_ids``, ``boundaries``;
        phases -> ``phase``, ``particle_ids``.
    """
    _check_task(task)
    if task == "grains":
        return segment_grains(image, params)
    return segment_phases(image, params)


def _score_grid(task, images, labels, candidates, tolerance_px):
    """Summed counts of every candidate over all images -> list of scores."""
    if task == "grains":
        totals = [0] * len(candidates)
        for image, lab in zip(images, labels):
            cache: dict[tuple, np.ndarray] = {}
            for k, p in enumerate(candidates):
                key = (p["sigma_px"], p["edge"])
                if key not in cache:
                    cache[key] = edge_strength(image, sigma_px=p["sigma_px"], edge=p["edge"])
                pred = grains_from_strength(cache[key], p)
                totals[k] = totals[k] + boundary_counts(
                    lab["boundaries"], pred["boundaries"], tolerance_px=tolerance_px
                )
        return [c.f1 for c in totals], totals
    totals = [0] * len(candidates)
    for image, lab in zip(images, labels):
        for k, p in enumerate(candidates):
            pred = segment_phases(image, p)
            totals[k] = totals[k] + pixel_counts(lab["phase"] > 0, pred["phase"])
    return [float(c.iou()[1]) for c in totals], totals


def grid_scores(
    task: str,
    images: Sequence[np.ndarray],
    labels: Sequence[Mapping[str, np.ndarray]],
    *,
    grid: Mapping[str, Sequence],
    tolerance_px: float = 2.0,
) -> pd.DataFrame:
    """Score every parameter combination of ``grid`` on training images.

    Parameters
    ----------
    task : {"grains", "phases", "nanoparticles"}
    images : sequence of ndarray of shape (M, N)
        Training images only.
    labels : sequence of dict
        Their synthetic labels (grains: ``boundaries``; phases: ``phase``).
    grid : mapping of str -> sequence
        Values to try for each parameter; parameters not named keep their
        defaults (:data:`DEFAULTS`).
    tolerance_px : float
        Boundary-F1 tolerance (grains).

    Returns
    -------
    scores : DataFrame
        One row per combination, in grid order: the parameters and ``score``
        (boundary F1 or particle-phase IoU of the counts summed over images).
    """
    _check_task(task)
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(
            f"need as many label dicts as images (at least one), got {len(images)} images "
            f"and {len(labels)} labels"
        )
    key = TASKS[task].target
    for i, lab in enumerate(labels):
        if key not in lab:
            raise ValueError(f"labels[{i}] lacks {key!r}; it has {sorted(lab)}")
    grid = {k: list(v) for k, v in grid.items()}
    for name, values in grid.items():
        if not values:
            raise ValueError(f"grid entry {name!r} has no values")
    candidates = [_params(task, p) for p in ParameterGrid(grid)] if grid else [_params(task, None)]
    scores, _ = _score_grid(task, images, labels, candidates, tolerance_px)
    table = pd.DataFrame(candidates)
    table["score"] = scores
    return table


def fit_baseline(
    task: str,
    images: Sequence[np.ndarray],
    labels: Sequence[Mapping[str, np.ndarray]],
    *,
    grid: Mapping[str, Sequence],
    tolerance_px: float = 2.0,
) -> dict:
    """Choose the baseline's parameters on training images.

    Maximises the boundary F1 (grains) or the particle-phase IoU (phases) of
    the counts summed over ``images``; ties go to the first combination in
    grid order. See :func:`grid_scores` for the arguments.

    Returns
    -------
    params : dict
        The full parameter set (defaults filled in) for :func:`apply_baseline`.
    """
    return best_params(grid_scores(task, images, labels, grid=grid, tolerance_px=tolerance_px))


def best_params(scores: pd.DataFrame) -> dict:
    """The parameters of the best row of a :func:`grid_scores` table (first of ties)."""
    values = scores["score"].fillna(-np.inf).to_numpy()
    best = scores.drop(columns="score").iloc[int(np.argmax(values))].to_dict()
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in best.items()}
