"""Training crystal-system classifiers: from scratch, pretraining, transfer."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from grainflow.checkpoint import load_checkpoint
from grainflow.diffraction.data import (
    TARGETS,
    _dataset,
    fold_rows,
    load_patterns,
    subsample_per_class,
)
from grainflow.diffraction.evaluate import predict_proba
from grainflow.diffraction.representation import (
    checkpoint_form_px,
    model_representation,
    represent,
)
from grainflow.io.hdf5 import read_specimen
from grainflow.seeds import derive_seed
from grainflow.splits import read_manifest
from grainflow.training.config import arch_settings
from grainflow.training.loop import train

__all__ = [
    "LOG",
    "CLASSIFIER_DEFAULTS",
    "classifier_config",
    "train_classifier",
    "pretrain",
    "transfer_run",
    "train_diffraction_fold",
]


LOG = logging.getLogger(__name__)

#: training defaults of a classifier (the teaching example's: Adam, lr 1e-3, cosine annealing, CE)
CLASSIFIER_DEFAULTS = {
    "optimizer": "adam",
    "lr": 1e-3,
    "min_lr": 1e-5,
    "warmup_epochs": 0.0,
    "weight_decay": 0.0,
    "grad_clip": 0.0,
    "loss": "ce",
    "class_weights": "none",
    "flips": True,
}


def classifier_config(arch: Mapping, *, shared: Mapping | None = None, **overrides):
    """Model name, model kwargs and :class:`~grainflow.training.config.TrainConfig` of a classifier block.

    :data:`CLASSIFIER_DEFAULTS` (Adam, lr 1e-3, cosine to ``min_lr`` without
    warm-up, plain cross-entropy) apply unless the block or ``shared`` sets them.
    """

    keep = {k: v for k, v in arch.items() if k not in ("rotate", "val_specimens_per_class")}
    return arch_settings(keep, shared={**CLASSIFIER_DEFAULTS, **(shared or {})}, **overrides)


def train_classifier(
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    *,
    model_name: str,
    model_kwargs: Mapping,
    config,
    best_path: str | os.PathLike,
    history_path: str | os.PathLike,
    last_path: str | os.PathLike,
    target: str = "class_index",
    rotate: bool = True,
    representation: str | Mapping[str, str] | None = None,
    root: str | os.PathLike = ".",
    extra: Mapping | None = None,
):
    """Train a classifier on ``train_rows``, choosing the epoch on ``val_rows``.

    Parameters
    ----------
    train_rows, val_rows : DataFrame
        Manifest rows (``file``, ``index``, ``image_id``).
    model_name, model_kwargs, config
        As returned by :func:`classifier_config`; ``num_classes`` is set
        from ``target`` when missing.
    best_path, history_path, last_path : path
        Outputs of :func:`grainflow.training.loop.train`.
    target : {"class_index", "bravais_index"}
        What to learn: the crystal system (3 classes) or the Bravais lattice (8).
    rotate : bool
        Online random rotations of the training patterns (and, with
        ``config.flips``, mirrors; the flips are done by the dataset, before
        the representation, and the loop's own are switched off).
    representation : mapping, optional
        Form of each pattern kind (:func:`representation_of`; default
        :data:`DEFAULT_REPRESENTATION`), recorded in the checkpoint.

    Returns
    -------
    grainflow.training.config.TrainResult

    Notes
    -----
    A model that reads only some pattern kinds (``ring_profile``:
    :func:`~grainflow.diffraction.representation.model_representation`) trains and
    validates on the rows of those kinds only, in its own forms; the checkpoint
    records the kinds (``extra["kinds"]``), the forms and the side of the 2-D forms
    (``extra["form_px"]``, the smallest pattern side of the training rows), which
    evaluation, the scan map and the real stacks use again.
    """
    import dataclasses

    if target not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {target=}")
    model_kwargs = {"num_classes": len(TARGETS[target]), **dict(model_kwargs)}
    forms = model_representation(model_name, representation)
    train_set = _dataset(
        train_rows,
        target=target,
        rotate=rotate,
        flips=config.flips,
        representation=forms,
        root=root,
        kinds=sorted(forms),
    )
    val_set = _dataset(
        val_rows,
        target=target,
        rotate=False,
        flips=False,
        representation=forms,
        root=root,
        px=train_set.px,
        kinds=sorted(forms),
    )
    if not len(train_set) or not len(val_set):
        raise ValueError(
            f"{model_name} reads {sorted(forms)} patterns; the training or validation rows "
            "hold none (synthesize.diffraction.modalities)"
        )
    augmentation = {"rotate": bool(rotate), "flips": bool(config.flips)}
    config = dataclasses.replace(config, flips=False)
    LOG.info(
        "%s: %d training patterns %s, %d validation patterns",
        model_name,
        len(train_set),
        np.bincount(train_set.targets, minlength=len(TARGETS[target])).tolist(),
        len(val_set),
    )
    return train(
        model_name,
        model_kwargs,
        train_set,
        val_set,
        config,
        best_path=best_path,
        history_path=history_path,
        last_path=last_path,
        extra={
            "task": "diffraction",
            "target": target,
            "representation": forms,
            "kinds": sorted(forms),
            "form_px": int(train_set.px),
            "augmentation": augmentation,
            "classes": list(TARGETS[target]),
            **dict(extra or {}),
        },
    )


def pretrain(
    patterns: str | os.PathLike,
    *,
    model_kwargs: Mapping | None = None,
    config,
    best_path: str | os.PathLike,
    history_path: str | os.PathLike,
    last_path: str | os.PathLike,
    target: str = "bravais_index",
    val_fraction: float = 0.1,
    rotate: bool = True,
    representation: str | Mapping[str, str] | None = None,
    seed: int = 0,
):
    """Pretrain a ResNet-18 on a large synthetic set (one specimen file of many crystals).

    The crystals are split ``1 - val_fraction`` / ``val_fraction`` (whole
    crystals, every class of ``target`` in both); the weights of the best
    validation epoch go to ``best_path``, a grainflow checkpoint that
    :func:`grainflow.checkpoint.load_pretrained` reads (a head of another size
    is left out).
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction=}")
    sf = read_specimen(patterns)
    rows = pd.DataFrame(
        {
            "image_id": [s.image_id for s in sf.samples],
            "specimen": [s.specimen for s in sf.samples],
            "label": [
                s.params["bravais" if target == "bravais_index" else "crystal_system"]
                for s in sf.samples
            ],
            "file": str(patterns),
            "index": range(len(sf.samples)),
        }
    )
    rng = np.random.default_rng(derive_seed(seed, "pretrain-validation"))
    val = []
    for label, group in rows.groupby("label", sort=True):
        names = sorted(set(group["specimen"]))
        k = max(1, round(val_fraction * len(names)))
        if k >= len(names):
            raise ValueError(
                f"{patterns}: {len(names)} crystal(s) of {label}, too few to hold "
                "some out for validation; add crystals "
                "(diffraction.pretrain.crystals)"
            )
        val += list(rng.choice(names, k, replace=False))
    is_val = rows["specimen"].isin(val)
    return train_classifier(
        rows[~is_val],
        rows[is_val],
        model_name="resnet18",
        model_kwargs=model_kwargs or {},
        config=config,
        best_path=best_path,
        history_path=history_path,
        last_path=last_path,
        target=target,
        rotate=rotate,
        representation=representation,
        extra={"pretraining": str(patterns)},
    )


