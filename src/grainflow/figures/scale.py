"""Figure of physical scale: crops of a real stack, as the networks read them, beside
synthetic training images at the same size in network pixels."""

from __future__ import annotations

import dataclasses
import errno
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from grainflow.inference.scale import feature_length_px, read_scale
from grainflow.inference.stack import open_source
from grainflow.io.hdf5 import Sample, read_specimen
from grainflow.normalize import DEFAULT_PERCENTILES, percentile_limits, plane_limits

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["crop_windows", "pick_synthetic", "synthetic_beside_real", "beside_real_headline"]


def crop_windows(
    shapes: Sequence[tuple[int, int]], *, n: int, size: int
) -> list[tuple[int, slice, slice]]:
    """Where to cut ``n`` crops of ``size`` x ``size`` pixels from a stack's planes.

    Parameters
    ----------
    shapes : sequence of (int, int)
        Each plane's own (rows, cols) at the level read (padding excluded).
    n : int
        Number of crops.
    size : int
        Side of a crop, pixels.

    Returns
    -------
    windows : list of (int, slice, slice)
        ``(plane, rows, cols)``: the planes evenly spaced through the stack (first
        and last included); a plane cut more than once gives crops spread along its
        diagonal, one cut once its centre crop. A plane smaller than ``size`` gives
        a crop of the whole plane in that direction.
    """
    if n < 1 or size < 1:
        raise ValueError(f"n and size must be positive, got {n=}, {size=}")
    if not shapes:
        raise ValueError("the stack has no planes")
    planes = [int(round(x)) for x in np.linspace(0, len(shapes) - 1, n)]
    windows = []
    for i, z in enumerate(planes):
        k, m = planes[:i].count(z), planes.count(z)
        t = (k + 1) / (m + 1)  # 1/2 for one crop; 1/4, 1/2, 3/4 for three
        rows, cols = shapes[z]
        r0, c0 = round(t * max(0, rows - size)), round(t * max(0, cols - size))
        windows.append((z, slice(r0, r0 + min(size, rows)), slice(c0, c0 + min(size, cols))))
    return windows


