"""Sharded inference: several jobs share a stack's blocks; the merge equals one job."""

import shutil

import numpy as np
import pytest
import zarr
from test_inference import GEOMETRY, _stack, random_checkpoint

from grainflow.inference.shards import infer_shard, merge_shards, shard_blocks
from grainflow.inference.stack import infer_stack
from grainflow.inference.tiling import iter_blocks, predict_plane

# labelled block by block (as a plane above labels_whole_plane_max_px), so that grains
# crossing block and shard edges are joined by the merge of the labelling
LABELLING = {"whole_plane_max_px": 0, "labels_halo_px": 16}
PREDICTION = {**GEOMETRY, "block_px": 64}  # 64 px chunks: 4 x 5 blocks per 200 x 300 plane
SHARDS = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    return _stack(tmp_path_factory.mktemp("stacks") / "large.ome.zarr", (200, 300), seed=7)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, stack):
    """A light random U-Net whose P(boundary) straddles 0.5 on the stack."""
    return [random_checkpoint(tmp_path_factory.mktemp("models") / "fold0.pt", stack, seed=3)]


@pytest.fixture(scope="module")
def results(tmp_path_factory, stack, checkpoint):
    """One job, and the same stack in 3 shards merged (shards listed out of order)."""
    root = tmp_path_factory.mktemp("sharded")
    one = infer_stack(
        stack, checkpoint, root / "one.ome.zarr", model="unet", **PREDICTION, **LABELLING
    )
    shards = [root / "shards" / f"{k}.zarr" for k in range(SHARDS)]
    records = [
        infer_shard(stack, checkpoint, path, shard=k, shards=SHARDS, model="unet", **PREDICTION)
        for k, path in enumerate(shards)
    ]
    merged = merge_shards(stack, shards[::-1], root / "merged.ome.zarr", **LABELLING)
    return root, shards, records, one, merged


def _arrays(store):
    group = zarr.open_group(str(store), mode="r")
    names = [f"s{k}" for k in range(3)]
    names += [f"labels/{n}/s{k}" for n in ("boundaries", "grain_ids") for k in range(3)]
    return {n: group[n][:] for n in names}


def _chunk_files(array_dir):
    return {
        str(p.relative_to(array_dir))
        for p in array_dir.rglob("*")
        if p.is_file() and p.name != "zarr.json"
    }


TIMING = ("seconds", "megapixels_per_s", "shards")


def test_merged_shards_equal_one_job_bit_for_bit(results):
    root, _, records, one, merged = results
    a, b = _arrays(root / "one.ome.zarr"), _arrays(root / "merged.ome.zarr")
    for name in a:  # probabilities and labels, every pyramid level
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    ids = a["labels/grain_ids/s0"]
    assert ids.max() > 20 and (a["s0"][1] > 0.5).mean() > 0.05  # a real labelling
    # grains cross shard edges: shard 0 owns plane 0's first 14 blocks (block rows 0-127,
    # then rows 128-191 up to col 256), shard 1 the rest of plane 0 and plane 1's first 7
    above, below = ids[0, 191, :256], ids[0, 192, :256]
    assert ((above == below) & (above > 0)).sum() > 10
    # provenance: the same, but for the timings and the shards' list
    strip = lambda s: {k: v for k, v in s.items() if k not in (*TIMING, "planes")}  # noqa: E731
    assert strip(merged) == strip(one)
    for p, q in zip(merged["planes"], one["planes"]):
        assert {k: v for k, v in p.items() if not k.endswith("_s")} == {
            k: v for k, v in q.items() if not k.endswith("_s")
        }
    assert [s["blocks"] for s in merged["shards"]] == [14, 13, 13]
    assert zarr.open_group(str(root / "merged.ome.zarr"), mode="r").attrs["grainflow"] == merged
    assert [sorted(r["planes"]) for r in records] == [["0"], ["0", "1"], ["1"]]


def test_shards_write_disjoint_chunks_that_cover_the_stack(results):
    root, shards, records, _, _ = results
    written = [_chunk_files(path / "s0") for path in shards]
    assert all(written)
    for i in range(SHARDS):
        for j in range(i + 1, SHARDS):
            assert not written[i] & written[j], (i, j)
    assert set().union(*written) == _chunk_files(root / "one.ome.zarr" / "s0")
    assert sum(len(w) for w in written) == 2 * 4 * 5  # planes x block rows x block cols
    assert not any(p.name.endswith(".tmp") for p in (root / "shards").iterdir())


