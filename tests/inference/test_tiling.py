"""Tiled, block-streamed prediction: geometry, blending, equality with whole-image prediction."""

import numpy as np
import pytest
import torch
import zarr
from scipy import ndimage

from grainflow.inference.tiling import (
    PlaneView,
    gaussian_weights,
    iter_blocks,
    predict_plane,
    tile_grid,
    tile_starts,
)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- geometry


def test_tile_starts_hand_worked():
    # 300 px, tiles of 128 overlapping by >= 32: step <= 96 -> 3 tiles, spacing (300 - 128) / 2 = 86
    np.testing.assert_array_equal(tile_starts(300, 128, overlap=32), [0, 86, 172])
    np.testing.assert_array_equal(tile_starts(128, 128, overlap=32), [0])
    np.testing.assert_array_equal(tile_starts(40, 128, overlap=32), [0])  # smaller than a tile
    np.testing.assert_array_equal(tile_starts(129, 128, overlap=0), [0, 1])


@pytest.mark.parametrize("tile, overlap", [(64, 16), (64, 0), (48, 47), (7, 3)])
def test_tile_starts_cover_with_last_flush(tile, overlap):
    for size in range(tile, 5 * tile + 3):
        starts = tile_starts(size, tile, overlap=overlap)
        assert starts[0] == 0 and starts[-1] == size - tile  # last tile flush with the edge
        assert np.all(np.diff(starts) > 0)
        assert np.all(starts[:-1] + tile - starts[1:] >= overlap)  # adjacent tiles overlap enough
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + tile] = True
        assert covered.all()
        # fewest tiles: one fewer could not keep the overlap
        n = len(starts)
        assert n == 1 or (n - 2) * (tile - overlap) < size - tile


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(size=0, tile=8, overlap=0),
        dict(size=10, tile=0, overlap=0),
        dict(size=10, tile=8, overlap=8),
        dict(size=10, tile=8, overlap=-1),
    ],
)
def test_tile_starts_rejects_bad_geometry(kwargs):
    with pytest.raises(ValueError, match="got"):
        tile_starts(kwargs.pop("size"), kwargs.pop("tile"), **kwargs)


def test_gaussian_weights_have_no_zeros_and_are_cached():
    w = gaussian_weights(64)
    assert w.dtype == np.float32 and w.shape == (64, 64)
    assert (w > 0).all()
    assert w.max() == pytest.approx(1.0) and w[31:33, 31:33].min() == w.max()  # centred
    np.testing.assert_array_equal(w, w[::-1, ::-1])  # symmetric
    assert w[0, 0] < 1e-5 < w[0, 32]  # decays to the corners, floored not zero
    assert gaussian_weights(64) is w  # computed once
    assert not w.flags.writeable
    narrow = gaussian_weights((16, 24), sigma_scale=0.01)  # would underflow to 0 without the floor
    assert narrow.shape == (16, 24) and (narrow > 0).all()


def test_blocks_partition_the_plane_and_list_overlapping_tiles():
    shape, tile, overlap = (300, 257), 64, 16
    rows, cols = tile_grid(shape, tile, overlap=overlap)
    owner = np.zeros(shape, int)
    for blk in iter_blocks(shape, block=128, tile=tile, overlap=overlap):
        owner[blk.rows, blk.cols] += 1
        assert blk.rows.start % 128 == 0 and blk.cols.start % 128 == 0
        expect_r = rows[(rows < blk.rows.stop) & (rows + tile > blk.rows.start)]
        np.testing.assert_array_equal(blk.tile_rows, expect_r)
        expect_c = cols[(cols < blk.cols.stop) & (cols + tile > blk.cols.start)]
        np.testing.assert_array_equal(blk.tile_cols, expect_c)
        # the region read holds every listed tile and the block itself
        assert blk.src_rows.start == expect_r[0] and blk.src_rows.stop == expect_r[-1] + tile
        assert blk.src_rows.start <= blk.rows.start and blk.src_rows.stop >= blk.rows.stop
    assert (owner == 1).all()  # every pixel in exactly one block


def test_plane_view_reads_and_writes_one_plane(tmp_path):
    stack = zarr.create_array(
        str(tmp_path / "a.zarr"), shape=(2, 3, 10, 12), chunks=(1, 1, 5, 6), dtype="f4"
    )
    view = PlaneView(stack, 1, axis=1)
    assert view.shape == (2, 10, 12) and view.chunks == (1, 5, 6)
    view[:, 2:4, :] = 7.0
    assert stack[:, 1, 2:4].min() == 7.0 and stack[:, 0].max() == 0.0 and stack[:, 2].max() == 0.0
    np.testing.assert_array_equal(view[0, 2:4], np.full((2, 12), 7.0))


# ----------------------------------------------------------------------------- prediction


