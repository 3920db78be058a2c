"""Label maps from probabilities: gaps in the boundary network closed, touching particles split."""

import numpy as np
import pytest
from scipy import ndimage

from grainflow.evaluation.metrics import instance_scores
from grainflow.inference.labels import label_plane, labels_from_probability
from grainflow.synth.tessellation import boundary_mask, polycrystal


def _two_grains_with_a_gap(gap_px: int) -> np.ndarray:
    """P(boundary) of a 60 x 80 field cut by a vertical boundary at column 40, its middle
    ``gap_px`` rows missing (the network did not see that stretch)."""
    prob = np.zeros((60, 80), np.float32)
    prob[:, 39:41] = 1.0
    mid = 30 - gap_px // 2
    prob[mid : mid + gap_px, 39:41] = 0.1
    return prob


@pytest.mark.parametrize("gap_px", [2, 6, 12])
def test_a_gap_in_a_boundary_is_closed_where_it_is_narrowest(gap_px):
    prob = _two_grains_with_a_gap(gap_px)
    merged = labels_from_probability("grains", prob)["grain_ids"]
    assert merged.max() == 1  # one seed through the gap: the two grains merge
    closed = labels_from_probability("grains", prob, split_px=1.0)["grain_ids"]
    assert closed.max() == 2
    left, right = closed[:, :39], closed[:, 41:]
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1
    assert left[0, 0] != right[0, 0]
    # the gap is closed on the line of the boundary, within a pixel of it
    gap = slice(30 - gap_px // 2, 30 - gap_px // 2 + gap_px)
    edge = np.flatnonzero(np.diff(closed[gap].astype(int), axis=1).any(axis=0))
    assert set(edge) <= {38, 39, 40}


def test_closed_boundary_networks_are_labelled_as_before():
    g = polycrystal((160, 200), grain_diameter_px=24, dispersion=0.3, rng=3)
    prob = ndimage.gaussian_filter(boundary_mask(g, width_px=2).astype(float), 1.0)
    prob = (prob / prob.max()).astype(np.float32)
    plain = labels_from_probability("grains", prob)
    closed = labels_from_probability("grains", prob, split_px=1.0)
    # the same grains, pixel for pixel (numbered by their seeds, so perhaps differently)
    pairs = np.unique(np.stack([plain["grain_ids"].ravel(), closed["grain_ids"].ravel()]), axis=1)
    assert pairs.shape[1] == plain["grain_ids"].max() == closed["grain_ids"].max()
    np.testing.assert_array_equal(closed["boundaries"], plain["boundaries"])


def _blurred(mask: np.ndarray) -> np.ndarray:
    prob = ndimage.gaussian_filter(mask.astype(float), 1.0)
    return (prob / prob.max()).astype(np.float32)


def test_gap_closing_merges_no_two_true_grains_and_splits_none():
    g = polycrystal((192, 192), grain_diameter_px=40, rng=5)
    boundaries = boundary_mask(g, width_px=2)
    rng = np.random.default_rng(0)
    kept = boundaries.copy()
    # holes only between grains much wider than the holes (a hole as wide as a grain
    # leaves nothing to split it by)
    area = np.bincount(g.ravel())
    smallest_near = ndimage.minimum_filter(area[g], size=9)
    rows, cols = np.nonzero(boundaries & (smallest_near >= 300))
    yy, xx = np.ogrid[:192, :192]
    for i in rng.choice(len(rows), 12, replace=False):  # 12 holes, 3 px in radius
        kept[(yy - rows[i]) ** 2 + (xx - cols[i]) ** 2 <= 9] = False

    def counts(prob, split_px):
        ids = labels_from_probability("grains", prob, split_px=split_px)["grain_ids"]
        return instance_scores(g, ids).counts

    # the whole network: only slivers of a few pixels at the image edge are lost
    whole = counts(_blurred(boundaries), 0.0)
    assert whole.n_split == 0 and whole.n_merged <= 1
    assert counts(_blurred(kept), 0.0).n_merged > whole.n_merged + 3  # the holes merge grains
    assert counts(_blurred(kept), 1.0) == whole  # closed: as if there were no holes


def test_touching_particles_are_split_when_asked():
    yy, xx = np.ogrid[:40, :70]
    discs = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 12**2) | ((yy - 20) ** 2 + (xx - 43) ** 2 <= 12**2)
    prob = discs.astype(np.float32)
    assert labels_from_probability("phases", prob)["particle_ids"].max() == 1
    split = labels_from_probability("phases", prob, split_px=1.0)
    ids = split["particle_ids"]
    assert ids.max() == 2 and ids[20, 20] != ids[20, 43]
    np.testing.assert_array_equal(ids > 0, discs)  # the phase itself is not changed
    np.testing.assert_array_equal(split["phase"], discs)


