"""CNN anatomy primitives: every number of the course material, checked against references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch import nn

from grainflow.anatomy import kernels as K
from grainflow.models.registry import build_model
from grainflow.synth.bicrystal import bicrystal
from grainflow.synth.imaging import render_bicrystal


def t(array):
    """(H, W) numpy -> (1, 1, H, W) float64 tensor."""
    return torch.from_numpy(np.array(array, dtype=np.float64))[None, None]


# --------------------------------------------------------------------------- hand-set kernels


def test_hand_set_kernels_are_the_course_kernels():
    np.testing.assert_array_equal(K.SOBEL_VERTICAL, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    np.testing.assert_array_equal(K.SOBEL_HORIZONTAL, K.SOBEL_VERTICAL.T)
    np.testing.assert_array_equal(K.LAPLACIAN, [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    np.testing.assert_array_equal(K.GAUSSIAN * 16, [[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    assert K.SOBEL_VERTICAL.sum() == K.LAPLACIAN.sum() == 0
    assert K.GAUSSIAN.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        K.SOBEL_VERTICAL[0, 0] = 5  # shared constants are read-only


@pytest.fixture(scope="module")
def corner():
    labels = bicrystal((64, 64), geometry="corner")
    return render_bicrystal(labels, rng=3), labels


def _response(image, labels, kernel):
    return K.boundary_response(
        K.correlate2d(image, kernel, padding=1, padding_mode="replicate"), labels
    )


def test_sobel_answers_its_own_boundary_of_the_corner_bicrystal(corner):
    image, labels = corner
    v = _response(image, labels, K.SOBEL_VERTICAL)
    h = _response(image, labels, K.SOBEL_HORIZONTAL)
    # measured ≈ 11-18 on noisy 64×64 images; 5 leaves room for the noise of any seed
    assert v["vertical"] / v["horizontal"] > 5
    assert h["horizontal"] / h["vertical"] > 5
    # isotropic kernels do not prefer either segment
    for kernel in (K.LAPLACIAN, K.GAUSSIAN):
        r = _response(image, labels, kernel)
        assert 0.8 < r["vertical"] / r["horizontal"] < 1.25


def test_sobel_on_a_clean_corner_is_exactly_zero_away_from_the_corner():
    labels = bicrystal((32, 32), geometry="corner")
    image = (labels == 2).astype(float)
    gv = K.correlate2d(image, K.SOBEL_VERTICAL, padding=1, padding_mode="replicate")
    vertical, horizontal = K.boundary_orientation_masks(labels)
    # a step of 1 across columns 15|16 gives 1 + 2 + 1 = 4 on both sides of it
    assert np.all(gv[20:, 15:17] == 4)
    # along the horizontal segment, away from the corner, a vertical Sobel sees nothing
    assert np.all(gv[15:17, 20:] == 0)
    assert vertical.sum() == 2 * 16 - 1 and horizontal.sum() == 2 * 16 - 1  # corner pixel dropped


def test_boundary_response_needs_both_orientations():
    labels = bicrystal((16, 16), geometry="straight", angle_deg=90)  # one vertical boundary
    with pytest.raises(ValueError, match="horizontal"):
        K.boundary_response(np.zeros((16, 16)), labels)
    with pytest.raises(ValueError, match="shape"):
        K.boundary_response(np.zeros((8, 8)), labels)


# --------------------------------------------------------------------------- correlation


@pytest.mark.parametrize(
    "shape,ksize,stride,padding",
    [((13, 17), k, s, p) for k, s, p in itertools.product((1, 2, 3, 5), (1, 2, 3), (0, 1, 2))],
)
def test_correlate2d_equals_torch_conv2d(shape, ksize, stride, padding):
    rng = np.random.default_rng(ksize * 100 + stride * 10 + padding)
    image = rng.normal(size=shape)
    kernel = rng.normal(size=(ksize, ksize + 1 if ksize < 5 else ksize))  # also non-square
    ours = K.correlate2d(image, kernel, stride=stride, padding=padding)
    ref = F.conv2d(t(image), t(kernel), stride=stride, padding=padding)[0, 0].numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_correlate2d_padding_modes_equal_torch_conv2d_layer(mode):
    rng = np.random.default_rng(1)
    image, kernel = rng.normal(size=(9, 11)), rng.normal(size=(3, 3))
    layer = nn.Conv2d(1, 1, 3, padding=2, padding_mode=mode, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(t(kernel))
        ref = layer(t(image))[0, 0].numpy()
    np.testing.assert_allclose(
        K.correlate2d(image, kernel, padding=2, padding_mode=mode), ref, atol=1e-12
    )


@pytest.mark.parametrize("ksize", [3, 5])
def test_correlate_and_convolve_equal_scipy_and_differ_by_the_flip(ksize):
    rng = np.random.default_rng(ksize)
    image, kernel = rng.normal(size=(20, 24)), rng.normal(size=(ksize, ksize))
    pad = ksize // 2
    corr = K.correlate2d(image, kernel, padding=pad)
    conv = K.convolve2d(image, kernel, padding=pad)
    np.testing.assert_allclose(corr, ndi.correlate(image, kernel, mode="constant"), atol=1e-12)
    np.testing.assert_allclose(conv, ndi.convolve(image, kernel, mode="constant"), atol=1e-12)
    np.testing.assert_allclose(
        conv, K.correlate2d(image, kernel[::-1, ::-1], padding=pad), atol=1e-12
    )
    assert not np.allclose(corr, conv)  # an asymmetric kernel: the flip matters


def test_flip_reverses_sobel_and_leaves_symmetric_kernels_alone():
    image = np.random.default_rng(0).random((16, 16))
    corr = K.correlate2d(image, K.SOBEL_VERTICAL, padding=1)
    np.testing.assert_allclose(K.convolve2d(image, K.SOBEL_VERTICAL, padding=1), -corr)
    for kernel in (K.LAPLACIAN, K.GAUSSIAN):
        np.testing.assert_allclose(
            K.convolve2d(image, kernel, padding=1), K.correlate2d(image, kernel, padding=1)
        )


def test_worked_example_of_the_course():
    ex = K.worked_example()
    np.testing.assert_array_equal(ex["products"], [[-12, 0, 80], [-10, 0, 85], [-11, 0, 82]])
    # The course material says +213; the products sum to 68 + 75 + 71 = 214.
    assert ex["total"] == 214
    assert K.correlate2d(K.WORKED_PATCH, K.WORKED_KERNEL).item() == 214
    assert F.conv2d(t(K.WORKED_PATCH), t(K.WORKED_KERNEL)).item() == 214


def test_correlate2d_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        K.correlate2d(np.zeros((4, 4, 1)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="stride"):
        K.correlate2d(np.zeros((4, 4)), np.ones((3, 3)), stride=0)
    with pytest.raises(ValueError, match="padding_mode"):
        K.correlate2d(np.zeros((4, 4)), np.ones((3, 3)), padding_mode="mirror")
    with pytest.raises(ValueError, match="fit"):
        K.correlate2d(np.zeros((2, 2)), np.ones((3, 3)))


# --------------------------------------------------------------------------- output size, pooling


def test_output_size_formula_equals_torch_on_a_grid():
    checked = 0
    for size, k, p, s in itertools.product(range(1, 13), (1, 2, 3, 5), (0, 1, 2), (1, 2, 3)):
        if size + 2 * p < k:
            with pytest.raises(ValueError):
                K.conv_output_size(size, kernel_size=k, padding=p, stride=s)
            continue
        out = F.conv2d(
            torch.zeros(1, 1, size, 3 + 2 * 5),
            torch.zeros(1, 1, k, 1),
            stride=(s, 1),
            padding=(p, 0),
        ).shape[-2]
        assert K.conv_output_size(size, kernel_size=k, padding=p, stride=s) == out
        checked += 1
    assert checked > 300


def test_output_size_examples_of_the_course():
    assert K.conv_output_size(64, kernel_size=3, padding=1, stride=1) == 64
    assert K.conv_output_size(64, kernel_size=3, padding=0, stride=2) == 31
    with pytest.raises(ValueError, match="stride"):
        K.conv_output_size(64, kernel_size=3, stride=0)


def test_max_pooling_examples_of_the_course():
    first, second = K.POOLING_EXAMPLES
    np.testing.assert_array_equal(K.max_pool2d(first), [[6, 8], [3, 4]])
    np.testing.assert_array_equal(K.max_pool2d(second), [[6, 4], [7, 8]])


@pytest.mark.parametrize("shape,size,stride", [((7, 9), 2, None), ((8, 8), 3, 1), ((10, 6), 3, 2)])
def test_max_pool2d_equals_torch(shape, size, stride):
    x = np.random.default_rng(0).normal(size=shape)
    ref = F.max_pool2d(t(x), size, stride=stride)[0, 0].numpy()
    np.testing.assert_array_equal(K.max_pool2d(x, size=size, stride=stride), ref)


# --------------------------------------------------------------------------- parameters


def test_mlp_against_conv_parameter_counts():
    assert K.mlp_first_layer_params(1024, hidden=1000) == 1024**2 * 1000 == 1_048_576_000
    assert K.mlp_first_layer_params(1024, hidden=1000) == pytest.approx(1.05e9, rel=0.005)
    assert K.conv_layer_params(filters=64, kernel_size=3) == 576
    np.testing.assert_array_equal(
        K.mlp_first_layer_params(np.array([32, 64]), hidden=10), [10240, 40960]
    )
    # against torch's own counts (with biases, as torch layers have them)
    linear = nn.Linear(32 * 32, 1000)
    conv = nn.Conv2d(1, 64, 3)
    assert K.mlp_first_layer_params(32, hidden=1000, bias=True) == sum(
        p.numel() for p in linear.parameters()
    )
    assert K.conv_layer_params(filters=64, kernel_size=3, bias=True) == sum(
        p.numel() for p in conv.parameters()
    )
    with pytest.raises(ValueError):
        K.conv_layer_params(filters=0)


def test_parameter_table_of_a_small_model_by_hand():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3, bias=False)
    )
    rows = K.parameter_table(model, input_shape=(2, 5, 5))
    assert [(r["name"], r["kind"], r["params"]) for r in rows] == [
        ("0", "Conv2d", 2 * 4 * 9 + 4),
        ("3", "Linear", 100 * 3),
    ]
    assert rows[0]["output_shape"] == (4, 5, 5) and rows[1]["output_shape"] == (3,)
    assert rows[0]["shapes"] == "4×2×3×3 + 4"


def test_diffraction_cnn_parameter_table_read_from_the_model():
    model = build_model("diffraction_cnn")
    rows = K.parameter_table(model, input_shape=(1, 64, 64))
    convs = [r["params"] for r in rows if r["kind"] == "Conv2d"]
    dense = [r["params"] for r in rows if r["kind"] == "Linear"]
    bn = [r["params"] for r in rows if r["kind"] == "BatchNorm2d"]
    assert convs == [320, 18_496, 73_856]  # (3·3·c_in + 1)·c_out: conv weights plus biases
    assert dense == [8_256, 195]
    # The course's "≈101k" counts convs and dense layers (101,123); the model also trains a
    # BatchNorm scale and shift per channel, 2·(32 + 64 + 128) = 448 more. Running statistics
    # are buffers, not parameters.
    assert bn == [64, 128, 256]
    total = sum(r["params"] for r in rows)
    assert total == sum(p.numel() for p in model.parameters()) == 101_571
    assert total - sum(bn) == 101_123
    assert round(total, -3) == 102_000 and round(total - sum(bn), -3) == 101_000
    assert [r["output_shape"] for r in rows if r["kind"] == "Conv2d"] == [
        (32, 64, 64),
        (64, 32, 32),
        (128, 16, 16),
    ]


# --------------------------------------------------------------------------- receptive field


def test_receptive_field_analytic():
    np.testing.assert_array_equal(K.stacked_receptive_fields(6), [3, 5, 7, 9, 11, 13])
    # conv 3 (r = 3), 2×2 pool stride 2 (r = 4, jump 2), conv 3 (r = 4 + 2·2 = 8)
    assert K.receptive_field([3, 2, 3], strides=[1, 2, 1]) == 8
    assert K.receptive_field([]) == 1
    with pytest.raises(ValueError, match="one stride per layer"):
        K.receptive_field([3, 3], strides=[1])


@pytest.mark.parametrize("layers", range(1, 7))
def test_measured_receptive_field_equals_analytic(layers):
    model = K.random_cnn([4] * layers, rng=layers)
    expected = K.receptive_field([3] * layers)
    assert K.measured_receptive_field(model, size_px=expected + 6, rng=0) == (expected, expected)


def test_measured_receptive_field_with_pooling():
    kernels, strides = [3, 2] * 3, [1, 2] * 3
    expected = K.receptive_field(kernels, strides=strides)  # 22
    avg = K.random_cnn([4, 4, 4], pool="avg", rng=0)
    assert K.measured_receptive_field(avg, size_px=64, rng=0) == (expected, expected)
    # max pooling passes gradient only through each window's maximum: never wider
    rows, cols = K.measured_receptive_field(
        K.random_cnn([4, 4, 4], pool="max", rng=0), size_px=64, rng=0
    )
    assert rows <= expected and cols <= expected


def test_measured_receptive_field_refuses_a_cut_field():
    with pytest.raises(ValueError, match="larger"):
        K.measured_receptive_field(K.random_cnn([4] * 5, rng=0), size_px=9, rng=0)


def test_random_cnn_is_seeded_and_feature_maps_have_the_layer_shapes():
    image = np.random.default_rng(0).random((64, 64))
    a = K.feature_maps(K.random_cnn((8, 16, 32), pool="max", rng=5), image)
    b = K.feature_maps(K.random_cnn((8, 16, 32), pool="max", rng=5), image)
    assert list(a) == ["layer1", "layer2", "layer3"]
    assert [m.shape for m in a.values()] == [(8, 32, 32), (16, 16, 16), (32, 8, 8)]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert a[name].min() >= 0  # after ReLU (and pooling)
    c = K.feature_maps(K.random_cnn((8, 16, 32), pool="max", rng=6), image)
    assert not np.allclose(a["layer1"], c["layer1"])


def test_feature_maps_of_named_unet_layers():
    unet = build_model("unet", base_channels=4, depth=2)
    maps = K.feature_maps(unet, np.zeros((16, 16)), layers=("encoder.0.block", "encoder.1.block"))
    assert [m.shape for m in maps.values()] == [(4, 16, 16), (8, 8, 8)]
    with pytest.raises(ValueError, match="no layers"):
        K.feature_maps(unet, np.zeros((16, 16)), layers=("encoder.9",))


# --------------------------------------------------------------------------- designed kernel


def test_designed_kernel_is_an_oriented_step_detector():
    w = K.designed_boundary_kernel(normal_deg=0, size_px=7)
    assert w.sum() == pytest.approx(0, abs=1e-12)
    assert w[w > 0].sum() == pytest.approx(1)
    np.testing.assert_allclose(w, -w[:, ::-1], atol=1e-12)  # antisymmetric across the boundary
    np.testing.assert_allclose(w, w[::-1, :], atol=1e-12)  # symmetric along it
    # an ideal unit step, bright on the left, centred between columns 3 and 4 of the kernel window
    step = np.zeros((7, 8))
    step[:, :4] = 1
    assert K.correlate2d(step, w)[0, 0] == pytest.approx(1)
    # 90° rotates it: intensity falling towards the top of the image (-row)
    np.testing.assert_allclose(K.designed_boundary_kernel(normal_deg=90), np.rot90(w), atol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        K.designed_boundary_kernel(size_px=6)


@pytest.mark.parametrize("target", [0.0, 45.0])
def test_designed_kernel_selectivity(target):
    w = K.designed_boundary_kernel(normal_deg=target)
    s = K.boundary_selectivity(
        K.relu_unit(w), target_deg=target, angle_step_deg=7.5, contrasts=(0.1, 0.4), rng=2
    )
    assert s.response.shape == (2, 48) and s.target.sum() == 7
    # measured ≈ 5.5–6: target boundaries answer several times more strongly than all others
    assert np.all(s.selectivity > 4)
    peak = s.normal_deg[np.argmax(s.response, axis=1)]
    assert np.all(np.abs((peak - target + 180) % 360 - 180) <= 7.5)
    # opposite polarity (normal + 180°) gives (almost) nothing after the ReLU
    opposite = np.argmin(np.abs((s.normal_deg - target) % 360 - 180))
    assert np.all(s.response[:, opposite] < 0.05 * s.response.max(axis=1))
    # the isotropic gradient magnitude, on the same images, is not selective
    base = K.boundary_selectivity(
        K.gradient_magnitude, target_deg=target, contrasts=(0.1, 0.4), rng=2
    )
    assert np.all((base.selectivity > 0.8) & (base.selectivity < 1.25))


def test_boundary_selectivity_rejects_bad_settings():
    unit = K.relu_unit(K.designed_boundary_kernel())
    with pytest.raises(ValueError, match="divide 180"):
        K.boundary_selectivity(unit, angle_step_deg=7)
    with pytest.raises(ValueError, match="contrasts"):
        K.boundary_selectivity(unit, contrasts=(0.0,))
    with pytest.raises(ValueError, match="no target"):
        K.boundary_selectivity(unit, tolerance_deg=1, angle_step_deg=45, target_deg=10)


# --------------------------------------------------------------------------- encoder trace


def test_unet_encoder_trace_of_the_course():
    unet = build_model("unet", base_channels=64, depth=4)
    trace = unet.encoder_trace((256, 256))
    assert [(c, h) for c, h, _ in trace] == [(64, 128), (128, 64), (256, 32), (512, 16)]
    assert all(h == w for _, h, w in trace)
