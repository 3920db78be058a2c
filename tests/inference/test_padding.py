"""Inference on a stack of images of different sizes: each plane as if it were alone."""

import numpy as np
import pytest
import tifffile
import zarr
from test_inference import GEOMETRY, _micrograph, random_checkpoint

from grainflow.inference.shards import infer_shard, merge_shards
from grainflow.inference.stack import infer_stack
from grainflow.stacks.importer import import_stack

SETTINGS = dict(task="grains", chunk=64, pyramid_min_px=64, block=128)
SMALL = (90, 100)  # plane 1, padded to plane 0's (150, 170)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The padded stack (a.tif 150 x 170, b.tif 90 x 100) and b.tif imported alone."""
    root = tmp_path_factory.mktemp("padded")
    (root / "images").mkdir()
    tifffile.imwrite(root / "images" / "a.tif", _micrograph((150, 170), 1))
    tifffile.imwrite(root / "images" / "b.tif", _micrograph(SMALL, 2))
    import_stack(root / "images", root / "mixed.ome.zarr", stack="mixed", **SETTINGS)
    import_stack(root / "images" / "b.tif", root / "alone.ome.zarr", stack="alone", **SETTINGS)
    return root / "mixed.ome.zarr", root / "alone.ome.zarr"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, stores):
    return [random_checkpoint(tmp_path_factory.mktemp("models") / "fold0.pt", stores[0], seed=5)]


def _outputs(store):
    group = zarr.open_group(str(store), mode="r")
    return {
        "probs": group["s0"][:],
        **{n: group[f"labels/{n}/s0"][:] for n in ("boundaries", "grain_ids")},
        "attrs": group.attrs["grainflow"],
    }


@pytest.mark.parametrize("level", [0, 1])
def test_a_padded_plane_is_predicted_as_if_alone(tmp_path, stores, checkpoint, level):
    mixed, alone = stores
    options = dict(model="unet", block_px=64, level=level, **GEOMETRY)
    infer_stack(mixed, checkpoint, tmp_path / "mixed.ome.zarr", **options)
    infer_stack(alone, checkpoint, tmp_path / "alone.ome.zarr", **options)
    got, ref = _outputs(tmp_path / "mixed.ome.zarr"), _outputs(tmp_path / "alone.ome.zarr")
    rows, cols = SMALL
    np.testing.assert_allclose(got["probs"][:, 1, :rows, :cols], ref["probs"][:, 0], atol=1e-6)
    for name in ("boundaries", "grain_ids"):
        np.testing.assert_array_equal(got[name][1, :rows, :cols], ref[name][0])
        assert not got[name][1, rows:].any() and not got[name][1, :, cols:].any()
    assert not got["probs"][:, 1, rows:].any() and not got["probs"][:, 1, :, cols:].any()
    planes = got["attrs"]["planes"]
    assert [p["shape"] for p in planes] == [[150, 170], list(SMALL)]
    if level == 0:  # blocks of 64 px: 3 x 3 for plane 0, 2 x 2 for plane 1 (none in padding)
        assert [p["blocks"] for p in planes] == [9, 4]
        assert planes[1]["tiles"] == ref["attrs"]["planes"][0]["tiles"]
        assert planes[1]["norm_low"] == ref["attrs"]["planes"][0]["norm_low"]


def test_shards_of_a_padded_stack_merge_to_one_job(tmp_path, stores, checkpoint):
    mixed, _ = stores
    prediction = dict(model="unet", block_px=64, **GEOMETRY)
    infer_stack(mixed, checkpoint, tmp_path / "one.ome.zarr", **prediction)
    shards = [tmp_path / "shards" / f"{k}.zarr" for k in range(3)]
    for k, path in enumerate(shards):  # 18 whole-plane blocks, 6 a shard
        infer_shard(mixed, checkpoint, path, shard=k, shards=3, **prediction)
    merge_shards(mixed, shards, tmp_path / "merged.ome.zarr")
    one, merged = _outputs(tmp_path / "one.ome.zarr"), _outputs(tmp_path / "merged.ome.zarr")
    for name in ("probs", "boundaries", "grain_ids"):
        np.testing.assert_array_equal(merged[name], one[name])
    assert [p["blocks"] for p in merged["attrs"]["planes"]] == [9, 4]
