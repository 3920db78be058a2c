"""Crystals: lattices, point groups, random cells, reflections and zone axes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from grainflow.diffraction.spacegroups import SPACE_GROUP_GENERATORS, expand_positions
from grainflow.seeds import as_rng

__all__ = [
    "DEFAULT_SETTINGS",
    "SYSTEMS",
    "CENTRINGS",
    "BRAVAIS",
    "TRANSLATIONS",
    "BOHR_A",
    "BASIS_SYMMETRIES",
    "MIN_DISTANCE_A",
    "ELEMENTS",
    "PSEUDO_RATIOS",
    "lattice_vectors",
    "reciprocal_vectors",
    "point_group",
    "Crystal",
    "electron_wavelength_A",
    "scattering_factor",
    "random_crystal",
    "reflections",
    "zone_axes",
    "zone_family",
]


SYSTEMS = ("cubic", "hexagonal", "orthorhombic")

CENTRINGS = {"cubic": ("P", "I", "F"), "hexagonal": ("P",), "orthorhombic": ("P", "C", "I", "F")}

BRAVAIS = ("cP", "cI", "cF", "hP", "oP", "oC", "oI", "oF")

TRANSLATIONS = {
    "P": ((0, 0, 0),),
    "I": ((0, 0, 0), (0.5, 0.5, 0.5)),
    "C": ((0, 0, 0), (0.5, 0.5, 0)),
    "F": ((0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)),
}

BOHR_A = 0.529177  # Bohr radius, Å

#: how a Crystal's basis fills the cell (see :class:`Crystal`)
BASIS_SYMMETRIES = ("holohedral", "listed")

MIN_DISTANCE_A = 1.5  # closest approach of two atoms

# common elements of crystalline solids (light to heavy)
ELEMENTS = (
    3,
    4,
    5,
    6,
    7,
    8,
    11,
    12,
    13,
    14,
    15,
    16,
    19,
    20,
    22,
    24,
    25,
    26,
    27,
    28,
    29,
    30,
    31,
    32,
    38,
    40,
    41,
    42,
    47,
    48,
    49,
    50,
    56,
    57,
    72,
    73,
    74,
    78,
    79,
    82,
)


#: Defaults of the config's ``synthesize.diffraction`` block (all lengths and ranges physical).
DEFAULT_SETTINGS: dict = {
    "specimens": 30,  # crystals; systems assigned in turn: cubic, hexagonal, orthorhombic
    "sessions_per_specimen": 2,  # sessions; kinds (modalities) assigned in turn
    "images_per_session": 12,  # patterns per session, each in a new orientation
    "image_size_px": 64,  # side of spot patterns
    "ring_image_size_px": 128,  # side of ring patterns (their rings need the finer sampling)
    "modalities": ["spot", "ring"],
    "zone_axes": "principal",  # principal | low_index | random
    "max_zone_index": 1,  # largest |u|, |v|, |w| of a low-index zone axis
    "zone_draw": "family",  # family: a zone family uniformly, then one of its axes | axis
    "basis_atoms": [1, 3],  # independent atoms in the basis
    "nonsymmorphic_fraction": 0.0,  # share of crystals drawn in RANDOM_SPACE_GROUPS
    "cubic_a_A": [3.0, 6.0],
    "hexagonal_a_A": [2.5, 4.0],
    "hexagonal_c_over_a": [1.5, 1.9],
    "orthorhombic_abc_A": [3.0, 12.0],
    "orthorhombic_margin": 0.15,  # min relative distance of b/a, c/b, c/a from 1, √3, 2
    "debye_waller_A2": [0.3, 1.0],
    "voltage_kv": 200.0,
    "first_order_px": [3.5, 5.0],  # radius of a spot pattern's first spot; sets the camera length
    "ring_first_order_px": [10.0, 18.0],  # radius of the first ring, pixels of a ring pattern
    "detector_pixel_mm": 0.48,  # binned pixel of the 64-px spot pattern (30.7 mm detector)
    "tilt_mrad": 5.0,  # largest tilt of the beam off the zone axis
    "relrod_inv_A": [0.02, 0.05],  # effective relrod length σ_s, 1/Å
    "spot_sigma_px": [0.4, 0.7],  # spots stay resolved at 3.5 px spacing
    "dynamical_gamma": [0.5, 1.0],
    "intensity_spread": 0.3,  # σ of the log-normal spot intensity factor
    "ring_sigma_px": [0.5, 1.2],
    "crystallite_nm": [5.0, 50.0],
    "texture": [0.0, 0.6],
    "background": [0.005, 0.05],  # diffuse background at the centre / brightest diffraction
    "beam_stop_probability": 0.5,
    "dose_counts": [30.0, 3000.0],  # counts in the brightest diffracted pixel (log-uniform)
}


def lattice_vectors(system: str, a: float, b: float, c: float) -> np.ndarray:
    """Rows a, b, c of the direct lattice in Cartesian ångström, shape (3, 3).

    Cubic and orthorhombic: along x, y, z. Hexagonal: ``a`` along x, ``b`` at
    120° in the xy plane, ``c`` along z.
    """
    if system not in SYSTEMS:
        raise ValueError(f"system must be one of {SYSTEMS}, got {system=}")
    if min(a, b, c) <= 0:
        raise ValueError(f"lattice parameters must be positive, got {a=}, {b=}, {c=}")
    if system == "hexagonal":
        return np.array([[a, 0, 0], [-a / 2, a * math.sqrt(3) / 2, 0], [0, 0, c]], dtype=float)
    return np.diag([a, b, c]).astype(float)


def reciprocal_vectors(direct: np.ndarray) -> np.ndarray:
    """Rows a*, b*, c* (1/Å, without 2π) of the reciprocal lattice: ``a_i · a*_j = δ_ij``."""
    return np.linalg.inv(np.asarray(direct, dtype=float)).T


def _closure(generators: Sequence[np.ndarray]) -> np.ndarray:
    ops = {tuple(np.eye(3, dtype=int).ravel())}
    frontier = [np.eye(3, dtype=int)]
    while frontier:
        new = []
        for m in frontier:
            for g in generators:
                p = g @ m
                key = tuple(p.ravel())
                if key not in ops:
                    ops.add(key)
                    new.append(p)
        frontier = new
    return np.array(sorted(ops), dtype=int).reshape(-1, 3, 3)


def point_group(system: str) -> np.ndarray:
    """Operations of the holohedral point group on fractional coordinates, shape (n, 3, 3).

    m-3m (48) for cubic, 6/mmm (24) for hexagonal (in hexagonal axes), mmm (8)
    for orthorhombic. A position ``x`` (column) goes to ``M @ x``; directions
    [uvw] of the direct lattice transform the same way.
    """
    if system == "cubic":
        ops = []
        for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
            for signs in product((1, -1), repeat=3):
                m = np.zeros((3, 3), dtype=int)
                for i, (j, s) in enumerate(zip(perm, signs)):
                    m[i, j] = s
                ops.append(m)
        return np.array(ops)
    if system == "hexagonal":
        six = np.array([[1, -1, 0], [1, 0, 0], [0, 0, 1]])  # 60° about c: a -> a + b
        two = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]])  # 2-fold along a + b
        return _closure([six, two, -np.eye(3, dtype=int)])
    if system == "orthorhombic":
        return np.array([np.diag(s) for s in product((1, -1), repeat=3)])
    raise ValueError(f"system must be one of {SYSTEMS}, got {system=}")


# positions whose orbits fill the cell: constants or the free parameters x, y, z
_SITES = {
    "cubic": (
        "0,0,0",
        "1/2,1/2,1/2",
        "0,1/2,1/2",
        "1/2,0,0",
        "1/4,1/4,1/4",
        "x,0,0",
        "x,x,x",
        "x,1/2,1/2",
    ),
    "hexagonal": (
        "0,0,0",
        "0,0,1/2",
        "1/3,2/3,0",
        "1/3,2/3,1/2",
        "1/2,0,0",
        "1/2,0,1/2",
        "0,0,z",
        "1/3,2/3,z",
        "x,0,0",
        "x,2x,0",
    ),
    "orthorhombic": (
        "0,0,0",
        "1/2,0,0",
        "0,1/2,0",
        "0,0,1/2",
        "1/2,1/2,0",
        "1/2,0,1/2",
        "0,1/2,1/2",
        "1/2,1/2,1/2",
        "x,0,0",
        "0,y,0",
        "0,0,z",
        "x,y,0",
        "x,0,z",
        "0,y,z",
        "x,y,z",
    ),
}


def _site_position(site: str, free: Mapping[str, float]) -> list[float]:
    out = []
    for term in site.split(","):
        if "/" in term:
            n, d = term.split("/")
            out.append(float(n) / float(d))
        elif term in ("0",):
            out.append(0.0)
        else:  # "x", "2x", "z", ...
            factor = float(term[:-1]) if len(term) > 1 else 1.0
            out.append(factor * free[term[-1]])
    return out


def _orbit(position, ops: np.ndarray, translations) -> np.ndarray:
    pts = np.einsum("nij,j->ni", ops, np.asarray(position, dtype=float))
    pts = (pts[:, None, :] + np.asarray(translations, dtype=float)[None]).reshape(-1, 3)
    pts = np.round(pts % 1.0, 9) % 1.0
    return np.unique(pts, axis=0)


@dataclass(frozen=True)
class Crystal:
    """One crystal: lattice, centring and basis (JSON-friendly through :meth:`to_dict`).

    ``basis`` holds atoms as ``(Z, x, y, z)`` in fractional coordinates.
    ``symmetry="holohedral"`` (the random crystals): they are the independent
    atoms, and :meth:`cell` expands them by the holohedral point group and the
    centring. ``symmetry="listed"`` (real structures, whose space groups need
    not be symmorphic or holohedral): they are every atom of the cell up to the
    centring translations, which :meth:`cell` alone adds.
    """

    system: str
    centring: str
    a: float
    b: float
    c: float
    basis: tuple[tuple[int, float, float, float], ...]
    b_factor_A2: float = 0.5
    symmetry: str = "holohedral"
    space_group: str = ""  # the group a listed basis was drawn in (random_space_group_crystal)

    def __post_init__(self):
        if self.system not in SYSTEMS:
            raise ValueError(f"system must be one of {SYSTEMS}, got {self.system=}")
        if self.centring not in CENTRINGS[self.system]:
            raise ValueError(
                f"a {self.system} lattice is centred {CENTRINGS[self.system]}, got {self.centring=}"
            )
        if not self.basis:
            raise ValueError("a crystal needs at least one atom in its basis")
        if self.symmetry not in BASIS_SYMMETRIES:
            raise ValueError(f"symmetry must be one of {BASIS_SYMMETRIES}, got {self.symmetry=}")

    @property
    def bravais(self) -> str:
        return self.system[0] + self.centring

    def direct(self) -> np.ndarray:
        return lattice_vectors(self.system, self.a, self.b, self.c)

    def reciprocal(self) -> np.ndarray:
        return reciprocal_vectors(self.direct())

    def cell(self) -> tuple[np.ndarray, np.ndarray]:
        """All atoms of the cell: Z (n,) int and fractional positions (n, 3)."""
        if self.symmetry == "listed":
            ops = np.eye(3, dtype=int)[None]
            zs, pos = [], []
            for z, *xyz in self.basis:
                orbit = _orbit(xyz, ops, TRANSLATIONS[self.centring])
                zs += [int(z)] * len(orbit)
                pos.append(orbit)
            both = np.concatenate([np.array(zs, dtype=float)[:, None], np.concatenate(pos)], axis=1)
            both = np.unique(both, axis=0)  # an atom listed twice (or a centring image) once
            return both[:, 0].astype(int), both[:, 1:]
        ops = point_group(self.system)
        zs, pos = [], []
        for z, *xyz in self.basis:
            orbit = _orbit(xyz, ops, TRANSLATIONS[self.centring])
            zs += [int(z)] * len(orbit)
            pos.append(orbit)
        return np.array(zs, dtype=int), np.concatenate(pos)

    def d_spacing(self, hkl) -> np.ndarray:
        """Interplanar spacings (Å) of reflections ``hkl`` of shape (n, 3)."""
        g = np.atleast_2d(np.asarray(hkl, dtype=float)) @ self.reciprocal()
        return 1.0 / np.linalg.norm(g, axis=1)

    def structure_factor(self, hkl) -> np.ndarray:
        """Complex structure factors (Å) of reflections ``hkl`` of shape (n, 3).

        ``F(hkl) = Σ_j f_j(s) exp(-B s²) exp(2πi (h x_j + k y_j + l z_j))`` with
        ``s = sin θ / λ = 1 / (2 d)``, the electron scattering factor ``f``
        (:func:`scattering_factor`) and the Debye–Waller factor ``B`` (Å²).
        """
        hkl = np.atleast_2d(np.asarray(hkl, dtype=float))
        z, pos = self.cell()
        s = 0.5 * np.linalg.norm(hkl @ self.reciprocal(), axis=1)  # sin θ / λ
        f = scattering_factor(z[None, :], s[:, None]) * np.exp(-self.b_factor_A2 * s**2)[:, None]
        return np.sum(f * np.exp(2j * np.pi * (hkl @ pos.T)), axis=1)

    def to_dict(self) -> dict:
        extra = {} if self.symmetry == "holohedral" else {"basis_symmetry": self.symmetry}
        if self.space_group:
            extra["space_group"] = self.space_group
        return {
            "crystal_system": self.system,
            "centring": self.centring,
            "bravais": self.bravais,
            "class_index": SYSTEMS.index(self.system),
            "bravais_index": BRAVAIS.index(self.bravais),
            "a_A": self.a,
            "b_A": self.b,
            "c_A": self.c,
            "basis": [list(atom) for atom in self.basis],
            "b_factor_A2": self.b_factor_A2,
            **extra,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Crystal:
        return cls(
            system=d["crystal_system"],
            centring=d["centring"],
            a=float(d["a_A"]),
            b=float(d["b_A"]),
            c=float(d["c_A"]),
            basis=tuple((int(z), float(x), float(y), float(w)) for z, x, y, w in d["basis"]),
            b_factor_A2=float(d["b_factor_A2"]),
            symmetry=d.get("basis_symmetry", "holohedral"),
            space_group=str(d.get("space_group", "")),
        )


def electron_wavelength_A(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å at ``voltage_kv`` kilovolts (0.02508 Å at 200 kV)."""
    if not voltage_kv > 0:
        raise ValueError(f"voltage must be positive, got {voltage_kv=}")
    v = 1e3 * voltage_kv
    return 12.26426 / math.sqrt(v * (1 + 0.978476e-6 * v))


