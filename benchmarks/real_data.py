"""Sim-to-real: the default run's networks and the classical baseline on every shipped real stack.

Reads a finished run (``results/``): the imported stacks, the networks' real metrics
(``results/metrics/real/{stack}.tsv``), the scale records and the classical baseline's
parameters as fitted on the synthetic training folds
(``results/metrics/{task}/classical/fold0.json``). The baseline segments every plane at the
pyramid level the networks read (``results/scale/{stack}.json``), its labels go back to
full resolution, and the same metrology and scores as the networks' are computed
(:func:`grainflow.evaluation.real.measure_stack`). Real labels are used only to score.

Usage::

    python benchmarks/real_data.py [--results results] [--out benchmarks/results/real_data.json]

Writes JSON and prints a markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from skimage.measure import label as connected_components

from grainflow import __version__
from grainflow.evaluation.baseline import apply_baseline
from grainflow.evaluation.real import measure_stack
from grainflow.inference.scale import read_scale
from grainflow.normalize import normalize_image
from grainflow.report.provenance import hardware
from grainflow.stacks.importer import plane_shapes
from grainflow.tasks import LABEL_NAMES, segments_particles

#: the numbers reported per task and kind of ground truth
HEADLINES = {
    "masks": ("iou", "precision", "recall", "area_fraction", "area_fraction_true"),
    "boxes": ("det_precision", "det_recall", "det_f1", "count_pred", "count_true"),
    "none": (
        "n_grains",
        "astm_g_planimetric",
        "astm_g_planimetric_ci95_low",
        "astm_g_planimetric_ci95_high",
        "astm_g_intercept",
        "astm_g_intercept_ci95_low",
        "astm_g_intercept_ci95_high",
        "astm_g_difference",
        "boundary_kept",
    ),
}


def classical_store(stack: Path, params: dict, level: int, out: Path) -> Path:
    """Segment every plane of ``stack`` with the classical pipeline at pyramid ``level`` and
    write its labels, back at full resolution, as an inference-like store.

    A particle plane whose import recorded ``particles_dark`` tells the pipeline which side of
    its threshold is the particles, as the networks are told."""
    root = zarr.open_group(str(stack), mode="r")
    info = dict(root.attrs)["grainflow"]
    task = info["task"]
    s0 = root["s0"]
    shapes = plane_shapes(info, s0.shape)
    coarse = root[f"s{level}"]
    mask_name, ids_name = LABEL_NAMES[task]
    labels = {n: np.zeros(s0.shape, np.uint32) for n in (mask_name, ids_name)}
    f = 2**level
    for z, (rows, cols) in enumerate(shapes):
        own = np.asarray(coarse[z, : -(-rows // f), : -(-cols // f)], dtype=np.float32)
        image = np.clip(normalize_image(own), 0, 1)
        dark = (info.get("planes") or [{}] * len(shapes))[z].get("particles_dark")
        told = (
            {}
            if not segments_particles(task) or dark is None
            else {"polarity": "dark" if dark else "bright"}
        )
        seg = apply_baseline(task, image, {**params, **told})
        for name in (mask_name, ids_name):
            full = np.kron(seg[name], np.ones((f, f), seg[name].dtype))[:rows, :cols]
            labels[name][z, :rows, :cols] = full
        if segments_particles(task) and f > 1:  # particles renumbered at full resolution
            labels[ids_name][z, :rows, :cols] = connected_components(
                labels[mask_name][z, :rows, :cols] > 0, connectivity=1
            )
    store = zarr.open_group(str(out), mode="w", zarr_format=3)
    fg = labels[mask_name].astype(np.float32)
    store.create_array("s0", data=np.stack([1 - fg, fg]), chunks=(2, 1, *s0.shape[1:]))
    for name, data in labels.items():
        store.require_group("labels").create_group(name).create_array(
            "s0", data=data, chunks=(1, *s0.shape[1:])
        )
    store.attrs["grainflow"] = {"task": task, "stack": info["stack"], "model": "classical"}
    return out


def _number(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def stack_summary(results: Path, metrics: Path, workdir: Path) -> dict:
    """The network's and the classical baseline's headline numbers of one real stack."""
    name = metrics.name.removesuffix(".tsv")
    table = pd.read_csv(metrics, sep="\t", dtype={"plane": str, "file": str, "group": str})
    task = str(table["task"].iloc[0])
    stack = results / "stacks" / f"{name}.ome.zarr"
    scale_file = results / "scale" / f"{name}.json"
    level = read_scale(scale_file)["level"] if scale_file.exists() else 0
    params = json.loads((results / "metrics" / task / "classical" / "fold0.json").read_text())
    store = classical_store(stack, params["params"], level, workdir / f"{name}.classical.zarr")
    classical, _ = measure_stack(stack, {"classical": store})
    rows = pd.concat([table, classical], ignore_index=True)
    kind = "boxes" if "det_f1" in rows else "masks" if "iou" in rows else "none"
    if kind == "masks":  # the truth's own area fraction beside the prediction's
        from grainflow.evaluation.real import truth_labels

        truth = zarr.open_group(str(stack), mode="r")["labels"]["ground_truth"]["s0"]
        fractions = [
            truth_labels(task, np.asarray(truth[z]))["phase"].mean() for z in range(truth.shape[0])
        ]
        rows["area_fraction_true"] = float(np.mean(fractions))
    models = {}
    for model, group in rows.groupby("model", sort=False):
        pooled = group[group["plane"] == "all"].iloc[0]
        entry = {k: _number(float(pooled[k])) for k in HEADLINES[kind] if k in pooled}
        if kind == "masks":
            planes = group[group["plane"] != "all"]
            entry["iou_per_image"] = [round(float(v), 4) for v in planes["iou"]]
            entry["area_fraction_error"] = _number(
                float(pooled["area_fraction"]) - float(entry["area_fraction_true"])
            )
        models[str(model)] = entry
    return {"stack": name, "task": task, "truth": kind, "level": int(level), "models": models}


def markdown(records: list[dict], cpu: str) -> str:
    lines = [
        "| stack (read at level) | truth | network (U-Net, fold ensemble) | classical baseline | machine |",
        "|---|---|---|---|---|",
    ]

    def fmt(entry, kind):
        if kind == "masks":
            return (
                f"γ′ IoU {entry['iou']:.3f} pooled (precision {entry['precision']:.2f}, recall "
                f"{entry['recall']:.2f}); area fraction {entry['area_fraction']:.3f} vs "
                f"{entry['area_fraction_true']:.3f} true"
            )
        if kind == "boxes":
            return (
                f"detection F1 {entry['det_f1']:.3f} (precision {entry['det_precision']:.2f}, "
                f"recall {entry['det_recall']:.2f}); {entry['count_pred']:.0f} particles vs "
                f"{entry['count_true']:.0f} boxes"
            )
        return (
            f"G {entry['astm_g_planimetric']:.2f} planimetric "
            f"[{entry['astm_g_planimetric_ci95_low']:.2f}, {entry['astm_g_planimetric_ci95_high']:.2f}], "
            f"{entry['astm_g_intercept']:.2f} intercept "
            f"[{entry['astm_g_intercept_ci95_low']:.2f}, {entry['astm_g_intercept_ci95_high']:.2f}] "
            f"(95 % CI over 3 x 3 fields); {entry['n_grains']:.0f} grains; boundary kept "
            f"{entry['boundary_kept']:.3f}"
        )

    for r in records:
        net = next(m for m in r["models"] if m != "classical")
        lines.append(
            f"| {r['stack']} ({r['level']}) | {r['truth']} | {fmt(r['models'][net], r['truth'])} "
            f"| {fmt(r['models']['classical'], r['truth'])} | {cpu} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", default="benchmarks/results/real_data.json")
    args = parser.parse_args()
    results = Path(args.results)
    tables = sorted((results / "metrics" / "real").glob("*.tsv"))
    tables = [t for t in tables if not t.name.endswith(".sizes.tsv")]
    if not tables:
        raise SystemExit(f"no real metrics under {results}/metrics/real; run the workflow first")
    with tempfile.TemporaryDirectory() as tmp:
        records = [stack_summary(results, t, Path(tmp)) for t in tables]
    machine = hardware()
    cpu = machine["cpu"]
    record = {"version": __version__, "machine": machine, "stacks": records}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(markdown(records, cpu))


if __name__ == "__main__":
    main()
