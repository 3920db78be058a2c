"""Real image stacks: the stacks sheet, reading files, TIFF and Zarr, importing to OME-Zarr."""
