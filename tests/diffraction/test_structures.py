"""Real structures: the table's crystallography, their patterns, and the scores on them."""

import itertools
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from grainflow.diffraction.crystal import CENTRINGS, SYSTEMS, Crystal
from grainflow.diffraction.structures import (
    ELEMENT_Z,
    SPACE_GROUP_GENERATORS,
    STRUCTURES,
    expand_positions,
    real_structure_predictions,
    real_structure_samples,
    real_structure_summary,
    real_structure_table,
    ring_ambiguity,
    score_real_structures,
    structure_by_name,
    zone_ambiguity,
    zone_net,
    zone_representatives,
)
from grainflow.io.hdf5 import Sample, write_specimen

SETTINGS = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["synthesize"][
    "diffraction"
]


def crystal(name):
    return structure_by_name(name).crystal()


def intensity(name, hkl):
    return np.abs(crystal(name).structure_factor(hkl)) ** 2


# --- the table ---


def test_the_table_holds_twenty_structures_several_of_each_system():
    assert len(STRUCTURES) >= 20
    names = [s.name for s in STRUCTURES]
    assert len(set(names)) == len(names)
    counts = {system: sum(s.system == system for s in STRUCTURES) for system in SYSTEMS}
    assert min(counts.values()) >= 5, counts
    table = real_structure_table()
    assert list(table["structure"]) == names and table["reference"].str.len().min() > 10


@pytest.mark.parametrize("st", STRUCTURES, ids=lambda s: s.name)
def test_each_structure_fits_its_system_and_its_formula(st):
    a, b, c = st.a, st.b, st.c
    if st.system == "cubic":
        assert a == b == c
    elif st.system == "hexagonal":
        assert a == b and c != a
    else:
        assert len({a, b, c}) == 3
    assert 2.0 < min(a, b, c) and max(a, b, c) < 12.0  # ångström
    assert st.centring in CENTRINGS[st.system] and st.space_group in SPACE_GROUP_GENERATORS
    assert st.space_group[0] == st.centring
    z, pos = st.crystal().cell()
    # the cell's composition is a whole number of formula units
    formula = {el: int(n or 1) for el, n in re.findall(r"([A-Z][a-z]?)(\d*)", st.formula)}
    have = {el: int(np.sum(z == ELEMENT_Z[el])) for el in formula}
    assert sum(have.values()) == len(z)
    units = {have[el] / n for el, n in formula.items()}
    assert len(units) == 1 and float(units.pop()).is_integer(), (have, formula)
    # no two atoms closer than a B–B bond (1.7 Å), any periodic image
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=float)
    diff = pos[:, None, None, :] - pos[None, :, None, :] + shifts[None, None]
    dist = np.linalg.norm(diff @ st.crystal().direct(), axis=-1)
    dist[np.arange(len(pos)), np.arange(len(pos)), 13] = np.inf
    assert dist.min() > 1.7


@pytest.mark.parametrize(
    ("name", "atoms"),
    [("Si", 8), ("NaCl", 8), ("Ni3Al", 4), ("Mg", 2), ("ZnO", 4), ("WC", 2), ("TiB2", 3),
     ("Fe3C", 16), ("U-alpha", 4), ("Ga-alpha", 8), ("P-black", 8), ("CrB", 8),
     ("FeS2-marcasite", 6)],
)  # fmt: skip
def test_cells_hold_the_known_number_of_atoms(name, atoms):
    assert len(crystal(name).cell()[0]) == atoms


