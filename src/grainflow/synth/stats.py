"""What the synthesiser asked for against what its images contain, per specimen."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from grainflow.io.hdf5 import read_specimen
from grainflow.tasks import segments_particles

__all__ = ["grain_count_density", "specimen_statistics", "summarize_statistics"]


def grain_count_density(labels: np.ndarray) -> float:
    """Grains per pixel, counting grains that touch the image edge as half.

    This is the planimetric count of ASTM E112 (in pixels): unbiased for the
    mean grain area ``1 / density`` whatever the field size.
    """
    ids = np.unique(labels)
    ids = ids[ids > 0]
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = edge[edge > 0]
    return (len(ids) - 0.5 * len(edge)) / labels.size


def specimen_statistics(paths: Iterable[str]) -> pd.DataFrame:
    """One row per specimen file: requested and measured grain size or area fraction.

    Grains: requested mean grain diameter and the one implied by the images'
    grain count (``d = sqrt(4 / (pi * density))``), pixels. Phases: requested
    and measured area fraction, and particles per image.
    """
    rows = []
    for path in paths:
        f = read_specimen(path)
        p = f.specimen_params
        row = {"task": f.task, "specimen": f.specimen, "images": len(f.samples)}
        row["modalities"] = ",".join(sorted({s.modality for s in f.samples}))
        if "grain_ids" in f.samples[0].labels and f.task == "grains":
            density = np.mean([grain_count_density(s.labels["grain_ids"]) for s in f.samples])
            row.update(
                tessellation=p["tessellation"],
                requested_diameter_px=p["grain_diameter_px"],
                measured_diameter_px=float(np.sqrt(4 / (np.pi * density))),
                elongation=p["elongation"],
                boundary_fraction=float(
                    np.mean([s.labels["boundaries"].mean() for s in f.samples])
                ),
            )
        elif segments_particles(f.task):
            # nanoparticles on a support request a size range and a density, not an area fraction
            diameter = p.get("particle_diameter_px") or float(np.sqrt(np.prod(p["diameter_px"])))
            row.update(
                morphology=p.get("morphology", "supported"),
                requested_area_fraction=p.get("area_fraction", np.nan),
                measured_area_fraction=float(
                    np.mean([s.labels["phase"].mean() for s in f.samples])
                ),
                particles_per_image=float(
                    np.mean([s.labels["particle_ids"].max() for s in f.samples])
                ),
                requested_diameter_px=diameter,
            )
        rows.append(row)
    return pd.DataFrame(rows)


def summarize_statistics(path) -> dict:
    """Figures for the report's captions from a statistics table written by the workflow.

    Returns the number of specimens and the worst relative grain-diameter
    error (percent) and worst absolute area-fraction error.
    """
    t = pd.read_csv(path, sep="\t")
    out = {"specimens": len(t)}
    g = t[t.task == "grains"]
    if len(g):
        err = (g.measured_diameter_px / g.requested_diameter_px - 1).abs().max()
        out["grain_diameter_max_error_pct"] = round(100 * float(err), 1)
    p = t[t.task == "phases"]
    if len(p):
        err = (p.measured_area_fraction - p.requested_area_fraction).abs().max()
        out["area_fraction_max_error"] = round(float(err), 3)
    return out
