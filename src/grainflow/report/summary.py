"""The summary at the top of the report: one line of numbers per task.

:func:`summary_table` puts side by side, from the tables the workflow already wrote, each
task's best network, the classical baseline and what the best network measures on the real
stacks; :func:`summary_html` and :func:`summary_headline` format it. :func:`run_summary` is
what ``make run`` prints at the end (``python -m grainflow.report.summary results``).
"""

from __future__ import annotations

import argparse
import html
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from grainflow.inference.trust import trust_warning
from grainflow.io.staging import atomic_path
from grainflow.tasks import SEGMENTATION, TASKS

__all__ = [
    "MAIN_METRIC",
    "SUMMARY_COLUMNS",
    "summary_table",
    "summary_headline",
    "summary_html",
    "read_summary",
    "write_summary",
    "run_summary",
    "main",
]

#: the score that ranks models of a task: (column, label); higher is better
MAIN_METRIC = {
    **{name: (TASKS[name].score, TASKS[name].score_label) for name in SEGMENTATION},
    "diffraction": ("accuracy", "crystal-system accuracy"),
}
#: columns of the summary table, one row per task and real stack
SUMMARY_COLUMNS = [
    "task",
    "metric",
    "model",
    "mean",
    "std",
    "n_folds",
    "classical_mean",
    "classical_std",
    "stack",
    "real_quantity",
    "real_value",
    "real_unit",
    "real_details",
]
_AGGREGATES = ("mean", "std", "pooled", "all")
_NA = ["NaN", "nan", ""]


def _read(path, **kwargs) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=_NA, **kwargs)


def _cv_score(path: str | os.PathLike, task: str) -> dict:
    """Model name, mean and std across folds and fold count of a ``cv.tsv`` table."""
    metric = MAIN_METRIC[task][0]
    cv = _read(path, dtype={"fold": str})
    missing = {"model", "fold", metric} - set(cv.columns)
    if missing:
        raise ValueError(
            f"{os.fspath(path)}: missing column(s) {sorted(missing)}; expected the "
            f"cv.tsv of a {task} model (rule aggregate_metrics)"
        )
    rows = cv.set_index("fold")
    if not {"mean", "std"} <= set(rows.index):
        raise ValueError(f"{os.fspath(path)}: no 'mean' and 'std' rows in column fold")
    return {
        "model": str(cv["model"].iloc[0]),
        "mean": float(rows.loc["mean", metric]),
        "std": float(rows.loc["std", metric]),
        "n_folds": int((~cv["fold"].isin(_AGGREGATES)).sum()),
    }


def _diffraction_score(arch: str, path: str | os.PathLike) -> dict:
    """Mean and std of the per-fold accuracy of a diffraction ``summary.tsv``."""
    table = _read(path, dtype={"fold": str})
    if not {"fold", "accuracy"} <= set(table.columns):
        raise ValueError(
            f"{os.fspath(path)}: expected columns fold and accuracy (rule diffraction_evaluate)"
        )
    rows = table[~table["fold"].isin(_AGGREGATES)]
    folds = rows["accuracy"].astype(float)
    std = float(folds.std(ddof=1)) if len(folds) > 1 else math.nan
    # held-out patterns scored: fewer for a model that reads only some pattern kinds
    patterns = int(rows["patterns"].sum()) if "patterns" in rows else 0
    return {
        "model": arch,
        "mean": float(folds.mean()),
        "std": std,
        "n_folds": len(folds),
        "patterns": patterns,
    }


