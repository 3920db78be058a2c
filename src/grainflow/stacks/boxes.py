"""Box labels of a folder stack: YOLO text files, one per image, paired by file name."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["BOX_SUFFIX", "box_files", "is_box_folder", "read_yolo_boxes", "pair_box_files"]

logger = logging.getLogger(__name__)

#: name ending of a box file
BOX_SUFFIX = ".txt"

# box edges may lie this far (a fraction of the image side) outside the image; clipped
_EDGE_TOLERANCE = 1e-3


def box_files(folder: str | os.PathLike) -> list[Path]:
    """The box files of a folder (names ending in :data:`BOX_SUFFIX`, hidden ones skipped), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() == BOX_SUFFIX
    )


def is_box_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder of box files: it holds box files and no images."""
    from grainflow.io.images import IMAGE_SUFFIXES

    path = Path(path)
    if not path.is_dir():
        return False
    images = (
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    return bool(box_files(path)) and next(images, None) is None


def read_yolo_boxes(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """The boxes of one YOLO label file, in pixels of its image.

    Parameters
    ----------
    path : path-like
        A text file with one box a line, ``class cx cy w h``: the class an
        integer, the others fractions of the image's width (``cx``, ``w``) or
        height (``cy``, ``h``), origin at the top left. Blank lines are skipped;
        an empty file means no object.
    shape : (int, int)
        The image's (rows, cols).

    Returns
    -------
    boxes : ndarray of shape (n, 4), float64
        ``top, left, bottom, right`` in pixels: continuous coordinates in which
        pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``, so a box of pixel rows
        3 to 7 is ``top = 3, bottom = 8``. Edges within 0.1 % of the image side
        outside it are clipped to it.

    Raises
    ------
    ValueError
        Naming the file and the line: not 5 numbers (e.g. a polygon line of the
        segmentation format), a class that is not a non-negative integer, a
        non-finite value, a box of no width or height, or a box outside the image.
    """
    path = Path(path)
    rows, cols = (int(n) for n in shape)
    boxes, classes = [], set()
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path.name}, line {i} ({line.strip()!r})"
        if len(fields) != 5:
            raise ValueError(
                f"{where}: a box line has 5 numbers 'class cx cy w h', got {len(fields)}"
            )
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise ValueError(f"{where}: not numbers") from None
        label, cx, cy, w, h = values
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{where}: values must be finite")
        if label < 0 or label != int(label):
            raise ValueError(f"{where}: the class must be a non-negative integer")
        if not (w > 0 and h > 0):
            raise ValueError(f"{where}: width and height must be positive, got {w=}, {h=}")
        edges = (cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2)
        if min(edges) < -_EDGE_TOLERANCE or max(edges) > 1 + _EDGE_TOLERANCE:
            raise ValueError(
                f"{where}: the box reaches outside the image (edges {edges} as fractions "
                "of the image side); YOLO boxes are fractions in [0, 1] of width and height"
            )
        top, left, bottom, right = (min(max(e, 0.0), 1.0) for e in edges)
        boxes.append((top * rows, left * cols, bottom * rows, right * cols))
        classes.add(int(label))
    if len(classes) > 1:
        logger.info(
            "note: %s holds boxes of classes %s; all are counted as objects",
            path.name,
            sorted(classes),
        )
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def pair_box_files(images: Sequence[str], folder: str | os.PathLike) -> list[Path]:
    """The box file of each image: the same stem (``Cu1.jpg`` and ``Cu1.txt``).

    Raises
    ------
    ValueError
        When an image has no box file or a box file no image (an image without
        objects needs an empty box file).
    """
    files = {p.stem: p for p in box_files(folder)}
    stems = [Path(f).stem for f in images]
    missing = [f for f, stem in zip(images, stems) if stem not in files]
    extra = sorted(p.name for stem, p in files.items() if stem not in set(stems))
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"no box file for the image(s) {missing[:5]}")
        if extra:
            problems.append(f"no image for the box file(s) {extra[:5]}")
        raise ValueError(
            f"box labels {folder}: {'; '.join(problems)}; each image needs the box file of "
            f"its name with {BOX_SUFFIX} (an empty file for an image without objects)"
        )
    return [files[stem] for stem in stems]
