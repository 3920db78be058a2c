"""Checkpoints and weights files: written atomically, read with ``weights_only=True``.

A checkpoint (:func:`make_checkpoint`) holds only tensors and plain Python containers, so
``torch.load(path, weights_only=True)`` reads it without executing code; pretrained weights
are read from local files only (:func:`load_pretrained`).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from grainflow import __version__
from grainflow.io.staging import atomic_path
from grainflow.models.registry import build_model
from grainflow.models.resnet import ResNet18

__all__ = [
    "load_pretrained",
    "FORMAT",
    "make_checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_torch_file",
    "model_from_checkpoint",
    "unwrap_model",
    "rng_state",
    "set_rng_state",
    "sha256_file",
]

FORMAT = "grainflow-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("model_name", "model_kwargs", "model_state")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module whose state dict has clean keys (undoes ``torch.compile``'s wrapper)."""
    return getattr(model, "_orig_mod", model)


def rng_state() -> dict:
    """States of torch's (CPU and CUDA), NumPy's global and Python's random generators."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": np_state[1].tolist(),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping) -> None:
    """Restore the generators saved by :func:`rng_state` (CUDA only when present)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np.array(n["keys"], dtype=np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def make_checkpoint(
    *,
    model: nn.Module,
    model_name: str,
    model_kwargs: Mapping,
    epoch: int,
    step: int,
    config: Mapping | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    extra: Mapping | None = None,
    with_rng: bool = True,
) -> dict:
    """Assemble a checkpoint dict of tensors and plain Python containers.

    Notes
    -----
    The keys::

        format          "grainflow-checkpoint"
        format_version  1
        version         grainflow version that wrote it
        model_name      registry name, e.g. "unet" (see grainflow.models.registry.build_model)
        model_kwargs    dict of constructor arguments
        model_state     state dict of the model
        optimizer_state, scheduler_state   state dicts, or None
        epoch, step     epochs and optimiser steps completed
        config          dict of the training configuration
        rng             RNG states: torch (CPU), cuda (per device), numpy (global), python
        extra           anything else the caller stores (history, best score, ...), plain types
    """
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "model_name": str(model_name),
        "model_kwargs": dict(model_kwargs),
        "model_state": unwrap_model(model).state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "step": int(step),
        "config": dict(config or {}),
        "rng": rng_state() if with_rng else None,
        "extra": dict(extra or {}),
    }