def test_space_group_generators_give_the_wyckoff_multiplicities():
    hcp = expand_positions((1 / 3, 2 / 3, 0.25), SPACE_GROUP_GENERATORS["P6_3/mmc"])
    np.testing.assert_allclose(hcp, [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    general = (0.11, 0.13, 0.17)
    assert len(expand_positions(general, SPACE_GROUP_GENERATORS["Pnma"])) == 8
    assert len(expand_positions(general, SPACE_GROUP_GENERATORS["P6_3/mmc"])) == 24
    assert len(expand_positions((0.11, 0.25, 0.17), SPACE_GROUP_GENERATORS["Pnma"])) == 4  # 4c
    # Fd-3m modulo the F translations: 48 general positions, 8a is 2 (diamond)
    assert len(expand_positions(general, SPACE_GROUP_GENERATORS["Fd-3m"])) == 4 * 48
    assert len(expand_positions((0, 0, 0), SPACE_GROUP_GENERATORS["Fd-3m"])) == 8


def test_structure_factors_reproduce_known_absences_and_contrasts():
    zero = 1e-12
    # FCC: mixed indices absent
    assert intensity("Al", [[1, 0, 0], [1, 1, 0]]).max() < zero
    assert intensity("Al", [[1, 1, 1]])[0] > 1.0
    # rock salt: (111) ~ (f_Na - f_Cl)², weak against (200) ~ (f_Na + f_Cl)²
    weak, strong = intensity("NaCl", [[1, 1, 1], [2, 0, 0]])
    assert weak < 0.05 * strong
    # BCC: h + k + l odd absent
    assert intensity("Fe-alpha", [[1, 0, 0], [1, 1, 1]]).max() < zero
    assert intensity("Fe-alpha", [[1, 1, 0]])[0] > 1.0
    # hcp and wurtzite: (0001) absent (6_3 screw), (0002) and (10-10) present; WC has no screw
    for name in ("Mg", "Ti-alpha", "ZnO"):
        assert intensity(name, [[0, 0, 1]])[0] < zero
        assert intensity(name, [[0, 0, 2], [1, 0, 0]]).min() > 0.1
    assert intensity("WC", [[0, 0, 1]])[0] > 1.0
    # diamond: (200) and (222) absent (d glide), (111) and (400) present
    assert intensity("Si", [[2, 0, 0], [2, 2, 2]]).max() < zero
    assert intensity("Si", [[1, 1, 1], [4, 0, 0]]).min() > 1.0
    # Pnma (cementite): h00, 0k0, 00l odd and hk0 with h odd absent; 0kl needs k + l even
    assert intensity("Fe3C", [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 2]]).max() < zero
    assert intensity("Fe3C", [[2, 1, 0], [0, 1, 1], [1, 0, 1]]).min() > 1e-3
    # Cmce (gallium): C centring, and the glides: hk0 needs h, k even, h0l needs l even
    assert intensity("Ga-alpha", [[1, 0, 0], [1, 1, 0], [0, 0, 1], [2, 0, 1]]).max() < zero
    assert intensity("Ga-alpha", [[0, 2, 1], [0, 0, 2], [2, 2, 0]]).min() > 1e-3


def test_a_listed_crystal_round_trips_and_random_ones_keep_their_metadata():
    si = crystal("Si")
    assert si.symmetry == "listed" and si.to_dict()["basis_symmetry"] == "listed"
    back = Crystal.from_dict(si.to_dict())
    assert back == si
    al = crystal("Al")
    assert al.symmetry == "holohedral" and "basis_symmetry" not in al.to_dict()
    with pytest.raises(ValueError, match="symmetry"):
        Crystal("cubic", "F", 4, 4, 4, basis=((13, 0, 0, 0),), symmetry="space_group")


# --- zones and their nets ---


def test_low_index_zone_families_per_system():
    assert sorted(zone_representatives("cubic")) == ["<001>", "<011>", "<111>"]
    assert len(zone_representatives("hexagonal")) == 5
    assert len(zone_representatives("orthorhombic")) == 7


def test_zone_nets_and_their_ambiguity():
    al = crystal("Al")
    assert zone_net(al, [0, 0, 1])["net"] == "square"
    assert zone_net(al, [1, 1, 1])["net"] == "hexagonal"
    assert zone_net(crystal("Fe-alpha"), [0, 1, 1])["net"] == "rectangular"
    assert zone_ambiguity("cubic", "<001>", zone_net(al, [0, 0, 1])) == ("", "")
    assert zone_ambiguity("cubic", "<111>", zone_net(al, [1, 1, 1]))[0] == "shared"
    mg = zone_net(crystal("Mg"), [0, 0, 1])
    assert mg["net"] == "hexagonal" and zone_ambiguity("hexagonal", "<0001>", mg)[0] == "shared"
    # gallium: a ≈ c, so its [010] zone shows a square net — pseudo-tetragonal
    ga = zone_net(crystal("Ga-alpha"), [0, 1, 0])
    assert ga["net"] == "square" and ga["ratio"] == pytest.approx(4.5258 / 4.5192, rel=1e-6)
    assert zone_ambiguity("orthorhombic", "<010>", ga)[0] == "pseudo-symmetric"
    assert ring_ambiguity(structure_by_name("CrB"))[0] == "pseudo-symmetric"
    assert ring_ambiguity(structure_by_name("Fe3C")) == ("", "")
    assert ring_ambiguity(structure_by_name("Cu")) == ("", "")


# --- the patterns ---


def test_the_generator_is_deterministic_and_covers_every_zone_family():
    chosen = [structure_by_name("Cu"), structure_by_name("Mg")]
    kwargs = dict(patterns_per_zone=2, ring_patterns=1, structures=chosen)
    first = real_structure_samples(SETTINGS, seed=5, **kwargs)
    again = real_structure_samples(SETTINGS, seed=5, **kwargs)
    other = real_structure_samples(SETTINGS, seed=6, **kwargs)
    assert len(first) == 2 * 3 + 1 + 2 * 5 + 1
    for x, y in zip(first, again):
        assert x.image_id == y.image_id and x.params == y.params
        assert np.array_equal(x.image, y.image)
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(first, other))
    spots = [s for s in first if s.modality == "spot"]
    assert {s.params["zone_family"] for s in spots if s.specimen == "Mg"} == set(
        zone_representatives("hexagonal")
    )
    for s in first:
        side = 64 if s.modality == "spot" else 128  # each kind at its own size
        assert s.image.shape == (side, side) and s.image.dtype == np.float32
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert s.params["crystal_system"] == structure_by_name(s.specimen).system
    shared = [s for s in spots if s.params["zone_family"] in ("<111>", "<0001>")]
    assert shared and all(s.params["ambiguity"] == "shared" for s in shared)


