"""Several processes per training job: the global batch's loss and batch norm."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from grainflow.runtime import DEVICES

__all__ = ["world_size_for"]

LOG = logging.getLogger(__name__)


def sum_over_processes(local: torch.Tensor) -> torch.Tensor:
    """``local`` summed over the processes of the default group, for a loss of the global batch.

    The value is the all-reduced sum. The gradient flows through this
    process's own ``local`` only (the other processes' shares enter as
    constants) and is multiplied by the world size: DistributedDataParallel
    averages the processes' gradients, and the average of ``W`` times each
    share is their sum, the gradient of the global batch's loss.
    """
    total = local.detach().clone()
    dist.all_reduce(total)
    return total + (local - local.detach()) * dist.get_world_size()


def convert_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers as SyncBatchNorm: statistics of the global batch (CUDA only in torch)."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    if device.type != "cuda":
        raise ValueError(
            "this model has BatchNorm layers, which torch synchronises across processes on CUDA "
            "only (SyncBatchNorm); on the CPU train it with world_size=1 or with group norm "
            "(model_kwargs norm: group)"
        )
    # the converted layers keep the same parameters (so the optimiser's groups stay valid),
    # buffers and state-dict keys
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def world_size_for(gpus: int, *, device: str = "auto") -> int:
    """Training processes for a job granted ``gpus`` GPUs: one per GPU it sees, at most ``gpus``.

    Parameters
    ----------
    gpus : int
        GPUs granted to the job (the train rule's ``gpu`` resource,
        ``training.gpus_per_job``; on SLURM the job sees them through
        ``CUDA_VISIBLE_DEVICES``).
    device : {"auto", "cpu", "cuda"}
        ``training.device``.

    Returns
    -------
    world_size : int
        1 on the CPU (device "cpu", or "auto" without a visible GPU);
        otherwise ``min(gpus, visible GPUs)``, with a warning when fewer GPUs
        are visible than granted. GPUs are counted through NVML
        (:func:`torch.cuda.device_count`), which leaves CUDA uninitialised so
        that :func:`train` can fork its processes.
    """
    if isinstance(gpus, bool) or not isinstance(gpus, (int, np.integer)) or gpus < 1:
        raise ValueError(f"gpus must be an integer >= 1, got {gpus=}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device=}")
    visible = torch.cuda.device_count() if device != "cpu" else 0
    if visible and visible < gpus:
        LOG.warning(
            "the job was granted %d GPUs but sees %d (CUDA_VISIBLE_DEVICES=%s); training on %d",
            gpus,
            visible,
            os.environ.get("CUDA_VISIBLE_DEVICES"),
            visible,
        )
    return max(1, min(gpus, visible))