def _conv_model(kernel=3, layers=3, seed=0):
    """A tiny fully convolutional model, zero 'same' padding, softmax over 2 classes.

    Receptive-field radius: layers * (kernel // 2) pixels.
    """
    torch.manual_seed(seed)
    mods = []
    channels = [1] + [4] * (layers - 1) + [2]
    for i in range(layers):
        mods.append(torch.nn.Conv2d(channels[i], channels[i + 1], kernel, padding=kernel // 2))
        if i < layers - 1:
            mods.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*mods, torch.nn.Softmax(dim=1)).eval()

    @torch.inference_mode()
    def predict(batch):
        return model(torch.from_numpy(batch)).numpy()

    return predict


def _image(shape=(300, 257), seed=1, smooth=2.0):
    rng = np.random.default_rng(seed)
    # positive like a normalised micrograph, so zero padding differs from the image
    return (ndimage.gaussian_filter(rng.normal(size=shape), smooth) * 5 + 1).astype(np.float32)


def _zarr_out(tmp_path, shape, chunk):
    return zarr.create_array(
        str(tmp_path / "probs.zarr"), shape=(2, *shape), chunks=(2, chunk, chunk), dtype="f4"
    )


def test_tiled_prediction_equals_whole_image_prediction(tmp_path):
    image = _image()
    predict = _conv_model(kernel=3, layers=3)  # receptive-field radius 3 <= margin 4, 2 * 4 < 16
    whole = predict(image[None, None])[0]
    out = _zarr_out(tmp_path, image.shape, chunk=64)
    summary = predict_plane(
        image, predict, out=out, tile=64, overlap=16, block=128, margin=4, batch_size=5
    )
    np.testing.assert_allclose(out[:], whole, atol=1e-4)
    assert np.abs(out[:] - whole).max() < 1e-5  # float rounding only
    rows, cols = tile_grid(image.shape, 64, overlap=16)
    assert summary["plane_tiles"] == len(rows) * len(cols) and summary["blocks"] == 3 * 3
    # without the margin, the zero padding at the tiles' inner edges leaks in: the test can fail
    loose = np.zeros_like(whole)
    predict_plane(image, predict, out=loose, tile=64, overlap=16, block=128, margin=0)
    assert np.abs(loose - whole).max() > 1e-5


def test_block_edges_are_not_seams(tmp_path):
    image = _image(seed=3, smooth=3.0)
    predict = _conv_model(kernel=5, layers=5, seed=2)  # radius 10 > margin 0: tiles are not exact
    plane = np.zeros((2, *image.shape), np.float32)
    predict_plane(image, predict, out=plane, tile=64, overlap=16, block=1024)
    blocked = _zarr_out(tmp_path, image.shape, chunk=32)
    predict_plane(zarr.array(image), predict, out=blocked, tile=64, overlap=16, block=96)
    blocked = blocked[:]
    # blocks use the whole-plane tiling, so the block size changes nothing
    np.testing.assert_allclose(blocked, plane, atol=1e-6)

    def edge_jump_ratio(probs):
        """Largest mean |step| across a block edge / largest across other inner lines."""
        ratios = []
        for axis in (0, 1):
            p = probs[1] if axis == 0 else probs[1].T
            step = np.abs(np.diff(p, axis=0)).mean(axis=1)  # mean |p[i + 1] - p[i]| along line i
            edge = np.zeros(step.shape, bool)
            edge[np.arange(96, p.shape[0], 96) - 1] = True
            inner = np.zeros(step.shape, bool)
            inner[12:-12] = True  # the plane's own border (zero padding) is a different matter
            ratios.append(step[edge].max() / step[inner & ~edge].max())
        return max(ratios)

    assert edge_jump_ratio(blocked) <= 1.0
    # control: blocks predicted alone (no halo) do show seams, so the measure can fail
    naive = np.zeros_like(plane)
    for blk in iter_blocks(image.shape, block=96, tile=64, overlap=16):
        part = np.zeros(
            (2, blk.rows.stop - blk.rows.start, blk.cols.stop - blk.cols.start), np.float32
        )
        predict_plane(image[blk.rows, blk.cols], predict, out=part, tile=64, overlap=16, block=1024)
        naive[:, blk.rows, blk.cols] = part
    assert edge_jump_ratio(naive) > 2.0


def test_plane_smaller_than_a_tile_is_padded_and_cropped():
    image = _image((40, 50), seed=4)
    predict = _conv_model()
    out = np.zeros((2, 40, 50), np.float32)
    summary = predict_plane(image, predict, out=out, tile=64, overlap=16, block=64)
    assert summary["plane_tiles"] == 1
    padded = np.pad(image, ((0, 24), (0, 14)), mode="reflect")  # hand-made reference
    np.testing.assert_allclose(out, predict(padded[None, None])[0, :, :40, :50], atol=1e-5)
    # one axis shorter than the tile, the other longer
    wide = _image((30, 200), seed=5)
    out = np.zeros((2, 30, 200), np.float32)
    predict_plane(wide, predict, out=out, tile=64, overlap=16, block=64, margin=4)
    ref = predict(np.pad(wide, ((0, 34), (0, 0)), mode="reflect")[None, None])[0, :, :30]
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_transform_is_applied_before_tiling():
    image = _image((70, 70), seed=6)
    predict = _conv_model()
    a = np.zeros((2, 70, 70), np.float32)
    predict_plane(
        image * 3 + 1, predict, out=a, tile=32, overlap=8, block=64, transform=lambda x: (x - 1) / 3
    )
    b = np.zeros_like(a)
    predict_plane(image, predict, out=b, tile=32, overlap=8, block=64)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_predict_plane_rejects_bad_arguments(tmp_path):
    image = _image((100, 100))
    predict = _conv_model()
    out = _zarr_out(tmp_path, image.shape, chunk=32)
    with pytest.raises(ValueError, match="multiple of the output chunks"):
        predict_plane(image, predict, out=out, tile=32, overlap=8, block=48)
    with pytest.raises(ValueError, match="margin"):
        predict_plane(image, predict, out=out, tile=32, overlap=8, block=64, margin=4)
    with pytest.raises(ValueError, match="must have shape"):
        predict_plane(
            image, predict, out=np.zeros((2, 99, 100), np.float32), tile=32, overlap=8, block=64
        )
    with pytest.raises(ValueError, match="predict_fn must return shape"):
        predict_plane(image, lambda b: b, out=out, tile=32, overlap=8, block=64)
    with pytest.raises(ValueError, match="2-D"):
        predict_plane(image[None], predict, out=out, tile=32, overlap=8, block=64)