def transfer_run(
    manifest: pd.DataFrame,
    fold: int,
    *,
    strategy: str,
    n_per_class: int,
    steps: int,
    config,
    pretrained: str,
    out_dir: str | os.PathLike,
    val_specimens_per_class: int = 1,
    validation_seed: int = 0,
    rotate: bool = True,
    representation: str | Mapping[str, str] | None = None,
    root: str | os.PathLike = ".",
    device: str = "cpu",
    seed: int = 0,
) -> dict:
    """Train a ResNet-18 with ``strategy`` on ``n_per_class`` patterns per class; test on ``fold``.

    Parameters
    ----------
    strategy : {"frozen", "finetune", "full", "scratch"}
        A transfer strategy from ``pretrained``, or "scratch": random
        initialisation, everything trained (the baseline transfer must beat).
    n_per_class : int
        Labelled training patterns per crystal system (drawn from the
        training folds, ``seed``).
    steps : int
        Optimiser steps (about): epochs = ``ceil(steps / ceil(3 n / batch_size))``,
        so that small and large sets train for the same number of updates.
    config : TrainConfig
        Training settings (batch size, lr, ...); strategy, pretrained and
        epochs are set here.

    Returns
    -------
    row : dict
        strategy, n_per_class, fold, epochs, best_epoch, test accuracy (and
        per modality), test patterns, trainable parameters.

    Notes
    -----
    ``pretrained`` is a local weights file read by
    :func:`grainflow.checkpoint.load_pretrained`: ImageNet weights saved once by the
    user, or grainflow's own pretraining on a large synthetic set of other crystals
    (:func:`pretrain`). The strategies are those of
    :func:`grainflow.models.resnet.set_transfer_strategy`.
    """
    import dataclasses

    if strategy not in ("frozen", "finetune", "full", "scratch"):
        raise ValueError(f"strategy must be frozen, finetune, full or scratch, got {strategy=}")
    train_rows, val_rows, test_rows = fold_rows(
        manifest, fold, val_specimens_per_class=val_specimens_per_class, seed=validation_seed
    )
    train_rows = subsample_per_class(
        train_rows, n_per_class, seed=derive_seed(seed, "subsample", n_per_class, fold)
    )
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    epochs = max(1, math.ceil(steps / steps_per_epoch))
    config = dataclasses.replace(
        config,
        epochs=epochs,
        transfer="full" if strategy == "scratch" else strategy,
        pretrained="" if strategy == "scratch" else str(pretrained),
    )
    out = Path(out_dir)
    result = train_classifier(
        train_rows,
        val_rows,
        model_name="resnet18",
        model_kwargs={},
        config=config,
        best_path=out / "best.pt",
        history_path=out / "history.tsv",
        last_path=out / "last.pt",
        rotate=rotate,
        representation=representation,
        root=root,
        extra={"fold": int(fold), "strategy": strategy, "n_per_class": int(n_per_class)},
    )
    images, meta = load_patterns(test_rows, root=root)
    px = checkpoint_form_px(load_checkpoint(out / "best.pt"))
    images = represent(images, meta["modality"].tolist(), representation, px=px)
    probs = predict_proba(result.model, images, device=device)
    correct = probs.argmax(axis=1) == meta["class_index"].to_numpy()
    row = {
        "strategy": strategy,
        "n_per_class": int(n_per_class),
        "fold": int(fold),
        "epochs": epochs,
        "best_epoch": result.best_epoch,
        "trainable_parameters": int(
            sum(p.numel() for p in result.model.parameters() if p.requires_grad)
        ),
        "test_patterns": int(len(meta)),
        "accuracy": float(correct.mean()),
    }
    for modality in sorted(set(meta["modality"])):
        row[f"accuracy_{modality}"] = float(correct[meta["modality"].to_numpy() == modality].mean())
    return row


