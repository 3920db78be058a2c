"""A real image stack (files, TIFF, Zarr) imported into one OME-Zarr store."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from grainflow import __version__
from grainflow.evaluation.baseline import particles_bright
from grainflow.io.ome_zarr import (
    block_slices,
    check_ome_zarr,
    create_levels,
    downsample,
    ngff_writer,
    pyramid_shapes,
)
from grainflow.io.staging import staged_dir
from grainflow.normalize import normalize_image
from grainflow.stacks.boxes import is_box_folder, pair_box_files, read_yolo_boxes
from grainflow.stacks.calibration import REL_TOLERANCE
from grainflow.stacks.reader import StackError, open_stack
from grainflow.tasks import segments_particles

__all__ = [
    "LABEL_NAME",
    "plane_groups",
    "plane_particles",
    "plane_shapes",
    "plane_boxes",
    "import_stack",
]

logger = logging.getLogger(__name__)


#: name of the ground-truth label image under labels/
LABEL_NAME = "ground_truth"


def plane_groups(files: Sequence[str], pattern: str | None, *, name: str) -> list[str] | None:
    """The group of each plane: the first group of ``pattern`` searched in its file name.

    Returns None without a pattern. Raises :class:`StackError` when the pattern
    is not a regular expression with a group or a file name does not match it.
    """
    if pattern is None or (isinstance(pattern, float) and math.isnan(pattern)) or pattern == "":
        return None
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise StackError(
            f"stack {name!r}: group {pattern!r} is not a regular expression: {exc}"
        ) from exc
    if regex.groups < 1:
        raise StackError(
            f"stack {name!r}: group {pattern!r} needs a (capturing group), e.g. "
            r"'^(spot\d+)_'"
        )
    groups = []
    for f in files:
        m = regex.search(f)
        if m is None or m.group(1) is None:
            raise StackError(
                f"stack {name!r}: file name {f!r} does not match group {pattern!r}; "
                "fix the pattern or the file name"
            )
        groups.append(m.group(1))
    return groups


def plane_particles(files: Sequence[str], particles: str | None, *, name: str) -> list:
    """Whether each plane's particles are dark, from the stacks sheet's ``particles`` cell.

    ``bright`` or ``dark`` holds for every plane; ``dark:REGEX`` (``bright:REGEX``) for
    the planes whose file names the expression finds, the others the opposite. None for
    every plane with ``auto`` or no cell: to be estimated from the image.
    """
    if particles is None or particles in ("", "auto"):
        return [None] * len(files)
    tone, _, pattern = str(particles).partition(":")
    if tone not in ("bright", "dark"):
        raise StackError(
            f"stack {name!r}: particles {particles!r} is not bright, dark, bright:REGEX, "
            "dark:REGEX or auto"
        )
    if not pattern:
        return [tone == "dark"] * len(files)
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise StackError(
            f"stack {name!r}: particles {particles!r}: {pattern!r} is not a regular "
            f"expression: {exc}"
        ) from exc
    return [(regex.search(f) is not None) == (tone == "dark") for f in files]


def _estimate_particles(levels, shapes, plane_shape, z: int, *, max_px: int = 1024) -> bool:
    """Whether plane ``z``'s particles are dark, by the topology of its threshold
    (:func:`grainflow.evaluation.baseline.particles_bright`), read at the finest level whose
    larger side is at most ``max_px``."""
    k = next((k for k, s in enumerate(shapes) if max(s) <= max_px), len(shapes) - 1)
    rows, cols = (-(-int(n) // 2**k) for n in plane_shape)
    image = np.asarray(levels[k][z, :rows, :cols], dtype=np.float32)
    return not particles_bright(normalize_image(image))


def plane_shapes(info: Mapping, shape: Sequence[int]) -> list[tuple[int, int]]:
    """Each plane's own (rows, cols) in a stack imported by :func:`import_stack`.

    Parameters
    ----------
    info : mapping
        The store's ``grainflow`` attributes.
    shape : (int, int, int)
        The shape (planes, rows, cols) of its level ``s0``.

    Returns
    -------
    shapes : list of (int, int)
        ``planes[z]["shape"]`` where recorded (planes padded at the bottom and
        right to ``shape``), else the whole plane.
    """
    n_planes, rows, cols = (int(n) for n in shape)
    planes = info.get("planes") or []
    out = []
    for z in range(n_planes):
        own = planes[z].get("shape") if z < len(planes) else None
        out.append((int(own[0]), int(own[1])) if own else (rows, cols))
    return out


def plane_particles_dark(
    info: Mapping, n_planes: int, *, required: bool = False, where: str = ""
) -> list[bool | None]:
    """Whether each plane's particles are dark, as :func:`import_stack` recorded it.

    ``False`` for every plane of a stack whose task has no particles (grains); ``None``
    for a particle plane that records nothing (a store imported before polarity was
    recorded).

    Raises
    ------
    ValueError
        With ``required`` (networks trained with ``training.polarity: given``) when a
        particle plane records nothing, naming the planes, the store (``where``) and the fix.
    """
    if not segments_particles(str(info.get("task"))):
        return [False] * n_planes
    planes = info.get("planes") or []
    dark = [planes[z].get("particles_dark") if z < len(planes) else None for z in range(n_planes)]
    unknown = [z for z, d in enumerate(dark) if d is None]
    if required and unknown:
        raise ValueError(
            f"stack {info.get('stack')!r}: the {info.get('task')} networks were trained with the "
            f"particles shown bright (training.polarity: given), but planes {unknown} of "
            f"{where or 'the store'} record no particles_dark; re-import the stack (rule "
            "import_stack) with this grainflow, which records it from the stacks sheet's "
            "particles column or estimates it"
        )
    return dark


def plane_boxes(info: Mapping) -> list[np.ndarray] | None:
    """Each plane's ground-truth boxes in a stack imported with box labels, else None.

    Returns
    -------
    boxes : list of ndarray of shape (n, 4), or None
        Per plane ``top, left, bottom, right`` in pixels
        (:func:`grainflow.stacks.boxes.read_yolo_boxes`); None when the stack has
        no box labels.
    """
    if info.get("ground_truth_kind") != "boxes":
        return None
    return [np.asarray(p["boxes"], dtype=np.float64).reshape(-1, 4) for p in info["planes"]]


def _repeat_edges(level, shapes: Sequence[tuple[int, int]], k: int) -> None:
    """Copy each padded plane's last row / column into the padding where odd at level ``k``.

    The next level's 2 x 2 mean then repeats the edge, as
    :func:`~grainflow.io.ome_zarr.downsample` does at the array's own edge, so a
    padded plane's pyramid equals that of the image imported alone.
    """
    rows, cols = (int(n) for n in level.shape[1:])
    for z, (r, c) in enumerate(shapes):
        r, c = -(-r // 2**k), -(-c // 2**k)
        if r % 2 and r < rows:
            level[z, r, :c] = level[z, r - 1, :c]
        if c % 2 and c < cols:
            level[z, : min(r + 1, rows), c] = level[z, : min(r + 1, rows), c - 1]


def _pair_ground_truth(images: list[str], labels: list[str], *, name: str) -> list[int]:
    """For each image plane, the index of its ground-truth plane.

    Label files named like their images (``spot1_0d_0.png`` and
    ``spot1_0d_0_mask.png``: the same stem, or the stem plus one common
    suffix) are paired by name; planes of one file, or files named otherwise,
    are paired in order (with a warning in the second case).
    """
    if len(images) != len(labels):
        raise StackError(
            f"stack {name!r}: {len(images)} image planes but {len(labels)} ground "
            "truth planes; give one label image per image"
        )
    in_order = list(range(len(images)))
    if len(set(images)) < len(images) or len(set(labels)) < len(labels):
        return in_order  # pages of multi-page files
    stems = [Path(f).stem for f in images]
    lstems = [Path(f).stem for f in labels]
    suffixes = sorted({lab[len(stems[0]) :] for lab in lstems if lab.startswith(stems[0])}, key=len)
    for suffix in suffixes:
        keys = [lab[: len(lab) - len(suffix)] if lab.endswith(suffix) else None for lab in lstems]
        index = {key: j for j, key in enumerate(keys)}
        if sorted(map(str, keys)) == sorted(stems):
            return [index[stem] for stem in stems]
    logger.warning(
        "stack %r: ground truth file names (%s, ...) are not image names (%s, ...) "
        "plus a suffix; paired in sorted order",
        name,
        labels[0],
        images[0],
    )
    return in_order


def _scale_transforms(levels: int, pixel: float, *, centred: bool) -> list[list[dict]]:
    out = []
    for k in range(levels):
        f = 2.0**k
        transforms = [{"type": "scale", "scale": [1.0, pixel * f, pixel * f]}]
        if centred and k > 0:  # a 2x2 mean's pixel centre lies half a pixel of the finer level in
            shift = pixel * (f - 1.0) / 2.0
            transforms.append({"type": "translation", "translation": [0.0, shift, shift]})
        out.append(transforms)
    return out


def _axes(pixel_known: bool) -> list[dict]:
    axes = [{"name": "z", "type": "space"}]
    for name in ("y", "x"):
        unit = {"unit": "micrometer"} if pixel_known else {}
        axes.append({"name": name, "type": "space", **unit})
    return axes


def _check_paths(inputs: list[Path], out: Path, *, name: str) -> None:
    o = out.resolve()
    for p in inputs:
        p = p.resolve()
        if o == p or p in o.parents or o in p.parents:
            raise StackError(
                f"stack {name!r}: the output {out} would overwrite or lie inside the "
                f"input {p}; inputs are never modified"
            )


def _read_boxes(image, folder, *, name: str) -> list[dict]:
    """The box records of each image plane from a folder of YOLO files (see :func:`import_stack`)."""
    if image.kind != "folder":
        raise StackError(
            f"stack {name!r}: box labels ({folder}) are paired to images by file name; "
            f"path must then be a folder of images, got {image.path}"
        )
    try:
        files = pair_box_files(image.files, folder)
        records = []
        for f, shape in zip(files, image.plane_shapes):
            boxes = read_yolo_boxes(f, shape)
            records.append(
                {
                    "ground_truth_file": f.name,
                    "n_boxes": len(boxes),
                    "boxes": [[round(float(v), 4) for v in box] for box in boxes],
                }
            )
    except (ValueError, OSError) as exc:
        raise StackError(f"stack {name!r}: ground truth {exc}") from exc
    return records


def _pixel_size(sheet: float | None, calibration, *, stack: str) -> tuple[float | None, str]:
    """The pixel size to store and where it came from: the sheet's, else the file's.

    A sheet value more than 1 % away from the file's is refused (one of the two
    is wrong, and every size measured in the stack would be off by as much).
    """
    if sheet is None or math.isnan(sheet):
        if calibration is None:
            return None, "unknown"
        logger.info(
            "stack %r: pixel size %.6g um from %s",
            stack,
            calibration.pixel_size_um,
            calibration.describe(),
        )
        return calibration.pixel_size_um, "file metadata"
    if calibration is not None:
        found = calibration.pixel_size_um
        off = abs(sheet - found) / found
        if off > REL_TOLERANCE:
            raise StackError(
                f"stack {stack!r}: the stacks sheet's pixel_size_um {sheet:.6g} um disagrees "
                f"with the {found:.6g} um that {calibration.describe()} records (by "
                f"{100 * off:.1f} %, more than {100 * REL_TOLERANCE:g} %); correct the "
                "sheet's value, or leave the cell empty to use the file's (if the file's "
                "calibration is wrong, import a copy saved without it)"
            )
        if off > 1e-6:
            logger.info(
                "stack %r: the stacks sheet's pixel size %.6g um agrees with the %.6g um that "
                "%s records within %.2f %%; the sheet's is stored",
                stack,
                sheet,
                found,
                calibration.describe(),
                100 * off,
            )
    return float(sheet), "stacks sheet"


def import_stack(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    stack: str,
    task: str | None = None,
    pixel_size_um: float | None = None,
    ground_truth: str | os.PathLike | None = None,
    group: str | None = None,
    chunk: int = 512,
    pyramid_min_px: int = 512,
    block: int = 2048,
    description: str | None = None,
    particles: str | None = None,
) -> dict:
    """Import a stack as an OME-Zarr image, streaming it block by block.

    Parameters
    ----------
    path : path-like
        The source (see :func:`open_stack`); opened read-only.
    out : path-like
        The store to write, e.g. ``results/stacks/{stack}.ome.zarr``;
        replaced atomically (a temporary folder beside it is renamed onto it).
    stack : str
        The stack's name.
    task : str, optional
        What the stack shows ("grains", "phases", ...), stored in the attributes.
    pixel_size_um : float, optional
        Pixel size in micrometres. None (or NaN) when not given: then the
        pixel size the source's files record is used (OME-TIFF, ImageJ, FEI /
        Thermo Fisher and Zeiss SEM TIFF metadata, DigitalMicrograph and EMD
        calibrations, an OME-Zarr scale; see
        :mod:`grainflow.stacks.calibration`), else the scale is 1 pixel
        without unit. A value that differs from the files' by more than
        1 % is refused.
    ground_truth : path-like, optional
        Integer (or boolean) labels, in any form ``path`` accepts, one plane
        per image plane and of the same size; stored under ``labels/``. Or,
        for a folder of images, a folder of box labels: YOLO text files paired
        to the images by name (``Cu1.jpg`` and ``Cu1.txt``, see
        :func:`grainflow.stacks.boxes.read_yolo_boxes`), stored in the
        attributes (see Notes).
    group : str, optional
        Regular expression whose first group, searched in each plane's file
        name, gives the plane's group (for honest splits).
    particles : str, optional
        Task phases: the stacks sheet's ``particles`` cell (:func:`plane_particles`);
        where it gives no tone, each plane's is estimated from its image. Recorded per
        plane as ``particles_dark`` and ``particles_from`` (``stacks sheet`` or
        ``estimated``).
    chunk : int
        Chunk side in pixels; chunks are (1, chunk, chunk).
    pyramid_min_px : int
        Levels are added, each half the size of the previous one, until the
        largest side is below this.
    block : int
        Side of the blocks streamed, in pixels (rounded down to whole chunks).
    description : str, optional
        Free text, stored in the attributes.

    Returns
    -------
    summary : dict
        shape, dtype, levels, pixel_size_um, colour, planes with ground truth.

    Raises
    ------
    StackError
        For any problem with the input; ``out`` is then left as it was.

    Notes
    -----
    The store::

        {stack}.ome.zarr/
            zarr.json          ome: multiscales (axes z, y, x; scale in micrometre),
                               grainflow: stack, task, source, planes (file, page,
                               group, intensity range, own size where padded, boxes),
                               pixel size and where it came from, version
            s0, s1, ...        (Z, Y, X) images, source dtype, chunks (1, chunk, chunk);
                               s{k+1} is s{k} averaged over 2 x 2 pixels, down to < pyramid_min_px
            labels/zarr.json   ome: labels ["ground_truth"] (only with ground truth)
            labels/ground_truth/
                zarr.json      ome: multiscales, image-label (source ../../)
                s0, s1, ...    (Z, Y, X) integer labels; s{k+1} = s{k}[::2, ::2]

    Colour is converted to grey (ITU-R BT.709 luma) in the source's dtype, with a
    note in the log; 8-bit, 16-bit and float intensities are stored unchanged
    (inference normalises each plane, see :mod:`grainflow.normalize`). When the
    pixel size is unknown the y and x scale is 1 and the axes have no unit (sizes
    are then in pixels). The z axis indexes planes (separate images or sections);
    its scale is 1, without unit.

    The attributes record where the pixel size came from: ``pixel_size_from``
    is ``"stacks sheet"``, ``"file metadata"`` or ``"unknown"``, and
    ``file_calibration`` is what the files record (``pixel_size_um``, the
    ``parser`` — "OME-TIFF", "ImageJ", "FEI", "Zeiss SEM", "DigitalMicrograph",
    "EMD" or "OME-Zarr" —, the ``field`` read, the ``reader`` library and
    version and the ``file``), or None. When both the sheet and the files give
    a pixel size, they must agree within 1 %; the sheet's value is stored.

    The images of a folder may differ in size and colour mode. Each is then
    stored at the top left of a plane of the largest rows and cols, padded at the
    bottom and right with zeros (ground truth too), and its own size is recorded as
    ``planes[z]["shape"] = [rows, cols]`` (:func:`plane_shapes`); inference and
    measurement read only that rectangle. Where a plane's size is odd at some
    pyramid level, its last row / column is also copied one pixel into the
    padding of that level before the next is made, so that each plane's pyramid
    equals the one it would have alone. Stacks of one size record no ``shape``.

    Box labels are stored in the attributes: ``ground_truth_kind`` is
    ``"boxes"`` (``"mask"`` for label images), and each plane holds
    ``ground_truth_file``, ``n_boxes`` and ``boxes``, a list of
    ``[top, left, bottom, right]`` in pixels of the plane (continuous
    coordinates, pixel ``(i, j)`` covering ``[i, i + 1) x [j, j + 1)``; origin at
    the top left, so padding does not move them), read by :func:`plane_boxes`.

    Bad input raises :class:`StackError` naming the stack and the problem: a missing
    path, an unreadable file, a wrong number of axes, an empty stack, an image with
    NaN or infinite values, a constant image, mismatched ground truth, a sheet pixel
    size that disagrees with the file's, a file calibrated in reciprocal space or
    with pixels that are not square, files of one stack with different pixel
    sizes. The store is
    written to a temporary folder beside ``out`` and renamed onto it only when
    complete, so a failure leaves no output.
    """
    import zarr

    fmt, write_multiscales_metadata, write_label_metadata = ngff_writer()

    if chunk < 1 or block < 1:
        raise ValueError(f"chunk and block must be positive, got {chunk=}, {block=}")
    if pixel_size_um is not None and not math.isnan(pixel_size_um) and not pixel_size_um > 0:
        raise StackError(f"stack {stack!r}: pixel size must be positive, got {pixel_size_um=}")
    if isinstance(ground_truth, float) and math.isnan(ground_truth) or ground_truth == "":
        ground_truth = None
    out = Path(out)
    _check_paths([Path(p) for p in (path, ground_truth) if p is not None], out, name=stack)
    step = max(chunk, block // chunk * chunk)
    box_truth = ground_truth is not None and is_box_folder(ground_truth)

    image = open_stack(path, name=stack, role="path")
    labels = None
    boxes = None
    try:
        if box_truth:
            boxes = _read_boxes(image, ground_truth, name=stack)
        elif ground_truth is not None:
            labels = open_stack(ground_truth, name=stack, role="ground_truth")
            if labels.colour:
                raise StackError(
                    f"stack {stack!r}: ground truth {ground_truth} is in colour; "
                    "labels must be one integer value per pixel"
                )
            if labels.dtype.kind not in "biu":
                raise StackError(
                    f"stack {stack!r}: ground truth {ground_truth} holds "
                    f"{labels.dtype} values; labels must be integers or booleans"
                )
            if labels.shape != image.shape:
                raise StackError(
                    f"stack {stack!r}: ground truth {ground_truth} has shape "
                    f"{labels.shape} (planes, rows, cols) but the images have "
                    f"{image.shape}"
                )
            labels.reorder(_pair_ground_truth(image.files, labels.files, name=stack))
            for z, (own, truth) in enumerate(zip(image.plane_shapes, labels.plane_shapes)):
                if own != truth:
                    raise StackError(
                        f"stack {stack!r}: ground truth {labels.files[z]} has shape {truth} "
                        f"(rows, cols) but its image {image.files[z]} has {own}"
                    )
        groups = plane_groups(image.files, group, name=stack)
        dark = (
            plane_particles(image.files, particles, name=stack)
            if segments_particles(task)
            else None
        )
        if image.dtype.kind not in "biuf":
            raise StackError(
                f"stack {stack!r}: {path} holds {image.dtype} values; grainflow "
                "reads integer or floating-point intensities"
            )
        calibration = image.calibration
        pixel_size_um, pixel_source = _pixel_size(pixel_size_um, calibration, stack=stack)
        n_planes, rows, cols = image.shape
        shapes = pyramid_shapes((rows, cols), min_px=pyramid_min_px)
        with staged_dir(out, check=check_ome_zarr) as tmp:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            levels = create_levels(root, shapes, n_planes, image.dtype, chunk)
            planes = []
            for z in range(n_planes):
                lo, hi = math.inf, -math.inf
                where = f"plane {z} ({image.files[z]}" + (
                    f", page {image.pages[z]})" if image.kind not in ("folder", "image") else ")"
                )
                for rs, cs in block_slices(*image.plane_shapes[z], step):
                    region = image.read(z, rs, cs)
                    if region.dtype.kind == "f":
                        bad = ~np.isfinite(region)
                        if bad.any():
                            r, c = np.argwhere(bad)[0]
                            what = "NaN" if np.isnan(region[r, c]) else "infinite"
                            raise StackError(
                                f"stack {stack!r}: {where} has {what} values (first at row "
                                f"{rs.start + r}, col {cs.start + c}); fix or mask the image"
                            )
                    lo, hi = min(lo, region.min().item()), max(hi, region.max().item())
                    levels[0][z, rs, cs] = region
                image.release(z)
                if lo == hi:
                    raise StackError(
                        f"stack {stack!r}: {where} is constant (every pixel is "
                        f"{lo}); it holds no image"
                    )
                planes.append(
                    {
                        "index": z,
                        "file": image.files[z],
                        "page": image.pages[z],
                        "group": None if groups is None else groups[z],
                        "min": lo,
                        "max": hi,
                        **({"shape": list(image.plane_shapes[z])} if image.padded else {}),
                    }
                )
                if boxes is not None:
                    planes[-1].update(boxes[z])
            half = max(chunk, step // 2 // chunk * chunk)  # reads blocks of about step px
            for k in range(1, len(levels)):
                if image.padded:
                    _repeat_edges(levels[k - 1], image.plane_shapes, k - 1)
                downsample(levels[k - 1], levels[k], step=half, mean=True)
            for z in range(n_planes if dark is not None else 0):
                estimated = dark[z] is None
                if estimated:
                    dark[z] = _estimate_particles(levels, shapes, image.plane_shapes[z], z)
                planes[z].update(
                    particles_dark=bool(dark[z]),
                    particles_from="estimated" if estimated else "stacks sheet",
                )
            pixel = 1.0 if pixel_size_um is None else float(pixel_size_um)
            write_multiscales_metadata(
                root,
                datasets=[
                    {"path": f"s{k}", "coordinateTransformations": t}
                    for k, t in enumerate(_scale_transforms(len(shapes), pixel, centred=True))
                ],
                fmt=fmt,
                axes=_axes(pixel_size_um is not None),
                name=stack,
            )
            if labels is not None:
                label_root = root.create_group("labels")
                label_group = label_root.create_group(LABEL_NAME)
                label_dtype = np.dtype(np.uint8) if labels.dtype == np.bool_ else labels.dtype
                label_levels = create_levels(label_group, shapes, n_planes, label_dtype, chunk)
                for z in range(n_planes):
                    lo, hi = math.inf, -math.inf
                    for rs, cs in block_slices(*labels.plane_shapes[z], step):
                        region = labels.read(z, rs, cs)
                        lo, hi = min(lo, region.min().item()), max(hi, region.max().item())
                        label_levels[0][z, rs, cs] = region
                    labels.release(z)
                    planes[z].update(ground_truth_file=labels.files[z], label_min=lo, label_max=hi)
                for k in range(1, len(label_levels)):
                    downsample(label_levels[k - 1], label_levels[k], step=half, mean=False)
                write_multiscales_metadata(
                    label_group,
                    datasets=[
                        {"path": f"s{k}", "coordinateTransformations": t}
                        for k, t in enumerate(_scale_transforms(len(shapes), pixel, centred=False))
                    ],
                    fmt=fmt,
                    axes=_axes(pixel_size_um is not None),
                    name=LABEL_NAME,
                )
                label_group.attrs["grainflow"] = {
                    "source": str(ground_truth),
                    "files": labels.files,
                    "downsampling": "every second pixel (labels are never interpolated)",
                }
                # through its own handle: attributes are rewritten whole from a handle's copy
                write_label_metadata(label_root, LABEL_NAME, fmt=fmt, source={"image": "../../"})
                label_root.attrs["ome"] = {**label_root.attrs["ome"], "version": fmt.version}
            summary = {
                "version": __version__,
                "stack": stack,
                "task": task,
                "description": description,
                "source": str(path),
                "source_kind": image.kind,
                "ground_truth": None if ground_truth is None else str(ground_truth),
                "ground_truth_kind": (
                    None if ground_truth is None else "boxes" if box_truth else "mask"
                ),
                "pixel_size_um": pixel_size_um,
                "pixel_size_from": pixel_source,
                "file_calibration": None if calibration is None else calibration.as_dict(),
                "source_dtype": str(image.dtype),
                "colour_converted_to_grey": image.colour,
                "group_pattern": group if groups is not None else None,
                "chunk": [1, min(chunk, rows), min(chunk, cols)],
                "levels": [list(s) for s in shapes],
                "downsampling": "2 x 2 mean per level (edge pixels repeated at odd sizes)",
                "z_axis": "plane index (separate images or sections), scale 1 without unit",
                **(
                    {
                        "padding": "planes smaller than (rows, cols) lie at the top left, "
                        "zeros below and to the right (and, at a level where the plane's size "
                        "is odd, its last row / column repeated once); planes[z].shape is the "
                        "plane's own size"
                    }
                    if image.padded
                    else {}
                ),
                **(
                    {
                        "boxes": "planes[z].boxes: [top, left, bottom, right] in pixels "
                        "(pixel (i, j) covers [i, i + 1) x [j, j + 1)), from YOLO files"
                    }
                    if boxes is not None
                    else {}
                ),
                "planes": planes,
            }
            root.attrs["grainflow"] = summary
    finally:
        image.close()
        if labels is not None:
            labels.close()
    logger.info(
        "stack %r: %d plane(s) of %d x %d px, %s, %d level(s), pixel size %s, %s -> %s",
        stack,
        n_planes,
        rows,
        cols,
        image.dtype,
        len(shapes),
        "unknown" if pixel_size_um is None else f"{pixel_size_um:g} um",
        "no ground truth"
        if ground_truth is None
        else f"with {sum(len(b['boxes']) for b in boxes)} ground-truth boxes"
        if boxes is not None
        else "with ground truth",
        out,
    )
    return summary
