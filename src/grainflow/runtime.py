"""The one place that resolves device, precision, TF32, threads and determinism."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = [
    "DEVICES",
    "AMP",
    "CPU_AMP",
    "Runtime",
    "cpu_amp_dtype",
    "cpu_bf16_native",
    "loop_autocast",
    "resolve_device",
    "runtime",
    "torch_threads",
]

LOG = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
AMP = ("bf16", "fp16", "off")
CPU_AMP = ("auto", "bf16", "off")


@dataclass
class Runtime:
    """Where and how the loop computes."""

    device: torch.device
    amp_dtype: torch.dtype | None = None  # autocast dtype
    channels_last: bool = False
    scaler: torch.amp.GradScaler | None = None  # fp16 only

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        non_blocking = self.device.type == "cuda"
        if self.channels_last and x.ndim == 4:
            return x.to(self.device, non_blocking=non_blocking, memory_format=torch.channels_last)
        return x.to(self.device, non_blocking=non_blocking)


def resolve_device(name: str | torch.device, *, key: str = "device") -> torch.device:
    """The torch device that a config's ``device`` value names.

    Parameters
    ----------
    name : {"auto", "cpu", "cuda", "cuda:N"} or torch.device
        "auto" is CUDA when a GPU is visible, else the CPU.
    key : str
        The config key named in error messages (e.g. "training.device").

    Raises
    ------
    ValueError
        For an unknown name, or "cuda" where no GPU is visible.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in DEVICES and not re.fullmatch(r"cuda:\d+", str(name)):
        raise ValueError(f"{key} must be one of {DEVICES} or 'cuda:N', got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{key} is {name!r} but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return torch.device(name)


def cpu_bf16_native() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX tiles or AVX-512 BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def cpu_amp_dtype(cpu_amp: str) -> torch.dtype | None:
    """The CPU autocast dtype of ``training.cpu_amp`` (auto: bf16 where the CPU has it natively)."""
    if cpu_amp == "bf16" or (cpu_amp == "auto" and cpu_bf16_native()):
        return torch.bfloat16
    return None


def loop_autocast(device: torch.device | str, cpu_amp: str = "off"):
    """Autocast for the small fine-tuning loops: bf16 on the CPU by ``cpu_amp``, else none."""
    dtype = cpu_amp_dtype(cpu_amp) if torch.device(device).type == "cpu" else None
    return contextlib.nullcontext() if dtype is None else torch.autocast("cpu", dtype=dtype)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch threads; restore the old count after."""
    saved = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _tf32_flags() -> tuple:
    """Current TF32 settings (matmul, cuDNN conv), in whichever API this torch has."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        return matmul.fp32_precision, conv.fp32_precision
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _set_tf32(flags: tuple | bool) -> None:
    """Restore flags from :func:`_tf32_flags`, or switch TF32 on (True) or off (False)."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    new_api = hasattr(matmul, "fp32_precision")
    if isinstance(flags, bool):
        flags = (("tf32" if flags else "ieee") if new_api else flags,) * 2
    if new_api:
        matmul.fp32_precision, conv.fp32_precision = flags
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@contextlib.contextmanager
def runtime(config) -> Iterator[Runtime]:
    """Set threads, determinism, TF32 and autotuning for ``config``; restore them on exit.

    Parameters
    ----------
    config : TrainConfig or any object with the same attributes
        ``device``, ``amp``, ``tf32``, ``channels_last``, ``deterministic``,
        ``threads`` and ``compile`` (:class:`grainflow.training.config.TrainConfig`).

    Notes
    -----
    ``device: auto`` picks CUDA when present. On CUDA: bf16 autocast (fp16 with
    gradient scaling on request), ``channels_last``, TF32 for float32 work and cuDNN
    autotuning, optionally ``torch.compile``, and the training loop's DataLoader uses
    pinned memory, workers and prefetching. On the CPU:
    ``torch.set_num_threads(threads)``, ``channels_last``, bf16 autocast by
    ``cpu_amp`` (``auto``: only where the CPU multiplies bf16 in hardware, AMX or
    AVX-512 BF16; elsewhere bf16 is emulated and slower than float32), and optionally
    ``torch.compile`` (worth it only for runs much longer than its compile of minutes).

    With ``deterministic: true`` a CPU run is bit-for-bit reproducible (same machine,
    torch build and thread count; a different thread count may change the last bits
    of reductions). On CUDA it sets ``CUBLAS_WORKSPACE_CONFIG``, turns on
    ``torch.use_deterministic_algorithms`` (warn-only there, so that an op without a
    deterministic CUDA kernel warns instead of failing a long job), cuDNN's
    deterministic kernels and no autotuning; the losses avoid the atomics of
    ``nll_loss2d``. Repeats and resumed runs then agree bit for bit on the same GPU
    model, driver and torch build. Not deterministic on CUDA: runs with
    ``deterministic: false`` (cuDNN autotuning may pick other kernels run to run),
    different GPU models, drivers or torch versions, ``compile`` across versions,
    and any GPU run compared with a CPU run (bf16 autocast and TF32 round
    differently).
    """
    device = resolve_device(config.device, key="training.device")
    cuda = device.type == "cuda"
    if cuda:  # this process's GPU (distributed training sets one per process)
        device = torch.device("cuda", torch.cuda.current_device())
    saved = dict(
        threads=torch.get_num_threads(),
        deterministic=torch.are_deterministic_algorithms_enabled(),
        warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn_deterministic=torch.backends.cudnn.deterministic,
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        tf32=_tf32_flags(),
    )
    try:
        amp_dtype = None
        if cuda:
            if config.deterministic:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[config.amp]
            if amp_dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
                LOG.warning("this GPU has no bf16; using fp16 autocast with gradient scaling")
                amp_dtype = torch.float16
            _set_tf32(bool(config.tf32))
            torch.backends.cudnn.benchmark = not config.deterministic
            LOG.info(
                "device %s (%s): autocast %s, channels_last %s, TF32 %s, cudnn.benchmark %s, "
                "compile %s",
                device,
                torch.cuda.get_device_name(device),
                amp_dtype,
                config.channels_last,
                config.tf32,
                torch.backends.cudnn.benchmark,
                config.compile,
            )
        else:
            torch.set_num_threads(config.threads)
            amp_dtype = cpu_amp_dtype(config.cpu_amp)
            LOG.info(
                "device cpu: %d threads, autocast %s (cpu_amp %s; native bf16 %s), "
                "channels_last %s, compile %s",
                torch.get_num_threads(),
                amp_dtype,
                config.cpu_amp,
                cpu_bf16_native(),
                config.channels_last,
                config.compile,
            )
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=cuda)
            torch.backends.cudnn.deterministic = True
            LOG.info("deterministic algorithms on%s", " (warn only on CUDA)" if cuda else "")
        scaler = torch.amp.GradScaler("cuda") if amp_dtype is torch.float16 else None
        yield Runtime(
            device=device,
            amp_dtype=amp_dtype,
            channels_last=config.channels_last,
            scaler=scaler,
        )
    finally:
        torch.set_num_threads(saved["threads"])
        torch.use_deterministic_algorithms(saved["deterministic"], warn_only=saved["warn_only"])
        torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]
        torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
        _set_tf32(saved["tf32"])
