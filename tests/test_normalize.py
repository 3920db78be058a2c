"""Per-image percentile normalisation, shared by training and inference."""

import numpy as np
import pytest
import zarr

from grainflow.normalize import apply_limits, normalize_image, percentile_limits, plane_limits


def test_normalize_image_hand_worked():
    image = np.arange(101, dtype=np.uint16).reshape(1, 101) * 10  # 0, 10, ..., 1000
    out = normalize_image(image, percentiles=(10, 90))  # 100 -> 0, 900 -> 1
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, [0, 10, 50, 90, 100]], [-0.125, 0, 0.5, 1, 1.125], atol=1e-6)


def test_constant_image_gives_zeros():
    out = normalize_image(np.full((5, 7), 3.0))
    assert out.dtype == np.float32 and not out.any()


def test_training_and_inference_share_one_definition():
    from grainflow.inference import predict
    from grainflow.training import data

    assert data.normalize_image is normalize_image
    assert predict.normalize_image is normalize_image


def test_plane_limits_exact_for_small_planes_and_close_for_large(tmp_path):
    rng = np.random.default_rng(1)
    plane = (rng.normal(1000, 100, size=(300, 257))).astype(np.uint16)
    stored = zarr.create_array(
        str(tmp_path / "p.zarr"), shape=plane.shape, chunks=(64, 64), dtype=plane.dtype
    )
    stored[:] = plane
    exact = percentile_limits(plane)
    assert plane_limits(stored, block=100) == exact  # read in blocks, whole plane sampled
    sampled = plane_limits(stored, max_pixels=5000, block=100)  # every 4th pixel
    assert sampled != exact
    np.testing.assert_allclose(sampled, exact, rtol=0.01)
    # applying the limits block-wise equals normalising the whole plane
    lo, hi = exact
    np.testing.assert_array_equal(
        apply_limits(plane[:50, :60], lo, hi), normalize_image(plane)[:50, :60]
    )


@pytest.mark.parametrize("percentiles", [(99, 1), (-1, 50), (0, 101), (5,)])
def test_bad_percentiles_are_rejected(percentiles):
    with pytest.raises(ValueError, match="percentiles"):
        normalize_image(np.arange(10.0), percentiles=percentiles)
