"""Provenance of a run: config, package versions, seeds, git commit, hardware, run times.

:func:`write_provenance` gathers what a reader needs to trust and repeat the results: an
HTML page for the report, the run times per rule (from Snakemake's ``benchmark:`` files)
as TSV, the config as YAML and the rest as JSON.
"""

from __future__ import annotations

import html
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd
import yaml

from grainflow.io.staging import atomic_path
from grainflow.seeds import derive_seed

__all__ = [
    "PACKAGES",
    "package_versions",
    "git_state",
    "hardware",
    "read_benchmarks",
    "runtime_table",
    "job_seeds",
    "provenance_html",
    "write_provenance",
]

#: distributions whose versions the provenance page lists
PACKAGES = (
    "grainflow",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "scikit-image",
    "scikit-learn",
    "pandas",
    "h5py",
    "zarr",
    "ome-zarr",
    "tifffile",
    "matplotlib",
    "snakemake",
    "jsonschema",
    "pyyaml",
)
#: columns of :func:`runtime_table`
RUNTIME_COLUMNS = ["rule", "jobs", "total_s", "total_min", "mean_s", "max_s", "max_rss_mb"]


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution (``"not installed"`` when missing)."""
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_state(path: str | os.PathLike) -> dict:
    """The git commit of the repository holding ``path``, and whether tracked files changed.

    Returns
    -------
    dict
        ``commit`` (40 hex digits or None), ``branch`` (None when detached or
        unknown), ``dirty`` (True when tracked files differ from the commit;
        None when unknown) and ``note``: "" or why there is no commit ("not a
        git repository", "git is not installed", git's own message).
    """

    def git(*args):
        return subprocess.run(
            ["git", "-C", os.fspath(path), *args],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    state = {"commit": None, "branch": None, "dirty": None, "note": ""}
    try:
        head = git("rev-parse", "HEAD")
    except FileNotFoundError:
        return {**state, "note": "git is not installed"}
    except subprocess.TimeoutExpired:
        return {**state, "note": "git did not answer within 60 s"}
    if head.returncode != 0:
        message = head.stderr.strip().splitlines()
        note = (
            "not a git repository"
            if any("not a git repository" in m for m in message)
            else (message[0] if message else f"git rev-parse failed ({head.returncode})")
        )
        return {**state, "note": note}
    state["commit"] = head.stdout.strip()
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch.returncode == 0 and branch.stdout.strip() != "HEAD":
        state["branch"] = branch.stdout.strip()
    status = git("status", "--porcelain", "--untracked-files=no")
    if status.returncode == 0:
        state["dirty"] = bool(status.stdout.strip())
    return state


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware() -> dict:
    """The machine this runs on: CPU model and cores, memory, GPUs, OS and Python.

    Returns
    -------
    dict
        ``cpu, logical_cores, usable_cores`` (cores this process may run on),
        ``memory_gib``, ``gpus`` (list of "name (memory GiB)"; empty without
        CUDA), ``torch_cuda`` (the CUDA version torch was built for, or None),
        ``platform``, ``python``.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        import psutil

        memory = psutil.virtual_memory().total
    except ImportError:  # pragma: no cover - psutil comes with snakemake
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gpus, cuda = [], None
    try:
        import torch

        cuda = torch.version.cuda
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                gpus.append(f"{p.name} ({p.total_memory / 2**30:.1f} GiB)")
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": round(memory / 2**30, 1),
        "gpus": gpus,
        "torch_cuda": cuda,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


def read_benchmarks(
    root: str | os.PathLike, patterns: Mapping[str, str], *, workdir: str | os.PathLike = "."
) -> pd.DataFrame:
    """One row per benchmark file under ``root``, assigned to its rule.

    Parameters
    ----------
    root : path
        Folder searched recursively for ``*.tsv`` (``benchmarks/rules``),
        relative to ``workdir``.
    patterns : mapping of str to str
        Rule name -> the rule's ``benchmark:`` path pattern, relative to
        ``workdir``, with Snakemake wildcards (``{task}`` or ``{task,regex}``).
    workdir : path, optional
        The workflow's working directory.

    Returns
    -------
    DataFrame
        Columns ``rule, job`` (the wildcards, ``name=value`` joined by ", "),
        ``file, s`` (wall-clock seconds, summed over repeats) and
        ``max_rss_mb``; sorted by rule and file. Files that match no
        pattern get rule ``"?"``. Empty (with these columns) when ``root``
        does not exist.
    """
    from snakemake.io import regex_from_filepattern

    workdir = Path(workdir)
    regexes = {rule: re.compile(regex_from_filepattern(p)) for rule, p in patterns.items()}
    rows = []
    base = workdir / root
    files = sorted(base.rglob("*.tsv")) if base.is_dir() else []
    for path in files:
        rel = path.relative_to(workdir).as_posix()
        rule, job = "?", ""
        for name, regex in regexes.items():
            m = regex.match(rel)
            if m:
                rule, job = name, ", ".join(f"{k}={v}" for k, v in m.groupdict().items())
                break
        table = pd.read_csv(path, sep="\t", na_values=["-", "NA", "NaN", ""])
        if "s" not in table.columns:
            raise ValueError(f"{rel}: no column 's'; expected a Snakemake benchmark file")
        rss = pd.to_numeric(table.get("max_rss", pd.Series(dtype=float)), errors="coerce")
        rows.append(
            {
                "rule": rule,
                "job": job,
                "file": rel,
                "s": float(pd.to_numeric(table["s"], errors="coerce").sum()),
                "max_rss_mb": float(rss.max()) if rss.notna().any() else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=["rule", "job", "file", "s", "max_rss_mb"])


def runtime_table(jobs: pd.DataFrame) -> pd.DataFrame:
    """Run times per rule from :func:`read_benchmarks` rows, slowest first, then ``all``.

    Returns
    -------
    DataFrame
        Columns ``rule, jobs, total_s, total_min, mean_s, max_s`` (wall-clock
        seconds and minutes) and ``max_rss_mb`` (largest resident memory of a
        job, MB); the last row, ``all``, sums every job.
    """
    if jobs.empty:
        return pd.DataFrame(columns=RUNTIME_COLUMNS)
    g = jobs.groupby("rule")
    table = pd.DataFrame(
        {
            "jobs": g.size(),
            "total_s": g["s"].sum(),
            "mean_s": g["s"].mean(),
            "max_s": g["s"].max(),
            "max_rss_mb": g["max_rss_mb"].max(),
        }
    )
    table = table.sort_values("total_s", ascending=False, kind="stable").reset_index()
    total = {
        "rule": "all",
        "jobs": len(jobs),
        "total_s": jobs["s"].sum(),
        "mean_s": jobs["s"].mean(),
        "max_s": jobs["s"].max(),
        "max_rss_mb": jobs["max_rss_mb"].max(),
    }
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    table["total_min"] = table["total_s"] / 60
    return table[RUNTIME_COLUMNS]


def job_seeds(base: int, jobs: Sequence[Sequence[object]]) -> pd.DataFrame:
    """The seed of each job, derived from the base seed and the job's names.

    Parameters
    ----------
    base : int
        The run's base seed (config ``seed``).
    jobs : sequence of sequence
        The names of each job as the rules pass them to ``job_seed``, e.g.
        ``("train", "grains", "unet", "0")``.

    Returns
    -------
    DataFrame
        Columns ``job`` (the names joined by " ") and ``seed``
        (:func:`grainflow.seeds.derive_seed`).
    """
    rows = [{"job": " ".join(map(str, parts)), "seed": derive_seed(base, *parts)} for parts in jobs]
    return pd.DataFrame(rows, columns=["job", "seed"])


def _plain(value):
    """Plain dicts, lists and scalars (YAML and JSON writers refuse subclasses and NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return _plain(value.item())
    return value


def _table(frame: pd.DataFrame, *, floats: str = "{:.1f}") -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if pd.isna(v) else floats.format(v)
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _pairs(items: Mapping) -> str:
    return _table(
        pd.DataFrame(
            {
                "item": list(items),
                "value": [
                    (", ".join(map(str, v)) or "none")
                    if isinstance(v, list)
                    else ("" if v is None else str(v))
                    for v in items.values()
                ],
            }
        )
    )


def provenance_html(
    *,
    config: Mapping,
    seed: int,
    versions: Mapping[str, str],
    git: Mapping,
    machine: Mapping,
    runtimes: pd.DataFrame,
    jobs: pd.DataFrame,
    seeds: pd.DataFrame,
    created: str,
) -> str:
    """A self-contained HTML page of the run's provenance (see :func:`write_provenance`)."""
    esc = html.escape
    if git.get("commit"):
        dirty = {True: " (tracked files modified since)", False: " (clean)", None: ""}
        commit = f"{git['commit']}{dirty[git.get('dirty')]}"
        if git.get("branch"):
            commit += f" on {git['branch']}"
    else:
        commit = f"none: {git.get('note') or 'unknown'}"
    run = {
        "created (UTC)": created,
        "base seed": seed,
        "git commit": commit,
        "grainflow": versions.get("grainflow", "?"),
    }
    total = runtimes[runtimes["rule"] == "all"]
    total_text = (
        (
            f"{float(total['total_s'].iloc[0]):.0f} s = "
            f"{float(total['total_min'].iloc[0]):.1f} min of job time in "
            f"{int(total['jobs'].iloc[0])} benchmarked jobs"
        )
        if len(total)
        else "no benchmark files found"
    )
    config_yaml = yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>grainflow: provenance</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #1e293b; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
th, td {{ border: 1px solid #cbd5e1; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f1f5f9; }}
pre {{ background: #f8fafc; border: 1px solid #cbd5e1; padding: 0.8em; overflow: auto; }}
</style></head><body>
<h1>grainflow: provenance</h1>
<h2 id="run">Run</h2>
{_pairs(run)}
<h2 id="hardware">Hardware</h2>
{_pairs(machine)}
<h2 id="packages">Package versions</h2>
{_pairs(versions)}
<h2 id="runtimes">Run times per rule</h2>
<p>Wall-clock time of the jobs from their <code>benchmark:</code> files: {esc(total_text)}.
Jobs that ran side by side overlap, so the run took less than the sum.</p>
{_table(runtimes)}
<details><summary>every benchmarked job ({len(jobs)})</summary>
{_table(jobs)}
</details>
<h2 id="seeds">Seeds</h2>
<p>Every job's seed is derived from the base seed {seed} and the job's names
(<code>grainflow.seeds.derive_seed</code>: SHA-256 of the names), so any job reproduces alone.</p>
<details><summary>derived seeds ({len(seeds)} jobs)</summary>
{_table(seeds)}
</details>
<h2 id="config">Config</h2>
<pre>{esc(config_yaml)}</pre>
</body></html>
"""


def write_provenance(
    *,
    html_path: str | os.PathLike,
    runtimes_path: str | os.PathLike,
    config_path: str | os.PathLike,
    json_path: str | os.PathLike,
    config: Mapping,
    seed_jobs: Sequence[Sequence[object]],
    benchmark_root: str | os.PathLike,
    benchmark_patterns: Mapping[str, str],
    repository: str | os.PathLike,
    workdir: str | os.PathLike = ".",
) -> dict:
    """Gather the provenance of the run and write it (all files atomically).

    Parameters
    ----------
    html_path, runtimes_path, config_path, json_path : path
        Outputs: the HTML page, the run times per rule (TSV, see
        :func:`runtime_table`), the config (YAML; runs again with
        ``snakemake --configfile``) and everything else (JSON: versions,
        git, hardware, jobs, seeds).
    config : mapping
        The run's config (validated); ``config["seed"]`` is the base seed.
    seed_jobs : sequence of sequence
        Names of the jobs whose seeds to list (:func:`job_seeds`).
    benchmark_root, benchmark_patterns, workdir
        Where the benchmark files are and how to assign them to rules
        (:func:`read_benchmarks`).
    repository : path
        A folder inside the workflow's git repository (:func:`git_state`).

    Returns
    -------
    dict
        What the JSON file holds.
    """
    if "seed" not in config:
        raise ValueError(f"config has no 'seed', got keys {sorted(config)}")
    seed = int(config["seed"])
    versions, git, machine = package_versions(), git_state(repository), hardware()
    jobs = read_benchmarks(benchmark_root, benchmark_patterns, workdir=workdir)
    runtimes = runtime_table(jobs)
    seeds = job_seeds(seed, seed_jobs)
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    page = provenance_html(
        config=config,
        seed=seed,
        versions=versions,
        git=git,
        machine=machine,
        runtimes=runtimes,
        jobs=jobs,
        seeds=seeds,
        created=created,
    )
    record = _plain(
        {
            "created_utc": created,
            "seed": seed,
            "versions": versions,
            "git": git,
            "hardware": machine,
            "jobs": jobs.to_dict(orient="records"),
            "seeds": seeds.to_dict(orient="records"),
        }
    )
    with atomic_path(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    with atomic_path(runtimes_path) as tmp:
        runtimes.to_csv(
            tmp, sep="\t", index=False, float_format="%.6g", na_rep="NaN", lineterminator="\n"
        )
    with atomic_path(config_path) as tmp:
        tmp.write_text(
            yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    return record