def scattering_factor(z, s):
    """Electron scattering factor (Å) of atomic number ``z`` at ``s = sin θ / λ`` (1/Å).

    Screened Coulomb (Wentzel–Lenz) atom, first Born approximation:
    ``2 Z / (a0 (q² + R⁻²))`` with ``q = 4π s`` and ``R = a0 Z^(-1/3)``.
    Broadcasts ``z`` against ``s``.

    Notes
    -----
    With ``a0 = 0.529 Å`` this gives the Rutherford limit ``Z / (8π² a0 s²)`` at
    large ``s`` and ``f(0) = 2 a0 Z^(1/3)``: a Z-dependent approximation, within a
    factor of about 2 of the Doyle–Turner tables at small ``s``, which is enough for
    relative intensities.
    """
    z = np.asarray(z, dtype=float)
    s = np.asarray(s, dtype=float)
    radius = BOHR_A * z ** (-1.0 / 3.0)
    q = 4 * np.pi * s
    return 2 * z / (BOHR_A * (q**2 + radius**-2.0))


def uniform_in(rng, lo_hi) -> float:
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi))


def log_uniform_in(rng, lo_hi) -> float:
    lo, hi = lo_hi
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


#: axis ratios an orthorhombic cell keeps away from (see :func:`_pseudo_symmetric`)
PSEUDO_RATIOS = (1.0, math.sqrt(3), 2.0)

