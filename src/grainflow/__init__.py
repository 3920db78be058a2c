"""grainflow: CNNs for materials micrographs, trained on synthetic images with free labels."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("grainflow")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
