"""Networks of grainflow and the registry that turns config names into models.

- ``unet``: :class:`UNet`, double-convolution encoder; (N, 1, H, W) -> (N, 2, H, W)
- ``resunet``: :class:`UNet` with ResNet basic blocks in the encoder; same shapes
- ``diffraction_cnn``: :class:`DiffractionCNN`, 101,571 parameters; (N, 1, H, W) -> (N, 3)
- ``resnet18``: :class:`ResNet18`, torchvision's with one input channel; (N, 1, H, W) -> (N, 3)
- ``ring_profile``: :class:`RingProfileNet`, dilated 1-D convolutions over a ring pattern's
  azimuthal profile, receptive field spanning it; (N, 1, 1, L) -> (N, 3)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from grainflow.models.diffraction_cnn import DiffractionCNN
from grainflow.models.resnet import ResNet18
from grainflow.models.ring_profile import RingProfileNet
from grainflow.models.unet import UNet

__all__ = ["MODELS", "build_model", "fold_batch_norm"]


def _resunet(**kwargs) -> UNet:
    if not kwargs.pop("residual", True):
        raise ValueError(
            "resunet always has residual encoder blocks; use 'unet' for residual=False"
        )
    return UNet(residual=True, **kwargs)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "resunet": _resunet,
    "diffraction_cnn": DiffractionCNN,
    "resnet18": ResNet18,
    "ring_profile": RingProfileNet,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Return a new, randomly initialised model called ``name`` in the config.

    Parameters
    ----------
    name : str
        One of ``MODELS``: "unet", "resunet", "diffraction_cnn", "resnet18",
        "ring_profile".
    **kwargs
        Constructor arguments of that model (e.g. ``depth=4, base_channels=32``).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones) or arguments
        the model does not take.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as error:
        raise ValueError(f"bad arguments for model {name!r}: {error}") from error


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode ``model`` with batch norm folded into the convolutions before it.

    In every ``nn.Sequential`` (the U-Net's double convolutions), a
    ``Conv2d`` directly followed by a ``BatchNorm2d`` becomes one ``Conv2d``
    (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`) and the batch norm an
    ``nn.Identity``: the same function up to float rounding, one pass over
    the activations fewer. Batch norms elsewhere (residual blocks) are kept.
    The model itself is not changed.

    Raises
    ------
    ValueError
        If ``model`` is in training mode (its batch norms use batch statistics).
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("fold_batch_norm needs a model in eval mode; call model.eval() first")
    folded = copy.deepcopy(model)
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
    return folded
