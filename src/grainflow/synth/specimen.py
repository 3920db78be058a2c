"""Specimens and sessions: the structure that the ``synthesize`` rule writes.

A *specimen* is one physical sample, whose images share its microstructure statistics; a
*session* is one imaging session of it (modality, contrast, noise, blur, scan distortions).
:func:`synthesize_specimen` makes all images of a specimen, :func:`render` any one of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from skimage.measure import label

from grainflow.diffraction.simulate import render_pattern, synthesize_diffraction_specimen
from grainflow.io.hdf5 import Sample
from grainflow.seeds import derive_seed, specimen_index
from grainflow.synth import imaging
from grainflow.synth.bicrystal import bicrystal
from grainflow.synth.nanoparticles import (
    StemOptics,
    particle_snr,
    render_stem,
    separated_phase,
    supported_particles,
    visible_particles,
)
from grainflow.synth.phases import particles, superalloy_phase, tertiary_particles
from grainflow.synth.tessellation import boundary_mask, polycrystal

__all__ = ["TASKS", "synthesize_specimen", "render"]

TASKS = ("grains", "phases", "nanoparticles", "kernels", "diffraction")


def _support_texture(rng, largest: float, small_px: float) -> dict:
    """A specimen's support mottling (porous oxides are mottled down to the particles' size);
    none when ``largest`` is 0, and then no random number is drawn (the rest stays the same)."""
    if not largest > 0:
        return {"support_texture": 0.0, "support_texture_px": 0.0}
    return {
        "support_texture": float(rng.uniform(0.0, largest)),
        "support_texture_px": float(small_px * rng.uniform(0.5, 2.0)),
    }


def _edge_band(rng, contrast: Sequence[float]) -> dict:
    """The etched edge band of a superalloy session's γ′ (none unless the range is set)."""
    lo, hi = contrast
    if hi <= 0:
        return {"edge_contrast": 0.0, "edge_px": 0.0}
    return {
        "edge_contrast": float(rng.uniform(lo, hi)),
        "edge_px": float(rng.uniform(1.0, 4.0)),
    }


def _log_uniform(rng, lo, hi) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _specimen_params(task: str, index: int, s: Mapping, rng) -> dict:
    if task == "grains":
        tess = s["tessellation"][index % len(s["tessellation"])]
        elongated = rng.random() < s["elongated_fraction"]
        return {
            "tessellation": tess,
            "grain_diameter_px": _log_uniform(rng, *s["grain_diameter_px"]),
            "dispersion": float(rng.uniform(*s["dispersion"])) if tess == "laguerre" else 0.0,
            "elongation": float(rng.uniform(*s["elongation"])) if elongated else 1.0,
            "angle_deg": float(rng.uniform(0, 180)),
        }
    if task == "nanoparticles":
        lo, hi = s["particle_diameter_px"]
        small = _log_uniform(rng, lo, max(lo, hi / 4))
        return {
            "modality": "stem_particles",
            "diameter_px": [small, float(min(hi, small * rng.uniform(1.5, 4.0)))],
            # fewer particles the larger they are: about 2-30 % of the support covered
            "per_10k_px": float(rng.uniform(2.0, 30.0) * (6.0 / small) ** 1.5),
            "support_coverage": float(rng.uniform(0.4, 1.0)),
            # support lumps from a third of the image to several times it
            "support_scale_px": _log_uniform(rng, 40.0, 400.0),
            "cluster_fraction": float(rng.uniform(0.0, 0.5)),
            # label only the particles an observer can see (Rose's criterion; 0: all)
            "visibility_snr": float(s.get("visibility_snr", 0.0)),
            **_support_texture(rng, s.get("support_texture", 0.0), small),
            # touching particles kept apart in the phase label by a gap of matrix
            "contact_gap_px": int(s.get("contact_gap_px", 0)),
        }
    if task == "phases":
        modality = s["modalities"][index % len(s["modalities"])]
        if modality == "sem_superalloy":
            lo, hi = s["area_fraction"]
            fractions = [max(lo, 0.3), max(hi, 0.3)]  # γ′ fills 30-70 % of a Ni-base superalloy
            return {
                "modality": modality,
                "morphology": "coalesced",
                "area_fraction": float(rng.uniform(*fractions)),
                # "field": each image draws its own fraction from the range (_image_params)
                "gamma_prime_fraction": s.get("gamma_prime_fraction", "material"),
                "area_fraction_range": fractions,
                "particle_diameter_px": _log_uniform(
                    rng, *s.get("gamma_prime_diameter_px", s["particle_diameter_px"])
                ),
                "order": float(rng.uniform(0.3, 0.9)),
                "warp": float(rng.uniform(0.3, 1.0)),
                "tertiary_per_10k_px": float(rng.uniform(0.0, 25.0)),
                "tertiary_radius_px": [1.0, 3.0],
                "tertiary_gap_px": 2.0,
                "label_tertiary": bool(s.get("label_tertiary", False)),
                "tertiary_contrast": float(s.get("tertiary_contrast", 0.0)),
            }
        morph = ("cuboid", "blob") if modality == "sem_precipitates" else ("faceted", "blob")
        lo, hi = s["area_fraction"]
        if modality == "tem_particles":  # particles on a support are sparse
            hi = min(hi, 0.4)
            lo = min(lo, hi)
        return {
            "modality": modality,
            "morphology": str(rng.choice(morph)),
            "area_fraction": float(rng.uniform(lo, hi)),
            "particle_diameter_px": _log_uniform(rng, *s["particle_diameter_px"]),
            "dispersion": float(rng.uniform(0.05, 0.3)),
            "jitter": 0.1 if modality == "sem_precipitates" else 0.35,
        }
    if task == "kernels":
        return {"tones": sorted(float(t) for t in rng.uniform(0.2, 0.8, 2))}
    raise ValueError(f"task must be one of {TASKS}, got {task=}")


