"""Kinematic electron diffraction patterns of cubic, hexagonal and orthorhombic crystals.

The ``diffraction`` task's data: each *specimen* is one crystal (lattice,
centring, a few atoms in the basis), imaged in several *sessions* (a spot or a
ring pattern, camera length, noise, beam stop), each image in a new
orientation. Labels are free: the crystal system is a parameter
(``params["crystal_system"]``, ``params["class_index"]``), the images carry no
label maps.

Physics
-------
Crystals
    Lattices ``cP, cI, cF`` (cubic, ``a``), ``hP`` (hexagonal, ``a``, ``c``,
    γ = 120°) and ``oP, oC, oI, oF`` (orthorhombic, ``a ≠ b ≠ c``). Lattice
    parameters are drawn from ranges in ångström; the orthorhombic ratios
    b/a, c/b, c/a stay at least ``orthorhombic_margin`` (relative) away from
    1, √3 and 2 (:data:`PSEUDO_RATIOS`), so that no principal zone of an
    orthorhombic crystal shows a pseudo-square or pseudo-hexagonal net and no
    cell is pseudo-tetragonal or orthohexagonal: a single pattern could not
    tell those from a cubic or hexagonal crystal. (With the former margin of
    0.1 from 1, √2 and √3, the DiffractionCNN classified held-out
    orthorhombic spot patterns whose net had sides within 15 % of each other
    right 46 % of the time even at high dose, those with sides in the ratio
    2–3 93 %.) The basis is 1–3 independent atoms (element ``Z`` drawn
    from common elements), each on a special or free position whose orbit
    under the holohedral point group (m-3m, 6/mmm, mmm) and the centring
    translations fills the cell: the structures are symmorphic (space
    groups Pm-3m, Im-3m, Fm-3m, P6/mmm, Pmmm, Cmmm, Immm, Fmmm), so the
    intensities have the full Laue symmetry and the only systematic absences
    are the lattice's (I: h+k+l odd; F: mixed parity; C: h+k odd). Atoms
    closer than 1.5 Å (any periodic image) are not placed.
Scattering
    Structure factor ``F(hkl) = Σ_j f_j(s) exp(-B s²) exp(2πi (h x_j + k y_j + l z_j))``
    with ``s = sin θ / λ = 1 / (2 d)`` and a Debye–Waller factor ``B`` (Å²).
    The electron scattering factor is that of a screened Coulomb (Wentzel–Lenz)
    atom in the first Born approximation,
    ``f(q) = 2 Z / (a0 (q² + R⁻²))`` (Å), ``q = 4π s``, ``R = a0 Z^(-1/3)``,
    ``a0 = 0.529 Å``: the Rutherford limit ``Z / (8π² a0 s²)`` at large ``s``
    and ``f(0) = 2 a0 Z^(1/3)`` — a Z-dependent approximation, within a factor
    of about 2 of the Doyle–Turner tables at small ``s``, which is enough for
    relative intensities. Relativistic electron wavelength from the
    accelerating voltage (0.0251 Å at 200 kV).
Spot patterns (selected-area electron diffraction)
    The beam runs along a zone axis [uvw] (``zone_axes``: ``principal`` —
    the system's axes of highest symmetry, cubic 〈001〉, hexagonal [001],
    orthorhombic [100], [010], [001]; ``low_index`` — any [uvw] with
    |u|, |v|, |w| ≤ ``max_zone_index``; ``random`` — a uniformly random
    direction), tilted off it by up to ``tilt_mrad``. A reflection ``g`` with
    excitation error ``s_g = -(g·n) - λ|g|²/2`` (``n`` the beam direction)
    has intensity ``|F|^(2γ) exp(-s_g² / 2σ_s²)`` times a log-normal factor:
    ``σ_s`` is the effective relrod length (thin-foil shape function, beam
    convergence, foil bending), ``γ`` in [0.5, 1] mimics dynamical scattering
    (Blackman: strong beams grow like ``|F|`` rather than ``|F|²``) and the
    log-normal spread its thickness- and orientation-dependent scatter. Spots
    are Gaussians at ``L λ g / p`` pixels from the centre (binned detector
    pixel ``p``), in a random in-plane rotation. As an operator does, the
    camera length ``L`` is chosen for each pattern so that its first
    reflection lies ``first_order_px`` from the centre (recorded as
    ``camera_length_mm``); absolute d-spacings are therefore not in the
    image, only their ratios and angles, which is what the crystal system
    is read from. The default, 3.5–5 px on a 64-px pattern (a short camera
    length showing many orders), puts neighbouring spots within the
    receptive field of the DiffractionCNN's second convolution (8 px) and
    several periods of the net within that of its third (18 px); at 5–9 px
    the same network and training (1,600 patterns, 8 epochs) reached 63 % on
    held-out spot patterns instead of 80 %. ``spot_sigma_px`` (0.4–0.7 px)
    keeps spots 3.5 px apart resolved.
Ring patterns (polycrystalline electron diffraction)
    Every ``|g|`` (reflections of equal ``|g|`` summed, which counts the
    multiplicity, accidental coincidences included) gives a ring of radius
    ``L λ |g| / p`` whose integrated intensity is ``m |F|² d`` (Vainshtein),
    spread around its circumference, with a Gaussian radial profile (detector
    and crystallite-size broadening), and modulated by texture
    ``1 + t_k cos 2(φ - φ0)`` (uneven ring intensity of a textured film). The
    first ring with 1 % of the strongest ring's intensity lies
    ``ring_first_order_px`` from the centre (5–9 px: six to ten rings
    resolved inside the frame).
Detector
    A bright central beam (blocked by a beam stop — a disc with an arm to the
    edge — in a fraction of sessions), a diffuse inelastic background
    ``exp(-r / r0)``, a Gaussian point-spread function, Poisson noise at
    ``dose`` counts in the brightest diffracted pixel and Gaussian read
    noise (1 count). The image is ``log(1 + counts)`` scaled to [0, 1]
    (:func:`log_normalize`), centred at ``((H - 1) / 2, (W - 1) / 2)`` so
    that ``np.rot90`` is a rotation about the direct beam.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
from scipy import ndimage as ndi

from grainflow.io import Sample
from grainflow.seeds import as_rng, derive_seed

__all__ = [
    "SYSTEMS",
    "CENTRINGS",
    "BRAVAIS",
    "MODALITIES",
    "ZONE_AXES",
    "DEFAULT_SETTINGS",
    "Crystal",
    "lattice_vectors",
    "reciprocal_vectors",
    "point_group",
    "electron_wavelength_A",
    "scattering_factor",
    "random_crystal",
    "reflections",
    "zone_axes",
    "zone_family",
    "spot_intensity",
    "ring_intensity",
    "detector_counts",
    "log_normalize",
    "render_pattern",
    "synthesize_diffraction_specimen",
    "pretraining_samples",
]

SYSTEMS = ("cubic", "hexagonal", "orthorhombic")
CENTRINGS = {"cubic": ("P", "I", "F"), "hexagonal": ("P",), "orthorhombic": ("P", "C", "I", "F")}
BRAVAIS = ("cP", "cI", "cF", "hP", "oP", "oC", "oI", "oF")
MODALITIES = ("spot", "ring")
ZONE_AXES = ("principal", "low_index", "random")
TRANSLATIONS = {
    "P": ((0, 0, 0),),
    "I": ((0, 0, 0), (0.5, 0.5, 0.5)),
    "C": ((0, 0, 0), (0.5, 0.5, 0)),
    "F": ((0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)),
}
BOHR_A = 0.529177  # Bohr radius, Å
MIN_DISTANCE_A = 1.5  # closest approach of two atoms
READ_NOISE_COUNTS = 1.0
PSF_SIGMA_PX = 0.4
BEAM_STOP_RADIUS_PX = (1.2, 2.5)  # covers the direct beam, not the first-order spots (>= 3.5 px)
# common elements of crystalline solids (light to heavy)
ELEMENTS = (3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15, 16, 19, 20, 22, 24, 25, 26, 27, 28, 29, 30,
            31, 32, 38, 40, 41, 42, 47, 48, 49, 50, 56, 57, 72, 73, 74, 78, 79, 82)

#: Defaults of the config's ``synthesize.diffraction`` block (all lengths and ranges physical).
DEFAULT_SETTINGS: dict = {
    "specimens": 30,  # crystals; systems assigned in turn: cubic, hexagonal, orthorhombic
    "sessions_per_specimen": 2,  # sessions; kinds (modalities) assigned in turn
    "images_per_session": 12,  # patterns per session, each in a new orientation
    "image_size_px": 64,
    "modalities": ["spot", "ring"],
    "zone_axes": "principal",  # principal | low_index | random
    "max_zone_index": 1,  # largest |u|, |v|, |w| of a low-index zone axis
    "basis_atoms": [1, 3],  # independent atoms in the basis
    "cubic_a_A": [3.0, 6.0],
    "hexagonal_a_A": [2.5, 4.0],
    "hexagonal_c_over_a": [1.5, 1.9],
    "orthorhombic_abc_A": [3.0, 12.0],
    "orthorhombic_margin": 0.15,  # min relative distance of b/a, c/b, c/a from 1, √3, 2
    "debye_waller_A2": [0.3, 1.0],
    "voltage_kv": 200.0,
    "first_order_px": [3.5, 5.0],  # radius of a spot pattern's first spot; sets the camera length
    "ring_first_order_px": [5.0, 9.0],  # radius of the first ring (ring patterns)
    "detector_pixel_mm": 0.48,  # binned pixel of the 64-px pattern (30.7 mm detector)
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


# --------------------------------------------------------------------------- crystals


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
    "cubic": ("0,0,0", "1/2,1/2,1/2", "0,1/2,1/2", "1/2,0,0", "1/4,1/4,1/4", "x,0,0",
              "x,x,x", "x,1/2,1/2"),
    "hexagonal": ("0,0,0", "0,0,1/2", "1/3,2/3,0", "1/3,2/3,1/2", "1/2,0,0", "1/2,0,1/2",
                  "0,0,z", "1/3,2/3,z", "x,0,0", "x,2x,0"),
    "orthorhombic": ("0,0,0", "1/2,0,0", "0,1/2,0", "0,0,1/2", "1/2,1/2,0", "1/2,0,1/2",
                     "0,1/2,1/2", "1/2,1/2,1/2", "x,0,0", "0,y,0", "0,0,z", "x,y,0", "x,0,z",
                     "0,y,z", "x,y,z"),
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

    ``basis`` holds the independent atoms as ``(Z, x, y, z)`` in fractional
    coordinates; :meth:`cell` expands them by the point group and centring.
    """

    system: str
    centring: str
    a: float
    b: float
    c: float
    basis: tuple[tuple[int, float, float, float], ...]
    b_factor_A2: float = 0.5

    def __post_init__(self):
        if self.system not in SYSTEMS:
            raise ValueError(f"system must be one of {SYSTEMS}, got {self.system=}")
        if self.centring not in CENTRINGS[self.system]:
            raise ValueError(
                f"a {self.system} lattice is centred {CENTRINGS[self.system]}, got {self.centring=}"
            )
        if not self.basis:
            raise ValueError("a crystal needs at least one atom in its basis")

    @property
    def bravais(self) -> str:
        return self.system[0] + self.centring

    def direct(self) -> np.ndarray:
        return lattice_vectors(self.system, self.a, self.b, self.c)

    def reciprocal(self) -> np.ndarray:
        return reciprocal_vectors(self.direct())

    def cell(self) -> tuple[np.ndarray, np.ndarray]:
        """All atoms of the cell: Z (n,) int and fractional positions (n, 3)."""
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
        """Complex structure factors (Å) of reflections ``hkl`` of shape (n, 3)."""
        hkl = np.atleast_2d(np.asarray(hkl, dtype=float))
        z, pos = self.cell()
        s = 0.5 * np.linalg.norm(hkl @ self.reciprocal(), axis=1)  # sin θ / λ
        f = scattering_factor(z[None, :], s[:, None]) * np.exp(-self.b_factor_A2 * s**2)[:, None]
        return np.sum(f * np.exp(2j * np.pi * (hkl @ pos.T)), axis=1)

    def to_dict(self) -> dict:
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
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Crystal:
        return cls(
            system=d["crystal_system"], centring=d["centring"], a=float(d["a_A"]),
            b=float(d["b_A"]), c=float(d["c_A"]),
            basis=tuple((int(z), float(x), float(y), float(w)) for z, x, y, w in d["basis"]),
            b_factor_A2=float(d["b_factor_A2"]),
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
    """
    z = np.asarray(z, dtype=float)
    s = np.asarray(s, dtype=float)
    radius = BOHR_A * z ** (-1.0 / 3.0)
    q = 4 * np.pi * s
    return 2 * z / (BOHR_A * (q**2 + radius**-2.0))


def _uniform(rng, lo_hi) -> float:
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi))


def _log_uniform(rng, lo_hi) -> float:
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
    """
    rng = as_rng(rng)
    s = {**DEFAULT_SETTINGS, **(settings or {})}
    if system not in SYSTEMS:
        raise ValueError(f"system must be one of {SYSTEMS}, got {system=}")
    centring = centring or str(rng.choice(CENTRINGS[system]))
    if system == "cubic":
        a = _uniform(rng, s["cubic_a_A"])
        abc = (a, a, a)
    elif system == "hexagonal":
        a = _uniform(rng, s["hexagonal_a_A"])
        abc = (a, a, a * _uniform(rng, s["hexagonal_c_over_a"]))
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
    b_factor = _uniform(rng, s["debye_waller_A2"])
    lo, hi = s["basis_atoms"]
    n_atoms = int(rng.integers(lo, hi + 1))
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


# --------------------------------------------------------------------------- reflections


def reflections(crystal: Crystal, g_max: float, *,
                select=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


# --------------------------------------------------------------------------- rendering


def _frame(size: int):
    centre = (size - 1) / 2.0
    r, c = np.mgrid[0:size, 0:size].astype(float)
    return centre, r - centre, c - centre


def _in_plane_basis(n: np.ndarray, rotation_deg: float) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([1.0, 0, 0]) if abs(n[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = helper - (helper @ n) * n
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    t = math.radians(rotation_deg)
    return math.cos(t) * e1 + math.sin(t) * e2, -math.sin(t) * e1 + math.cos(t) * e2


def _beam_direction(crystal: Crystal, p: Mapping) -> np.ndarray:
    if p.get("zone_axis") is not None:
        n = np.asarray(p["zone_axis"], dtype=float) @ crystal.direct()
    else:
        n = np.asarray(p["beam_direction"], dtype=float)
    n = n / np.linalg.norm(n)
    tilt = 1e-3 * float(p.get("tilt_mrad", 0.0))  # radians
    if tilt:
        e1, e2 = _in_plane_basis(n, float(p.get("tilt_azimuth_deg", 0.0)))
        n = math.cos(tilt) * n + math.sin(tilt) * e1
    return n / np.linalg.norm(n)


FIT_G_MAX = 2.0  # 1/Å: the first reflection of any crystal here lies within


def _scale_px(p: Mapping) -> float:
    """Pixels per 1/Å on the detector: camera constant L λ over the pixel size."""
    return p["camera_length_mm"] * electron_wavelength_A(p["voltage_kv"]) / p["detector_pixel_mm"]


def _fitted_scale(g: np.ndarray, strength: np.ndarray, p: Mapping, *, rel: float = 0.01) -> float:
    """Pixels per 1/Å that put the first reflection (``strength >= rel max``) at ``first_order_px``.

    Without ``first_order_px`` in ``p`` the camera length ``camera_length_mm`` gives the scale.
    """
    if p.get("first_order_px") is None:
        return _scale_px(p)
    keep = (strength >= rel * strength.max()) & (g > 1e-9) if len(g) else np.zeros(0, bool)
    if not keep.any():  # nothing excited (a random orientation far from any zone)
        return p["first_order_px"] / 0.5
    return float(p["first_order_px"] / g[keep].min())


def camera_length_mm(scale_px_per_inv_A: float, p: Mapping) -> float:
    """Camera length (mm) that gives ``scale_px_per_inv_A`` (pixels per 1/Å) on this detector."""
    return scale_px_per_inv_A * p["detector_pixel_mm"] / electron_wavelength_A(p["voltage_kv"])


def spot_intensity(crystal: Crystal, p: Mapping, *, size: int, rng) -> tuple[np.ndarray, dict]:
    """Diffracted intensity of a zone-axis spot pattern (no direct beam, no noise).

    Parameters
    ----------
    crystal : Crystal
    p : mapping
        ``zone_axis`` [uvw] (or ``beam_direction`` Cartesian), ``tilt_mrad``,
        ``tilt_azimuth_deg``, ``rotation_deg``, ``voltage_kv``,
        ``detector_pixel_mm``, ``relrod_inv_A``, ``spot_sigma_px``,
        ``dynamical_gamma``, ``intensity_spread``, and either
        ``first_order_px`` (the camera length is chosen so that the
        shortest excited reflection with ``|F|² >= 1 %`` of the strongest
        lies this far from the centre) or ``camera_length_mm``.
    size : int
        Side of the square pattern, pixels.
    rng : int or Generator
        Draws the log-normal intensity factors.

    Returns
    -------
    image : ndarray of shape (size, size), float64
    info : dict
        ``spots`` (n, 3): row, column (pixels) and integrated intensity of
        each spot drawn; ``scale_px_per_inv_A``; ``camera_length_mm``.
    """
    rng = as_rng(rng)
    centre, dr, dc = _frame(size)
    n = _beam_direction(crystal, p)
    lam = electron_wavelength_A(p["voltage_kv"])
    sigma_s = p["relrod_inv_A"]
    e1, e2 = _in_plane_basis(_beam_direction(crystal, {**p, "tilt_mrad": 0.0}), p["rotation_deg"])

    def excitation(g):  # Gaussian in the excitation error s_g = -(g·n) - λ|g|²/2
        s_g = -(g @ n) - 0.5 * lam * np.sum(g**2, axis=1)
        return np.exp(-0.5 * (s_g / sigma_s) ** 2)

    def excited(g):  # the only reflections that can be drawn (weight > 1e-3) and some margin
        return excitation(g) > 1e-4

    if p.get("first_order_px") is not None:
        _, g0, f0 = reflections(crystal, FIT_G_MAX, select=excited)
        scale = _fitted_scale(np.hypot(g0 @ e1, g0 @ e2), f0 * excitation(g0), p)
    else:
        scale = _scale_px(p)
    sig = p["spot_sigma_px"]
    g_max = (centre + 4 * sig) * math.sqrt(2) / scale
    _, g, f2 = reflections(crystal, g_max, select=excited)
    weight = excitation(g)
    col, row = centre + scale * (g @ e1), centre - scale * (g @ e2)
    keep = (weight > 1e-3) & (np.abs(col - centre) < centre + 4 * sig) & (
        np.abs(row - centre) < centre + 4 * sig)
    spread = np.exp(p["intensity_spread"] * rng.standard_normal(len(f2)))
    amp = (f2 ** p["dynamical_gamma"]) * weight * spread
    # Σ_k a_k G(r - y_k) G(c - x_k): separable Gaussians, one matrix product
    pixels = np.arange(size, dtype=float)
    gy = np.exp(-((pixels[None, :] - row[keep][:, None]) ** 2) / (2 * sig**2))  # (n, H)
    gx = np.exp(-((pixels[None, :] - col[keep][:, None]) ** 2) / (2 * sig**2))  # (n, W)
    image = (gy * (amp[keep] / (2 * np.pi * sig**2))[:, None]).T @ gx
    return image, {"spots": np.stack([row[keep], col[keep], amp[keep]], axis=1),
                   "scale_px_per_inv_A": scale, "camera_length_mm": camera_length_mm(scale, p)}


def ring_intensity(crystal: Crystal, p: Mapping, *, size: int) -> tuple[np.ndarray, dict]:
    """Diffracted intensity of a polycrystalline ring pattern (no direct beam, no noise).

    Parameters
    ----------
    crystal : Crystal
    p : mapping
        ``voltage_kv``, ``detector_pixel_mm``, ``ring_sigma_px`` (detector
        broadening), ``crystallite_nm`` (size broadening 1/D), ``texture``
        (largest ring modulation), ``texture_azimuth_deg``, ``texture_seed``,
        and either ``first_order_px`` (the first ring with ``1 %`` of the
        strongest ring's intensity lies this far from the centre) or
        ``camera_length_mm``.
    size : int

    Returns
    -------
    image : ndarray of shape (size, size), float64
    info : dict
        ``rings`` (n, 3): radius (pixels), d-spacing (Å) and integrated
        intensity ``m |F|² d`` of each ring; ``scale_px_per_inv_A``;
        ``camera_length_mm``.
    """
    def rings(g_max):
        _, g, f2 = reflections(crystal, g_max)
        norm = np.round(np.linalg.norm(g, axis=1), 6)
        gs, inverse = np.unique(norm, return_inverse=True)
        total = np.bincount(inverse, weights=f2)  # m |F|² (coincident reflections add)
        return gs, total / gs  # integrated intensity m |F|² d

    centre, dr, dc = _frame(size)
    if p.get("first_order_px") is not None:
        scale = _fitted_scale(*rings(FIT_G_MAX), p)
    else:
        scale = _scale_px(p)
    gs, strength = rings((centre * math.sqrt(2) + 4 * p["ring_sigma_px"]) / scale)
    radius = scale * gs
    size_sigma = scale * 1.0 / (10.0 * p["crystallite_nm"])  # Δg = 1/D, D in Å
    sig = math.hypot(p["ring_sigma_px"], size_sigma)
    r = np.hypot(dr, dc)
    phi = np.arctan2(-dr, dc)
    trng = np.random.default_rng(int(p.get("texture_seed", 0)))
    amps = p["texture"] * trng.uniform(0, 1, len(gs))
    phi0 = math.radians(p.get("texture_azimuth_deg", 0.0))
    image = np.zeros((size, size))
    for rk, ik, tk in zip(radius, strength, amps):
        profile = np.exp(-0.5 * ((r - rk) / sig) ** 2) / (math.sqrt(2 * np.pi) * sig)
        image += ik / (2 * np.pi * rk) * profile * (1 + tk * np.cos(2 * (phi - phi0)))
    return image, {"rings": np.stack([radius, 1.0 / gs, strength], axis=1),
                   "scale_px_per_inv_A": scale, "camera_length_mm": camera_length_mm(scale, p)}


def _beam_stop(size: int, p: Mapping) -> np.ndarray:
    """Transmission (1 open, 0.002 behind the stop): a disc at the centre, an arm to the edge."""
    out = np.ones((size, size))
    if not p.get("beam_stop"):
        return out
    _, dr, dc = _frame(size)
    t = math.radians(p["beam_stop_angle_deg"])
    along = dc * math.cos(t) - dr * math.sin(t)
    across = dc * math.sin(t) + dr * math.cos(t)
    radius, half = p["beam_stop_radius_px"], p["beam_stop_radius_px"] * 0.45
    blocked = (np.hypot(dr, dc) <= radius) | ((along >= 0) & (np.abs(across) <= half))
    out[blocked] = 0.002
    return out


def detector_counts(diffracted: np.ndarray, p: Mapping, *, rng) -> np.ndarray:
    """Counts on the detector: direct beam, background, PSF, beam stop, Poisson and read noise.

    ``diffracted`` is scaled so that its brightest pixel (after the PSF) holds
    ``dose_counts`` counts; ``dose_counts=None`` gives the noiseless expectation.
    """
    rng = as_rng(rng)
    size = diffracted.shape[0]
    _, dr, dc = _frame(size)
    r = np.hypot(dr, dc)
    peak = diffracted.max() if diffracted.max() > 0 else 1.0
    central = p["central_ratio"] * peak * np.exp(-0.5 * (r / 0.8) ** 2)
    background = p["background"] * peak * np.exp(-r / p["background_decay_px"])
    total = ndi.gaussian_filter(diffracted + central + background, PSF_SIGMA_PX, mode="reflect")
    blurred_peak = ndi.gaussian_filter(diffracted, PSF_SIGMA_PX, mode="reflect").max()
    total = total * _beam_stop(size, p)
    dose = p.get("dose_counts")
    if dose is None:
        return total / max(blurred_peak, 1e-300)
    counts = rng.poisson(total * dose / max(blurred_peak, 1e-300)).astype(float)
    counts += rng.normal(0.0, READ_NOISE_COUNTS, counts.shape)
    return np.clip(counts, 0.0, None)


def log_normalize(counts: np.ndarray) -> np.ndarray:
    """``log(1 + counts)`` scaled to [0, 1] (min to 0, max to 1), float32.

    Works on any array of non-negative intensities, e.g. a detector frame of a
    scan; a constant frame gives zeros.
    """
    v = np.log1p(np.clip(np.asarray(counts, dtype=np.float64), 0.0, None))
    lo, hi = v.min(), v.max()
    return ((v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)).astype(np.float32)


def render_pattern(params: Mapping, *, shape, seed: int, info: dict | None = None) -> np.ndarray:
    """Render one pattern from its full parameter set (crystal, session, image) and seed.

    Parameters
    ----------
    params : mapping
        :meth:`Crystal.to_dict` plus the session's and image's parameters.
    shape : (H, W)
    seed : int
    info : dict, optional
        Filled with the rendering's derived values (``scale_px_per_inv_A``,
        ``camera_length_mm``).

    Returns
    -------
    image : ndarray of shape ``shape``, float32 in [0, 1]
    """
    size = int(shape[0])
    if tuple(shape) != (size, size) or size < 8:
        raise ValueError(f"diffraction patterns are square and at least 8 px, got {shape=}")
    rng = np.random.default_rng(seed)
    crystal = Crystal.from_dict(params)
    if params["modality"] == "spot":
        diffracted, derived = spot_intensity(crystal, params, size=size, rng=rng)
    elif params["modality"] == "ring":
        diffracted, derived = ring_intensity(crystal, params, size=size)
    else:
        raise ValueError(f"modality must be one of {MODALITIES}, got {params['modality']!r}")
    if info is not None:
        info.update(scale_px_per_inv_A=float(derived["scale_px_per_inv_A"]),
                    camera_length_mm=float(derived["camera_length_mm"]))
    return log_normalize(detector_counts(diffracted, params, rng=rng))


# --------------------------------------------------------------------------- specimens


def _settings(settings: Mapping) -> dict:
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(
            f"unknown synthesize.diffraction keys {unknown}; known: {sorted(DEFAULT_SETTINGS)}"
        )
    s = {**DEFAULT_SETTINGS, **settings}
    if s["zone_axes"] not in ZONE_AXES:
        raise ValueError(f"zone_axes must be one of {ZONE_AXES}, got {s['zone_axes']!r}")
    bad = [m for m in s["modalities"] if m not in MODALITIES]
    if bad or not s["modalities"]:
        raise ValueError(f"modalities must be from {MODALITIES}, got {s['modalities']!r}")
    return s


def _session_params(modality: str, s: Mapping, rng) -> dict:
    common = {
        "modality": modality,
        "voltage_kv": float(s["voltage_kv"]),
        "first_order_px": _uniform(
            rng, s["first_order_px" if modality == "spot" else "ring_first_order_px"]),
        "detector_pixel_mm": float(s["detector_pixel_mm"]),
        "central_ratio": _log_uniform(rng, (5.0, 50.0)),
        "background": _log_uniform(rng, s["background"]),
        "background_decay_px": _uniform(rng, (6.0, 20.0)),
        "beam_stop": bool(rng.random() < s["beam_stop_probability"]),
        "beam_stop_radius_px": _uniform(rng, BEAM_STOP_RADIUS_PX),
        "beam_stop_angle_deg": _uniform(rng, (0.0, 360.0)),
        "dose_counts": _log_uniform(rng, s["dose_counts"]),
    }
    if modality == "spot":
        return {
            **common,
            "relrod_inv_A": _uniform(rng, s["relrod_inv_A"]),
            "spot_sigma_px": _uniform(rng, s["spot_sigma_px"]),
            "dynamical_gamma": _uniform(rng, s["dynamical_gamma"]),
            "intensity_spread": float(s["intensity_spread"]),
        }
    return {
        **common,
        "ring_sigma_px": _uniform(rng, s["ring_sigma_px"]),
        "crystallite_nm": _log_uniform(rng, s["crystallite_nm"]),
        "texture": _uniform(rng, s["texture"]),
    }


def _image_params(crystal: Crystal, modality: str, s: Mapping, rng) -> dict:
    out = {"rotation_deg": _uniform(rng, (0.0, 360.0))}
    if modality == "ring":
        return {**out, "texture_azimuth_deg": _uniform(rng, (0.0, 180.0)),
                "texture_seed": int(rng.integers(0, 2**31 - 1))}
    out["tilt_mrad"] = _uniform(rng, (0.0, s["tilt_mrad"]))
    out["tilt_azimuth_deg"] = _uniform(rng, (0.0, 360.0))
    if s["zone_axes"] == "random":
        v = rng.standard_normal(3)
        out.update(zone_axis=None, beam_direction=(v / np.linalg.norm(v)).tolist(),
                   zone_family="random")
        return out
    axes = zone_axes(crystal.system, s["zone_axes"], max_index=int(s["max_zone_index"]))
    uvw = axes[int(rng.integers(len(axes)))] * int(rng.choice([-1, 1]))
    out.update(zone_axis=[int(v) for v in uvw], beam_direction=None,
               zone_family=zone_family(crystal.system, uvw))
    return out


def synthesize_diffraction_specimen(
    specimen: str, settings: Mapping, *, seed: int, progress: bool = False,
    task: str = "diffraction",
) -> tuple[list[Sample], dict]:
    """All patterns of one crystal: its sessions (spot or ring) and their orientations.

    Parameters
    ----------
    specimen : str
        ``"s00"``, ``"s01"``, ...; specimen ``i`` is of system ``SYSTEMS[i % 3]``.
    settings : mapping
        The config's ``synthesize.diffraction`` block (see :data:`DEFAULT_SETTINGS`).
    seed : int
        The job's seed.
    progress : bool
        Show a tqdm bar on stderr.
    task : str
        Prefix of the image ids (``"{task}/{specimen}/{session}/i{k:02d}"``).

    Returns
    -------
    samples : list of Sample
        ``labels == {}``; ``params`` holds the crystal (``crystal_system``,
        ``class_index``, ``bravais``, lattice, basis), the session and the
        image parameters; ``modality`` is ``"spot"`` or ``"ring"``.
    specimen_params : dict
        The crystal (:meth:`Crystal.to_dict`).
    """
    from grainflow.synth.specimen import specimen_index

    s = _settings(settings)
    index = specimen_index(specimen)
    size = int(s["image_size_px"])
    system = SYSTEMS[index % len(SYSTEMS)]
    crystal = random_crystal(
        system, rng=np.random.default_rng(derive_seed(seed, "specimen", specimen)), settings=s
    )
    spec = crystal.to_dict()
    n_sessions, n_images = int(s["sessions_per_specimen"]), int(s["images_per_session"])
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_sessions * n_images, desc=f"{task}/{specimen}", unit="pattern")
    samples = []
    for b in range(n_sessions):
        session = f"b{b}"
        modality = s["modalities"][(index + b) % len(s["modalities"])]
        sess = _session_params(modality, s, np.random.default_rng(derive_seed(seed, "session", b)))
        for k in range(n_images):
            img_seed = derive_seed(seed, "image", b, k)
            extra = _image_params(crystal, modality, s,
                                  np.random.default_rng(derive_seed(img_seed, "p")))
            params = {**spec, **sess, **extra}
            derived: dict = {}
            image = render_pattern(params, shape=(size, size), seed=img_seed, info=derived)
            params.update(derived)  # the camera length the first order asked for
            samples.append(Sample(
                image=image, labels={}, image_id=f"{task}/{specimen}/{session}/i{k:02d}",
                specimen=specimen, session=session, seed=img_seed, modality=modality,
                params=params, original_id="",
            ))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return samples, spec


def pretraining_samples(
    settings: Mapping, *, crystals: int, images_per_crystal: int, seed: int,
    progress: bool = False,
) -> list[Sample]:
    """A large labelled set for pretraining, from crystals of its own (none in the CV data).

    Crystal ``i`` is specimen ``"s{i:04d}"`` of task ``"pretrain"`` with the job's
    own ``seed``; its ``images_per_crystal`` patterns are spread over the
    settings' sessions (spot and ring).
    """
    if crystals < 1 or images_per_crystal < 1:
        raise ValueError(f"need crystals >= 1 and images_per_crystal >= 1, got {crystals=}, "
                         f"{images_per_crystal=}")
    s = _settings(settings)
    n_sessions = int(s["sessions_per_specimen"])
    per_session = max(1, math.ceil(images_per_crystal / n_sessions))
    s = {**s, "images_per_session": per_session}
    out: list[Sample] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=crystals, desc="pretraining crystals", unit="crystal")
    for i in range(crystals):
        samples, _ = synthesize_diffraction_specimen(
            f"s{i:04d}", s, seed=derive_seed(seed, "crystal", i), task="pretrain")
        out += samples[:images_per_crystal]
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return out
