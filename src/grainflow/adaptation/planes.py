"""A real stack's planes at one pyramid level, normalised as the networks were trained."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from grainflow.normalize import normalize_image, polarity_view
from grainflow.stacks.importer import plane_particles_dark, plane_shapes
from grainflow.tasks import TASKS

__all__ = ["StackPlanes", "read_planes", "level_shape"]


@dataclass(frozen=True)
class StackPlanes:
    """The planes of one stack at pyramid level ``level``.

    Attributes
    ----------
    name, task : str
    level : int
        Pyramid level read (0 = full resolution; level k is 2**k times coarser).
    images : list of ndarray (h, w), float32
        Each plane's own rectangle (padding cut off), normalised per plane and shown
        with ``polarity`` (:func:`~grainflow.normalize.polarity_view`).
    truth : list of ndarray (h, w), uint8, or None
        The network's target classes (``TASKS[task].target``) from the stack's mask
        ground truth at the same level; None without mask ground truth.
    truth_full : list of ndarray, uint8, or None
        The same at level 0, where scores are counted.
    groups : list of str
        The sheet's group of each plane (the file name when the sheet gives none).
    files : list of str
    shapes : list of (int, int)
        Each plane's own (rows, cols) at level 0.
    particles_dark : list of bool or None
        Whether each plane's particles are dark, as its import recorded (None: grains).
    polarity : str
        How ``images`` are shown: ``given`` (particles bright) or ``learned`` (as imaged).
    """

    name: str
    task: str
    level: int
    images: list
    truth: list | None
    truth_full: list | None
    groups: list
    files: list
    shapes: list
    particles_dark: list | None = None
    polarity: str = "learned"

    def as_imaged(self, z: int) -> np.ndarray:
        """Plane ``z`` normalised, in its own tones (not inverted)."""
        dark = None if self.particles_dark is None else self.particles_dark[z]
        return polarity_view(self.images[z], particles_dark=dark, polarity=self.polarity)

    def __len__(self) -> int:
        return len(self.images)


def level_shape(shape: Sequence[int], level: int) -> tuple[int, int]:
    """(rows, cols) of a level-0 rectangle at pyramid ``level`` (2 x 2 means, edges kept)."""
    rows, cols = (int(v) for v in shape)
    for _ in range(level):
        rows, cols = -(-rows // 2), -(-cols // 2)
    return rows, cols


def read_planes(
    stack: str | os.PathLike,
    *,
    level: int = 0,
    norm_percentiles: Sequence[float] = (1.0, 99.0),
    polarity: str = "learned",
    with_truth: bool = True,
) -> StackPlanes:
    """Read every plane of an imported stack (:func:`grainflow.stacks.importer.import_stack`).

    Ground truth is read only when the stack holds a label image
    (``labels/ground_truth``); box labels give ``truth=None``.

    ``polarity`` is that of the networks the planes are for (their checkpoint's
    ``training.polarity``): with ``given``, planes whose particles are dark (recorded at
    import) are inverted.

    Raises
    ------
    ValueError
        A level the stack's pyramid does not have, a task without a network, or
        ``given`` for a phases stack imported without its particles' polarity.
    """
    import zarr

    from grainflow.evaluation.real import truth_labels

    root = zarr.open_group(str(stack), mode="r")
    info = dict(root.attrs)["grainflow"]
    name, task = info["stack"], info["task"]
    if task not in TASKS:
        raise ValueError(f"stack {name!r} is a {task!r} stack; planes are read for {sorted(TASKS)}")
    levels = len(info.get("levels") or [None])
    if not 0 <= level < levels or f"s{level}" not in root:
        raise ValueError(
            f"stack {stack} has pyramid levels 0..{levels - 1}, not {level}; re-import it "
            "with a smaller import_stack.pyramid_min_px or choose a lower level"
        )
    images = root[f"s{level}"]
    shapes = plane_shapes(info, root["s0"].shape)
    planes = info.get("planes") or [{} for _ in range(images.shape[0])]
    has_truth = with_truth and "labels" in root and "ground_truth" in root["labels"]
    target = TASKS[task].target
    out = {"images": [], "truth": [], "truth_full": [], "dark": []}
    darks = plane_particles_dark(info, len(shapes), required=polarity == "given", where=str(stack))
    for z, shape in enumerate(shapes):
        rows, cols = level_shape(shape, level)
        image = np.asarray(images[z, :rows, :cols], dtype=np.float32)
        dark = darks[z]
        out["dark"].append(dark)
        image = normalize_image(image, percentiles=norm_percentiles)
        out["images"].append(polarity_view(image, particles_dark=dark, polarity=polarity))
        if has_truth:
            gt = root["labels"]["ground_truth"]
            coarse = np.asarray(gt[f"s{level}"][z, :rows, :cols])
            full = np.asarray(gt["s0"][z, : shape[0], : shape[1]])
            out["truth"].append(truth_labels(task, coarse)[target])
            out["truth_full"].append(truth_labels(task, full)[target])
    return StackPlanes(
        name=name,
        task=task,
        level=int(level),
        images=out["images"],
        truth=out["truth"] if has_truth else None,
        truth_full=out["truth_full"] if has_truth else None,
        groups=[str(p.get("group") or p.get("file") or z) for z, p in enumerate(planes)],
        files=[str(p.get("file") or z) for z, p in enumerate(planes)],
        shapes=[tuple(int(v) for v in s) for s in shapes],
        particles_dark=out["dark"],
        polarity=polarity,
    )