_PSEUDO_RATIOS_TEXT = "1, √3 and 2"  # the same, as error messages name them


def _pseudo_symmetric(abc: Sequence[float], margin: float) -> bool:
    """Whether a ratio of two of ``abc`` lies within ``margin`` (relative) of :data:`PSEUDO_RATIOS`.

    The 2-D lattice of a principal zone of an orthorhombic crystal is a
    rectangle (P, F; C along [100] and [010] with one side halved) or a
    centred rectangle (I; C along [001]). It looks square when its sides are
    nearly equal — a ratio of two axes near 1, or near 2 for a halved side —
    and hexagonal when a centred rectangle's sides are in the ratio √3 (the
    orthohexagonal cell). Avoiding 1, √3 and 2 therefore keeps every
    principal-zone pattern, and the ring sequence, away from a cubic- or
    hexagonal-looking one (ratio 1 also rules out the pseudo-cubic centred
    cells, e.g. cF = tI with c/a = √2, which need two equal axes).
    """
    a, b, c = sorted(abc)
    return any(abs(r / t - 1.0) < margin for r in (b / a, c / b, c / a) for t in PSEUDO_RATIOS)


def _too_close(crystal: Crystal) -> bool:
    _, pos = crystal.cell()
    if len(pos) < 2:
        return min(crystal.a, crystal.b, crystal.c) < MIN_DISTANCE_A
    shifts = np.array(list(product((-1, 0, 1), repeat=3)), dtype=float)
    diff = pos[:, None, None, :] - pos[None, :, None, :] + shifts[None, None]
    dist = np.linalg.norm(diff @ crystal.direct(), axis=-1)
    n = len(pos)
    dist[np.arange(n), np.arange(n), 13] = np.inf  # an atom and itself (zero shift)
    return bool(dist.min() < MIN_DISTANCE_A)


