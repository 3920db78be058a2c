"""Networks (no file I/O) and the registry that builds them from config names."""

from grainflow.models.diffraction_cnn import DiffractionCNN
from grainflow.models.registry import MODELS, build_model, fold_batch_norm
from grainflow.models.resnet import ResNet18, set_transfer_strategy
from grainflow.models.ring_profile import RingProfileNet
from grainflow.models.unet import UNet, count_parameters

__all__ = [
    "MODELS",
    "build_model",
    "fold_batch_norm",
    "UNet",
    "DiffractionCNN",
    "ResNet18",
    "RingProfileNet",
    "count_parameters",
    "set_transfer_strategy",
]
