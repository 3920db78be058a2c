"""Random crystals in non-symmorphic space groups, and zone axes drawn by family."""

from collections import Counter

import numpy as np
import pytest

from grainflow.diffraction.crystal import (
    MAX_CELL_ATOMS,
    MIN_DISTANCE_A,
    RANDOM_SPACE_GROUPS,
    Crystal,
    _too_close,
    random_crystal,
    random_space_group_crystal,
    zone_axes,
    zone_family,
)
from grainflow.diffraction.simulate import _draw_axis
from grainflow.diffraction.spacegroups import SPACE_GROUP_GENERATORS, expand_positions

CELLS = {"cubic": (5.4, 5.4, 5.4), "hexagonal": (3.2, 3.2, 5.2), "orthorhombic": (5.1, 6.7, 4.5)}

# one reflection each group's screw axes or glide planes extinguish (International Tables'
# reflection conditions), which a symmorphic crystal of the same lattice may show
ABSENT = {
    "Fd-3m": (0, 0, 2),  # 00l: l = 4n
    "P6_3/mmc": (0, 0, 1),  # 000l: l = 2n (6_3)
    "P6_3mc": (0, 0, 1),
    "Pnma": (0, 0, 1),  # 00l: l = 2n
    "Pnnm": (0, 0, 1),  # 0kl: k + l = 2n
    "Cmcm": (0, 0, 1),  # h0l: l = 2n
    "Cmce": (0, 0, 1),  # h0l: h, l = 2n
}


def _crystals(system, n, seed=0):
    rng = np.random.default_rng(seed)
    return [
        random_space_group_crystal(
            system, CELLS[system], rng=rng, n_atoms=int(rng.integers(1, 4)), b_factor_A2=0.5
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("system", sorted(CELLS))
def test_space_group_crystals_are_closed_under_their_group_and_keep_apart(system):
    for crystal in _crystals(system, 6):
        group = crystal.space_group
        assert (group, crystal.centring) in RANDOM_SPACE_GROUPS[system]
        assert crystal.symmetry == "listed"
        zs, pos = crystal.cell()
        assert 1 <= len(pos) <= MAX_CELL_ATOMS and not _too_close(crystal)
        # every atom's images under the group's generators are atoms of the same element
        for z, p in zip(zs[::4], pos[::4]):
            for q in expand_positions(p, SPACE_GROUP_GENERATORS[group]):
                same = pos[zs == z]
                gap = (same - q + 0.5) % 1.0 - 0.5
                assert np.abs(gap).max(axis=1).min() < 1e-6
        assert Crystal.from_dict(crystal.to_dict()) == crystal  # the group travels in /meta


def test_screw_axes_and_glide_planes_extinguish_their_reflections():
    seen = set()
    for system in CELLS:
        for crystal in _crystals(system, 15, seed=1):
            group = crystal.space_group
            seen.add(group)
            if group in ABSENT:
                assert abs(crystal.structure_factor(np.array([ABSENT[group]]))[0]) < 1e-6
    assert set(ABSENT) <= seen
    # a symmorphic crystal with the same lattice shows that reflection: 00l odd, l = 1
    hcp_like = Crystal("hexagonal", "P", 3.2, 3.2, 5.2, basis=((12, 1 / 3, 2 / 3, 0.0),))
    assert abs(hcp_like.structure_factor(np.array([[0, 0, 1]]))[0]) > 1.0


def test_nonsymmorphic_fraction_draws_both_kinds():
    settings = {"nonsymmorphic_fraction": 0.5}
    kinds = Counter(
        random_crystal("orthorhombic", rng=seed, settings=settings).symmetry for seed in range(40)
    )
    assert kinds["listed"] >= 10 and kinds["holohedral"] >= 10
    none = {random_crystal("cubic", rng=s).symmetry for s in range(10)}
    assert none == {"holohedral"}  # the default draws symmorphic crystals only
    # a centring asked for is kept: the crystal is then symmorphic
    assert (
        random_crystal(
            "cubic", rng=3, centring="I", settings={"nonsymmorphic_fraction": 1.0}
        ).centring
        == "I"
    )
    # a cell too small for the diamond orbit (nearest atoms a√3/4 < 1.5 Å): symmorphic instead
    tiny = {"cubic_a_A": [3.0, 3.2], "nonsymmorphic_fraction": 1.0}
    assert {random_crystal("cubic", rng=s, settings=tiny).symmetry for s in range(3)} == {
        "holohedral"
    }
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="fits"):
        random_space_group_crystal("cubic", (2.0, 2.0, 2.0), rng=rng, n_atoms=1, b_factor_A2=0.5)
    assert MIN_DISTANCE_A > 2.0 / 2  # why that cell is too small for any atom


@pytest.mark.parametrize("system", sorted(CELLS))
def test_zone_families_are_drawn_evenly(system):
    axes = zone_axes(system, "low_index")
    rng = np.random.default_rng(0)
    counts = Counter(
        zone_family(system, axes[_draw_axis(system, axes, "family", rng)]) for _ in range(1500)
    )
    families = {zone_family(system, uvw) for uvw in axes}
    assert set(counts) == families
    expected = 1500 / len(families)
    assert all(abs(n - expected) < 5 * np.sqrt(expected) for n in counts.values())
    # by axis, a family's share follows its number of axes (cubic <011>: 6 of 13)
    rng = np.random.default_rng(0)
    by_axis = Counter(
        zone_family(system, axes[_draw_axis(system, axes, "axis", rng)]) for _ in range(1500)
    )
    sizes = Counter(zone_family(system, uvw) for uvw in axes)
    for family, n in by_axis.items():
        assert abs(n - 1500 * sizes[family] / len(axes)) < 5 * np.sqrt(
            1500 * sizes[family] / len(axes)
        )


def test_principal_axes_draw_alike_by_family_and_by_axis():
    for system in CELLS:
        axes = zone_axes(system, "principal")
        a, b = np.random.default_rng(7), np.random.default_rng(7)
        assert [_draw_axis(system, axes, "family", a) for _ in range(50)] == [
            _draw_axis(system, axes, "axis", b) for _ in range(50)
        ]
    with pytest.raises(ValueError, match="zone_draw"):
        _draw_axis("cubic", axes, "shell", np.random.default_rng(0))