#: space groups that random crystals are also drawn in (``nonsymmorphic_fraction``), with
#: their centring: screw axes and glide planes (and, for P-6m2, a point group below the
#: holohedry), whose systematic absences and intensities the symmorphic crystals never show
RANDOM_SPACE_GROUPS = {
    "cubic": (("Fd-3m", "F"),),
    "hexagonal": (("P6_3/mmc", "P"), ("P6_3mc", "P"), ("P-6m2", "P")),
    "orthorhombic": (("Pnma", "P"), ("Pnnm", "P"), ("Cmcm", "C"), ("Cmce", "C")),
}

#: special coordinates a random atom of a space-group crystal may sit on (else free)
_SPECIAL = {
    "cubic": (0.0, 0.5, 0.125, 0.625),
    "hexagonal": (0.0, 0.25, 0.5),
    "orthorhombic": (0.0, 0.25, 0.5),
}

#: most atoms in the cell of a random space-group crystal
MAX_CELL_ATOMS = 48


def _space_group_position(system: str, rng) -> tuple[float, float, float]:
    """A random position that is special in some coordinates (so that orbits stay small)."""

    def coordinate():
        if rng.random() < 0.6:
            return float(rng.choice(_SPECIAL[system]))
        return float(rng.uniform(0.05, 0.95))

    x, y, z = coordinate(), coordinate(), coordinate()
    if system == "cubic" and rng.random() < 0.3:
        y = z = x  # 32e: x, x, x
    if system == "hexagonal":
        u = rng.random()
        if u < 0.35:
            x, y = 1 / 3, 2 / 3  # 2b, 2c, 2d, 4f: on the 3-fold axes
        elif u < 0.5:
            y = 2 * x % 1.0  # 6h: x, 2x, z
    return x, y, z