def train_diffraction_fold(
    manifest: str | os.PathLike,
    fold: int,
    *,
    arch: Mapping,
    shared: Mapping | None = None,
    pretrained: str = "",
    best_path: str | os.PathLike,
    history_path: str | os.PathLike,
    last_path: str | os.PathLike,
    val_specimens_per_class: int = 1,
    validation_seed: int = 0,
    rotate: bool = True,
    representation: str | Mapping[str, str] | None = None,
    seed: int = 0,
    threads: int = 1,
    root: str | os.PathLike = ".",
):
    """Train the model of one fold from the split manifest (the ``diffraction_train`` rule).

    ``arch`` is one block of ``diffraction.archs`` (``model``, ``model_kwargs``,
    TrainConfig fields), ``shared`` the settings common to all of them;
    ``pretrained`` a local weights file for ``resnet18`` ("" = random init).
    ``validation_seed`` picks the validation crystals (the same for every
    architecture), ``seed`` the weights, data order and augmentation.
    """

    table = read_manifest(manifest)
    train_rows, val_rows, _ = fold_rows(
        table, int(fold), val_specimens_per_class=val_specimens_per_class, seed=validation_seed
    )
    overrides = {"threads": int(threads), "seed": int(seed)}
    if arch.get("model") == "resnet18":
        overrides["pretrained"] = str(pretrained or "")
    name, kwargs, config = classifier_config(arch, shared=shared, **overrides)
    return train_classifier(
        train_rows,
        val_rows,
        model_name=name,
        model_kwargs=kwargs,
        config=config,
        best_path=best_path,
        history_path=history_path,
        last_path=last_path,
        rotate=rotate,
        representation=representation,
        root=root,
        extra={"fold": int(fold)},
    )
