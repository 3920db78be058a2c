"""The ring-profile network: shapes, a receptive field that spans the profile, learning."""

import numpy as np
import pytest
import torch

from grainflow.models import build_model
from grainflow.models.ring_profile import RingProfileNet, receptive_field


def _impulse_reach(model: RingProfileNet, length: int, position: int) -> np.ndarray:
    """Input bins that reach the last convolution's output at ``position`` (by its gradient)."""
    model.eval()
    x = torch.randn(16, 1, length, requires_grad=True)  # a union over inputs: ReLUs gate some
    model.features(x)[:, :, position].sum().backward()
    return np.flatnonzero(x.grad[:, 0].abs().sum(0).numpy() > 0)


@pytest.mark.parametrize("bins", [16, 40, 128])
def test_receptive_field_spans_the_whole_profile(bins):
    torch.manual_seed(0)
    model = RingProfileNet(profile_bins=bins, channels=8)
    # computed from the module: every output position, at either end or in the middle, sees
    # every input bin
    for position in (0, bins // 2, bins - 1):
        assert len(_impulse_reach(model, bins, position)) == bins
    assert model.receptive_field == receptive_field(model.dilations) >= 2 * bins - 1
    # and the dilations stop growing once it does
    assert receptive_field(model.dilations[:-1]) < 2 * bins - 1


def test_a_shallower_stack_would_not_span_it():
    # the ring_limit benchmark's reference net (dilations 1, 1, 2, 4, 8, 16) on 128 bins
    reference = receptive_field((1, 1, 2, 4, 8, 16))
    assert reference < 128 <= RingProfileNet().receptive_field // 2 + 1


def test_shapes_and_registry():
    model = build_model("ring_profile", num_classes=3)
    assert isinstance(model, RingProfileNet)
    x = torch.randn(5, 1, 1, 128)  # a profile as a one-row image, as the dataset gives it
    assert model(x).shape == (5, 3)
    assert model(x[:, :, 0]).shape == (5, 3)  # (N, C, L) too
    with pytest.raises(ValueError, match=r"\(N, C, L\) or \(N, C, 1, L\)"):
        model(torch.randn(2, 1, 4, 128))
    with pytest.raises(ValueError, match="dropout"):
        RingProfileNet(dropout=1.0)
    assert model.hparams["profile_bins"] == 128


def test_learns_a_tiny_separable_problem():
    # three classes of profiles: two peaks at a class-specific spacing, anywhere along the
    # profile (as rings move with the camera length); separable only by reading both peaks
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    bins, n = 48, 96
    x = np.zeros((n, 1, 1, bins), np.float32)
    y = np.arange(n) % 3
    for i in range(n):
        start = rng.integers(2, bins - 26)
        for peak in (start, start + 8 + 8 * y[i]):
            x[i, 0, 0] += np.exp(-0.5 * ((np.arange(bins) - peak) / 1.0) ** 2)
    x += 0.05 * rng.standard_normal(x.shape).astype(np.float32)
    model = RingProfileNet(profile_bins=bins, channels=16, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(60):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(xt).argmax(1) == yt).float().mean().item()
    assert accuracy >= 0.95