def random_space_group_crystal(
    system: str,
    abc: tuple[float, float, float],
    *,
    rng,
    n_atoms: int,
    b_factor_A2: float,
    max_tries: int = 200,
) -> Crystal:
    """A random crystal in one of the :data:`RANDOM_SPACE_GROUPS` of ``system``.

    Each of ``n_atoms`` independent atoms (element from :data:`ELEMENTS`) sits on
    a position special in some of its coordinates; the space group's generators
    fill the cell (:func:`grainflow.diffraction.spacegroups.expand_positions`),
    and a position is kept when no two atoms come closer than ``MIN_DISTANCE_A``
    and the cell holds at most :data:`MAX_CELL_ATOMS`. At least one atom is
    placed. The crystal has ``symmetry="listed"`` and the group's name in
    ``space_group``.
    """
    group, centring = RANDOM_SPACE_GROUPS[system][
        int(rng.integers(len(RANDOM_SPACE_GROUPS[system])))
    ]
    generators = SPACE_GROUP_GENERATORS[group]
    atoms: list[tuple] = []
    crystal = None
    for _ in range(max_tries):
        if len(atoms) >= n_atoms:
            break
        z = int(rng.choice(ELEMENTS))
        orbit = [
            (z, *map(float, p))
            for p in expand_positions(_space_group_position(system, rng), generators)
        ]
        if len(atoms) + len(orbit) > MAX_CELL_ATOMS:  # distinct positions: the cell holds more
            continue
        trial = Crystal(
            system,
            centring,
            *abc,
            basis=(*atoms, *orbit),
            b_factor_A2=b_factor_A2,
            symmetry="listed",
            space_group=group,
        )
        if len(trial.cell()[0]) <= MAX_CELL_ATOMS and not _too_close(trial):
            atoms += orbit
            crystal = trial
    if crystal is None:
        raise ValueError(
            f"no atom of a {group} crystal with a, b, c = {abc} Å fits {MAX_CELL_ATOMS} atoms "
            f"at least {MIN_DISTANCE_A} Å apart in {max_tries} tries"
        )
    return crystal


