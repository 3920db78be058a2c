"""Specimen files: one HDF5 file of images, label maps and per-image metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from grainflow import __version__
from grainflow.io.staging import atomic_path

__all__ = [
    "write_probabilities",
    "read_probabilities",
    "STRING_META",
    "JSON_META",
    "Sample",
    "SpecimenFile",
    "write_specimen",
    "read_specimen",
]


STRING_META = ("image_id", "specimen", "session", "original_id", "modality")

JSON_META = ("params", "transform")


@dataclass
class Sample:
    """One image with its labels and metadata.

    image : ndarray of shape (H, W), float32 in [0, 1]
    labels : dict of name -> ndarray of shape (H, W)
    """

    image: np.ndarray
    labels: dict[str, np.ndarray]
    image_id: str
    specimen: str
    session: str
    seed: int
    modality: str = ""
    params: dict = field(default_factory=dict)
    original_id: str = ""
    transform: dict = field(default_factory=dict)


@dataclass
class SpecimenFile:
    """The contents of one specimen file, as read back."""

    task: str
    specimen: str
    samples: list[Sample]
    specimen_params: dict
    version: str


def _json(value: Mapping) -> str:
    return json.dumps(value, sort_keys=True, default=_to_builtin)


def _to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in JSON metadata")


def write_specimen(
    path: str | os.PathLike,
    samples: Sequence[Sample],
    *,
    task: str,
    specimen: str,
    specimen_params: Mapping | None = None,
    compression_level: int = 4,
) -> None:
    """Write ``samples`` of one specimen to an HDF5 file, atomically.

    All samples must share the set of label names; each sample's label maps
    have its image's shape. Images of several shapes (a crystal's spot
    patterns at 64 px and its ring patterns at 128 px) are stored padded with
    zeros to the largest, their own shapes in ``/meta/image_shape``, and read
    back at their own shapes.

    Notes
    -----
    The layout::

        /images         float32 (N, H, W), intensities in [0, 1], chunked per image, gzip
                        (H, W the largest image shape; smaller images padded with zeros)
        /labels/<name>  (N, H, W) per label kind, e.g. grain_ids (uint32), boundaries
                        (uint8), phase (uint8), particle_ids (uint32)
        /meta/<field>   one entry per image: image_id, specimen, session, original_id,
                        modality (str); seed (int64); params, transform (JSON str);
                        image_shape (int64, (N, 2)): each image's own shape
        attrs           task, specimen, grainflow_version, specimen_params (JSON)

    The file is written to a temporary file in the same folder that replaces
    ``path`` only when complete, so that a failed job leaves nothing a rerun would
    trust.
    """
    if not samples:
        raise ValueError(f"no samples to write for specimen {specimen!r} ({path})")
    names = sorted(samples[0].labels)
    for s in samples:
        if s.image.ndim != 2 or sorted(s.labels) != names:
            raise ValueError(
                f"sample {s.image_id!r} has an image of shape {s.image.shape} and labels "
                f"{sorted(s.labels)}, expected one (H, W) image and labels {names}"
            )
        bad = {n: s.labels[n].shape for n in names if s.labels[n].shape != s.image.shape}
        if bad:
            raise ValueError(
                f"sample {s.image_id!r}: label maps {bad} differ from its image's {s.image.shape}"
            )
    shapes = np.array([s.image.shape for s in samples], dtype=np.int64)
    shape = tuple(int(v) for v in shapes.max(axis=0))
    chunks = (1, *shape)

    def stacked(arrays):
        first = np.asarray(arrays[0])
        out = np.zeros((len(arrays), *shape), dtype=first.dtype)
        for k, a in enumerate(arrays):
            out[k, : a.shape[0], : a.shape[1]] = a
        return out

    gz = dict(compression="gzip", compression_opts=compression_level, shuffle=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["task"] = task
        f.attrs["specimen"] = specimen
        f.attrs["grainflow_version"] = __version__
        f.attrs["specimen_params"] = _json(specimen_params or {})
        f.create_dataset(
            "images",
            data=stacked([s.image for s in samples]).astype(np.float32),
            chunks=chunks,
            **gz,
        )
        f.create_group("labels")  # present even without label maps (diffraction patterns)
        for name in names:
            data = stacked([s.labels[name] for s in samples])
            f.create_dataset(f"labels/{name}", data=data, chunks=chunks, **gz)
        str_dt = h5py.string_dtype()
        for key in STRING_META:
            f.create_dataset(f"meta/{key}", data=[getattr(s, key) for s in samples], dtype=str_dt)
        for key in JSON_META:
            f.create_dataset(
                f"meta/{key}", data=[_json(getattr(s, key)) for s in samples], dtype=str_dt
            )
        f.create_dataset("meta/seed", data=np.array([s.seed for s in samples], dtype=np.int64))
        f.create_dataset("meta/image_shape", data=shapes)


def read_specimen(path: str | os.PathLike, *, indices: Sequence[int] | None = None) -> SpecimenFile:
    """Read a specimen file written by :func:`write_specimen` (all images, or ``indices``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"specimen file {path} does not exist; run the rule that makes it")
    with h5py.File(path, "r") as f:
        for key in ("images", "labels", "meta"):
            if key not in f:
                raise ValueError(f"{path} is not a grainflow specimen file: no '/{key}'")
        n = f["images"].shape[0]
        idx = list(range(n)) if indices is None else [int(i) for i in indices]
        images = f["images"][sorted(set(idx))] if idx else np.empty((0,))
        order = {j: k for k, j in enumerate(sorted(set(idx)))}
        labels = {name: f["labels"][name][sorted(set(idx))] for name in f["labels"]}
        meta = {k: f["meta"][k][()] for k in f["meta"]}
        own = meta.get("image_shape")  # absent in files written before mixed shapes
        samples = []
        for i in idx:
            k = order[i]
            h, w = images.shape[1:] if own is None else (int(own[i][0]), int(own[i][1]))
            text = {
                k2: meta[k2][i].decode() if isinstance(meta[k2][i], bytes) else meta[k2][i]
                for k2 in (*STRING_META, *JSON_META)
                if k2 in meta
            }
            samples.append(
                Sample(
                    image=images[k, :h, :w],
                    labels={name: arr[k, :h, :w] for name, arr in labels.items()},
                    image_id=text["image_id"],
                    specimen=text["specimen"],
                    session=text["session"],
                    seed=int(meta["seed"][i]),
                    modality=text.get("modality", ""),
                    params=json.loads(text.get("params", "{}")),
                    original_id=text.get("original_id", ""),
                    transform=json.loads(text.get("transform", "{}")),
                )
            )
        return SpecimenFile(
            task=str(f.attrs["task"]),
            specimen=str(f.attrs["specimen"]),
            samples=samples,
            specimen_params=json.loads(f.attrs.get("specimen_params", "{}")),
            version=str(f.attrs.get("grainflow_version", "")),
        )


def write_probabilities(
    path: str | os.PathLike, probability: np.ndarray, image_ids: Sequence[str]
) -> None:
    """Write held-out probabilities, one map per image, atomically.

    Layout: ``/probability`` float (N, H, W), chunked per image, gzip;
    ``/image_id`` (N,) strings.
    """
    probability = np.asarray(probability)
    if len(image_ids) != len(probability):
        raise ValueError(
            f"{len(image_ids)} image ids for {len(probability)} probability maps ({path})"
        )
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(
            "probability", data=probability, compression="gzip", chunks=(1, *probability.shape[1:])
        )
        f.create_dataset("image_id", data=list(image_ids), dtype=h5py.string_dtype())


def read_probabilities(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The maps written by :func:`write_probabilities`, by image id."""
    with h5py.File(path, "r") as f:
        return dict(zip(f["image_id"].asstr()[()], f["probability"][()]))
