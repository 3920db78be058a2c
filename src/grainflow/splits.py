"""Leakage-proof cross-validation folds: GroupKFold split manifests.

Images of one specimen (or one imaging session) are alike and an augmented copy is nearly
its original, so folds are assigned to groups, never to single images; the manifest
``results/splits/{task}.tsv`` records each image's fold, with its SHA-256 beside it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from grainflow.io.hdf5 import read_specimen
from grainflow.io.staging import atomic_path

__all__ = [
    "MANIFEST_COLUMNS",
    "GROUP_BY",
    "group_keys",
    "manifest_rows",
    "assign_folds",
    "make_manifest",
    "check_manifest",
    "write_manifest",
    "read_manifest",
    "manifest_sha256",
    "fold_table",
    "fold_figure",
]

MANIFEST_COLUMNS = ("image_id", "original_id", "specimen", "session", "fold", "file", "index")
GROUP_BY = ("specimen", "session")


def group_keys(df: pd.DataFrame, group_by: str = "specimen") -> pd.Series:
    """The group of each row: ``specimen``, or ``specimen/session`` for ``group_by="session"``."""
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by=}")
    if group_by == "specimen":
        return df["specimen"].astype(str)
    return df["specimen"].astype(str) + "/" + df["session"].astype(str)


def manifest_rows(
    files: Iterable[str | os.PathLike], *, stratify_by: str | None = None
) -> pd.DataFrame:
    """One row per image of the augmented specimen ``files``, without folds.

    Parameters
    ----------
    files : iterable of path
        Augmented (or synthetic) specimen files, read with :func:`grainflow.io.hdf5.read_specimen`.
    stratify_by : str, optional
        Also record this per-image value: a :class:`~grainflow.io.hdf5.Sample` field
        (e.g. ``"modality"``) or a key of ``Sample.params`` (e.g. a diffraction class).

    Returns
    -------
    rows : DataFrame
        Columns ``image_id, original_id, specimen, session, file, index`` (+ ``stratify_by``).
        An empty ``original_id`` (an original in a synthetic file) becomes the ``image_id``.
    """
    records = []
    for file in files:
        sf = read_specimen(file)
        for index, s in enumerate(sf.samples):
            row = {
                "image_id": s.image_id,
                "original_id": s.original_id or s.image_id,
                "specimen": s.specimen,
                "session": s.session,
                "file": str(file),
                "index": index,
            }
            if stratify_by is not None:
                if hasattr(s, stratify_by) and stratify_by not in ("image", "labels"):
                    row[stratify_by] = getattr(s, stratify_by)
                elif stratify_by in s.params:
                    row[stratify_by] = s.params[stratify_by]
                else:
                    raise ValueError(
                        f"{file}: image {s.image_id!r} has no field or parameter "
                        f"{stratify_by!r} to stratify by; params are {sorted(s.params)}"
                    )
            records.append(row)
    if not records:
        raise ValueError("no images in the specimen files; nothing to split")
    return pd.DataFrame.from_records(records)


def assign_folds(
    rows: pd.DataFrame,
    *,
    folds: int,
    group_by: str = "specimen",
    stratify_by: str | None = None,
) -> pd.DataFrame:
    """Assign a fold to every row, by group, and check the result.

    Parameters
    ----------
    rows : DataFrame
        Columns ``image_id, original_id, specimen, session`` (others are kept).
    folds : int
        Number of folds, >= 2 and <= the number of groups.
    group_by : {"specimen", "session"}
    stratify_by : str, optional
        Column with a class per row: :class:`~sklearn.model_selection.StratifiedGroupKFold`
        balances the classes across folds (diffraction crystal systems).

    Returns
    -------
    manifest : DataFrame
        ``rows`` with an integer ``fold`` column, columns ordered as :data:`MANIFEST_COLUMNS`.
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds=}")
    groups = group_keys(rows, group_by)
    _check_enough_groups(groups, folds, group_by)
    if stratify_by is None:
        splitter = GroupKFold(n_splits=int(folds))
        y = None
    else:
        if stratify_by not in rows:
            raise ValueError(f"no column {stratify_by!r} to stratify by; got {list(rows.columns)}")
        splitter = StratifiedGroupKFold(n_splits=int(folds))
        y = rows[stratify_by].astype(str).to_numpy()
    fold = np.full(len(rows), -1, dtype=np.int64)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(rows)), y, groups)):
        fold[held_out] = k
    out = rows.copy()
    out["fold"] = fold
    extra = [c for c in out.columns if c not in MANIFEST_COLUMNS]
    out = out[[*MANIFEST_COLUMNS, *extra]].reset_index(drop=True)
    check_manifest(out, folds=folds, group_by=group_by)
    return out


