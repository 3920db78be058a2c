"""Split manifests: no group in two folds, copies with originals, clear errors, the leak."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grainflow.augment import augment_sample, augment_specimen
from grainflow.io.hdf5 import Sample, SpecimenFile, read_specimen, write_specimen
from grainflow.leakage import compare_splits, image_features, leakage_experiment, leakage_figure
from grainflow.splits import (
    MANIFEST_COLUMNS,
    assign_folds,
    check_manifest,
    fold_figure,
    fold_table,
    group_keys,
    make_manifest,
    manifest_sha256,
    read_manifest,
    write_manifest,
)
from grainflow.synth.tessellation import boundary_mask, polycrystal


def rows_for(layout: list[list[int]], copies: int | list = 0, task: str = "grains") -> pd.DataFrame:
    """Manifest rows without folds: ``layout[i][b]`` images in session b of specimen i."""
    records = []
    n = 0
    for i, sessions in enumerate(layout):
        for b, n_images in enumerate(sessions):
            for k in range(n_images):
                oid = f"{task}/s{i:02d}/b{b}/i{k:02d}"
                c = copies if isinstance(copies, int) else copies[n % len(copies)]
                n += 1
                for a in range(-1, c):
                    records.append(
                        {
                            "image_id": oid if a < 0 else f"{oid}/a{a:02d}",
                            "original_id": oid,
                            "specimen": f"s{i:02d}",
                            "session": f"b{b}",
                            "file": f"results/augmented/{task}/s{i:02d}.h5",
                            "index": len(records),
                        }
                    )
    return pd.DataFrame(records)


@st.composite
def datasets(draw, group_by: str):
    layout = draw(
        st.lists(st.lists(st.integers(1, 3), min_size=1, max_size=3), min_size=2, max_size=8)
    )
    copies = draw(st.lists(st.integers(0, 3), min_size=1, max_size=4))
    rows = rows_for(layout, copies)
    order = draw(st.permutations(range(len(rows))))
    rows = rows.iloc[list(order)].reset_index(drop=True)
    n_groups = group_keys(rows, group_by).nunique()
    folds = draw(st.integers(2, n_groups + 1))  # sometimes one fold too many
    return rows, folds


def assert_leak_free(m: pd.DataFrame, rows: pd.DataFrame, folds: int, group_by: str):
    assert list(m.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert sorted(m["image_id"]) == sorted(rows["image_id"])
    assert set(m["fold"]) == set(range(folds))  # every fold holds something
    keys = group_keys(m, group_by)
    assert (m.groupby(keys)["fold"].nunique() == 1).all()  # no group in two folds
    fold_of = dict(zip(m["image_id"], m["fold"]))
    assert all(fold_of[o] == f for o, f in zip(m["original_id"], m["fold"]))  # copies travel


@settings(max_examples=60, deadline=None)
@given(datasets("specimen"))
def test_no_specimen_in_two_folds_and_copies_stay_with_originals(data):
    rows, folds = data
    if rows["specimen"].nunique() < folds:
        with pytest.raises(ValueError, match=f"cannot make {folds} folds from "):
            assign_folds(rows, folds=folds)
        return
    m = assign_folds(rows, folds=folds)
    assert_leak_free(m, rows, folds, "specimen")


@settings(max_examples=60, deadline=None)
@given(datasets("session"))
def test_grouping_by_session_keeps_each_session_of_each_specimen_together(data):
    rows, folds = data
    n_groups = rows.groupby(["specimen", "session"]).ngroups
    if n_groups < folds:
        with pytest.raises(ValueError, match=f"cannot make {folds} folds from {n_groups} session"):
            assign_folds(rows, folds=folds, group_by="session")
        return
    m = assign_folds(rows, folds=folds, group_by="session")
    assert_leak_free(m, rows, folds, "session")


def test_session_names_repeat_across_specimens_so_the_group_is_specimen_and_session():
    rows = rows_for([[2, 2], [2, 2]])  # sessions b0, b1 in both specimens: 4 groups
    m = assign_folds(rows, folds=4, group_by="session")
    assert m.groupby(["specimen", "session"])["fold"].nunique().eq(1).all()
    assert m.groupby(["specimen", "session"])["fold"].first().nunique() == 4
    assert m.groupby("session")["fold"].nunique().eq(2).all()  # "b0" of s00 and of s01 differ
    with pytest.raises(ValueError, match="cannot make 4 folds from 2 specimen groups"):
        assign_folds(rows, folds=4, group_by="specimen")


def test_stratified_split_balances_classes_across_folds():
    rows = rows_for([[2]] * 6)
    rows["crystal_system"] = rows["specimen"].map(
        {f"s{i:02d}": ("cubic", "hexagonal")[i % 2] for i in range(6)}
    )
    m = assign_folds(rows, folds=3, stratify_by="crystal_system")
    assert "crystal_system" in m.columns
    per_fold = m.groupby("fold")["crystal_system"].agg(lambda c: sorted(set(c)))
    assert all(v == ["cubic", "hexagonal"] for v in per_fold)
    assert (m.groupby("specimen")["fold"].nunique() == 1).all()


def test_too_few_groups_is_a_clear_error():
    rows = rows_for([[3], [3], [3]], copies=1)
    with pytest.raises(
        ValueError,
        match=r"cannot make 4 folds from 3 specimen groups "
        r"\['s00', 's01', 's02'\].*lower splits.folds to <= 3",
    ):
        assign_folds(rows, folds=4)
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        assign_folds(rows, folds=1)
    with pytest.raises(ValueError, match="group_by must be one of"):
        assign_folds(rows, folds=2, group_by="image")


def test_check_manifest_names_the_problem():
    m = assign_folds(rows_for([[2], [2], [2]], copies=2), folds=3)
    check_manifest(m, folds=3)
    other = lambda f: (f + 1) % 3  # noqa: E731

    split_group = m.copy()
    i = split_group.index[(split_group["original_id"] == split_group["image_id"])][1]
    split_group.loc[split_group["original_id"] == split_group.loc[i, "image_id"], "fold"] = other(
        split_group.loc[i, "fold"]
    )  # one original and its copies move: the specimen is split
    with pytest.raises(ValueError, match=r"specimen group 's00' lands in folds \[\d, \d\].*leak"):
        check_manifest(split_group, folds=3)

    apart = m.copy()
    j = apart.index[apart["image_id"] == "grains/s01/b0/i00/a01"][0]
    apart.loc[j, "fold"] = other(apart.loc[j, "fold"])
    with pytest.raises(
        ValueError,
        match=r"copy 'grains/s01/b0/i00/a01' is in fold \d but its "
        r"original 'grains/s01/b0/i00' is in fold \d",
    ):
        check_manifest(apart, folds=3)

    orphan = m[m["image_id"] != "grains/s02/b0/i01"]
    with pytest.raises(ValueError, match="original 'grains/s02/b0/i01', which is not in"):
        check_manifest(orphan, folds=3)

    moved = m.copy()
    moved.loc[moved["image_id"] == "grains/s00/b0/i00/a00", "session"] = "b9"
    with pytest.raises(ValueError, match="recorded as specimen/session s00/b9"):
        check_manifest(moved, folds=3)

    four = assign_folds(rows_for([[1]] * 4), folds=3)
    with pytest.raises(ValueError, match=r"folds \[3\] hold no images"):
        check_manifest(four, folds=4)
    with pytest.raises(ValueError, match="appears more than once"):
        check_manifest(pd.concat([m, m.iloc[:1]]), folds=3)
    with pytest.raises(ValueError, match="lacks columns"):
        check_manifest(m.drop(columns="session"))
    with pytest.raises(ValueError, match="cannot make 4 folds from 3"):
        check_manifest(m.assign(fold=m["fold"].replace({2: 3})), folds=4)


# --- files, hashes, tables ---------------------------------------------------------------


def tiny_sample(i: int, b: int, k: int, value: float) -> Sample:
    ids = polycrystal((16, 16), grain_diameter_px=6, rng=i * 100 + b * 10 + k)
    return Sample(
        image=np.full((16, 16), value, np.float32),
        labels={"grain_ids": ids, "boundaries": boundary_mask(ids, width_px=2).astype(np.uint8)},
        image_id=f"grains/s{i:02d}/b{b}/i{k:02d}",
        specimen=f"s{i:02d}",
        session=f"b{b}",
        seed=k,
    )


@pytest.fixture
def augmented_files(tmp_path):
    files = []
    for i in range(4):
        samples = [tiny_sample(i, b, k, 0.1 * i + 0.02 * k) for b in range(2) for k in range(2)]
        sf = SpecimenFile("grains", f"s{i:02d}", samples, {}, "test")
        out = augment_specimen(sf, copies=2, transforms=["dihedral", "gamma"], rng=i)
        path = tmp_path / "augmented" / "grains" / f"s{i:02d}.h5"
        write_specimen(path, out, task="grains", specimen=f"s{i:02d}")
        files.append(path)
    return files


def test_make_manifest_points_at_every_image(augmented_files):
    m = make_manifest(augmented_files, folds=3)
    assert list(m.columns) == list(MANIFEST_COLUMNS)
    assert len(m) == 4 * 4 * 3
    for file, rows in m.groupby("file"):
        sf = read_specimen(file)
        assert [sf.samples[i].image_id for i in rows["index"]] == list(rows["image_id"])
    assert (m["original_id"] == m["image_id"]).sum() == 16
    by_session = make_manifest(augmented_files, folds=8, group_by="session")
    assert by_session["fold"].nunique() == 8


def test_make_manifest_on_synthetic_files_treats_empty_original_ids_as_originals(tmp_path):
    paths = []
    for i in range(2):
        path = tmp_path / f"s{i:02d}.h5"
        write_specimen(
            path, [tiny_sample(i, 0, k, 0.5) for k in range(2)], task="grains", specimen=f"s{i:02d}"
        )
        paths.append(path)
    m = make_manifest(paths, folds=2)
    assert (m["original_id"] == m["image_id"]).all()
    with pytest.raises(ValueError, match="no field or parameter 'crystal_system'"):
        make_manifest(paths, folds=2, stratify_by="crystal_system")


def test_manifest_is_written_with_its_sha256_and_tampering_is_caught(augmented_files, tmp_path):
    m = make_manifest(augmented_files, folds=2)
    path = tmp_path / "splits" / "grains.tsv"
    digest = write_manifest(m, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == manifest_sha256(path)
    assert (tmp_path / "splits" / "grains.tsv.sha256").read_text() == f"{digest}  grains.tsv\n"
    back = read_manifest(path, folds=2, group_by="specimen")
    pd.testing.assert_frame_equal(back, m, check_dtype=False)
    # no temporary files left behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["grains.tsv", "grains.tsv.sha256"]
    path.write_text(path.read_text().replace("\t1\t", "\t0\t", 1))
    with pytest.raises(ValueError, match="was edited after the split"):
        read_manifest(path)
    assert write_manifest(m, path) == digest  # the same manifest gives the same hash


def test_fold_table_counts_images_specimens_and_sessions():
    rows = rows_for([[1, 2], [3], [1, 1, 1]], copies=1)
    m = assign_folds(rows, folds=3)
    t = fold_table(m)
    assert list(t["fold"]) == [0, 1, 2]
    assert t["images"].sum() == 2 * 9 and t["originals"].sum() == 9 and t["copies"].sum() == 9
    by_spec = {"s00": (6, 1, 2), "s01": (6, 1, 1), "s02": (6, 1, 3)}  # images, specimens, sessions
    for _, r in t.iterrows():
        assert (r["images"], r["specimens"], r["sessions"]) == by_spec[r["specimen_names"]]
    fig = fold_figure(t, title="grains, grouped by specimen", sha256="ab" * 32)
    assert "ab" * 32 in fig.get_suptitle()
    assert [ax.get_ylabel() for ax in fig.axes] == ["images (count)", "groups (count)"]


# --- real stacks -------------------------------------------------------------------------


# --- the leak is real --------------------------------------------------------------------


def leaky_dataset(seed: int, *, n_specimens=12, n_images=6, shape=(48, 48)):
    """Specimens whose class (fine: 8 px vs coarse: 11 px grains) is a weak signal, while
    each specimen's own imaging (grey level, contrast, noise) is a strong fingerprint."""
    rng = np.random.default_rng(seed)
    samples, classes = [], {}
    for i in range(n_specimens):
        name = f"s{i:02d}"
        classes[name] = i % 2
        d = (8.0, 11.0)[i % 2] * np.exp(rng.normal(0, 0.1))
        base, spread, noise = rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.4), rng.uniform(0.01, 0.08)
        for k in range(n_images):
            ids = polycrystal(shape, grain_diameter_px=d, rng=rng)
            edges = boundary_mask(ids, width_px=2)
            tone = base + spread * (rng.random(ids.max() + 1) - 0.5)
            image = np.clip(tone[ids] - 0.15 * edges + rng.normal(0, noise, shape), 0, 1)
            s = Sample(
                image=image.astype(np.float32),
                labels={"grain_ids": ids, "boundaries": edges.astype(np.uint8)},
                image_id=f"grains/{name}/b0/i{k:02d}",
                specimen=name,
                session="b0",
                seed=k,
            )
            samples.append(s)
            samples += augment_sample(
                s, copies=1, transforms=["dihedral", "gamma", "gaussian_noise"], rng=rng
            )
    return samples, classes