def _physical_signal(per_px: float, smallest_px: float, reference_px: float) -> float:
    """A nanoparticle's signal per pixel of projected thickness, for a specimen whose
    smallest particles are ``smallest_px`` wide: ``per_px`` was drawn for particles
    ``reference_px`` wide; finer pixels (a higher magnification, larger particles in
    pixels) see less thickness per pixel, so the same particle keeps its contrast
    instead of saturating. ``reference_px`` 0: ``per_px`` as drawn."""
    if reference_px <= 0 or smallest_px <= reference_px:
        return per_px
    return per_px * reference_px / smallest_px


def _session_params(task: str, index: int, session: int, s: Mapping, rng) -> dict:
    if task == "grains":
        modality = s["modalities"][(index + session) % len(s["modalities"])]
        if modality == "sem":
            return {
                "modality": "sem",
                "groove_sign": int(rng.choice([-1, 1])),
                "groove_depth": float(rng.uniform(0.1, 0.35)),
                "groove_width_px": float(rng.uniform(0.7, 1.5)),
                "edge_gain": float(rng.uniform(0.0, 0.15)),
                "faint_fraction": float(rng.uniform(0.0, 0.15)),
                "charging": float(rng.uniform(0.0, 0.25)),
                "blur_px": float(rng.uniform(0.3, 1.0)),
                "dose": _log_uniform(rng, 20, 200),
                "read_noise": float(rng.uniform(0.005, 0.03)),
                "drift_px": float(rng.uniform(0, 3)),
                "jitter_px": float(rng.uniform(0, 0.6)),
            }
        return {
            "modality": "optical",
            "boundary_darkness": float(rng.uniform(0.35, 0.7)),
            "boundary_width_px": float(rng.uniform(0.7, 1.6)),
            "faint_fraction": float(rng.uniform(0.1, 0.35)),
            "faint_boundaries": float(rng.uniform(0.0, 0.15)),
            "shading": float(rng.uniform(0.0, 0.1)),
            "pit_probability": float(rng.uniform(0.0, 0.5)),
            "etch_pits": int(rng.integers(0, 12)),
            "inclusions": int(rng.integers(0, 6)),
            "dust": int(rng.integers(0, 3)),
            "scratch_count": int(rng.integers(0, 4)),
            "scratch_darkness": float(rng.uniform(0.1, 0.4)),
            "illumination_strength": float(rng.uniform(0.05, 0.3)),
            "blur_px": float(rng.uniform(0.5, 1.4)),
            "dose": _log_uniform(rng, 60, 400),
            "read_noise": float(rng.uniform(0.005, 0.02)),
        }
    if task == "nanoparticles":
        # HAADF-STEM (particles bright, vacuum black) or, one session in four, bright-field
        # TEM of the same specimen (particles dark, vacuum bright)
        bright_field = bool(rng.random() < 0.25)
        return {
            "particles_dark": bright_field,
            "bright_field": bright_field,
            "support_signal": float(rng.uniform(0.2, 0.6)),
            "particle_signal": float(rng.uniform(0.02, 0.1)),
            # the phase-contrast speckle of amorphous carbon is strong and coarse in
            # bright field, faint in HAADF
            "speckle": float(rng.uniform(0.05, 0.3) if bright_field else rng.uniform(0, 0.08)),
            "speckle_px": [float(rng.uniform(0.7, 1.5)), float(rng.uniform(2.0, 4.0))],
            "blur_px": float(rng.uniform(0.5, 3.0)),
            "dose": _log_uniform(rng, 30, 500),
            "read_noise": float(rng.uniform(0.005, 0.02)),
        }
    if task == "phases":
        a, b = sorted(rng.uniform(0.2, 0.85, 2))
        if b - a < 0.25:
            a, b = max(0.05, a - 0.15), min(0.95, b + 0.15)
        # sessions alternate which phase is darker (backscatter or secondary electrons,
        # detector settings), so every specimen imaged twice shows both polarities
        dark_precipitates = (session + index) % 2 == 0
        tones = {
            "particles_dark": dark_precipitates,
            "precipitate_tone": a if dark_precipitates else b,
            "matrix_tone": b if dark_precipitates else a,
        }
        if s["modalities"][index % len(s["modalities"])] == "sem_superalloy":
            # etched γ/γ′: secondary-electron rims, relief, a rough γ′ surface, noisy to smooth
            return {
                **tones,
                "charging": float(rng.uniform(0.0, 0.2)),
                "rim_gain": float(rng.uniform(0.0, 0.4)),
                "rim_px": float(rng.uniform(0.7, 3.0)),
                "texture": float(rng.uniform(0.0, 0.05)),
                "texture_px": float(rng.uniform(2.0, 12.0)),
                "precipitate_speckle": float(rng.uniform(0.0, 0.15)),
                "matrix_speckle": float(rng.uniform(0.0, 0.05)),
                "speckle_px": [0.7, 2.0],  # band-pass of the roughness (Gaussian sigmas)
                "blur_px": float(rng.uniform(0.3, 1.2)),
                "dose": _log_uniform(rng, 50, 3000),
                "read_noise": float(rng.uniform(0.005, 0.03)),
                # drawn last and only when asked, so worlds without it keep their streams
                **_edge_band(rng, s.get("gamma_prime_edge_contrast", (0.0, 0.0))),
            }
        common = {
            "blur_px": float(rng.uniform(0.3, 1.0)),
            "dose": _log_uniform(rng, 30, 200),
            "read_noise": float(rng.uniform(0.005, 0.03)),
        }
        return {
            **tones,
            "edge_gain": float(rng.uniform(0.0, 0.1)),
            "charging": float(rng.uniform(0.0, 0.2)),
            "speckle": float(rng.uniform(0.04, 0.12)),
            "fringe_contrast": float(rng.uniform(0.05, 0.2)),
            "thickness_variation": float(rng.uniform(0.0, 0.15)),
            **common,
        }
    return {
        "modality": "bicrystal",
        "blur_px": float(rng.uniform(0.0, 0.8)),
        "dose": _log_uniform(rng, 100, 1000),
        "read_noise": float(rng.uniform(0.0, 0.02)),
    }


