"""Rule diffraction_scan_data: a small synthetic scan (4D-STEM-like) over a polycrystal."""

import sys

from grainflow.logs import log_to

log_to(snakemake.log[0])

from grainflow.diffraction.scan import synthetic_scan, write_scan

s = snakemake.params.scan
counts, truth, grains, info = synthetic_scan(
    snakemake.params.settings,
    scan_shape=tuple(s["shape"]),
    grain_diameter_px=s["grain_diameter_px"],
    modality=s["modality"],
    rng=snakemake.params.seed,
)
write_scan(snakemake.output.scan, counts, truth=truth, attrs=info)
print(f"scan {counts.shape}: {int(grains.max())} grains", file=sys.stderr)