def random_crystal(
    system: str,
    *,
    rng,
    centring: str | None = None,
    settings: Mapping | None = None,
    max_tries: int = 200,
) -> Crystal:
    """A random crystal of ``system`` with lattice parameters and basis from ``settings``.

    Parameters
    ----------
    system : {"cubic", "hexagonal", "orthorhombic"}
    rng : int or Generator
    centring : str, optional
        Lattice centring (default: drawn uniformly from :data:`CENTRINGS`).
    settings : mapping, optional
        Ranges as in :data:`DEFAULT_SETTINGS` (``cubic_a_A``, ``hexagonal_a_A``,
        ``hexagonal_c_over_a``, ``orthorhombic_abc_A``, ``orthorhombic_margin``,
        ``basis_atoms``, ``debye_waller_A2``).

    Returns
    -------
    Crystal
        The first atom sits at the origin; the others on random sites whose
        orbits keep every pair of atoms at least 1.5 Å apart.

    Notes
    -----
    Lattices ``cP, cI, cF`` (cubic, ``a``), ``hP`` (hexagonal, ``a``, ``c``,
    γ = 120°) and ``oP, oC, oI, oF`` (orthorhombic, ``a ≠ b ≠ c``), with lattice
    parameters drawn from ranges in ångström. The orthorhombic ratios b/a, c/b,
    c/a stay at least ``orthorhombic_margin`` (relative) away from 1, √3 and 2
    (:data:`PSEUDO_RATIOS`), so that no principal zone of an orthorhombic crystal
    shows a pseudo-square or pseudo-hexagonal net and no cell is pseudo-tetragonal
    or orthohexagonal: a single pattern could not tell those from a cubic or
    hexagonal crystal.

    The basis is ``basis_atoms`` (default 1–3) independent atoms (element ``Z``
    drawn from the common elements :data:`ELEMENTS`), each on a special or free
    position whose orbit under the holohedral point group (m-3m, 6/mmm, mmm) and
    the centring translations fills the cell: the structures are symmorphic (space
    groups Pm-3m, Im-3m, Fm-3m, P6/mmm, Pmmm, Cmmm, Immm, Fmmm), so the
    intensities have the full Laue symmetry and the only systematic absences are
    the lattice's (I: h+k+l odd; F: mixed parity; C: h+k odd). Atoms closer than
    1.5 Å (any periodic image) are not placed.

    With ``nonsymmorphic_fraction`` > 0 (and no ``centring`` asked for), that share
    of the crystals is drawn instead in a space group of :data:`RANDOM_SPACE_GROUPS`
    (:func:`random_space_group_crystal`): screw axes and glide planes, whose
    absences real hcp, diamond, wurtzite and cementite show. A cell too small for
    the group's orbits falls back to the symmorphic draw.
    """
    rng = as_rng(rng)
    s = {**DEFAULT_SETTINGS, **(settings or {})}
    if system not in SYSTEMS:
        raise ValueError(f"system must be one of {SYSTEMS}, got {system=}")
    centring_given = centring
    centring = centring or str(rng.choice(CENTRINGS[system]))
    if system == "cubic":
        a = uniform_in(rng, s["cubic_a_A"])
        abc = (a, a, a)
    elif system == "hexagonal":
        a = uniform_in(rng, s["hexagonal_a_A"])
        abc = (a, a, a * uniform_in(rng, s["hexagonal_c_over_a"]))
    else:
        lo, hi = s["orthorhombic_abc_A"]
        for _ in range(10_000):
            abc = tuple(float(v) for v in rng.uniform(lo, hi, 3))
            if not _pseudo_symmetric(abc, s["orthorhombic_margin"]):
                break
        else:
            raise ValueError(
                f"no orthorhombic cell in {s['orthorhombic_abc_A']} Å keeps b/a, c/b, c/a "
                f"{s['orthorhombic_margin']} away from {_PSEUDO_RATIOS_TEXT}; widen the range or lower "
                "orthorhombic_margin"
            )
    b_factor = uniform_in(rng, s["debye_waller_A2"])
    lo, hi = s["basis_atoms"]
    n_atoms = int(rng.integers(lo, hi + 1))
    fraction = float(s["nonsymmorphic_fraction"])
    if centring_given is None and fraction > 0 and rng.random() < fraction:
        try:
            return random_space_group_crystal(
                system, abc, rng=rng, n_atoms=n_atoms, b_factor_A2=b_factor, max_tries=max_tries
            )
        except ValueError:  # a cell too small for the group's orbits: a symmorphic crystal
            pass
    basis = [(int(rng.choice(ELEMENTS)), 0.0, 0.0, 0.0)]
    crystal = Crystal(system, centring, *abc, basis=tuple(basis), b_factor_A2=b_factor)
    tries = 0
    while len(basis) < n_atoms and tries < max_tries:
        tries += 1
        site = str(rng.choice(_SITES[system][1:]))
        free = {k: float(rng.uniform(0.05, 0.45)) for k in "xyz"}
        atom = (int(rng.choice(ELEMENTS)), *_site_position(site, free))
        trial = Crystal(system, centring, *abc, basis=(*basis, atom), b_factor_A2=b_factor)
        if not _too_close(trial):
            basis.append(atom)
            crystal = trial
    return crystal