def test_merge_refuses_shards_that_do_not_belong_together(tmp_path, stack, results):
    _, shards, _, _, _ = results
    with pytest.raises(ValueError, match="need shards 0 to 2"):
        merge_shards(stack, shards[:2], tmp_path / "x.ome.zarr")
    with pytest.raises(ValueError, match="need shards 0 to 2"):
        merge_shards(stack, [shards[0], shards[0], shards[2]], tmp_path / "x.ome.zarr")
    other = tmp_path / "other.zarr"
    shutil.copytree(shards[1], other)
    group = zarr.open_group(str(other), mode="r+")
    record = dict(group.attrs["grainflow_shard"])
    group.attrs["grainflow_shard"] = {
        **record,
        "prediction": {**record["prediction"], "tile_px": 128},
    }
    with pytest.raises(ValueError, match=r"differs from the others in \['prediction'\]"):
        merge_shards(stack, [shards[0], other, shards[2]], tmp_path / "x.ome.zarr")
    group.attrs["grainflow_shard"] = {**record, "blocks": record["blocks"][1:]}
    with pytest.raises(ValueError, match="cover each of the 40 blocks once, got 39"):
        merge_shards(stack, [shards[0], other, shards[2]], tmp_path / "x.ome.zarr")
    with pytest.raises(FileNotFoundError, match="infer_shard"):
        merge_shards(stack, [tmp_path / "missing.zarr"], tmp_path / "x.ome.zarr")
    with pytest.raises(ValueError, match="shard must be in"):
        infer_shard(stack, [], tmp_path / "y.zarr", shard=3, shards=3)
    assert not list(tmp_path.glob("*x.ome.zarr*")) and not list(tmp_path.glob("*y.zarr*"))


def test_shard_blocks_split_the_blocks_into_runs():
    for n_planes, n_blocks, shards in ((2, 20, 3), (1, 7, 7), (3, 4, 5), (1, 2, 4)):
        owned = shard_blocks(n_planes, n_blocks, shards=shards)
        assert len(owned) == shards
        flat = [(z, i) for part in owned for z, indices in part.items() for i in indices]
        # every block once, in order: consecutive runs of nearly equal length
        assert flat == [(z, i) for z in range(n_planes) for i in range(n_blocks)]
        sizes = [sum(map(len, part.values())) for part in owned]
        assert max(sizes) - min(sizes) <= 1
    assert shard_blocks(1, 2, shards=4)[2:] == [{}, {}]  # more shards than blocks: idle ones
    with pytest.raises(ValueError, match="shards"):
        shard_blocks(1, 2, shards=0)


def test_predict_plane_computes_only_the_blocks_asked_for():
    rng = np.random.default_rng(0)
    image = rng.random((150, 170)).astype(np.float32)

    def predict(batch):
        return np.concatenate([batch, 1 - batch], axis=1) * 0.5 + 0.25

    whole = zarr.zeros((2, 150, 170), chunks=(2, 64, 64), dtype=np.float32)
    predict_plane(image, predict, out=whole, tile=32, overlap=8, block=64)
    n = len(list(iter_blocks((150, 170), block=64, tile=32, overlap=8)))
    parts = zarr.zeros((2, 150, 170), chunks=(2, 64, 64), dtype=np.float32)
    for chosen in ([0, 4, 8], [1, 2, 3], [5, 6, 7]):
        summary = predict_plane(
            image, predict, out=parts, tile=32, overlap=8, block=64, block_indices=chosen
        )
        assert summary["blocks"] == 3
    assert n == 9
    np.testing.assert_array_equal(parts[:], whole[:])
    left = zarr.zeros((2, 150, 170), chunks=(2, 64, 64), dtype=np.float32)
    predict_plane(image, predict, out=left, tile=32, overlap=8, block=64, block_indices=[0])
    assert left[:, :64, :64].all() and not left[:, 64:, :].any() and not left[:, :, 64:].any()
    with pytest.raises(ValueError, match="block_indices"):
        predict_plane(image, predict, out=left, tile=32, overlap=8, block=64, block_indices=[9])


@pytest.mark.workflow
@pytest.mark.parametrize("shards", [1, 3])
def test_the_workflow_shards_inference_only_when_asked(tmp_path, shards):
    from conftest import make_workdir, snakemake, tiny_config

    config = tiny_config()
    config["inference"]["shards"] = shards
    config["inference"]["scale"] = "auto" if shards == 1 else "none"
    workdir = make_workdir(tmp_path / "run", config)
    result = snakemake(
        workdir, "--dry-run", "--cores", "2", "results/metrics/real/nist_steel.tsv", timeout=300
    )
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout + result.stderr
    table = out[out.index("Job stats:") :]
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in table.splitlines()[2:]
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    if shards == 1:  # today's DAG: one infer job per store, nothing else
        assert counts["infer"] == 1 and "infer_shard" not in counts
        assert "merge_shards" not in counts
    else:
        assert counts["infer_shard"] == 3 and counts["merge_shards"] == 1
        assert "infer" not in counts
        assert "results/inference/nist_steel/unet.shards/2.zarr" in out
    assert "results/inference/nist_steel/unet.ome.zarr" in out