# --- the scores ---


def _sample(structure, modality, family, ambiguity=""):
    system = structure_by_name(structure).system
    params = {
        "structure": structure,
        "formula": structure,
        "zone_family": family,
        "net": "",
        "ambiguity": ambiguity,
        "ambiguity_note": "",
        "dose_counts": 100.0,
        "crystal_system": system,
    }
    return Sample(
        image=np.zeros((8, 8), np.float32),
        labels={},
        image_id=f"{structure}/{family}",
        specimen=structure,
        session=modality,
        seed=0,
        modality=modality,
        params=params,
    )


# spots: Al <001> right (0.9), Al <001> wrong (0.5), Mg <0001> right (0.7, shared net),
# Ga <010> wrong (0.6, pseudo-symmetric); rings: Al right (0.8), Mg wrong (0.6)
HAND = [
    (_sample("Al", "spot", "<001>"), [0.9, 0.05, 0.05]),
    (_sample("Al", "spot", "<001>"), [0.4, 0.5, 0.1]),
    (_sample("Mg", "spot", "<0001>", "shared"), [0.2, 0.7, 0.1]),
    (_sample("Ga-alpha", "spot", "<010>", "pseudo-symmetric"), [0.6, 0.1, 0.3]),
    (_sample("Al", "ring", "rings"), [0.8, 0.1, 0.1]),
    (_sample("Mg", "ring", "rings"), [0.6, 0.3, 0.1]),
]


