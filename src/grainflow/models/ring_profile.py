"""A 1-D network on a ring pattern's azimuthal profile whose receptive field spans the profile.

A ring pattern's crystal system is in the ratio sequence of its ring radii: on a
log-radius profile, a fixed pattern of spacings that may lie anywhere along it
(the camera length shifts it). :class:`RingProfileNet` reads the whole profile at
once: dilated convolutions whose receptive field covers every pair of bins.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RingProfileNet", "receptive_field"]


def receptive_field(dilations, kernel_size: int = 3) -> int:
    """Receptive field (bins) of stacked stride-1 1-D convolutions with these dilations."""
    return 1 + sum((kernel_size - 1) * int(d) for d in dilations)


def _dilations(profile_bins: int) -> tuple[int, ...]:
    """1, 1, 2, 4, ... until every output bin sees all ``profile_bins`` bins (RF >= 2 L - 1)."""
    dilations = [1]
    while receptive_field(dilations) < 2 * profile_bins - 1:
        dilations.append(2 ** (len(dilations) - 1))
    return tuple(dilations)


class RingProfileNet(nn.Module):
    """Dilated 1-D convolutions, global average pooling and two dense layers.

    Parameters
    ----------
    in_channels : int
        Channels of the profile (1).
    num_classes : int
        Crystal systems (3).
    profile_bins : int
        Length ``L`` of the profiles it is built for: the dilations
        (1, 1, 2, 4, ...) grow until the receptive field is at least
        ``2 L - 1`` bins, so that every position of the last layer sees the
        whole profile whichever end it sits at.
    channels : int
        Channels of every convolution.
    dropout : float
        Dropout probability before the last layer.

    Notes
    -----
    Input (N, in_channels, L) or (N, in_channels, 1, L) (a profile as a one-row
    image, :func:`grainflow.diffraction.representation.radial_profile`); any
    ``L >= 1`` runs, but the receptive field covers only profiles of up to
    ``profile_bins`` bins. Output logits (N, num_classes). With 128 bins: eight
    convolutions (dilations 1, 1, 2, 4, 8, 16, 32, 64; receptive field 257
    bins) of 64 channels, 92,099 parameters with batch norm.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        *,
        profile_bins: int = 128,
        channels: int = 64,
        dropout: float = 0.3,
    ):
        super().__init__()
        if profile_bins < 2 or channels < 1:
            raise ValueError(
                f"need profile_bins >= 2, channels >= 1, got {profile_bins=}, {channels=}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout=}")
        self.hparams = dict(
            in_channels=in_channels,
            num_classes=num_classes,
            profile_bins=profile_bins,
            channels=channels,
            dropout=dropout,
        )
        self.dilations = _dilations(profile_bins)
        layers: list[nn.Module] = []
        c_in = in_channels
        for d in self.dilations:
            layers += [
                nn.Conv1d(c_in, channels, 3, padding=d, dilation=d),
                nn.BatchNorm1d(channels),
                nn.ReLU(inplace=True),
            ]
            c_in = channels
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(channels, 64)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(64, num_classes)

    @property
    def receptive_field(self) -> int:
        """Receptive field of the last convolution, bins."""
        return receptive_field(self.dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, L) or (N, C, 1, L) -> logits (N, num_classes)."""
        if x.ndim == 4 and x.shape[-2] == 1:
            x = x[..., 0, :]
        if x.ndim != 3:
            raise ValueError(
                f"RingProfileNet input must be (N, C, L) or (N, C, 1, L), got {tuple(x.shape)}"
            )
        x = self.features(x).mean(dim=-1)  # global average pooling: (N, channels)
        x = self.dropout(self.relu(self.fc1(x)))
        return self.fc2(x)