def pick_synthetic(
    specimens: Sequence[str | os.PathLike], *, n: int, modality: str | None = None
) -> list[Sample]:
    """``n`` synthetic images, the modalities taking turns, each from another specimen if it can.

    Parameters
    ----------
    specimens : sequence of path-like
        Specimen files (:func:`grainflow.io.hdf5.read_specimen`).
    n : int
        Number of images.
    modality : str, optional
        Only images of this modality (``sample.modality``).

    Returns
    -------
    samples : list of Sample
        At most ``n``: fewer when the files hold fewer (of ``modality``).

    Notes
    -----
    The first image of every file is read first (one image each, so the files'
    other images are never read when there are enough files); the rest of the
    files only when that gives fewer than ``n``.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n=}")
    by_modality: dict[str, list[Sample]] = {}
    for whole in (False, True):
        for path in specimens:
            samples = read_specimen(path, indices=None if whole else [0]).samples
            for s in samples[1:] if whole else samples:
                if modality is None or s.modality == modality:
                    by_modality.setdefault(s.modality, []).append(s)
        if sum(map(len, by_modality.values())) >= n:
            break
    turns = [by_modality[m] for m in sorted(by_modality)]
    picked = []
    for i in range(max(map(len, turns), default=0)):
        picked += [t[i] for t in turns if i < len(t)]
    return picked[:n]


class _OwnPart:
    """Plane ``z`` of a (Z, Y, X) array cut to its own (rows, cols), read only when sliced."""

    def __init__(self, array, z: int, rows: int, cols: int):
        self.array, self.z, self.shape = array, z, (rows, cols)

    def __getitem__(self, key):
        rows, cols = key
        return self.array[self.z, rows, cols]


def _nice_length(limit: float) -> float:
    """The largest 1, 2 or 5 x 10**k not above ``limit``."""
    power = 10 ** math.floor(math.log10(limit))
    return max(f * power for f in (1, 2, 5) if f * power <= limit)


def _scale_bar(ax, *, um_per_px: float, width_px: int) -> None:
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    um = _nice_length(0.3 * width_px * um_per_px)
    bar = AnchoredSizeBar(
        ax.transData,
        um / um_per_px,
        f"{um:g} µm",
        "lower right",
        pad=0.2,
        borderpad=0.3,
        color="white",
        frameon=True,
        size_vertical=max(1.0, width_px / 80),
        fontproperties=FontProperties(size=7),
    )
    bar.patch.set(facecolor="black", edgecolor="none", alpha=0.55)  # legible on any grey
    ax.add_artist(bar)


def synthetic_beside_real(
    stack: str | os.PathLike,
    specimens: Sequence[str | os.PathLike],
    *,
    scale: Mapping | None = None,
    n_real: int = 3,
    n_synthetic: int = 3,
    crop_px: int | None = None,
    modality: str | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> Figure:
    """Crops of a real stack at the level the networks read it, beside synthetic images.

    Top row: ``n_real`` crops of the stack's planes (:func:`crop_windows`) at the
    pyramid level of ``scale``, with a scale bar in µm where the pixel size is
    known (pixel size x ``2 ** level``). Bottom row: ``n_synthetic`` synthetic
    training images (:func:`pick_synthetic`). Every crop is ``crop_px`` x ``crop_px``
    network pixels drawn at the same magnification, so features of the same size
    in network pixels look the same size. Grey levels are those the networks get:
    each real plane's and each synthetic image's own ``percentiles`` map to black
    and white (:mod:`grainflow.normalize`; the limits of a real plane are those of
    inference, over the plane's own part at that level). Titles give each crop's
    feature length (:func:`grainflow.inference.scale.feature_length_px`), the
    suptitle those of ``scale`` where it has them.

    Parameters
    ----------
    stack : path-like
        The stack's OME-Zarr store (:func:`grainflow.stacks.importer.import_stack`);
        only the crops and each shown plane's intensity limits are read.
    specimens : sequence of path-like
        The synthetic specimen files of the stack's task.
    scale : mapping, optional
        A record of :func:`grainflow.inference.scale.choose_level` or ``{"level": 0}``
        (the default: full resolution).
    n_real, n_synthetic : int
        Number of crops in each row.
    crop_px : int, optional
        Side of every crop, network pixels; by default that of the synthetic
        images (larger synthetic images are cut to their centre).
    modality : str, optional
        Show only synthetic images of this modality; by default the modalities
        take turns.
    percentiles : (float, float)
        Low and high percentiles mapped to black and white (training's default).

    Returns
    -------
    fig : Figure
        Axes ``2 x max(n_real, n_synthetic)``, row by row; unused ones are hidden.
    """
    from matplotlib.figure import Figure

    scale = dict(scale or {"level": 0})
    level = scale.get("level", 0)
    if not (isinstance(level, (int, np.integer)) and level >= 0):
        raise ValueError(f"scale['level'] must be an integer >= 0, got {level=}")
    source = open_source(stack, task=None, block_px=2048)
    if level >= len(source.levels):
        raise ValueError(
            f"stack {source.name!r} has {len(source.levels)} pyramid level(s); the "
            f"level must be below that, got {level=}"
        )
    samples = pick_synthetic(specimens, n=n_synthetic, modality=modality)
    if not samples:
        raise ValueError(f"no synthetic image to show ({modality=}) in {len(specimens)} file(s)")
    size = int(crop_px or max(samples[0].image.shape))
    if size < 1:
        raise ValueError(f"crop_px must be positive, got {crop_px=}")
    read = dataclasses.replace(source, levels=source.levels[level:], level=level)
    array, shapes = read.levels[0], read.plane_shapes
    pixel = source.info.get("pixel_size_um")
    um_per_px = pixel * 2**level if pixel else None

    n_cols = max(n_real, len(samples))
    fig = Figure(figsize=(2.3 * n_cols, 5.3), layout="constrained")
    axes = fig.subplots(2, n_cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlim(-0.5, size - 0.5)
        ax.set_ylim(size - 0.5, -0.5)
        ax.set_facecolor("0.85")  # where a crop is smaller than the others
    limits = {}
    planes = source.info.get("planes") or []
    for ax, (z, rows, cols) in zip(axes[0], crop_windows(shapes, n=n_real, size=size)):
        if z not in limits:
            limits[z] = plane_limits(_OwnPart(array, z, *shapes[z]), percentiles=percentiles)
        crop = np.asarray(array[z, rows, cols])
        ax.imshow(crop, cmap="gray", vmin=limits[z][0], vmax=limits[z][1], interpolation="nearest")
        name = (planes[z].get("file") if z < len(planes) else None) or f"plane {z}"
        ax.set_title(
            f"{name}\ns{level} from y {rows.start}, x {cols.start}; "
            f"ℓ {feature_length_px(crop):.1f} px",
            fontsize=7,
        )
        if um_per_px:
            _scale_bar(ax, um_per_px=um_per_px, width_px=size)
    for ax, s in zip(axes[1], samples):
        image = s.image
        r0, c0 = (max(0, (n - size) // 2) for n in image.shape)
        image = image[r0 : r0 + size, c0 : c0 + size]
        lo, hi = percentile_limits(s.image, percentiles=percentiles)
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(
            f"{s.specimen}/{s.session} {s.modality}\nℓ {feature_length_px(image):.1f} px",
            fontsize=7,
        )
    for row, used in ((axes[0], n_real), (axes[1], len(samples))):
        for ax in row[used:]:
            ax.set_visible(False)
    for ax, label in zip(axes[:, 0], ("real", "synthetic")):
        ax.set_ylabel(label, fontsize=9, fontweight="bold")
    resolution = "full resolution" if level == 0 else f"1/{2**level} resolution"
    title = (
        f"{source.name} ({source.task}) at pyramid level s{level} ({resolution}) beside "
        f"synthetic training images\n{size} × {size} network px each, at the same magnification"
    )
    if "feature_length_px" in scale and "trained_length_px" in scale:
        real = float(scale["feature_length_px"])
        at_s0 = f" ({real:.1f} px at s0)" if level else ""
        title += (
            f"\nfeature length ℓ (autocorrelation): stack {real / 2**level:.1f} px at "
            f"s{level}{at_s0}, synthetic {float(scale['trained_length_px']):.1f} px"
        )
    fig.suptitle(title, fontsize=8)
    return fig


def beside_real_headline(
    stack: str | os.PathLike,
    specimens: Sequence[str | os.PathLike],
    *,
    scale: str | os.PathLike | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> dict:
    """The numbers of :func:`synthetic_beside_real` (default crops) for its caption, formatted.

    Parameters
    ----------
    stack : path-like
        The stack's OME-Zarr store; only its attributes are read.
    specimens : sequence of path-like
        The synthetic specimen files; the first image of the first is read.
    scale : path-like, optional
        The stack's scale record (:func:`grainflow.inference.scale.write_scale`);
        None: read at full resolution.
    percentiles : (float, float)
        As given to :func:`synthetic_beside_real`.

    Returns
    -------
    dict
        ``stack, task, level, factor``, ``crop_px`` (the synthetic images' side),
        ``percentiles`` (low, high: "1 %", "99 %"); ``pixel_um`` and
        ``pixel_um_shown`` (at s0 and at the level shown, or None when unknown);
        ``chosen`` (bool: the level comes from the feature lengths) and then
        ``real_length_px`` (s0), ``real_length_shown_px`` and ``trained_length_px``.
    """
    import zarr

    # a missing input raises FileNotFoundError naming it (as Snakemake's dry run expects)
    for path, probe in ((stack, Path(stack, "zarr.json")), *((p, p) for p in specimens[:1])):
        if not os.path.isfile(probe):
            raise FileNotFoundError(errno.ENOENT, "not made yet", os.fspath(path))
    info = dict(zarr.open_group(str(stack), mode="r").attrs)["grainflow"]
    scale = read_scale(scale) if scale else {"level": 0}
    level = int(scale.get("level", 0))
    pixel = info.get("pixel_size_um")
    head = {
        "stack": info["stack"],
        "task": info["task"],
        "level": level,
        "factor": 2**level,
        "crop_px": max(pick_synthetic(specimens[:1], n=1)[0].image.shape),
        "percentiles": [f"{float(p):g} %" for p in percentiles],
        "pixel_um": None if pixel is None else f"{pixel:.4g}",
        "pixel_um_shown": None if pixel is None else f"{pixel * 2**level:.4g}",
        "chosen": "feature_length_px" in scale and "trained_length_px" in scale,
    }
    if head["chosen"]:
        real = float(scale["feature_length_px"])
        head.update(
            real_length_px=f"{real:.1f}",
            real_length_shown_px=f"{real / 2**level:.1f}",
            trained_length_px=f"{float(scale['trained_length_px']):.1f}",
        )
    return head
