"""Fold models averaged into one predictor of tile batches."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from grainflow.checkpoint import load_checkpoint, model_from_checkpoint, sha256_file
from grainflow.inference.predict import FLIPS
from grainflow.inference.trust import disagreement as member_disagreement
from grainflow.models.registry import fold_batch_norm
from grainflow.runtime import resolve_device

__all__ = ["Ensemble", "load_ensemble"]


@dataclass
class Ensemble:
    """Fold models whose softmax probabilities are averaged; callable on tile batches.

    ``ensemble(batch)`` maps a float32 ndarray of shape (N, 1, h, w) to the mean
    probabilities (N, C, h, w), float32, on the CPU (the models run on ``device``);
    with ``disagreement`` to (N, C + 1, h, w): the mean probabilities, then the
    members' disagreement (:func:`grainflow.inference.trust.disagreement`), so
    that tiling blends it like a probability, in the same pass.

    Attributes
    ----------
    models : list of Module
        In eval mode, on ``device``.
    task : str
    n_classes : int
    norm_percentiles : (float, float)
        Per-image percentiles the models were trained with.
    polarity : {"learned", "given"}
        How the models were shown the particles (:func:`grainflow.normalize.polarity_view`).
    flips : bool
        Also average over the 4 flips of each tile (test-time augmentation).
    device : torch.device
    checkpoints : list of dict
        Provenance: path, sha256, fold, epoch, model_name, version.
    disagreement : bool
        Also return the disagreement of the members (each model x each flip) as
        a last channel; the probabilities are the same, bit for bit.
    """

    models: list
    task: str
    n_classes: int
    norm_percentiles: tuple[float, float]
    flips: bool
    device: object
    checkpoints: list[dict] = field(default_factory=list)
    disagreement: bool = False
    polarity: str = "learned"

    @property
    def n_members(self) -> int:
        """Members averaged: models x test-time flips."""
        return len(self.models) * (len(FLIPS) if self.flips else 1)

    def with_disagreement(self, on: bool = True) -> Ensemble:
        """The same ensemble, returning the disagreement channel (or not)."""
        return dataclasses.replace(self, disagreement=bool(on))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            x = x.contiguous(memory_format=torch.channels_last)
            total, members = None, []
            flips = FLIPS if self.flips else FLIPS[:1]
            for model in self.models:
                for dims in flips:
                    xi = torch.flip(x, dims) if dims else x
                    p = torch.softmax(model(xi).float(), dim=1)
                    p = torch.flip(p, dims) if dims else p
                    total = p if total is None else total + p
                    if self.disagreement:
                        members.append(p)
            mean = total / (len(self.models) * len(flips))
            if self.disagreement:
                mean = torch.cat([mean, member_disagreement(members, mean)[:, None]], dim=1)
            return mean.contiguous().cpu().numpy()


def load_ensemble(
    checkpoints: Sequence[str | os.PathLike],
    *,
    task: str | None = None,
    device: str = "auto",
    flips: bool = False,
) -> Ensemble:
    """Load the fold checkpoints of one architecture as an :class:`Ensemble`.

    Parameters
    ----------
    checkpoints : sequence of path-like
        ``best.pt`` files (:mod:`grainflow.checkpoint`), one per fold.
    task : str, optional
        Checked against the task each checkpoint was trained on.
    device : {"auto", "cpu", "cuda"}
        Where the models run; "auto" picks CUDA when present.
    flips : bool
        Test-time flips.

    Raises
    ------
    ValueError
        No checkpoint, or checkpoints of another task, with other class counts,
        other normalisation percentiles or other polarities.
    """
    import torch

    if not checkpoints:
        raise ValueError("need at least one checkpoint, got none")
    dev = resolve_device(device)
    models, info, tasks, percentiles, classes, polarities = [], [], set(), set(), set(), set()
    for path in checkpoints:
        ckpt = load_checkpoint(path, map_location="cpu")
        extra, config = ckpt.get("extra") or {}, ckpt.get("config") or {}
        ckpt_task = extra.get("task")
        if task is not None and ckpt_task is not None and ckpt_task != task:
            raise ValueError(
                f"checkpoint {path} was trained on task {ckpt_task!r}, but the "
                f"stack is a {task!r} stack; use the models of task {task!r}"
            )
        tasks.add(ckpt_task)
        percentiles.add(tuple(float(p) for p in config.get("norm_percentiles", (1.0, 99.0))))
        polarities.add(config.get("polarity", "learned"))
        # batch norm folded into the convolutions, channels_last: the trained model's function
        # to ~1e-5, and on the CPU twice as fast as the plain model (benchmarks/infer_vs_monai.py)
        model = fold_batch_norm(model_from_checkpoint(ckpt).eval())
        model = model.to(dev, memory_format=torch.channels_last)
        out_channels = ckpt["model_kwargs"].get("out_channels")
        if out_channels is None:
            with torch.inference_mode():
                out_channels = int(model(torch.zeros(1, 1, 64, 64, device=dev)).shape[1])
        classes.add(int(out_channels))
        models.append(model)
        info.append(
            {
                "path": str(path),
                "sha256": sha256_file(path),
                "fold": extra.get("fold"),
                "epoch": int(ckpt.get("epoch", 0)),
                "model_name": ckpt["model_name"],
                "version": ckpt.get("version"),
            }
        )
    if len(percentiles) != 1:
        raise ValueError(
            f"the checkpoints were trained with different normalisations "
            f"(norm_percentiles {sorted(percentiles)}); an ensemble needs one"
        )
    if len(polarities) != 1:
        raise ValueError(
            f"the checkpoints were trained with different polarities {sorted(polarities)} "
            "(training.polarity); an ensemble needs one"
        )
    if len(classes) != 1:
        raise ValueError(f"the checkpoints predict different numbers of classes {sorted(classes)}")
    tasks.discard(None)
    if task is None:
        if len(tasks) != 1:
            raise ValueError(f"give task=; the checkpoints name the tasks {sorted(tasks)}")
        task = tasks.pop()
    return Ensemble(
        models=models,
        task=task,
        n_classes=classes.pop(),
        norm_percentiles=percentiles.pop(),
        polarity=polarities.pop(),
        flips=bool(flips),
        device=dev,
        checkpoints=info,
    )