def _image_params(task: str, k: int, spec: Mapping, rng) -> dict:
    if task == "grains":
        return {"angle_deg": float(spec["angle_deg"] + rng.normal(0, 5))}
    if task == "kernels":
        geometry = ("corner", "straight", "curved")[k % 3]
        return {
            "geometry": geometry,
            "angle_deg": float(rng.uniform(0, 180)),
            "curvature": float(rng.uniform(0.005, 0.03)) if geometry == "curved" else 0.0,
            "offset_px": float(rng.uniform(-8, 8)),
        }
    if spec.get("gamma_prime_fraction") == "field":
        return {"area_fraction": float(rng.uniform(*spec["area_fraction_range"]))}
    return {}


def render(task: str, params: Mapping, *, shape, boundary_width_px: int, seed: int):
    """Render one image and its labels from its full parameter set and seed.

    Returns
    -------
    image : ndarray of shape ``shape``, float32 in [0, 1]
    labels : dict of str -> ndarray of shape ``shape``
    """
    if task == "diffraction":  # patterns have no label maps; see grainflow.diffraction.simulate
        return render_pattern(params, shape=shape, seed=seed), {}
    rng = np.random.default_rng(seed)
    p = dict(params)
    if task == "grains":
        grains = polycrystal(
            shape,
            grain_diameter_px=p["grain_diameter_px"],
            dispersion=p["dispersion"],
            elongation=p["elongation"],
            angle_deg=p["angle_deg"],
            rng=rng,
        )
        if p["modality"] == "sem":
            shifts = imaging.row_shifts(
                shape[0], drift_px=p["drift_px"], jitter_px=p["jitter_px"], rng=rng
            )
            grains = imaging.shift_rows(grains, shifts)
            keys = (
                "groove_sign",
                "groove_depth",
                "groove_width_px",
                "edge_gain",
                "faint_fraction",
                "charging",
                "blur_px",
                "dose",
                "read_noise",
            )
            image = imaging.render_sem_grains(grains, rng=rng, **{k: p[k] for k in keys})
        else:
            keys = (
                "boundary_darkness",
                "boundary_width_px",
                "faint_fraction",
                "faint_boundaries",
                "shading",
                "pit_probability",
                "etch_pits",
                "inclusions",
                "dust",
                "scratch_count",
                "scratch_darkness",
                "illumination_strength",
                "blur_px",
                "dose",
                "read_noise",
            )
            image = imaging.render_optical_grains(grains, rng=rng, **{k: p[k] for k in keys})
        boundaries = boundary_mask(grains, width_px=boundary_width_px)
        return image, {"grain_ids": grains, "boundaries": boundaries.astype(np.uint8)}
    if task == "phases" and p["modality"] == "sem_superalloy":
        phase = superalloy_phase(
            shape,
            area_fraction=p["area_fraction"],
            particle_diameter_px=p["particle_diameter_px"],
            order=p["order"],
            warp=p["warp"],
            rng=rng,
        )
        tertiary = tertiary_particles(
            phase,
            per_10k_px=p["tertiary_per_10k_px"],
            radius_px=tuple(p["tertiary_radius_px"]),
            gap_px=p["tertiary_gap_px"],
            rng=rng,
        )
        image = imaging.render_sem_superalloy(
            phase,
            tertiary,
            rng=rng,
            matrix_tone=p["matrix_tone"],
            precipitate_tone=p["precipitate_tone"],
            tertiary_contrast=p.get("tertiary_contrast", 0.0),
            edge_contrast=p.get("edge_contrast", 0.0),
            edge_px=p.get("edge_px", 2.0),
            rim_gain=p["rim_gain"],
            rim_px=p["rim_px"],
            texture=p["texture"],
            texture_px=p["texture_px"],
            precipitate_speckle=p["precipitate_speckle"],
            matrix_speckle=p["matrix_speckle"],
            speckle_px=tuple(p["speckle_px"]),
            charging=p["charging"],
            blur_px=p["blur_px"],
            dose=p["dose"],
            read_noise=p["read_noise"],
        )
        if p["label_tertiary"]:
            phase = phase | tertiary
        ids = label(phase, connectivity=1).astype(np.uint32)
        return image, {"phase": phase.astype(np.uint8), "particle_ids": ids}
    if task == "nanoparticles":
        support, ids, thickness = supported_particles(
            shape,
            diameter_px=tuple(p["diameter_px"]),
            per_10k_px=p["per_10k_px"],
            support_coverage=p["support_coverage"],
            support_scale_px=p["support_scale_px"],
            cluster_fraction=p["cluster_fraction"],
            support_texture=p.get("support_texture", 0.0),
            support_texture_px=p.get("support_texture_px", 8.0),
            rng=rng,
        )
        keys = ("bright_field", "support_signal", "particle_signal", "speckle", "speckle_px")
        optics = StemOptics(**{k: p[k] for k in (*keys, "blur_px", "dose", "read_noise")})
        image = render_stem(support, thickness, rng=rng, optics=optics)
        if p.get("visibility_snr", 0.0) > 0:
            snr = particle_snr(ids, support, thickness, optics=optics)
            ids = visible_particles(ids, snr, p["visibility_snr"])
        phase = separated_phase(ids, p.get("contact_gap_px", 0))
        return image, {"phase": phase, "particle_ids": ids}
    if task == "phases":
        ids = particles(
            shape,
            area_fraction=p["area_fraction"],
            particle_diameter_px=p["particle_diameter_px"],
            dispersion=p["dispersion"],
            morphology=p["morphology"],
            jitter=p["jitter"],
            rng=rng,
        )
        common = {k: p[k] for k in ("blur_px", "dose", "read_noise")}
        if p["modality"] == "sem_precipitates":
            image = imaging.render_sem_phases(
                ids > 0,
                rng=rng,
                matrix_tone=p["matrix_tone"],
                precipitate_tone=p["precipitate_tone"],
                edge_gain=p["edge_gain"],
                charging=p["charging"],
                **common,
            )
        else:
            image = imaging.render_tem_particles(
                ids,
                rng=rng,
                speckle=p["speckle"],
                fringe_contrast=p["fringe_contrast"],
                thickness_variation=p["thickness_variation"],
                **common,
            )
        return image, {"phase": (ids > 0).astype(np.uint8), "particle_ids": ids}
    if task == "kernels":
        grains = bicrystal(
            shape,
            geometry=p["geometry"],
            angle_deg=p["angle_deg"],
            curvature=p["curvature"],
            offset_px=p["offset_px"],
        )
        image = imaging.render_bicrystal(
            grains,
            rng=rng,
            tones=tuple(p["tones"]),
            **{k: p[k] for k in ("blur_px", "dose", "read_noise")},
        )
        boundaries = boundary_mask(grains, width_px=boundary_width_px)
        return image, {"grain_ids": grains, "boundaries": boundaries.astype(np.uint8)}
    raise ValueError(f"task must be one of {TASKS}, got {task=}")