def _real_row(path: str | os.PathLike, best: Mapping[str, str]) -> dict:
    """What the best network of the stack's task measures on one real stack (its ``all`` row)."""
    table = _read(path, dtype={"plane": str, "file": str, "group": str, "model": str})
    missing = {"stack", "task", "model", "plane", "length_unit"} - set(table.columns)
    if missing:
        raise ValueError(
            f"{os.fspath(path)}: missing column(s) {sorted(missing)}; expected a "
            "real-stack table (rule measure)"
        )
    pooled = table[table["plane"] == "all"]
    if pooled.empty:
        raise ValueError(f"{os.fspath(path)}: no row with plane 'all'")
    task = str(pooled["task"].iloc[0])
    model = best.get(task)
    chosen = pooled[pooled["model"] == model] if model in set(pooled["model"]) else pooled.iloc[:1]
    row = chosen.iloc[0]
    unit = "µm" if row["length_unit"] == "um" else "px"
    planes = int((table["plane"] != "all").sum() // len(pooled))
    f = lambda v, d=2: "NaN" if pd.isna(v) else f"{v:.{d}f}"  # noqa: E731
    entry = {"task": task, "stack": str(row["stack"]), "real_model": str(row["model"])}
    if task == "grains":
        details = (
            f"G = {f(row['astm_g_planimetric'])} (planimetric), "
            f"{f(row['astm_g_intercept'])} (lineal intercept); "
            f"{int(row['n_grains'])} grains; "
            f"median equivalent-circle diameter {f(row['ecd_median'])} {unit}"
        )
        if "boundary_f1" in row.index and pd.notna(row["boundary_f1"]):
            entry.update(
                real_quantity="boundary F1 against the hand-traced truth",
                real_value=float(row["boundary_f1"]),
                real_unit="",
            )
        elif pd.notna(row["astm_g_planimetric"]):
            entry.update(
                real_quantity="ASTM E112 grain size number G (planimetric)",
                real_value=float(row["astm_g_planimetric"]),
                real_unit="G",
            )
        else:
            entry.update(
                real_quantity="mean lineal intercept",
                real_value=float(row["mean_intercept"]),
                real_unit=unit,
            )
    else:
        details = (
            f"area fraction {f(row['area_fraction'], 3)}"
            + (
                f" (truth {f(row['area_fraction_true'], 3)})"
                if "area_fraction_true" in row.index
                else ""
            )
            + f"; {int(row['n_particles'])} particles; median equivalent-circle diameter "
            f"{f(row['ecd_median'])} {unit}"
        )
        if "iou" in row.index and pd.notna(row["iou"]):
            entry.update(
                real_quantity="particle-phase IoU against the hand masks (planes pooled)",
                real_value=float(row["iou"]),
                real_unit="",
            )
        elif "det_f1" in row.index and pd.notna(row["det_f1"]):
            entry.update(
                real_quantity="particle detection F1 against the hand-drawn boxes (planes pooled)",
                real_value=float(row["det_f1"]),
                real_unit="",
            )
            details += (
                f"; {int(row['count_true'])} true particles, detection precision "
                f"{f(row['det_precision'], 3)}, recall {f(row['det_recall'], 3)}"
            )
        else:
            entry.update(
                real_quantity="particle area fraction",
                real_value=float(row["area_fraction"]),
                real_unit="",
            )
    entry["real_details"] = f"{planes} plane(s), {row['model']}: {details}"
    warning = _warning(table, row)
    if warning:
        entry["real_details"] += f". WARNING: {warning}"
    return entry


def _warning(table: pd.DataFrame, row) -> str:
    """The trust warning of one model's ``all`` row of a real-stack table ("" for none)."""
    if "beyond_reference" not in row.index or pd.isna(row["beyond_reference"]):
        return ""
    n_planes = int(((table["model"] == row["model"]) & (table["plane"] != "all")).sum())
    return trust_warning(str(row["stack"]), int(row["beyond_reference"]), n_planes)


def summary_table(
    cv: Sequence[str | os.PathLike],
    *,
    real: Sequence[str | os.PathLike] = (),
    diffraction: Mapping[str, str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """One row per task and real stack: best network, classical baseline, real-data result.

    Parameters
    ----------
    cv : sequence of path
        Cross-validated tables ``results/metrics/{task}/{model}/cv.tsv`` of the
        networks and of the classical baseline (``model == "classical"``); the
        task and model are read from the tables' columns.
    real : sequence of path, optional
        Real-stack tables ``results/metrics/real/{stack}.tsv``.
    diffraction : mapping of str to path, optional
        Architecture name -> ``results/metrics/diffraction/{arch}/summary.tsv``.

    Returns
    -------
    DataFrame
        Columns :data:`SUMMARY_COLUMNS`. ``metric`` names the score (see
        :data:`MAIN_METRIC`, higher is better); ``model, mean, std, n_folds``
        are the best network's (mean and sample std across the held-out
        folds), ``classical_mean, classical_std`` the baseline's (NaN where a
        task has none). ``stack`` is empty for a task without real stacks;
        otherwise ``real_quantity`` names what ``real_value`` is, in
        ``real_unit`` ("" for scores and fractions, "G" for the ASTM E112
        grain size number), measured by the best network (``real_details``
        says which model and gives more numbers).
    """
    networks: dict[str, list[dict]] = {}
    classical: dict[str, dict] = {}
    for path in cv:
        head = _read(path, nrows=1)
        if "task" not in head.columns or head.empty:
            raise ValueError(f"{os.fspath(path)}: no task column; expected a cv.tsv table")
        task = str(head["task"].iloc[0])
        if task not in MAIN_METRIC:
            raise ValueError(
                f"{os.fspath(path)}: task must be one of {list(MAIN_METRIC)}, got {task=}"
            )
        score = _cv_score(path, task)
        if score["model"] == "classical":
            classical[task] = score
        else:
            networks.setdefault(task, []).append(score)
    for arch, path in (diffraction or {}).items():
        networks.setdefault("diffraction", []).append(_diffraction_score(arch, path))
    tasks = list(dict.fromkeys([*networks, *classical]))
    best = {}
    for t, candidates in networks.items():
        # the headline network reads every pattern kind (not ring_profile, rings only)
        most = max(c.get("patterns", 0) for c in candidates)
        candidates = [c for c in candidates if c.get("patterns", 0) == most]
        best[t] = max(candidates, key=lambda s: -math.inf if math.isnan(s["mean"]) else s["mean"])
    real_rows: dict[str, list[dict]] = {}
    for path in real:
        entry = _real_row(path, {t: b["model"] for t, b in best.items()})
        real_rows.setdefault(entry["task"], []).append(entry)
    rows = []
    for task in tasks:
        b = best.get(task, {"model": "", "mean": math.nan, "std": math.nan, "n_folds": 0})
        c = classical.get(task, {"mean": math.nan, "std": math.nan})
        base = {
            "task": task,
            "metric": MAIN_METRIC[task][1],
            "model": b["model"],
            "mean": b["mean"],
            "std": b["std"],
            "n_folds": b["n_folds"],
            "classical_mean": c["mean"],
            "classical_std": c["std"],
        }
        stacks = sorted(real_rows.get(task, []), key=lambda e: e["stack"])
        for entry in stacks or [
            {
                "stack": "",
                "real_quantity": "",
                "real_value": math.nan,
                "real_unit": "",
                "real_details": "",
            }
        ]:
            rows.append({**base, **{k: entry[k] for k in SUMMARY_COLUMNS if k in entry}})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _pm(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"


def _real_text(row) -> str:
    """ "stack: quantity = value unit" of a summary row ("" without a stack)."""
    if not row["stack"]:
        return ""
    value = (
        "NaN"
        if pd.isna(row["real_value"])
        else (f"{row['real_value']:.2f}" if row["real_unit"] == "G" else f"{row['real_value']:.3f}")
    )
    unit = f" {row['real_unit']}" if row["real_unit"] not in ("", "G") else ""
    return f"{row['stack']}: {row['real_quantity']} = {value}{unit}"


def summary_headline(table: pd.DataFrame) -> list[dict]:
    """The summary formatted for a caption: one dict per task.

    Each dict has ``task, metric, model, score`` ("0.986 ± 0.003"),
    ``n_folds, classical`` ("0.752 ± 0.039" or "n/a") and ``real``: a list of
    strings, one per real stack ("nist_steel: ASTM E112 grain size number G
    (planimetric) = 9.25").
    """
    out = []
    for task, rows in table.groupby("task", sort=False):
        first = rows.iloc[0]
        out.append(
            {
                "task": task,
                "metric": first["metric"],
                "model": first["model"] or "none",
                "score": _pm(first["mean"], first["std"]),
                "n_folds": int(first["n_folds"]),
                "classical": _pm(first["classical_mean"], first["classical_std"]),
                "real": [t for t in (_real_text(r) for _, r in rows.iterrows()) if t],
            }
        )
    return out


def summary_html(table: pd.DataFrame, *, title: str = "grainflow: summary") -> str:
    """A self-contained HTML page with the summary table (one row per task)."""
    esc = html.escape
    body = []
    for entry, (_, rows) in zip(summary_headline(table), table.groupby("task", sort=False)):
        real = (
            "<br>".join(
                esc(_real_text(r))
                + (f"<br><small>{esc(r['real_details'])}</small>" if r["real_details"] else "")
                for _, r in rows.iterrows()
                if r["stack"]
            )
            or "—"
        )
        body.append(
            f"<tr><td>{esc(entry['task'])}</td><td>{esc(entry['metric'])}</td>"
            f"<td>{esc(entry['model'])}</td><td class='num'>{esc(entry['score'])}</td>"
            f"<td class='num'>{entry['n_folds']}</td>"
            f"<td class='num'>{esc(entry['classical'])}</td><td>{real}</td></tr>"
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #1e293b; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #cbd5e1; padding: 0.35em 0.7em; vertical-align: top;
         text-align: left; }}
th {{ background: #f1f5f9; }}
td.num {{ text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }}
small {{ color: #475569; }}
</style></head><body>
<h1>{esc(title)}</h1>
<table id="summary">
<thead><tr><th>task</th><th>score (higher is better)</th><th>best network</th>
<th>held-out score, mean ± std across folds</th><th>folds</th>
<th>classical baseline, mean ± std</th><th>real data (best network)</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<p><small>Scores are fractions in [0, 1]; each fold's model is scored on specimens it never saw.
G is the ASTM E112 grain size number.</small></p>
</body></html>
"""


def write_summary(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the summary table as TSV atomically (6 significant digits, NaN as ``NaN``)."""
    with atomic_path(path) as tmp:
        table.to_csv(
            tmp, sep="\t", index=False, float_format="%.6g", na_rep="NaN", lineterminator="\n"
        )


def read_summary(path: str | os.PathLike) -> pd.DataFrame:
    """Read a summary table written by :func:`write_summary`."""
    table = _read(
        path,
        dtype={
            "stack": str,
            "model": str,
            "real_quantity": str,
            "real_unit": str,
            "real_details": str,
        },
    )
    for col in ("stack", "model", "real_quantity", "real_unit", "real_details"):
        table[col] = table[col].fillna("")
    return table


def _number(row, column: str, digits: int = 3) -> str | None:
    """``row[column]`` with ``digits`` decimals; None where the column is absent or NaN."""
    value = row.get(column, math.nan)
    return None if pd.isna(value) else f"{float(value):.{digits}f}"


def _real_numbers(path: Path, model: str) -> str:
    """The key numbers of one real stack (its ``all`` row, ``model``'s where it has one)."""
    table = _read(path, dtype={"plane": str, "model": str})
    pooled = table[table["plane"] == "all"]
    if pooled.empty:
        raise ValueError("no row with plane 'all'")
    chosen = pooled[pooled["model"] == model]
    row = (chosen if len(chosen) else pooled).iloc[0]
    parts = []
    if row["task"] == "grains":
        g = [
            f"{v} {name}"
            for v, name in (
                (_number(row, "astm_g_planimetric", 2), "planimetric"),
                (_number(row, "astm_g_intercept", 2), "intercept"),
            )
            if v
        ]
        if g:
            parts.append("G " + " / ".join(g))
        if _number(row, "boundary_f1"):
            parts.append(f"boundary F1 {_number(row, 'boundary_f1')}")
        if not parts and _number(row, "mean_intercept", 2):
            unit = "µm" if row.get("length_unit") == "um" else "px"
            parts.append(f"mean intercept {_number(row, 'mean_intercept', 2)} {unit}")
        count = _number(row, "n_grains", 0)
    else:
        for column, name in (("iou", "IoU"), ("det_f1", "detection F1")):
            if _number(row, column):
                parts.append(f"{name} {_number(row, column)}")
        if not parts:
            parts.append(f"area fraction {_number(row, 'area_fraction')}")
        count = _number(row, "n_particles", 0)
    noun = TASKS[row["task"]].objects if row["task"] in TASKS else "objects"
    warning = _warning(table, row)
    return (
        f"{row['stack']} {', '.join(parts)}"
        + (f" ({count} {noun})" if count else "")
        + (f" [WARNING: {warning}]" if warning else "")
    )


def run_summary(
    results: str | os.PathLike = "results", *, report: str | os.PathLike | None = None
) -> list[str]:
    """Where the report is and its key numbers in three lines: what ``make run`` prints last.

    Parameters
    ----------
    results : path-like
        The results folder: ``tables/summary.tsv`` (rule summary_table) gives the
        held-out scores and the real stacks, ``metrics/real/{stack}.tsv`` their numbers.
    report : path-like, optional
        The report file; default ``results/report.html``.

    Returns
    -------
    lines : list of str
        ``report: ...``; the held-out scores of the best network of each task
        (mean ± std across folds, the classical baseline's mean beside it); the real
        stacks (grains: ASTM E112 G, planimetric and lineal intercept; particles:
        IoU or detection F1 where there is ground truth, else the area
        fraction; a stack out of the training distribution by the trust map gets
        its warning); the crystal-system accuracy; and, only when needed, a last
        line naming the tables that are missing or unreadable. Never raises for
        a missing or broken table.
    """
    results = Path(results)
    report = Path(report) if report is not None else results / "report.html"
    missing, stacks = [], []
    lines = [f"report: {report}" + ("" if report.is_file() else " (missing: run make report)")]
    table_path = results / "tables" / "summary.tsv"
    held_out, diffraction, best = [], "no result", {}
    try:
        table = read_summary(table_path)
        for entry, (task, rows) in zip(summary_headline(table), table.groupby("task", sort=False)):
            best[task] = entry["model"]
            text = f"{entry['metric']} {entry['score']} ({entry['model']}, {entry['n_folds']} folds"
            if task == "diffraction":
                diffraction = text + ")"
                continue
            baseline = rows["classical_mean"].iloc[0]
            classical = "" if pd.isna(baseline) else f"; classical {baseline:.3f}"
            held_out.append(f"{task} {text}{classical})")
            stacks += [(task, stack) for stack in rows["stack"] if stack]
        if "diffraction" not in best:
            diffraction = "off (no diffraction rows in the summary)"
    except FileNotFoundError:
        missing.append(f"{table_path} (rule summary_table)")
    except Exception as error:  # noqa: BLE001 (a summary says what it cannot read, never fails)
        missing.append(f"{table_path} unreadable ({type(error).__name__}: {error})")
        held_out, diffraction, best, stacks = [], "no result", {}, []
    if not best:  # no summary: the real tables there are, each with its first model
        real_dir = results / "metrics" / "real"
        stacks = [
            ("", p.name.removesuffix(".tsv"))
            for p in sorted(real_dir.glob("*.tsv"))
            if not p.name.endswith(".sizes.tsv")
        ]
    real = []
    for task, stack in stacks:
        path = results / "metrics" / "real" / f"{stack}.tsv"
        try:
            real.append(_real_numbers(path, best.get(task, "")))
        except FileNotFoundError:
            missing.append(f"{path} (rule measure)")
        except Exception as error:  # noqa: BLE001
            missing.append(f"{path} unreadable ({type(error).__name__}: {error})")
    lines.append("held-out synthetic: " + ("; ".join(held_out) or "no result"))
    lines.append("real stacks: " + ("; ".join(real) or "none measured"))
    lines.append(f"diffraction: {diffraction}")
    if missing:
        lines.append("missing: " + "; ".join(missing))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m grainflow.report.summary [results] [--report PATH]``: print :func:`run_summary`.

    Exits 0 even when tables are missing (it says which): a summary never fails a run.
    """
    parser = argparse.ArgumentParser(
        prog="python -m grainflow.report.summary",
        description="Print where the report is and the run's key numbers.",
    )
    parser.add_argument("results", nargs="?", default="results", help="the results folder")
    parser.add_argument("--report", help="the report file (default: RESULTS/report.html)")
    args = parser.parse_args(argv)
    print("\n".join(run_summary(args.results, report=args.report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