def test_a_random_split_scores_clearly_higher_than_the_grouped_split():
    samples, classes = leaky_dataset(seed=0)
    rows = pd.DataFrame(
        {
            "image_id": [s.image_id for s in samples],
            "original_id": [s.original_id or s.image_id for s in samples],
            "specimen": [s.specimen for s in samples],
            "session": [s.session for s in samples],
            "file": "-",
            "index": range(len(samples)),
        }
    )
    m = assign_folds(rows, folds=3)
    X = np.stack([image_features(s.image) for s in samples])
    y = m["specimen"].map(classes).to_numpy()
    t = compare_splits(X, y, m["fold"].to_numpy(), rng=0, n_estimators=60)
    pooled = t[t["fold"] == "all"].set_index("split")["accuracy"]
    assert pooled["random"] > 0.8
    assert pooled["random"] - pooled["grouped"] > 0.2, pooled.to_dict()
    per_fold = t[t["fold"] != "all"]
    assert (per_fold.groupby("split")["n_val"].sum() == len(samples)).all()
    fig = leakage_figure(t, title="grains")
    assert fig.axes[0].get_ylabel() == "validation accuracy (fraction)"


def test_leakage_experiment_reads_the_manifest_files(augmented_files):
    m = make_manifest(augmented_files, folds=2)
    t = leakage_experiment(m, task="grains", rng=0, n_estimators=10)
    assert set(t["split"]) == {"random", "grouped"}
    assert (t["specimens"] == 4).all()
    assert t.loc[t["fold"] == "all", "n_val"].tolist() == [len(m), len(m)]
    with pytest.raises(ValueError, match="needs task 'grains', 'phases' or 'nanoparticles'"):
        leakage_experiment(m, task="kernels", rng=0)
