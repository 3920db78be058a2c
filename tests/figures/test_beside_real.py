"""Crops of a real stack at the level the networks read it, beside synthetic images."""

import numpy as np
import pytest
import tifffile
import zarr
from matplotlib.figure import Figure
from PIL import Image

from grainflow.figures.scale import (
    beside_real_headline,
    crop_windows,
    pick_synthetic,
    synthetic_beside_real,
)
from grainflow.inference.scale import write_scale
from grainflow.io.hdf5 import Sample, write_specimen
from grainflow.normalize import percentile_limits, plane_limits
from grainflow.stacks.importer import import_stack

SIZE = 32  # the synthetic images' side, px


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Two 150 x 170 planes of noise, pixel size 0.5 µm, levels s0 (150 x 170) and s1."""
    folder = tmp_path_factory.mktemp("stack")
    rng = np.random.default_rng(0)
    tifffile.imwrite(folder / "noise.tif", rng.integers(0, 256, (2, 150, 170), dtype=np.uint8))
    store = folder / "noise.ome.zarr"
    import_stack(
        folder / "noise.tif",
        store,
        stack="noise",
        task="phases",
        pixel_size_um=0.5,
        chunk=64,
        pyramid_min_px=64,
    )
    return store


@pytest.fixture(scope="module")
def specimens(tmp_path_factory):
    """Two specimen files of two 32 x 32 images each, one modality per file."""
    folder = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(1)
    paths = []
    for i, modality in enumerate(("sem_superalloy", "stem_particles")):
        name = f"s{i:02d}"
        samples = [
            Sample(
                image=rng.random((SIZE, SIZE)).astype(np.float32),
                labels={"phase": np.zeros((SIZE, SIZE), np.uint8)},
                image_id=f"phases/{name}/b0/i{k:02d}",
                specimen=name,
                session="b0",
                seed=k,
                modality=modality,
                params={"modality": modality},
            )
            for k in range(2)
        ]
        write_specimen(folder / f"{name}.h5", samples, task="phases", specimen=name)
        paths.append(folder / f"{name}.h5")
    return paths


def test_crop_windows_spread_crops_over_planes_and_fit_small_planes():
    assert crop_windows([(100, 100)] * 5, n=3, size=20) == [
        (0, slice(40, 60), slice(40, 60)),
        (2, slice(40, 60), slice(40, 60)),
        (4, slice(40, 60), slice(40, 60)),
    ]
    one = crop_windows([(100, 60)], n=3, size=20)  # one plane: along its diagonal
    assert [(w[1].start, w[2].start) for w in one] == [(20, 10), (40, 20), (60, 30)]
    assert crop_windows([(10, 50)], n=1, size=20) == [(0, slice(0, 10), slice(15, 35))]
    with pytest.raises(ValueError, match="positive"):
        crop_windows([(10, 10)], n=0, size=20)


def test_pick_synthetic_lets_the_modalities_take_turns(specimens):
    picked = pick_synthetic(specimens, n=3)
    assert [s.modality for s in picked] == ["sem_superalloy", "stem_particles", "sem_superalloy"]
    assert [s.image_id for s in picked][::2] == ["phases/s00/b0/i00", "phases/s00/b0/i01"]
    only = pick_synthetic(specimens, n=3, modality="stem_particles")
    assert [s.image_id for s in only] == ["phases/s01/b0/i00", "phases/s01/b0/i01"]


@pytest.mark.parametrize("level", [0, 1])
def test_the_real_crops_are_those_of_the_chosen_level(stack, specimens, level):
    record = {"level": level, "factor": 2**level}
    if level:
        record.update(feature_length_px=4.0, trained_length_px=2.0)
    fig = synthetic_beside_real(stack, specimens, scale=record)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 3
    real, synthetic = fig.axes[:3], fig.axes[3:]
    array = zarr.open_group(str(stack), mode="r")[f"s{level}"]
    shapes = [tuple(array.shape[1:])] * 2
    for ax, (z, rows, cols) in zip(real, crop_windows(shapes, n=3, size=SIZE)):
        shown = ax.images[0]
        np.testing.assert_array_equal(shown.get_array(), array[z, rows, cols])
        assert shown.get_array().shape == (SIZE, SIZE)
        assert shown.get_clim() == pytest.approx(plane_limits(array[z]))  # as inference does
        assert f"s{level} " in ax.get_title()
        bar = [c for c in ax.get_children() if type(c).__name__ == "AnchoredSizeBar"]
        assert len(bar) == 1  # 0.5 µm px x 2**level
    picked = pick_synthetic(specimens, n=3)
    for ax, sample in zip(synthetic, picked):
        np.testing.assert_array_equal(ax.images[0].get_array(), sample.image)
        assert ax.images[0].get_clim() == pytest.approx(percentile_limits(sample.image))
        assert sample.modality in ax.get_title() and sample.specimen in ax.get_title()
    # every panel spans the same number of network pixels
    assert {ax.get_xlim() for ax in fig.axes} == {(-0.5, SIZE - 0.5)}
    title = fig.get_suptitle()
    assert f"pyramid level s{level}" in title
    assert ("stack 2.0 px at s1 (4.0 px at s0), synthetic 2.0 px" in title) == bool(level)


def test_a_padded_plane_is_cut_from_its_own_part_only(tmp_path, specimens):
    (tmp_path / "mixed").mkdir()
    rng = np.random.default_rng(2)
    for name, shape in (("a.png", (40, 50)), ("b.png", (130, 140))):
        Image.fromarray(rng.integers(1, 256, shape, dtype=np.uint8)).save(tmp_path / "mixed" / name)
    store = tmp_path / "mixed.ome.zarr"
    import_stack(
        tmp_path / "mixed", store, stack="mixed", task="phases", chunk=64, pyramid_min_px=64
    )
    fig = synthetic_beside_real(store, specimens, scale={"level": 1}, n_real=2)
    small, large = (ax.images[0].get_array() for ax in fig.axes[:2])
    s1 = zarr.open_group(str(store), mode="r")["s1"]
    np.testing.assert_array_equal(small, s1[0, :20, :25])  # all of a.png at s1, no padding
    np.testing.assert_array_equal(large, s1[1, 16:48, 19:51])  # the centre of b.png at s1
    assert not [c for c in fig.axes[0].get_children() if type(c).__name__ == "AnchoredSizeBar"]


def test_refuses_a_level_beyond_the_pyramid(stack, specimens):
    with pytest.raises(ValueError, match="pyramid level"):
        synthetic_beside_real(stack, specimens, scale={"level": 5})
    with pytest.raises(ValueError, match="no synthetic image"):
        synthetic_beside_real(stack, specimens, modality="optical")


def test_headline_for_the_caption(stack, specimens, tmp_path):
    record = {"level": 1, "factor": 2, "feature_length_px": 9.0, "trained_length_px": 4.0}
    write_scale(record, tmp_path / "noise.json")
    head = beside_real_headline(stack, specimens, scale=tmp_path / "noise.json")
    assert head["level"] == 1 and head["factor"] == 2 and head["crop_px"] == SIZE
    assert head["percentiles"] == ["1 %", "99 %"]
    assert (head["pixel_um"], head["pixel_um_shown"]) == ("0.5", "1")
    assert (head["real_length_px"], head["real_length_shown_px"]) == ("9.0", "4.5")
    assert head["chosen"] and head["trained_length_px"] == "4.0"
    none = beside_real_headline(stack, specimens)  # inference.scale: none
    assert none["level"] == 0 and not none["chosen"] and "real_length_px" not in none
    # before its inputs exist (a dry run) it names the missing one, as Snakemake expects
    missing = str(tmp_path / "absent.ome.zarr")
    with pytest.raises(FileNotFoundError) as error:
        beside_real_headline(missing, specimens)
    assert error.value.filename == missing
