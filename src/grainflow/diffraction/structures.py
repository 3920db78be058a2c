"""Real crystal structures: a literature table, their patterns, and the classifiers' scores on them.

:data:`STRUCTURES` lists metals, oxides, carbides, borides and intermetallics of the
three crystal systems with their lattice parameters and atom positions;
:func:`real_structure_samples` renders them with the project's simulator at every
low-index zone axis and as rings; :func:`score_real_structures` scores a fold
ensemble on them per structure and zone family.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from grainflow.diffraction.crystal import (
    PSEUDO_RATIOS,
    SYSTEMS,
    Crystal,
    reflections,
    uniform_in,
    zone_axes,
    zone_family,
)
from grainflow.diffraction.simulate import (
    _image_params,
    _session_params,
    _settings,
    pattern_size,
    render_pattern,
)
from grainflow.diffraction.spacegroups import SPACE_GROUP_GENERATORS, expand_positions
from grainflow.io.hdf5 import Sample
from grainflow.seeds import derive_seed

__all__ = [
    "ELEMENT_Z",
    "SPACE_GROUP_GENERATORS",
    "PSEUDO_TOLERANCE",
    "Structure",
    "STRUCTURES",
    "structure_by_name",
    "expand_positions",
    "zone_representatives",
    "zone_net",
    "zone_ambiguity",
    "ring_ambiguity",
    "real_structure_samples",
    "real_structure_table",
    "PREDICTION_COLUMNS",
    "real_structure_predictions",
    "real_structure_summary",
    "score_real_structures",
]

#: atomic numbers of the elements in the table
ELEMENT_Z = {
    "B": 5,
    "C": 6,
    "O": 8,
    "Na": 11,
    "Mg": 12,
    "Al": 13,
    "Si": 14,
    "P": 15,
    "S": 16,
    "Cl": 17,
    "Ti": 22,
    "Cr": 24,
    "Fe": 26,
    "Co": 27,
    "Ni": 28,
    "Cu": 29,
    "Zn": 30,
    "Ga": 31,
    "Sr": 38,
    "W": 74,
    "U": 92,
}

#: relative difference of two reciprocal-net vectors' lengths (and, in radians, of an
#: angle) below which a net counts as square or hexagonal: 5 % of a first-order spot at
#: 3.5–5 px is 0.2 px, below the spots' own width (0.4–0.7 px)
PSEUDO_TOLERANCE = 0.05


@dataclass(frozen=True)
class Structure:
    """One real crystal structure of the table.

    ``atoms`` holds the occupied Wyckoff positions as ``(element, wyckoff, x, y,
    z)``; the space group's generators (:data:`SPACE_GROUP_GENERATORS`) and the
    centring fill the cell. Lengths in ångström.
    """

    name: str
    formula: str
    kind: str  # metal, oxide, carbide, ...
    system: str
    space_group: str
    centring: str
    a: float
    b: float
    c: float
    atoms: tuple[tuple[str, str, float, float, float], ...]
    reference: str
    note: str = ""

    def crystal(self, *, b_factor_A2: float = 0.5) -> Crystal:
        """The :class:`Crystal` of this structure (every atom of the cell, up to centring)."""
        basis, symmetry = _basis(self)
        return Crystal(
            self.system,
            self.centring,
            self.a,
            self.b,
            self.c,
            basis=basis,
            b_factor_A2=b_factor_A2,
            symmetry=symmetry,
        )


@functools.cache
def _basis(structure: Structure) -> tuple[tuple, str]:
    generators = SPACE_GROUP_GENERATORS[structure.space_group]
    if generators == "holohedral":
        return tuple((ELEMENT_Z[el], x, y, z) for el, _, x, y, z in structure.atoms), "holohedral"
    basis = tuple(
        (ELEMENT_Z[el], *map(float, p))
        for el, _, x, y, z in structure.atoms
        for p in expand_positions((x, y, z), generators)
    )
    return basis, "listed"


def _s(name, formula, kind, system, sg, centring, abc, atoms, reference, note=""):
    a, b, c = abc
    return Structure(
        name, formula, kind, system, sg, centring, a, b, c, tuple(atoms), reference, note
    )


#: the table: literature lattice parameters (room temperature) and atom positions
STRUCTURES: tuple[Structure, ...] = (
    # --- cubic ---
    _s("Al", "Al", "metal", "cubic", "Fm-3m", "F", (4.0495,) * 3, [("Al", "4a", 0, 0, 0)],
       "Wyckoff, Crystal Structures vol. 1 (1963)"),
    _s("Cu", "Cu", "metal", "cubic", "Fm-3m", "F", (3.6149,) * 3, [("Cu", "4a", 0, 0, 0)],
       "Wyckoff, Crystal Structures vol. 1 (1963)"),
    _s("Fe-alpha", "Fe", "metal", "cubic", "Im-3m", "I", (2.8665,) * 3, [("Fe", "2a", 0, 0, 0)],
       "Wyckoff, Crystal Structures vol. 1 (1963)"),
    _s("W", "W", "metal", "cubic", "Im-3m", "I", (3.1652,) * 3, [("W", "2a", 0, 0, 0)],
       "Wyckoff, Crystal Structures vol. 1 (1963)"),
    _s("Si", "Si", "semiconductor", "cubic", "Fd-3m", "F", (5.4310,) * 3,
       [("Si", "8a", 0, 0, 0)],
       "Okada & Tokumaru, J. Appl. Phys. 56, 314 (1984)"),
    _s("NaCl", "NaCl", "halide", "cubic", "Fm-3m", "F", (5.6402,) * 3,
       [("Na", "4a", 0, 0, 0), ("Cl", "4b", 0.5, 0.5, 0.5)],
       "Wyckoff, Crystal Structures vol. 1 (1963)"),
    _s("MgO", "MgO", "oxide", "cubic", "Fm-3m", "F", (4.2112,) * 3,
       [("Mg", "4a", 0, 0, 0), ("O", "4b", 0.5, 0.5, 0.5)],
       "Wyckoff, Crystal Structures vol. 1 (1963)"),
    _s("TiC", "TiC", "carbide", "cubic", "Fm-3m", "F", (4.3274,) * 3,
       [("Ti", "4a", 0, 0, 0), ("C", "4b", 0.5, 0.5, 0.5)],
       "Wyckoff, Crystal Structures vol. 1 (1963)"),
    _s("Ni3Al", "Ni3Al", "intermetallic (L1_2)", "cubic", "Pm-3m", "P", (3.5720,) * 3,
       [("Al", "1a", 0, 0, 0), ("Ni", "3c", 0, 0.5, 0.5)],
       "Villars & Calvert, Pearson's Handbook (1991)"),
    _s("NiAl", "NiAl", "intermetallic (B2, CsCl type)", "cubic", "Pm-3m", "P", (2.8870,) * 3,
       [("Ni", "1a", 0, 0, 0), ("Al", "1b", 0.5, 0.5, 0.5)],
       "Villars & Calvert, Pearson's Handbook (1991)"),
    _s("SrTiO3", "SrTiO3", "oxide (perovskite)", "cubic", "Pm-3m", "P", (3.9050,) * 3,
       [("Sr", "1a", 0, 0, 0), ("Ti", "1b", 0.5, 0.5, 0.5), ("O", "3c", 0, 0.5, 0.5)],
       "Abramov et al., Acta Cryst. B51, 942 (1995)"),
    # --- hexagonal ---
    _s("Mg", "Mg", "metal", "hexagonal", "P6_3/mmc", "P", (3.2094, 3.2094, 5.2105),
       [("Mg", "2c", 1 / 3, 2 / 3, 0.25)],
       "Wyckoff, Crystal Structures vol. 1 (1963)"),
    _s("Ti-alpha", "Ti", "metal", "hexagonal", "P6_3/mmc", "P", (2.9508, 2.9508, 4.6855),
       [("Ti", "2c", 1 / 3, 2 / 3, 0.25)],
       "Wyckoff, Crystal Structures vol. 1 (1963)"),
    _s("Zn", "Zn", "metal", "hexagonal", "P6_3/mmc", "P", (2.6649, 2.6649, 4.9468),
       [("Zn", "2c", 1 / 3, 2 / 3, 0.25)],
       "Wyckoff, Crystal Structures vol. 1 (1963)"),
    _s("Co-epsilon", "Co", "metal", "hexagonal", "P6_3/mmc", "P", (2.5071, 2.5071, 4.0695),
       [("Co", "2c", 1 / 3, 2 / 3, 0.25)],
       "Wyckoff, Crystal Structures vol. 1 (1963)"),
    _s("WC", "WC", "carbide", "hexagonal", "P-6m2", "P", (2.9065, 2.9065, 2.8366),
       [("W", "1a", 0, 0, 0), ("C", "1d", 1 / 3, 2 / 3, 0.5)],
       "Leciejewicz, Acta Cryst. 14, 200 (1961)",
       "c/a = 0.98, outside the training range of c/a"),
    _s("ZnO", "ZnO", "oxide (wurtzite)", "hexagonal", "P6_3mc", "P", (3.2498, 3.2498, 5.2066),
       [("Zn", "2b", 1 / 3, 2 / 3, 0), ("O", "2b", 1 / 3, 2 / 3, 0.3819)],
       "Kihara & Donnay, Can. Mineral. 23, 647 (1985)"),
    _s("TiB2", "TiB2", "boride", "hexagonal", "P6/mmm", "P", (3.0303, 3.0303, 3.2295),
       [("Ti", "1a", 0, 0, 0), ("B", "2d", 1 / 3, 2 / 3, 0.5)],
       "Villars & Calvert, Pearson's Handbook (1991)",
       "c/a = 1.07, outside the training range of c/a"),
    # --- orthorhombic ---
    _s("Fe3C", "Fe3C", "carbide (cementite)", "orthorhombic", "Pnma", "P",
       (5.0896, 6.7443, 4.5248),
       [("Fe", "4c", 0.0367, 0.25, 0.8402), ("Fe", "8d", 0.1816, 0.0666, 0.3374),
        ("C", "4c", 0.8766, 0.25, 0.4461)],
       "Wood et al., J. Appl. Cryst. 37, 82 (2004)"),
    _s("U-alpha", "U", "metal", "orthorhombic", "Cmcm", "C", (2.8537, 5.8695, 4.9548),
       [("U", "4c", 0, 0.1025, 0.25)],
       "Barrett, Mueller & Hitterman, Phys. Rev. 129, 625 (1963)",
       "b/a = 2.06"),
    _s("Ga-alpha", "Ga", "metal", "orthorhombic", "Cmce", "C", (4.5192, 7.6586, 4.5258),
       [("Ga", "8f", 0, 0.1549, 0.0810)],
       "Sharma & Donohue, Z. Kristallogr. 117, 293 (1962)",
       "a = c within 0.15 %: pseudo-tetragonal"),
    _s("P-black", "P", "element (black phosphorus)", "orthorhombic", "Cmce", "C",
       (3.3136, 10.478, 4.3763),
       [("P", "8f", 0, 0.10168, 0.08056)],
       "Brown & Rundqvist, Acta Cryst. 19, 684 (1965)"),
    _s("CrB", "CrB", "boride", "orthorhombic", "Cmcm", "C", (2.969, 7.858, 2.932),
       [("Cr", "4c", 0, 0.146, 0.25), ("B", "4c", 0, 0.440, 0.25)],
       "Kiessling, Acta Chem. Scand. 3, 595 (1949)",
       "a = c within 1.3 %: pseudo-tetragonal"),
    _s("FeS2-marcasite", "FeS2", "sulfide", "orthorhombic", "Pnnm", "P",
       (4.4432, 5.4238, 3.3877),
       [("Fe", "2a", 0, 0, 0), ("S", "4g", 0.2005, 0.3783, 0)],
       "Rieder et al., Am. Mineral. 92, 1150 (2007)"),
)  # fmt: skip


def structure_by_name(name: str) -> Structure:
    """The structure called ``name`` in :data:`STRUCTURES`."""
    for s in STRUCTURES:
        if s.name == name:
            return s
    raise ValueError(f"no structure {name!r}; the table has {[s.name for s in STRUCTURES]}")


def zone_representatives(system: str, *, max_index: int = 1) -> dict[str, np.ndarray]:
    """One zone axis [uvw] per low-index zone family of ``system``: family -> uvw (3,) int.

    The families of :func:`~grainflow.diffraction.crystal.zone_axes` with
    ``mode="low_index"`` (``max(|u|, |v|, |w|) <= max_index``), each
    represented by its first axis in that list.
    """
    out: dict[str, np.ndarray] = {}
    for uvw in zone_axes(system, "low_index", max_index=max_index):
        out.setdefault(zone_family(system, uvw), uvw)
    return out


def zone_net(crystal: Crystal, uvw, *, g_max: float = 2.0) -> dict:
    """Shape of the net of reflections a zone axis shows (zero-order Laue zone, ``|F| > 0``).

    Returns
    -------
    dict
        ``g1``, ``g2`` (1/Å): the shortest reflection and the shortest one not
        parallel to it; ``ratio`` ``|g2| / |g1|`` (>= 1); ``angle_deg`` between
        them folded into [0°, 90°]; ``net``: ``square``, ``hexagonal``,
        ``rectangular``, ``rhombic`` (equal sides, centred rectangular) or
        ``oblique``, within :data:`PSEUDO_TOLERANCE`.
    """
    uvw = np.asarray(uvw, dtype=float)
    direction = uvw @ crystal.direct()  # Cartesian; g · direction = h u + k v + l w

    def in_zone(g):
        return np.abs(g @ direction) < 1e-6

    _, g, _ = reflections(crystal, g_max, select=in_zone)
    if len(g) < 2:
        raise ValueError(f"zone {uvw.astype(int).tolist()} shows fewer than two reflections")
    norm = np.linalg.norm(g, axis=1)
    order = np.argsort(norm, kind="stable")
    g1 = g[order[0]]
    g2 = next(
        g[i]
        for i in order[1:]
        if np.linalg.norm(np.cross(g1, g[i])) > 1e-6 * norm[i] * norm[order[0]]
    )
    n1, n2 = np.linalg.norm(g1), np.linalg.norm(g2)
    angle = math.degrees(math.acos(np.clip(abs(g1 @ g2) / (n1 * n2), 0.0, 1.0)))
    tol_deg = math.degrees(PSEUDO_TOLERANCE)
    equal = n2 / n1 < 1 + PSEUDO_TOLERANCE
    if equal and angle > 90 - tol_deg:
        net = "square"
    elif equal and abs(angle - 60) < tol_deg:
        net = "hexagonal"
    elif angle > 90 - tol_deg:
        net = "rectangular"
    elif equal:
        net = "rhombic"
    else:
        net = "oblique"
    return {"g1": n1, "g2": n2, "ratio": n2 / n1, "angle_deg": angle, "net": net}


#: zones whose own symmetry gives the net: (system, family) -> net
_SYMMETRIC_NETS = {
    ("cubic", "<001>"): "square",
    ("cubic", "<111>"): "hexagonal",
    ("hexagonal", "<0001>"): "hexagonal",
}


def zone_ambiguity(system: str, family: str, net: Mapping) -> tuple[str, str]:
    """Whether a zone's net alone can tell its crystal system: (``ambiguity``, ``note``).

    ``ambiguity`` is ``""``; ``"shared"`` for the hexagonal net that cubic
    〈111〉 and hexagonal 〈0001〉 zones both show by symmetry (geometry alone
    cannot decide; spacing and intensity cues may); or ``"pseudo-symmetric"``
    when a square or hexagonal net appears where the zone's symmetry does not
    demand it (a metric accident, e.g. a ≈ c of an orthorhombic cell).
    """
    shape = net["net"]
    if shape not in ("square", "hexagonal"):
        return "", ""
    detail = f"|g2|/|g1| = {net['ratio']:.3f}, {net['angle_deg']:.1f}°"
    if _SYMMETRIC_NETS.get((system, family)) == shape:
        if shape == "hexagonal":
            return "shared", "hexagonal net of both cubic <111> and hexagonal <0001>"
        return "", ""
    return "pseudo-symmetric", f"{shape} net at a {system} {family} zone ({detail})"


def ring_ambiguity(structure: Structure) -> tuple[str, str]:
    """Whether a structure's ring sequence is pseudo-symmetric: (``ambiguity``, ``note``).

    Orthorhombic cells with two axes in a ratio within :data:`PSEUDO_TOLERANCE`
    of 1, √3 or 2 (:data:`~grainflow.diffraction.crystal.PSEUDO_RATIOS`: a
    pseudo-tetragonal or orthohexagonal metric, which the training crystals
    avoid) give ring sequences of a higher-symmetry cell.
    """
    if structure.system != "orthorhombic":
        return "", ""
    axes = {"a": structure.a, "b": structure.b, "c": structure.c}
    for (n1, v1), (n2, v2) in [(p, q) for p in axes.items() for q in axes.items() if p[1] < q[1]]:
        for t in PSEUDO_RATIOS:
            if abs(v2 / v1 / t - 1) < PSEUDO_TOLERANCE:
                return "pseudo-symmetric", f"{n2}/{n1} = {v2 / v1:.3f} near {t:.3g}"
    return "", ""


def real_structure_samples(
    settings: Mapping,
    *,
    patterns_per_zone: int,
    ring_patterns: int,
    seed: int,
    structures: Sequence[Structure] = STRUCTURES,
) -> list[Sample]:
    """Spot patterns at every low-index zone family of each structure, and its ring patterns.

    Parameters
    ----------
    settings : mapping
        The config's ``synthesize.diffraction`` block: the physics the
        classifiers trained with (camera length, relrods, dynamical exponent,
        intensity spread, detector, dose, beam stop; ``max_zone_index`` sets
        the low-index zones; ``debye_waller_A2`` the range of B drawn per
        pattern).
    patterns_per_zone : int
        Spot patterns per structure and zone family, each with its own
        session and orientation draws (in-plane rotation, tilt, dose, ...).
    ring_patterns : int
        Ring patterns per structure.
    seed : int
    structures : sequence of Structure

    Returns
    -------
    list of Sample
        ``specimen`` is the structure's name, ``session`` ``"{modality}-{zone}"``;
        ``params`` holds the crystal (``basis_symmetry: listed`` where the cell
        is listed), the session and image draws, and ``structure``,
        ``formula``, ``zone_family`` (``"rings"`` for rings), ``net``,
        ``ambiguity`` and ``ambiguity_note``.
    """
    if patterns_per_zone < 0 or ring_patterns < 0:
        raise ValueError(f"need counts >= 0, got {patterns_per_zone=}, {ring_patterns=}")
    s = _settings(settings)
    out: list[Sample] = []
    for st in structures:
        jobs = []
        reference = st.crystal()
        for family, uvw in zone_representatives(
            st.system, max_index=int(s["max_zone_index"])
        ).items():
            net = zone_net(reference, uvw)
            ambiguity, note = zone_ambiguity(st.system, family, net)
            jobs += [
                ("spot", family, uvw, net["net"], ambiguity, note, k)
                for k in range(patterns_per_zone)
            ]
        ambiguity, note = ring_ambiguity(st)
        jobs += [("ring", "rings", None, "", ambiguity, note, k) for k in range(ring_patterns)]
        for modality, family, uvw, net, ambiguity, note, k in jobs:
            img_seed = derive_seed(seed, st.name, modality, family, k)
            rng = np.random.default_rng(derive_seed(img_seed, "p"))
            crystal = st.crystal(b_factor_A2=uniform_in(rng, s["debye_waller_A2"]))
            session = _session_params(modality, s, rng)
            # rotation, tilt and texture as training draws them; the zone is set below
            image = _image_params(crystal, modality, {**s, "zone_axes": "principal"}, rng)
            if modality == "spot":
                sign = int(rng.choice([-1, 1]))
                image.update(zone_axis=[sign * int(v) for v in uvw], zone_family=family)
            params = {
                **crystal.to_dict(),
                **session,
                **image,
                "structure": st.name,
                "formula": st.formula,
                "zone_family": family,
                "net": net,
                "ambiguity": ambiguity,
                "ambiguity_note": note,
            }
            derived: dict = {}
            size = pattern_size(s, modality)
            pattern = render_pattern(params, shape=(size, size), seed=img_seed, info=derived)
            params.update(derived)
            session_name = f"{modality}-{family}"
            out.append(
                Sample(
                    image=pattern,
                    labels={},
                    image_id=f"real/{st.name}/{session_name}/i{k:02d}",
                    specimen=st.name,
                    session=session_name,
                    seed=img_seed,
                    modality=modality,
                    params=params,
                )
            )
    return out


def real_structure_table(structures: Sequence[Structure] = STRUCTURES) -> pd.DataFrame:
    """The table as a DataFrame: one row per structure, atoms as ``El wyckoff (x, y, z)``."""
    rows = []
    for st in structures:
        atoms = "; ".join(f"{el} {w} ({x:.4g}, {y:.4g}, {z:.4g})" for el, w, x, y, z in st.atoms)
        rows.append(
            {
                "structure": st.name,
                "formula": st.formula,
                "kind": st.kind,
                "system": st.system,
                "space_group": st.space_group,
                "a_A": st.a,
                "b_A": st.b,
                "c_A": st.c,
                "atoms": atoms,
                "reference": st.reference,
                "note": st.note,
            }
        )
    return pd.DataFrame(rows)


#: columns of the per-pattern predictions
PREDICTION_COLUMNS = (
    "image_id",
    "structure",
    "formula",
    "modality",
    "zone_family",
    "net",
    "ambiguity",
    "ambiguity_note",
    "dose_counts",
    "true",
    "pred",
    "confidence",
    *(f"p_{c}" for c in SYSTEMS),
)


def real_structure_predictions(
    samples: Sequence[Sample], probabilities: np.ndarray
) -> pd.DataFrame:
    """One row per pattern (:data:`PREDICTION_COLUMNS`): its sample and probabilities (N, 3)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (len(samples), len(SYSTEMS)):
        raise ValueError(
            f"need probabilities ({len(samples)}, {len(SYSTEMS)}), got {probabilities.shape}"
        )
    rows = []
    for sample, p in zip(samples, probabilities):
        q = sample.params
        rows.append(
            {
                "image_id": sample.image_id,
                "structure": q["structure"],
                "formula": q["formula"],
                "modality": sample.modality,
                "zone_family": q["zone_family"],
                "net": q["net"],
                "ambiguity": q["ambiguity"],
                "ambiguity_note": q["ambiguity_note"],
                "dose_counts": float(q["dose_counts"]),
                "true": q["crystal_system"],
                "pred": SYSTEMS[int(np.argmax(p))],
                "confidence": float(p.max()),
                **{f"p_{c}": float(v) for c, v in zip(SYSTEMS, p)},
            }
        )
    return pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))


