"""The teaching example's DiffractionCNN: a small CNN that classifies a diffraction pattern.

It predicts the crystal system (cubic, hexagonal, orthorhombic); :class:`DiffractionCNN`
lists its layers and parameter counts.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DiffractionCNN"]


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DiffractionCNN(nn.Module):
    """Three conv blocks, global average pooling and two dense layers.

    Parameters
    ----------
    in_channels : int
        Channels of the pattern (1).
    num_classes : int
        Crystal systems (3: cubic, hexagonal, orthorhombic).
    dropout : float
        Dropout probability before the last layer (0.3 in the teaching example).

    Notes
    -----
    Input (N, in_channels, H, W) with H, W >= 4 (two 2×2 poolings; 64×64 by
    default); output logits (N, num_classes). Global average pooling is
    written as a mean over (H, W), which is deterministic on CUDA (unlike the
    backward of ``AdaptiveAvgPool2d``).

    Layers (parameters for one input channel and 3 classes)::

        conv1  3×3, 1 -> 32, BN, ReLU, 2×2 max pool        320 (+ 64 BN)
        conv2  3×3, 32 -> 64, BN, ReLU, 2×2 max pool    18,496 (+ 128 BN)
        conv3  3×3, 64 -> 128, BN, ReLU                 73,856 (+ 256 BN)
        global average pooling                  -> (N, 128)
        fc1    128 -> 64, ReLU, dropout 0.3          8,256
        fc2    64 -> 3 (logits)                        195
                                               total 101,571 (101,123 without BN)
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3, *, dropout: float = 0.3):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout=}")
        self.hparams = dict(in_channels=in_channels, num_classes=num_classes, dropout=dropout)
        self.conv1 = _conv_bn_relu(in_channels, 32)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = _conv_bn_relu(32, 64)
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = _conv_bn_relu(64, 128)
        self.fc1 = nn.Linear(128, 64)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(64, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> pooled features (N, 128)."""
        if x.ndim != 4 or x.shape[-1] < 4 or x.shape[-2] < 4:
            raise ValueError(
                f"DiffractionCNN input must be (N, C, H>=4, W>=4), got {tuple(x.shape)}"
            )
        x = self.pool1(self.conv1(x))  # (N, 32, H/2, W/2)
        x = self.pool2(self.conv2(x))  # (N, 64, H/4, W/4)
        x = self.conv3(x)  # (N, 128, H/4, W/4)
        return x.mean(dim=(-2, -1))  # global average pooling: (N, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> logits (N, num_classes)."""
        x = self.features(x)
        x = self.dropout(self.relu(self.fc1(x)))  # (N, 64)
        return self.fc2(x)