def test_scores_on_hand_made_probabilities():
    samples, probs = zip(*HAND)
    pred = real_structure_predictions(samples, np.array(probs))
    assert pred["pred"].tolist() == ["cubic", "hexagonal", "hexagonal", "cubic", "cubic", "cubic"]
    table, summary = real_structure_summary(pred, threshold=0.65, coverage=0.6)
    al = table[(table["structure"] == "Al") & (table["zone_family"] == "<001>")].iloc[0]
    assert (al["patterns"], al["correct"], al["accepted"], al["accepted_correct"]) == (2, 1, 1, 1)
    assert al["accuracy"] == 0.5 and al["confidence"] == pytest.approx(0.7)
    s = summary.set_index(["modality", "subset"])
    # spot headline: the three patterns but the pseudo-symmetric one; two right
    head = s.loc[("spot", "headline")]
    assert head["patterns"] == 3 and head["accuracy"] == pytest.approx(2 / 3)
    # at 0.65 it keeps 0.9 and 0.7, both right
    assert head["coverage"] == pytest.approx(2 / 3) and head["accuracy_kept"] == 1.0
    # the most confident 60 % (at least 1.8 of 3 patterns: 0.9 and 0.7) are right
    assert head["accuracy_at_coverage"] == 1.0
    assert s.loc[("spot", "headline cubic"), "accuracy"] == 0.5
    assert s.loc[("spot", "shared net"), "patterns"] == 1
    assert s.loc[("spot", "pseudo-symmetric"), "accuracy"] == 0.0
    assert s.loc[("spot", "all"), "accuracy"] == 0.5
    rings = s.loc[("ring", "headline")]
    assert rings["patterns"] == 2 and rings["accuracy"] == 0.5
    assert rings["coverage"] == 0.5 and rings["accuracy_kept"] == 1.0
    assert np.isnan(s.loc[("ring", "pseudo-symmetric"), "accuracy"])


def test_score_real_structures_averages_the_folds(tmp_path):
    import torch

    from grainflow.checkpoint import make_checkpoint, model_from_checkpoint, save_checkpoint
    from grainflow.diffraction.evaluate import predict_proba
    from grainflow.models.registry import build_model

    samples = real_structure_samples(
        SETTINGS, patterns_per_zone=1, ring_patterns=1, seed=0, structures=[STRUCTURES[0]]
    )
    write_specimen(tmp_path / "p.h5", samples, task="diffraction", specimen="real_structures")
    paths = []
    for fold in range(2):
        torch.manual_seed(fold)
        path = tmp_path / f"fold{fold}.pt"
        save_checkpoint(
            path,
            make_checkpoint(
                model=build_model("diffraction_cnn"),
                model_name="diffraction_cnn",
                model_kwargs={},
                epoch=1,
                step=1,
                extra={"classes": list(SYSTEMS), "representation": "cartesian"},
            ),
        )
        paths.append(path)
    abstention = tmp_path / "abstention.tsv"
    pd.DataFrame({"fold": ["0", "1", "all"], "threshold": [0.2, 0.4, 0.3]}).to_csv(
        abstention, sep="\t", index=False
    )
    pred, table, summary = score_real_structures(tmp_path / "p.h5", paths, abstention, coverage=0.9)
    assert len(pred) == len(samples) == 4 and len(table) == 4
    assert (summary["threshold"] == 0.3).all()
    # spots (64 px) and rings (128 px) differ in size: each pattern through each fold's model
    mean = np.mean(
        [
            np.concatenate(
                [predict_proba(model_from_checkpoint(p), s.image[None]) for s in samples]
            )
            for p in paths
        ],
        axis=0,
    )
    got = pred[[f"p_{c}" for c in SYSTEMS]].to_numpy()
    np.testing.assert_allclose(got, mean, rtol=1e-5, atol=1e-6)