def make_manifest(
    files: Iterable[str | os.PathLike],
    *,
    folds: int,
    group_by: str = "specimen",
    stratify_by: str | None = None,
) -> pd.DataFrame:
    """The split manifest of a task's augmented specimen files.

    Parameters
    ----------
    files : iterable of path
        ``results/augmented/{task}/{specimen}.h5`` of every specimen of the task.
    folds : int
        Number of cross-validation folds.
    group_by : {"specimen", "session"}
        What a group is (see Notes).
    stratify_by : str, optional
        Per-image class to balance across folds (see :func:`manifest_rows`).

    Returns
    -------
    manifest : DataFrame
        Columns :data:`MANIFEST_COLUMNS` (+ ``stratify_by``), one row per image.

    Raises
    ------
    ValueError
        If there are fewer groups than folds, or the result fails :func:`check_manifest`.

    Notes
    -----
    Images of one specimen are alike (same microstructure statistics), and so are
    images of one imaging session; an augmented copy is nearly its original. A random
    split would therefore test a model on what it was trained on, so folds are
    assigned to *groups*:

    - ``group_by="specimen"`` (default): the group is the specimen;
    - ``group_by="session"``: the group is one session *of one specimen* (session
      names such as ``"b1"`` repeat across specimens, so the key is
      ``"{specimen}/{session}"``).

    Augmented copies carry the specimen and session of their original, so they
    always land in its fold; :func:`check_manifest` verifies it anyway.

    The manifest has one row per image::

        image_id  original_id  specimen  session  fold  file  index

    ``original_id == image_id`` for originals; ``file`` is the augmented HDF5 file
    holding the image and ``index`` its position there. Fold ``k``'s held-out set is
    the rows with ``fold == k``. :func:`write_manifest` writes its SHA-256 beside it
    (``{task}.tsv.sha256``, in ``sha256sum`` format), so that the report and the
    models can name the exact split they used.
    """
    rows = manifest_rows(files, stratify_by=stratify_by)
    return assign_folds(rows, folds=folds, group_by=group_by, stratify_by=stratify_by)


def _check_enough_groups(groups: pd.Series, folds: int, group_by: str) -> None:
    names = sorted(groups.unique())
    if len(names) < folds:
        fix = (
            "add specimens (synthesize.<task>.specimens)"
            if group_by == "specimen"
            else "add sessions or specimens"
        )
        raise ValueError(
            f"cannot make {folds} folds from {len(names)} {group_by} groups {names}: "
            f"every fold needs at least one whole group; lower splits.folds to <= {len(names)} "
            f"or {fix}"
        )