def _canonical(obj):
    """``obj`` with fresh containers and interned strings: its pickle depends on values only.

    pickle writes an object seen before as a reference to its first copy, so the bytes
    of equal checkpoints would differ with which of their strings and containers happen
    to be one object (a history read back from ``last.pt`` shares nothing, one built in
    memory shares its key strings). Interned, equal strings are always one object;
    rebuilt, containers never are. Tensors are left as they are.
    """
    if type(obj) is str:
        return sys.intern(obj)
    if isinstance(obj, dict):
        out = type(obj)((_canonical(k), _canonical(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a module's state dict: its modules' versions
            out._metadata = _canonical(obj._metadata)
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_canonical(v) for v in obj)
    return obj


def save_checkpoint(path: str | os.PathLike, checkpoint: Mapping) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temp file + ``os.replace``).

    The temporary file lies in the same folder and is moved onto ``path`` only once
    complete (:func:`grainflow.io.staging.atomic_path`): a job killed while saving
    leaves the previous checkpoint intact. Equal checkpoints give equal bytes, whatever
    the file's name and whichever of their objects are shared, so their SHA-256 can be
    compared across runs.
    """
    missing = [k for k in REQUIRED if k not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint for {path} lacks {missing}; build it with make_checkpoint")
    path = Path(path)
    # serialised in memory first: torch.save names the zip archive after the file it writes
    # to, so saving to the random temporary name would make equal checkpoints differ in bytes
    buffer = io.BytesIO()
    torch.save(_canonical(dict(checkpoint)), buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def read_torch_file(path: str | os.PathLike, *, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with errors that name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; run the rule that writes it (train) or fix the path"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds objects other than tensors and plain containers, so it cannot be "
            "read safely with weights_only=True; it was not written by grainflow. Re-save it "
            f"as a state dict (torch.save(model.state_dict(), path)). Detail: {error}"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise ValueError(
            f"{path} is not a readable torch file (truncated or corrupt?); delete it and rerun "
            f"the rule that writes it. Detail: {type(error).__name__}: {error}"
        ) from error


def load_checkpoint(path: str | os.PathLike, *, map_location="cpu") -> dict:
    """Read a grainflow checkpoint with ``weights_only=True`` and check its keys.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is corrupt, unsafe to load, or not a grainflow checkpoint.
    """
    obj = read_torch_file(path, map_location=map_location)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a grainflow checkpoint (no format={FORMAT!r}); it may be a bare "
            "state dict: load that with model.load_state_dict, or retrain with the train rule"
        )
    if obj.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by grainflow {obj.get('version')} (checkpoint format "
            f"{obj['format_version']}), newer than this one ({__version__}); update grainflow"
        )
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise ValueError(f"{path} lacks {missing}; retrain with the train rule")
    return obj


def model_from_checkpoint(
    checkpoint: Mapping | str | os.PathLike, *, map_location="cpu"
) -> nn.Module:
    """Rebuild the model of a checkpoint (dict or path), load its weights, set eval mode."""
    if not isinstance(checkpoint, Mapping):
        checkpoint = load_checkpoint(checkpoint, map_location=map_location)
    model = build_model(checkpoint["model_name"], **checkpoint["model_kwargs"])
    model.load_state_dict(checkpoint["model_state"])
    return model.eval()


def sha256_file(path: str | os.PathLike, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (provenance of a checkpoint in outputs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _strip_prefixes(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def load_pretrained(model: ResNet18, path: str | os.PathLike) -> dict:
    """Load backbone weights from a local file into ``model`` (never downloads).

    Accepted files: a torchvision ResNet-18 state dict (e.g. ImageNet weights
    saved once with ``torch.save(resnet18(weights=...).state_dict(), path)``)
    or a grainflow checkpoint of a ``resnet18`` model. Read with
    ``weights_only=True``. RGB first-layer weights (64, 3, 7, 7) are summed
    over the colour channels into (64, 1, 7, 7), so that a grey image gives
    the response of the same grey RGB image. The head is loaded only when its
    shape matches (same number of classes); otherwise it stays freshly
    initialised.

    Returns
    -------
    report : dict
        ``{"file", "loaded": int, "head": "loaded" | "new", "conv1": "copied" | "summed RGB"}``
    """
    obj = read_torch_file(path)
    state = obj.get("model_state", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path} holds no ResNet-18 state dict; save one with "
            "torch.save(model.state_dict(), path)"
        )
    state = _strip_prefixes(state)
    own = model.state_dict()
    report = {"file": str(path), "conv1": "copied", "head": "new"}

    w = state.get("conv1.weight")
    want = own["conv1.weight"].shape
    if w is not None and w.shape != want:
        if w.ndim == 4 and w.shape[1] == 3 and want[1] == 1 and w.shape[0] == want[0]:
            state["conv1.weight"] = w.sum(dim=1, keepdim=True)
            report["conv1"] = "summed RGB"
        else:
            raise ValueError(
                f"{path}: conv1.weight has shape {tuple(w.shape)}, the model needs {tuple(want)}"
            )
    head = {k: v for k, v in state.items() if k.startswith("fc.")}
    if head and all(k in own and own[k].shape == v.shape for k, v in head.items()):
        report["head"] = "loaded"
    else:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    backbone_keys = {k for k in own if not k.startswith("fc.")}
    missing = sorted(backbone_keys - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not hold ResNet-18 weights: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]} (of {len(missing)}, "
            f"{len(unexpected)}, {len(wrong)}); give a torchvision resnet18 state dict"
        )
    model.load_state_dict(state, strict=False)
    report["loaded"] = len(state)
    return report
