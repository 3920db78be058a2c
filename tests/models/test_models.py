"""Models: shapes, divisibility, parameter counts, registry, ResNet-18 transfer and local weights."""

import pytest
import torch
import torchvision
from torch import nn

from grainflow.checkpoint import load_pretrained
from grainflow.models.diffraction_cnn import DiffractionCNN
from grainflow.models.registry import MODELS, build_model, fold_batch_norm
from grainflow.models.resnet import ResNet18, set_transfer_strategy
from grainflow.models.unet import ResidualBlock, UNet, count_parameters


def conv_block_params(c_in, c_out):
    """Two bias-free 3×3 convolutions, each with a 2-parameter-per-channel norm."""
    return 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out


def residual_block_params(c_in, c_out):
    shortcut = 0 if c_in == c_out else c_in * c_out + 2 * c_out
    return conv_block_params(c_in, c_out) + shortcut


def unet_params(in_ch, out_ch, base, depth, residual=False):
    """Reference count of the U-Net described in grainflow.models.unet."""
    block = residual_block_params if residual else conv_block_params
    ch = [base * 2**i for i in range(depth + 1)]
    total = sum(block(c_in, c_out) for c_in, c_out in zip([in_ch, *ch[:-2]], ch[:-1]))
    total += block(ch[-2], ch[-1])  # bottleneck
    for c_in, c_out in zip(ch[:0:-1], ch[-2::-1]):  # transposed conv (with bias) + conv block
        total += 4 * c_in * c_out + c_out + conv_block_params(2 * c_out, c_out)
    return total + base * out_ch + out_ch  # 1×1 head with bias


# ----------------------------------------------------------------------------- U-Net


@pytest.mark.parametrize(
    "depth, base, norm, residual, size",
    [
        (1, 4, "batch", False, (16, 16)),
        (2, 8, "group", False, (32, 48)),
        (3, 4, "batch", True, (64, 64)),
        (2, 6, "group", True, (32, 32)),
    ],
)
def test_unet_output_shape(depth, base, norm, residual, size):
    torch.manual_seed(0)
    model = UNet(1, 3, depth=depth, base_channels=base, norm=norm, residual=residual).eval()
    out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


def test_unet_parameter_count_hand_worked():
    # depth 1, base 2, 1 -> 2 classes:
    # encoder 18 + 4 + 36 + 4 = 62; bottleneck 72 + 8 + 144 + 8 = 232;
    # up 4*2*4 + 2 = 34; decoder 72 + 4 + 36 + 4 = 116; head 2*2 + 2 = 6
    assert count_parameters(UNet(1, 2, depth=1, base_channels=2)) == 450


@pytest.mark.parametrize("depth, base, residual", [(4, 64, False), (3, 16, True), (2, 8, False)])
def test_unet_parameter_count_matches_reference(depth, base, residual):
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        model = UNet(1, 2, depth=depth, base_channels=base, residual=residual)
        grouped = UNet(1, 2, depth=depth, base_channels=base, residual=residual, norm="group")
    assert model.num_parameters() == unet_params(1, 2, base, depth, residual)
    assert grouped.num_parameters() == model.num_parameters()  # GroupNorm: 2 per channel too


def test_course_unet_is_31m_parameters():
    # the classic U-Net (64 base channels, 4 poolings) on one channel, 2 classes
    with torch.device("meta"):
        assert UNet(1, 2, depth=4, base_channels=64).num_parameters() == 31_036_546


@pytest.mark.parametrize("size", [(100, 100), (64, 40), (8, 8)])
def test_unet_rejects_sizes_not_divisible(size):
    model = UNet(depth=4, base_channels=4)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*4 = 16.*got \(H, W\)"):
        model(torch.zeros(1, 1, *size))
    with pytest.raises(ValueError, match="divisible"):
        model.encoder_trace(size)


def test_unet_rejects_non_4d_input():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        UNet(depth=1, base_channels=2)(torch.zeros(1, 16, 16))


def test_encoder_trace_course_convention():
    model = UNet(1, 2, depth=4, base_channels=64)
    assert model.encoder_trace((256, 256)) == [
        (64, 128, 128),
        (128, 64, 64),
        (256, 32, 32),
        (512, 16, 16),
    ]