def check_manifest(
    df: pd.DataFrame, *, folds: int | None = None, group_by: str = "specimen"
) -> None:
    """Raise ``ValueError`` unless ``df`` is a leakage-free split manifest.

    Checks: the columns; unique ``image_id``; integer folds in ``[0, folds)``, none
    empty; at least ``folds`` groups; every group in exactly one fold; every copy's
    original present, of the same specimen and session, and in the same fold.

    Parameters
    ----------
    df : DataFrame
        A manifest (columns :data:`MANIFEST_COLUMNS`).
    folds : int, optional
        Expected number of folds (default: ``max(fold) + 1``).
    group_by : {"specimen", "session"}
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"split manifest lacks columns {missing}; it has {list(df.columns)}")
    if df.empty:
        raise ValueError("split manifest has no rows")
    dup = df["image_id"][df["image_id"].duplicated()]
    if len(dup):
        raise ValueError(f"image_id {dup.iloc[0]!r} appears more than once in the split manifest")
    fold = pd.to_numeric(df["fold"], errors="coerce")
    if fold.isna().any() or (fold != np.round(fold)).any():
        bad = df["image_id"][fold.isna() | (fold != np.round(fold))].iloc[0]
        raise ValueError(f"image {bad!r} has no integer fold in the split manifest")
    fold = fold.astype(int)
    if folds is None:
        folds = int(fold.max()) + 1
    out_of_range = (fold < 0) | (fold >= folds)
    if out_of_range.any():
        i = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(
            f"image {df['image_id'].iloc[i]!r} has fold {fold.iloc[i]}, outside [0, {folds})"
        )
    groups = group_keys(df, group_by)
    _check_enough_groups(groups, folds, group_by)
    empty = sorted(set(range(folds)) - set(fold))
    if empty:
        raise ValueError(f"folds {empty} hold no images; remake the split with fewer folds")
    d = df.assign(fold=fold)
    originals = d.set_index("image_id")[["specimen", "session", "fold"]]
    copies = d[d["original_id"] != d["image_id"]]
    orphan = ~copies["original_id"].isin(originals.index)
    if orphan.any():
        row = copies[orphan].iloc[0]
        raise ValueError(
            f"augmented copy {row['image_id']!r} has original {row['original_id']!r}, which is "
            f"not in the split manifest; list the original's file in the split too"
        )
    joined = copies.merge(
        originals, left_on="original_id", right_index=True, how="left", suffixes=("", "_orig")
    )
    moved = (joined["specimen"] != joined["specimen_orig"]) | (
        joined["session"] != joined["session_orig"]
    )
    if moved.any():
        row = joined[moved].iloc[0]
        raise ValueError(
            f"augmented copy {row['image_id']!r} is recorded as specimen/session "
            f"{row['specimen']}/{row['session']} but its original {row['original_id']!r} as "
            f"{row['specimen_orig']}/{row['session_orig']}; rerun the augment rule"
        )
    apart = joined["fold"] != joined["fold_orig"]
    if apart.any():
        row = joined[apart].iloc[0]
        raise ValueError(
            f"augmented copy {row['image_id']!r} is in fold {int(row['fold'])} but its "
            f"original {row['original_id']!r} is in fold {int(row['fold_orig'])}: copies must "
            f"travel with their original; remake the manifest with grainflow.splits.make_manifest"
        )
    per_group = fold.groupby(groups).nunique()
    leaking = per_group[per_group > 1]
    if len(leaking):
        g = leaking.index[0]
        where = sorted(set(fold[groups == g]))
        raise ValueError(
            f"{group_by} group {g!r} lands in folds {where}: its images would be in training "
            f"and validation at once (leakage); remake the manifest with "
            f"grainflow.splits.make_manifest(..., group_by={group_by!r})"
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> str:
    """Write the manifest as TSV and its SHA-256 beside it (``path + ".sha256"``), atomically.

    Returns
    -------
    sha256 : str
        Hex digest of the TSV file as written.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, lineterminator="\n")
        digest = _sha256(tmp)
    with atomic_path(f"{path}.sha256") as tmp:
        tmp.write_text(f"{digest}  {path.name}\n")
    return digest