def _accuracy_at_coverage(pred: pd.DataFrame, coverage: float) -> float:
    """Accuracy of the most confident ``coverage`` share (ties kept together, as thresholds do)."""
    from grainflow.diffraction.evaluate import abstention_threshold, accuracy_coverage

    probs = pred[[f"p_{c}" for c in SYSTEMS]].to_numpy()
    labels = np.array([SYSTEMS.index(t) for t in pred["true"]])
    curve = accuracy_coverage(probs, labels)
    t = abstention_threshold(curve, coverage=coverage)
    kept = pred["confidence"].to_numpy() >= t
    return float((pred["true"] == pred["pred"]).to_numpy()[kept].mean())


def real_structure_summary(
    pred: pd.DataFrame, *, threshold: float, coverage: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores of predictions per structure × zone family, and pooled per modality and subset.

    Parameters
    ----------
    pred : DataFrame
        :func:`real_structure_predictions`.
    threshold : float
        Confidence below which the classifier abstains (chosen on the
        validation crystals by the abstention rule).
    coverage : float
        Target coverage of the ``accuracy_at_coverage`` column: the accuracy of
        the most confident ``coverage`` share of the subset's own patterns.

    Returns
    -------
    table : DataFrame
        One row per structure, modality and zone family (``rings`` for rings):
        ``patterns``, ``correct``, ``accuracy``, the most frequent prediction
        ``predicted``, mean ``confidence`` and class probabilities,
        ``accepted`` (confidence >= threshold) and ``accepted_correct``.
    summary : DataFrame
        One row per modality and subset: ``headline`` (all but the
        pseudo-symmetric cases), ``headline <system>``, ``shared net``,
        ``pseudo-symmetric`` and ``all``; ``patterns``, ``accuracy`` (full
        coverage), ``threshold``, ``coverage`` and ``accuracy_kept`` at that
        threshold, ``accuracy_at_coverage`` and its ``target_coverage``.
    """
    d = pred.assign(correct=(pred["true"] == pred["pred"]).to_numpy())
    d = d.assign(accepted=d["confidence"] >= threshold)
    d = d.assign(accepted_correct=d["accepted"] & d["correct"])
    keys = [
        "structure",
        "formula",
        "true",
        "modality",
        "zone_family",
        "net",
        "ambiguity",
        "ambiguity_note",
    ]
    g = d.groupby(keys, sort=False, dropna=False)
    table = g.agg(
        patterns=("correct", "size"),
        correct=("correct", "sum"),
        confidence=("confidence", "mean"),
        **{f"p_{c}": (f"p_{c}", "mean") for c in SYSTEMS},
        accepted=("accepted", "sum"),
        accepted_correct=("accepted_correct", "sum"),
    ).reset_index()
    table.insert(len(keys) + 2, "accuracy", table["correct"] / table["patterns"])
    table.insert(
        len(keys) + 3, "predicted", g["pred"].agg(lambda s: s.value_counts().index[0]).to_numpy()
    )
    table = table.rename(columns={"true": "system"})
    rows = []
    for modality in ("spot", "ring"):
        m = d[d["modality"] == modality]
        subsets = [("headline", m[m["ambiguity"] != "pseudo-symmetric"])]
        subsets += [
            (f"headline {s}", m[(m["ambiguity"] != "pseudo-symmetric") & (m["true"] == s)])
            for s in SYSTEMS
        ]
        subsets += [
            ("shared net", m[m["ambiguity"] == "shared"]),
            ("pseudo-symmetric", m[m["ambiguity"] == "pseudo-symmetric"]),
            ("all", m),
        ]
        for name, part in subsets:
            n = len(part)
            accepted = int(part["accepted"].sum())
            rows.append(
                {
                    "modality": modality,
                    "subset": name,
                    "patterns": n,
                    "accuracy": float(part["correct"].mean()) if n else np.nan,
                    "threshold": threshold,
                    "coverage": accepted / n if n else np.nan,
                    "accuracy_kept": (
                        float(part["accepted_correct"].sum()) / accepted if accepted else np.nan
                    ),
                    "target_coverage": coverage,
                    "accuracy_at_coverage": _accuracy_at_coverage(part, coverage) if n else np.nan,
                }
            )
    return table, pd.DataFrame(rows)


def score_real_structures(
    patterns: str | os.PathLike,
    checkpoints: Sequence[str | os.PathLike],
    abstention: str | os.PathLike,
    *,
    coverage: float,
    device: str = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A fold ensemble on the real-structure patterns: predictions, per-zone table, summary.

    Parameters
    ----------
    patterns : path
        The HDF5 file of :func:`real_structure_samples`.
    checkpoints : sequence of path
        The folds' ``best.pt`` of one architecture; their probabilities are averaged
        (:func:`grainflow.diffraction.scan.classify_scan`, each model in its own form;
        the patterns are already log-scaled, so only min–max normalised again).
    abstention : path
        The architecture's ``abstention.tsv``: its ``all`` row's threshold (the mean
        of the folds' thresholds, each chosen on the fold's validation crystals) is
        the ensemble's.
    coverage : float
        Target coverage of the summary's ``accuracy_at_coverage``.
    """
    from grainflow.checkpoint import load_checkpoint
    from grainflow.diffraction.representation import checkpoint_kinds
    from grainflow.diffraction.scan import classify_scan
    from grainflow.io.hdf5 import read_specimen

    kinds = checkpoint_kinds(load_checkpoint(checkpoints[0])) if checkpoints else ()
    # a model that reads one pattern kind (ring_profile: rings) is scored on that kind only
    samples = [s for s in read_specimen(patterns).samples if s.modality in kinds]
    if not samples:
        raise ValueError(f"{patterns} holds no patterns of the kinds {list(kinds)} the models read")
    probs = np.zeros((len(samples), len(SYSTEMS)))
    for modality in ("spot", "ring"):
        idx = [i for i, s in enumerate(samples) if s.modality == modality]
        if idx:
            images = np.stack([samples[i].image for i in idx]).astype(np.float32)
            p = classify_scan(
                images,
                checkpoints,
                modality=modality,
                size=images.shape[-1],
                log_scale=False,
                device=device,
            )
            probs[idx] = p.T
    table = pd.read_csv(abstention, sep="\t", dtype={"fold": str})
    pooled = table[table["fold"] == "all"]
    if pooled.empty:
        raise ValueError(f"{abstention} has no 'all' row; rerun the diffraction_abstention rule")
    threshold = float(pooled["threshold"].iloc[0])
    pred = real_structure_predictions(samples, probs)
    per_zone, summary = real_structure_summary(pred, threshold=threshold, coverage=coverage)
    return pred, per_zone, summary