def reflections(
    crystal: Crystal, g_max: float, *, select=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All reflections with ``0 < |g| <= g_max`` (1/Å) and non-zero structure factor.

    ``select``, a function of ``g`` (n, 3) returning a boolean mask (n,),
    keeps only some reflections before their structure factors are computed
    (e.g. those near the Ewald sphere of a spot pattern).

    Returns
    -------
    hkl : ndarray of shape (n, 3), int
    g : ndarray of shape (n, 3)
        Reciprocal-lattice vectors in Cartesian 1/Å.
    intensity : ndarray of shape (n,)
        ``|F|²`` (Å²); reflections with ``|F|² < 1e-8 max`` (systematic absences)
        are left out.
    """
    if not g_max > 0:
        raise ValueError(f"g_max must be positive, got {g_max=}")
    direct = crystal.direct()
    limits = [int(math.floor(g_max * np.linalg.norm(v))) for v in direct]  # |h| <= g_max |a|
    axes = [np.arange(-n, n + 1) for n in limits]
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    g = hkl @ crystal.reciprocal()
    norm = np.linalg.norm(g, axis=1)
    keep = (norm > 0) & (norm <= g_max)
    hkl, g = hkl[keep], g[keep]
    if select is not None and len(hkl):
        keep = np.asarray(select(g), dtype=bool)
        hkl, g = hkl[keep], g[keep]
    if not len(hkl):
        return hkl, g, np.zeros(0)
    f = crystal.structure_factor(hkl)
    intensity = np.abs(f) ** 2
    present = intensity > 1e-8 * intensity.max()
    return hkl[present], g[present], intensity[present]


def zone_axes(system: str, mode: str = "low_index", *, max_index: int = 1) -> np.ndarray:
    """Candidate zone axes [uvw] (direct-lattice directions, one of each ± pair), shape (n, 3).

    ``principal``: cubic 〈001〉, hexagonal [001] (= [0001]), orthorhombic [100],
    [010], [001]. ``low_index``: every [uvw] with ``max(|u|, |v|, |w|) <=
    max_index`` and ``gcd = 1``.
    """
    if mode == "principal":
        if system == "hexagonal":
            return np.array([[0, 0, 1]])
        return np.eye(3, dtype=int)[::-1]
    if mode != "low_index":
        raise ValueError(f"zone axes are 'principal' or 'low_index', got {mode=}")
    if max_index < 1:
        raise ValueError(f"max_index must be >= 1, got {max_index=}")
    out = []
    r = range(-max_index, max_index + 1)
    for uvw in product(r, r, r):
        if uvw == (0, 0, 0) or math.gcd(*map(abs, uvw)) != 1:
            continue
        first = next(v for v in uvw if v)
        if first > 0:
            out.append(uvw)
    return np.array(out, dtype=int)


def zone_family(system: str, uvw) -> str:
    """Family of a zone axis under the point group.

    Cubic ``"<011>"`` (m-3m permutes the axes), hexagonal 4-index
    ``"<11-20>"``, orthorhombic ``"<100>"``, ``"<010>"``, ``"<001>"`` (mmm
    only flips signs: [100] and [001] are different zones).
    """
    uvw = np.asarray(uvw, dtype=int)
    images = np.einsum("nij,j->ni", point_group(system), uvw)
    best = max(map(tuple, images))
    if system == "hexagonal":
        u, v, w = best
        four = np.array([2 * u - v, 2 * v - u, -(u + v), 3 * w])
        four //= math.gcd(*map(abs, four.tolist()))
        return "<" + "".join(str(int(x)) for x in four) + ">"
    if system == "orthorhombic":
        return "<" + "".join(str(abs(int(x))) for x in uvw) + ">"
    return "<" + "".join(str(int(x)) for x in sorted(map(abs, best))) + ">"
