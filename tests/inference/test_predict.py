"""Whole-image prediction: test-time flips."""

import numpy as np
import torch

from grainflow.inference.predict import FLIPS, predict_probabilities
from grainflow.models.registry import build_model


def _net():
    torch.manual_seed(0)
    return build_model("unet", in_channels=1, out_channels=2, depth=2, base_channels=4).eval()


def test_flips_average_the_four_flipped_predictions():
    rng = np.random.default_rng(1)
    images = [rng.random((32, 32)).astype(np.float32) for _ in range(3)]
    net = _net()
    plain = predict_probabilities(net, images)
    flipped = predict_probabilities(net, images, flips=True)
    by_hand = np.zeros_like(plain)
    for dims in FLIPS:  # negative axes mean the same on (H, W) images and (N, C, H, W) outputs
        turned = [np.flip(im, dims).copy() for im in images]
        by_hand += np.flip(predict_probabilities(net, turned), dims)
    np.testing.assert_allclose(flipped, by_hand / len(FLIPS), atol=1e-6)
    assert not np.allclose(flipped, plain, atol=1e-4)  # a random net is not flip-equivariant
    np.testing.assert_allclose(flipped.sum(axis=1), 1.0, atol=1e-5)


def test_flips_leave_a_flip_symmetric_image_unchanged_for_a_flip_equivariant_net():
    net = torch.nn.Conv2d(1, 2, 1).eval()  # 1x1 convolution: commutes with every flip
    image = np.random.default_rng(2).random((16, 16)).astype(np.float32)
    plain = predict_probabilities(net, [image])
    np.testing.assert_allclose(predict_probabilities(net, [image], flips=True), plain, atol=1e-6)