def _block_wise_equals_whole_plane(task: str, prob: np.ndarray, **options) -> dict:
    """Label ``prob`` whole and block by block (blocks of 48 px, halo 24) with the same
    options, assert that the two agree, and return the whole-plane labels."""
    ref = labels_from_probability(task, prob, **options)
    names = ("boundaries", "grain_ids") if task == "grains" else ("phase", "particle_ids")
    out = {n: np.zeros(prob.shape, np.uint32) for n in names}
    summary = label_plane(task, prob, out, block=48, halo=24, whole_plane_max_px=0, **options)
    assert summary == {"mode": "block-wise", "n_objects": int(ref[names[1]].max())}
    for n in names:
        np.testing.assert_array_equal(out[n], ref[n])
    return ref


@pytest.mark.parametrize("task", ["grains", "phases"])
def test_block_wise_splitting_equals_whole_plane_splitting(task):
    g = polycrystal((200, 230), grain_diameter_px=20, rng=1)
    b = boundary_mask(g, width_px=2)
    rng = np.random.default_rng(1)
    b &= rng.random(b.shape) > 0.15  # a boundary network with holes
    prob = ndimage.gaussian_filter(b.astype(float), 1.0) + 0.05 * rng.random(b.shape)
    if task == "phases":  # touching blobs crossing block edges
        prob = ndimage.gaussian_filter(rng.normal(size=b.shape), 4)
    prob = ((prob - prob.min()) / np.ptp(prob)).astype(np.float32)
    _block_wise_equals_whole_plane(task, prob, split_px=1.0)


@pytest.mark.parametrize("split_px", [-1.0, float("nan")])
def test_a_negative_or_missing_split_depth_is_refused(split_px):
    with pytest.raises(ValueError, match="split_px"):
        labels_from_probability("grains", np.zeros((8, 8), np.float32), split_px=split_px)


def test_holes_in_particles_are_filled_but_open_matrix_is_not():
    prob = np.zeros((40, 60), np.float32)
    prob[5:25, 5:25] = 1.0
    prob[10:15, 10:15] = 0.2  # a textured pocket inside the particle
    prob[:, 40:50] = 1.0
    prob[0:8, 43:47] = 0.0  # a bay open to the image edge: matrix, kept
    plain = labels_from_probability("phases", prob)["phase"]
    filled = labels_from_probability("phases", prob, fill_holes=True)["phase"]
    assert plain[12, 12] == 0 and filled[12, 12] == 1
    assert filled[2, 45] == 0
    np.testing.assert_array_equal(filled[prob > 0.5], 1)
    assert filled.sum() == plain.sum() + 25


@pytest.mark.parametrize("split_px", [0.0, 1.0])
def test_block_wise_hole_filling_equals_whole_plane(split_px):
    rng = np.random.default_rng(4)
    prob = ndimage.gaussian_filter(rng.normal(size=(150, 170)), 3)
    prob = ((prob - prob.min()) / np.ptp(prob)).astype(np.float32)
    deep = np.argwhere(prob > 0.75)
    for r, c in deep[rng.choice(len(deep), 30, replace=False)]:  # pockets inside particles
        prob[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = 0.0
    ref = _block_wise_equals_whole_plane("phases", prob, split_px=split_px, fill_holes=True)
    assert ref["phase"].sum() > (prob > 0.5).sum()  # some holes were filled


def test_specks_below_the_smallest_particle_are_matrix():
    prob = np.zeros((30, 40), np.float32)
    prob[5:15, 5:15] = 1.0  # a particle of 100 px
    prob[20, 30] = prob[20, 31] = prob[21, 30] = 1.0  # a speck of 3 px
    prob[25:27, 5:8] = 1.0  # 6 px
    prob[2:4, 30:34] = 1.0  # 8 px
    kept = labels_from_probability("phases", prob, min_particle_px=7)
    assert kept["particle_ids"].max() == 2  # the 100 px and the 8 px regions
    assert kept["phase"].sum() == 108
    np.testing.assert_array_equal(kept["phase"], kept["particle_ids"] > 0)
    every = labels_from_probability("phases", prob, min_particle_px=0)
    assert every["particle_ids"].max() == 4 and every["phase"].sum() == 117
    # a 6 px pocket of a filled particle is not a speck: holes are filled first
    prob[8:10, 8:11] = 0.0
    filled = labels_from_probability("phases", prob, fill_holes=True, min_particle_px=7)
    assert filled["phase"][8:10, 8:11].all()
    with pytest.raises(ValueError, match="min_particle_px"):
        labels_from_probability("phases", prob, min_particle_px=-1)


@pytest.mark.parametrize("split_px", [0.0, 1.0])
def test_block_wise_speck_removal_equals_whole_plane(split_px):
    rng = np.random.default_rng(7)
    prob = ndimage.gaussian_filter(rng.normal(size=(150, 170)), 1.2)  # many small regions
    prob = ((prob - prob.min()) / np.ptp(prob) * 0.85).astype(np.float32)
    regions = ndimage.label(prob > 0.5)[0]
    assert (np.bincount(regions.ravel())[1:] < 12).sum() > 10  # specks there were
    _block_wise_equals_whole_plane(
        "phases", prob, split_px=split_px, fill_holes=True, min_particle_px=12
    )