def manifest_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 recorded beside the manifest ``path`` (``path + ".sha256"``)."""
    side = Path(f"{path}.sha256")
    if not side.is_file():
        # errno and filename let Snakemake defer a params function until the file exists
        raise FileNotFoundError(
            errno.ENOENT, f"{side} does not exist; rerun the split rule", str(side)
        )
    text = side.read_text().split()
    if not text or not re.fullmatch(r"[0-9a-f]{64}", text[0]):
        raise ValueError(f"{side} does not hold a SHA-256 hex digest; rerun the split rule")
    return text[0]


def read_manifest(
    path: str | os.PathLike,
    *,
    folds: int | None = None,
    group_by: str | None = None,
    verify: bool = True,
) -> pd.DataFrame:
    """Read a split manifest; check its SHA-256 and, with ``group_by``, its folds.

    Raises
    ------
    ValueError
        If the file does not match its recorded SHA-256 (it changed after the split
        rule wrote it) or fails :func:`check_manifest`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            errno.ENOENT, f"split manifest {path} does not exist; run the split rule", str(path)
        )
    if verify:
        recorded, actual = manifest_sha256(path), _sha256(path)
        if recorded != actual:
            raise ValueError(
                f"{path} has SHA-256 {actual} but {path}.sha256 records {recorded}: the "
                f"manifest was edited after the split; rerun the split rule"
            )
    df = pd.read_csv(
        path,
        sep="\t",
        dtype={"image_id": str, "original_id": str, "specimen": str, "session": str, "file": str},
        keep_default_na=False,
    )
    if group_by is not None:
        check_manifest(df, folds=folds, group_by=group_by)
    return df


def fold_table(df: pd.DataFrame) -> pd.DataFrame:
    """Images, originals, copies, specimens and sessions per fold.

    Returns
    -------
    table : DataFrame
        One row per fold: ``fold, images, originals, copies, specimens, sessions,
        specimen_names`` (sessions counted per specimen).
    """
    d = df.assign(
        _orig=df["original_id"] == df["image_id"],
        _sess=df["specimen"].astype(str) + "/" + df["session"].astype(str),
    )
    rows = []
    for k, g in d.groupby("fold", sort=True):
        rows.append(
            {
                "fold": int(k),
                "images": len(g),
                "originals": int(g["_orig"].sum()),
                "copies": int((~g["_orig"]).sum()),
                "specimens": g["specimen"].nunique(),
                "sessions": g["_sess"].nunique(),
                "specimen_names": ",".join(sorted(g["specimen"].astype(str).unique())),
            }
        )
    return pd.DataFrame(rows)


def fold_figure(table: pd.DataFrame, *, title: str = "", sha256: str = ""):
    """Bar chart of images (originals and copies) and of specimens/sessions per fold.

    Parameters
    ----------
    table : DataFrame
        From :func:`fold_table`.
    title : str
        E.g. the task and ``group_by``.
    sha256 : str
        The manifest's SHA-256, printed under the title.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(table))

    def tick(k, names):
        names = names.split(",")
        shown = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
        return f"{k}\n({shown})"

    ticks = [tick(k, n) for k, n in zip(table["fold"], table["specimen_names"])]
    ax1.bar(x, table["originals"], label="originals", color="tab:blue")
    ax1.bar(
        x, table["copies"], bottom=table["originals"], label="augmented copies", color="tab:orange"
    )
    for xi, n in zip(x, table["images"]):
        ax1.annotate(f"{n}", (xi, n), ha="center", va="bottom", fontsize=8)
    ax1.set_ylim(0, 1.12 * max(table["images"].max(), 1))
    ax1.set_ylabel("images (count)")
    w = 0.38
    ax2.bar(x - w / 2, table["specimens"], w, label="specimens", color="tab:green")
    ax2.bar(x + w / 2, table["sessions"], w, label="sessions", color="tab:purple")
    ax2.set_ylabel("groups (count)")
    ax2.yaxis.get_major_locator().set_params(integer=True)
    for ax in (ax1, ax2):
        ax.set_xticks(x, ticks, fontsize=7)
        ax.set_xlabel("fold (held-out specimens)")
        ax.legend(fontsize=7, ncol=2, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    head = (
        title
        + ("\n" if title and sha256 else "")
        + (f"manifest SHA-256 {sha256}" if sha256 else "")
    )
    if head:
        fig.suptitle(head, fontsize=8)
    return fig
