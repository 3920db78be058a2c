"""Networks of grainflow and the registry that turns config names into models.

- ``unet``: :class:`UNet`, double-convolution encoder; (N, 1, H, W) -> (N, 2, H, W)
- ``resunet``: :class:`UNet` with ResNet basic blocks in the encoder; same shapes
- ``diffraction_cnn``: :class:`DiffractionCNN`, 101,571 parameters; (N, 1, H, W) -> (N, 3)
- ``resnet18``: :class:`ResNet18`, torchvision's with one input channel; (N, 1, H, W) -> (N, 3)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from grainflow.models.diffraction_cnn import DiffractionCNN
from grainflow.models.resnet import ResNet18, load_pretrained, set_transfer_strategy
from grainflow.models.unet import UNet, count_parameters

__all__ = [
    "MODELS",
    "build_model",
    "UNet",
    "DiffractionCNN",
    "ResNet18",
    "count_parameters",
    "load_pretrained",
    "set_transfer_strategy",
]


def _resunet(**kwargs) -> UNet:
    if not kwargs.pop("residual", True):
        raise ValueError("resunet always has residual encoder blocks; use 'unet' for residual=False")
    return UNet(residual=True, **kwargs)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "resunet": _resunet,
    "diffraction_cnn": DiffractionCNN,
    "resnet18": ResNet18,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Return a new, randomly initialised model called ``name`` in the config.

    Parameters
    ----------
    name : str
        One of ``MODELS``: "unet", "resunet", "diffraction_cnn", "resnet18".
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
