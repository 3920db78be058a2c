"""grainflow's files: HDF5 specimens, OME-Zarr stores, staged writes, image suffixes."""

from grainflow.io.hdf5 import Sample, SpecimenFile, read_specimen, write_specimen
from grainflow.io.staging import atomic_path, remove_stale, replace_dir, staged_dir

__all__ = [
    "Sample",
    "SpecimenFile",
    "read_specimen",
    "write_specimen",
    "atomic_path",
    "staged_dir",
    "replace_dir",
    "remove_stale",
]