def test_encoder_trace_matches_a_real_forward():
    torch.manual_seed(0)
    model = UNet(1, 2, depth=3, base_channels=4, residual=True).eval()
    seen = []
    hooks = [
        s.pool.register_forward_hook(lambda m, a, out: seen.append(tuple(out.shape[1:])))
        for s in model.encoder
    ]
    model(torch.randn(1, 1, 32, 48))
    for hook in hooks:
        hook.remove()
    assert model.encoder_trace((32, 48)) == seen == [(4, 16, 24), (8, 8, 12), (16, 4, 6)]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(norm="layer"), "norm must be one of"),
        (dict(depth=0), "depth must be"),
        (dict(base_channels=2.5), "base_channels must be"),
        (dict(residual="yes"), "residual"),
    ],
)
def test_unet_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_group_norm_with_channels_not_multiple_of_groups():
    model = UNet(1, 2, depth=1, base_channels=6, norm="group", groups=4)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels % m.num_groups == 0 for m in norms)
    assert {m.num_groups for m in norms} == {2, 4}  # gcd(4, 6) = 2, gcd(4, 12) = 4


# ----------------------------------------------------------------------------- DiffractionCNN


def test_diffraction_cnn_parameter_count():
    model = DiffractionCNN()
    per_layer = {
        name: count_parameters(getattr(model, name))
        for name in ("conv1", "conv2", "conv3", "fc1", "fc2")
    }
    # convolutions with their batch norms (2 per channel): 320 + 64, 18,496 + 128, 73,856 + 256
    assert per_layer == {"conv1": 384, "conv2": 18_624, "conv3": 74_112, "fc1": 8_256, "fc2": 195}
    assert count_parameters(model.conv1[0]) == 320
    assert count_parameters(model.conv2[0]) == 18_496
    assert count_parameters(model.conv3[0]) == 73_856
    assert count_parameters(model) == 101_571


def test_diffraction_cnn_shapes_and_dropout():
    torch.manual_seed(0)
    model = DiffractionCNN()
    assert model.dropout.p == 0.3
    assert model.features(torch.randn(2, 1, 64, 64)).shape == (2, 128)
    assert model(torch.randn(5, 1, 64, 64)).shape == (5, 3)
    model.eval()
    x = torch.randn(2, 1, 48, 48)
    assert torch.equal(model(x), model(x))  # no dropout in eval mode
    with pytest.raises(ValueError, match="H>=4"):
        model(torch.zeros(1, 1, 2, 2))


# ----------------------------------------------------------------------------- ResNet-18


def test_resnet18_matches_torchvision_except_first_conv_and_head():
    ours = ResNet18().state_dict()
    ref = torchvision.models.resnet18(weights=None, num_classes=3).state_dict()
    assert list(ours) == list(ref)
    differ = [k for k in ref if ours[k].shape != ref[k].shape]
    assert differ == ["conv1.weight"]
    assert ours["conv1.weight"].shape == (64, 1, 7, 7)
    assert ours["fc.weight"].shape == (3, 512)
    assert ResNet18()(torch.zeros(2, 1, 64, 64)).shape == (2, 3)


def trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_transfer_strategies_choose_what_trains():
    model = ResNet18()
    names = {name for name, _ in model.named_parameters()}

    groups = set_transfer_strategy(model, "frozen", lr=1e-3)
    assert trainable(model) == {"fc.weight", "fc.bias"}
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 1e-3)]

    groups = set_transfer_strategy(model, "finetune", lr=1e-3, finetune_lr=1e-5)
    assert trainable(model) == {n for n in names if n.startswith(("layer4.", "fc."))}
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", 1e-5), ("head", 1e-3)]
    assert sum(p.numel() for g in groups for p in g["params"]) == count_parameters(
        model, trainable_only=True
    )

    set_transfer_strategy(model, "finetune", blocks=2)
    assert trainable(model) == {n for n in names if n.startswith(("layer3.", "layer4.", "fc."))}

    groups = set_transfer_strategy(model, "full", lr=1e-3)  # unfreezes everything again
    assert trainable(model) == names
    assert len(groups) == 1 and len(groups[0]["params"]) == len(names)

    with pytest.raises(ValueError, match="strategy must be one of"):
        set_transfer_strategy(model, "partial")
    with pytest.raises(ValueError, match="blocks must be"):
        set_transfer_strategy(model, "finetune", blocks=5)