def synthesize_specimen(
    task: str, specimen: str, settings: Mapping, *, seed: int, progress: bool = False
) -> tuple[list[Sample], dict]:
    """All images of one specimen, with labels and metadata.

    Parameters
    ----------
    task : {"grains", "phases", "nanoparticles", "kernels", "diffraction"}
        "diffraction" is :func:`grainflow.diffraction.simulate.synthesize_diffraction_specimen`.
    specimen : str
        Specimen name, ``"s00"``, ``"s01"``, ...
    settings : mapping
        The task's block of the config's ``synthesize`` section.
    seed : int
        The job's seed (derived from the base seed and the job's names).

    Returns
    -------
    samples : list of Sample
    specimen_params : dict

    Notes
    -----
    A specimen's images share its microstructure statistics (grain size, dispersion,
    elongation; area fraction, particle size and shape); a session sets the modality,
    contrast, noise, blur and scan distortions. Each image is a new field of view of
    its specimen, imaged under its session's conditions.

    The job's seed makes the specimen's parameters; each session and image gets a
    seed derived from it and its names, recorded in the output, so that
    :func:`render` regenerates any image alone from its parameters and seed.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task=}")
    if task == "diffraction":
        return synthesize_diffraction_specimen(specimen, settings, seed=seed, progress=progress)
    index = specimen_index(specimen)
    size = int(settings["image_size_px"])
    shape = (size, size)
    width = int(settings.get("boundary_width_px", 2))
    spec = _specimen_params(
        task, index, settings, np.random.default_rng(derive_seed(seed, "specimen", specimen))
    )
    samples = []
    n_sessions = int(settings["sessions_per_specimen"])
    n_images = int(settings["images_per_session"])
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_sessions * n_images, desc=f"{task}/{specimen}", unit="image")
    for b in range(n_sessions):
        session = f"b{b}"
        sess = _session_params(
            task, index, b, settings, np.random.default_rng(derive_seed(seed, "session", b))
        )
        if task == "phases":  # the material decides the modality, not the session
            sess["modality"] = spec["modality"]
        if task == "nanoparticles":
            sess["particle_signal"] = _physical_signal(
                sess["particle_signal"],
                spec["diameter_px"][0],
                settings.get("signal_reference_px", 0.0),
            )
        for k in range(n_images):
            img_seed = derive_seed(seed, "image", b, k)
            extra = _image_params(task, k, spec, np.random.default_rng(derive_seed(img_seed, "p")))
            params = {**spec, **sess, **extra}
            image, labels = render(
                task, params, shape=shape, boundary_width_px=width, seed=img_seed
            )
            samples.append(
                Sample(
                    image=image,
                    labels=labels,
                    image_id=f"{task}/{specimen}/{session}/i{k:02d}",
                    specimen=specimen,
                    session=session,
                    seed=img_seed,
                    modality=params["modality"],
                    params=params,
                    original_id="",
                )
            )
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return samples, spec
