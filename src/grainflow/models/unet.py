"""U-Net for pixel classification (grain boundaries, phases), after Ronneberger et al. (2015).

The teaching example's U-Net: a double-convolution (or residual) encoder, a bottleneck and a
decoder with skip connections; :class:`UNet` states its shapes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["UNet", "ConvBlock", "ResidualBlock", "count_parameters"]

NORMS = ("batch", "group")


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Return the number of parameters of ``model`` (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def make_norm(norm: str, channels: int, *, groups: int = 8) -> nn.Module:
    """Return a normalisation layer: ``BatchNorm2d`` or ``GroupNorm`` with ``groups`` groups."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(groups, channels), channels)
    raise ValueError(f"norm must be one of {NORMS}, got {norm=}")


class ConvBlock(nn.Sequential):
    """Two 3×3 convolutions, each followed by normalisation and ReLU; size is kept.

    (N, in_channels, H, W) -> (N, out_channels, H, W)
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, norm: str = "batch", groups: int = 8
    ):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            make_norm(norm, out_channels, groups=groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            make_norm(norm, out_channels, groups=groups),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """ResNet basic block: ``relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``.

    The shortcut is the identity when the channel count is kept, else a 1×1
    convolution with normalisation (He et al. 2016, option B).
    (N, in_channels, H, W) -> (N, out_channels, H, W)
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, norm: str = "batch", groups: int = 8
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = make_norm(norm, out_channels, groups=groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, out_channels, groups=groups)
        self.relu = nn.ReLU(inplace=True)
        if in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                make_norm(norm, out_channels, groups=groups),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class EncoderStage(nn.Module):
    """A block at one resolution, then a 2×2 max pool; returns ``(skip, pooled)``."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.block(x)
        return skip, self.pool(skip)


class DecoderStage(nn.Module):
    """2×2 transposed convolution (×2 size, ½ channels), concatenation with the skip, ConvBlock."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str, groups: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.block = ConvBlock(2 * out_channels, out_channels, norm=norm, groups=groups)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """U-Net with ``depth`` encoder stages and skip connections.

    Parameters
    ----------
    in_channels : int
        Channels of the input image (1 for grey micrographs).
    out_channels : int
        Classes; the output is logits of shape (N, out_channels, H, W).
    depth : int
        Number of 2×2 poolings; the input size must be divisible by ``2**depth``.
    base_channels : int
        Channels of the first stage; stage ``i`` has ``base_channels * 2**i``.
    norm : {"batch", "group"}
        Batch norm (large batches) or group norm (small batches; ``groups`` groups,
        fewer when the channel count is not a multiple).
    residual : bool
        Use ResNet basic blocks instead of plain double convolutions in the
        encoder and the bottleneck.
    groups : int
        Groups of GroupNorm (ignored with batch norm).

    Notes
    -----
    Input (N, in_channels, H, W), output (N, out_channels, H, W); H and W must be
    multiples of ``2**depth`` (a ``ValueError`` says so otherwise). The model does
    no I/O; its constructor arguments are kept in ``hparams`` so that a
    checkpoint can rebuild it.

    An encoder of ``depth`` stages, each a double 3×3 convolution (or a ResNet basic
    block) followed by a 2×2 max pool that halves the size, a bottleneck, and a
    decoder that doubles the size with a 2×2 transposed convolution, concatenates the
    skip connection of the same size and applies a double convolution. A 1×1
    convolution gives the class logits. Shapes, for ``base_channels=c`` and
    ``depth=d``::

        input   (N, in_channels, H, W)          H and W divisible by 2**d
        stage i (N, c * 2**i, H / 2**i, ...)    skip connection, i = 0 … d-1
        pooled  (N, c * 2**i, H / 2**(i+1), …)  what stage i hands to stage i+1
        bottom  (N, c * 2**d, H / 2**d, …)
        output  (N, out_channels, H, W)         logits (no softmax)
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        *,
        depth: int = 4,
        base_channels: int = 32,
        norm: str = "batch",
        residual: bool = False,
        groups: int = 8,
    ):
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("out_channels", out_channels, 1),
            ("depth", depth, 1),
            ("base_channels", base_channels, 1),
            ("groups", groups, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm=}")
        if not isinstance(residual, bool):
            raise ValueError(f"residual must be true or false, got {residual=}")
        self.hparams = dict(
            in_channels=in_channels,
            out_channels=out_channels,
            depth=depth,
            base_channels=base_channels,
            norm=norm,
            residual=residual,
            groups=groups,
        )
        self.depth = depth
        block = ResidualBlock if residual else ConvBlock
        channels = [base_channels * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            EncoderStage(block(c_in, c_out, norm=norm, groups=groups))
            for c_in, c_out in zip([in_channels, *channels[:-2]], channels[:-1])
        )
        self.bottleneck = block(channels[-2], channels[-1], norm=norm, groups=groups)
        self.decoder = nn.ModuleList(
            DecoderStage(c_in, c_out, norm=norm, groups=groups)
            for c_in, c_out in zip(channels[:0:-1], channels[-2::-1])
        )
        self.head = nn.Conv2d(base_channels, out_channels, 1)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (``2**depth``)."""
        return 2**self.depth

    def check_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` unless (height, width) is divisible by ``2**depth``."""
        m = self.size_multiple
        if height % m or width % m or height < m or width < m:
            fit = tuple(max(m, round(s / m) * m) for s in (height, width))
            raise ValueError(
                f"U-Net of depth {self.depth} needs height and width divisible by 2**{self.depth}"
                f" = {m}, got (H, W) = {(height, width)}; crop or pad to e.g. {fit}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> logits (N, out_channels, H, W)."""
        if x.ndim != 4:
            raise ValueError(f"U-Net input must be (N, C, H, W), got shape {tuple(x.shape)}")
        self.check_size(x.shape[-2], x.shape[-1])
        skips = []
        for stage in self.encoder:  # x0 … x_{depth-1}: full size down to 1/2**(depth-1)
            skip, x = stage(x)
            skips.append(skip)
        x = self.bottleneck(x)  # 1/2**depth of the input size, base * 2**depth channels
        for stage, skip in zip(self.decoder, reversed(skips)):  # u_{depth-1} … u0
            x = stage(x, skip)
        return self.head(x)

    def encoder_trace(self, input_hw: tuple[int, int]) -> list[tuple[int, int, int]]:
        """Shapes handed on by each encoder stage, read by a forward pass with hooks.

        Each entry is ``(channels, H, W)`` of stage ``i``'s output after its
        2×2 max pool: the channels of its convolution block and the spatial size
        after pooling (the teaching example's convention). The bottleneck is not listed.
        The pass runs on a shape-only ("meta") copy of the model, so it costs
        no memory or time even for large inputs.

        Examples
        --------
        >>> UNet(base_channels=64, depth=4).encoder_trace((256, 256))
        [(64, 128, 128), (128, 64, 64), (256, 32, 32), (512, 16, 16)]
        """
        height, width = (int(s) for s in input_hw)
        self.check_size(height, width)
        with torch.device("meta"):
            twin = type(self)(**self.hparams)
        trace: list[tuple[int, int, int]] = []

        def record(module, args, output):
            _, pooled = output
            trace.append(tuple(pooled.shape[1:]))

        hooks = [stage.register_forward_hook(record) for stage in twin.encoder]
        try:
            x = torch.empty(1, self.hparams["in_channels"], height, width, device="meta")
            for stage in twin.encoder:
                _, x = stage(x)
        finally:
            for hook in hooks:
                hook.remove()
        return trace

    def num_parameters(self, *, trainable_only: bool = False) -> int:
        """Number of parameters (see :func:`count_parameters`)."""
        return count_parameters(self, trainable_only=trainable_only)