def test_frozen_backbone_does_not_change_in_a_training_step():
    torch.manual_seed(0)
    model = ResNet18()
    groups = set_transfer_strategy(model, "frozen", lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    assert not model.bn1.training and not model.layer4[1].bn2.training  # frozen BN in eval mode
    assert model.fc.training
    optimizer = torch.optim.SGD(groups, lr=1e-2)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 32, 32)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # weights and BN statistics of the backbone kept


def test_load_pretrained_rgb_weights_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    rgb = torchvision.models.resnet18(weights=None).eval()  # stands in for ImageNet weights
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(rgb.state_dict(), path)

    model = ResNet18(num_classes=3)
    report = load_pretrained(model, path)
    assert report["conv1"] == "summed RGB" and report["head"] == "new"
    state = model.state_dict()
    assert torch.equal(state["conv1.weight"], rgb.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(state["layer3.0.conv1.weight"], rgb.layer3[0].conv1.weight)
    assert state["fc.weight"].shape == (3, 512)
    # summing the RGB kernels makes a grey image respond like the grey RGB image
    model.eval().fc = nn.Identity()
    rgb.fc = nn.Identity()
    grey = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(model(grey), rgb(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)


def test_load_pretrained_grainflow_resnet_keeps_its_head(tmp_path):
    torch.manual_seed(1)
    source = ResNet18()
    path = tmp_path / "pretrained.pt"
    torch.save({"model_state": source.state_dict(), "model_name": "resnet18"}, path)
    model = ResNet18()
    assert load_pretrained(model, path)["head"] == "loaded"
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values())
    )


def test_load_pretrained_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_pretrained(ResNet18(), tmp_path / "missing.pth")
    module_file = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), module_file)  # a pickled module: not loadable with weights_only
    with pytest.raises(ValueError, match=r"module\.pth.*weights_only"):
        load_pretrained(ResNet18(), module_file)
    other = tmp_path / "other.pth"
    torch.save(nn.Linear(2, 2).state_dict(), other)
    with pytest.raises(ValueError, match=r"other\.pth does not hold ResNet-18 weights"):
        load_pretrained(ResNet18(), other)


# ----------------------------------------------------------------------------- registry


def test_registry_builds_each_model():
    assert set(MODELS) == {"unet", "resunet", "diffraction_cnn", "resnet18", "ring_profile"}
    assert isinstance(build_model("unet", depth=2, base_channels=4), UNet)
    resunet = build_model("resunet", depth=2, base_channels=4)
    assert resunet.hparams["residual"] is True
    assert any(isinstance(m, ResidualBlock) for m in resunet.modules())
    assert isinstance(build_model("diffraction_cnn"), DiffractionCNN)
    assert isinstance(build_model("resnet18", num_classes=3), ResNet18)


def test_registry_errors():
    with pytest.raises(
        ValueError,
        match="unknown model 'vgg'; known models: diffraction_cnn, resnet18, resunet, "
        "ring_profile, unet",
    ):
        build_model("vgg")
    with pytest.raises(ValueError, match="bad arguments for model 'unet'"):
        build_model("unet", width=3)
    with pytest.raises(ValueError, match="use 'unet' for residual=False"):
        build_model("resunet", residual=False)


@pytest.mark.parametrize("residual", [False, True])
def test_folded_batch_norm_is_the_same_function(residual):
    torch.manual_seed(0)
    model = build_model("unet", depth=2, base_channels=4, residual=residual)
    with torch.no_grad():  # trained-looking statistics, not the identity of a fresh batch norm
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    folded = fold_batch_norm(model)
    norms = lambda net: sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # noqa: E731
    assert norms(folded) < norms(model)  # the double convolutions' norms are gone
    if not residual:
        assert norms(folded) == 0  # every norm of the U-Net follows a convolution in a Sequential
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(model.train())
