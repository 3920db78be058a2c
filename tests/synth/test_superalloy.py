"""The etched γ/γ′ superalloy modality: morphology, tertiary γ′, and labels that follow the config."""

import numpy as np
import pytest
from scipy import ndimage

from grainflow.synth.imaging import render_sem_superalloy
from grainflow.synth.phases import superalloy_phase, tertiary_particles
from grainflow.synth.specimen import synthesize_specimen

SETTINGS = {
    "specimens": 2,
    "sessions_per_specimen": 2,
    "images_per_session": 2,
    "image_size_px": 96,
    "modalities": ["sem_superalloy"],
    "area_fraction": [0.3, 0.5],
    "particle_diameter_px": [20, 40],
}

#: a rendering with one tone per phase and no noise, rims or texture: tones can be read off
QUIET = dict(
    rng=0,
    matrix_tone=0.7,
    precipitate_tone=0.4,
    rim_gain=0,
    texture=0,
    precipitate_speckle=0,
    matrix_speckle=0,
    charging=0,
    dose=1e12,
    read_noise=0,
)


@pytest.mark.parametrize("order", [0.0, 0.5, 1.0])
def test_superalloy_phase_meets_the_area_fraction(order):
    phase = superalloy_phase(
        (128, 160), area_fraction=0.45, particle_diameter_px=30, order=order, rng=3
    )
    assert phase.dtype == bool and phase.shape == (128, 160)
    assert phase.mean() == pytest.approx(0.45, abs=0.01)
    again = superalloy_phase(
        (128, 160), area_fraction=0.45, particle_diameter_px=30, order=order, rng=3
    )
    assert np.array_equal(phase, again)


def test_superalloy_phase_refuses_bad_settings():
    with pytest.raises(ValueError, match="area_fraction"):
        superalloy_phase((32, 32), area_fraction=0.9, particle_diameter_px=10)
    with pytest.raises(ValueError, match="order"):
        superalloy_phase((32, 32), area_fraction=0.3, particle_diameter_px=10, order=2)


def test_tertiary_particles_stay_in_the_channels():
    phase = superalloy_phase((128, 128), area_fraction=0.4, particle_diameter_px=30, rng=1)
    tertiary = tertiary_particles(phase, per_10k_px=20, rng=2)
    assert tertiary.any()
    near = ndimage.binary_dilation(phase, iterations=2)  # 2 px gap kept to every precipitate
    assert not (tertiary & near).any()


def test_speckle_and_rims_change_the_image_not_the_phases():
    phase = superalloy_phase((96, 96), area_fraction=0.4, particle_diameter_px=24, rng=5)
    tertiary = np.zeros_like(phase)
    plain = render_sem_superalloy(
        phase, tertiary, rng=0, rim_gain=0, texture=0, precipitate_speckle=0, matrix_speckle=0
    )
    rough = render_sem_superalloy(
        phase, tertiary, rng=0, rim_gain=0.2, texture=0, precipitate_speckle=0.15, matrix_speckle=0
    )
    assert not np.allclose(plain, rough)
    inside = ndimage.binary_erosion(phase, iterations=4)
    assert rough[inside].std() > plain[inside].std()  # the rough γ′ surface
    assert plain[inside].mean() < plain[~ndimage.binary_dilation(phase, iterations=4)].mean()


@pytest.mark.parametrize("label_tertiary", [False, True])
def test_tertiary_gamma_prime_is_labelled_as_the_config_says(label_tertiary):
    settings = {**SETTINGS, "label_tertiary": label_tertiary}
    samples, spec = synthesize_specimen("phases", "s00", settings, seed=4)
    assert spec["label_tertiary"] is label_tertiary
    for sample in samples:
        phase = sample.labels["phase"].astype(bool)
        ids = sample.labels["particle_ids"]
        assert np.array_equal(ids > 0, phase)
        assert sample.params["modality"] == "sem_superalloy"
    # the same seed draws the same structure: the labels differ only by the tertiary discs
    other, _ = synthesize_specimen(
        "phases", "s00", {**settings, "label_tertiary": not label_tertiary}, seed=4
    )
    extras = []
    for a, b in zip(samples, other):
        assert np.array_equal(a.image, b.image)
        with_tertiary, without = (a, b) if label_tertiary else (b, a)
        labelled = with_tertiary.labels["phase"].astype(bool)
        secondary = without.labels["phase"].astype(bool)
        assert not (secondary & ~labelled).any()
        extra = labelled & ~secondary  # the tertiary discs, away from the secondary γ′
        assert not (extra & ndimage.binary_dilation(secondary, iterations=2)).any()
        extras.append(extra.sum())
    assert sum(extras) > 0


def test_tertiary_contrast_darkens_the_fine_gamma_prime_and_keeps_the_labels():
    phase = superalloy_phase((96, 96), area_fraction=0.4, particle_diameter_px=24, rng=5)
    tertiary = tertiary_particles(phase, per_10k_px=20, rng=2)
    quiet = QUIET
    same = render_sem_superalloy(phase, tertiary, tertiary_contrast=0.0, **quiet)
    darker = render_sem_superalloy(phase, tertiary, tertiary_contrast=0.5, **quiet)
    core = ndimage.binary_erosion(tertiary, iterations=1)
    # the dots' tone: 0.4 + 0.5 x (0.4 - 0.7) = 0.25 instead of the secondary's 0.4
    assert darker[core].mean() < same[core].mean() - 0.05
    far = ~ndimage.binary_dilation(tertiary, iterations=5)
    np.testing.assert_allclose(darker[far], same[far], atol=1e-4)  # nothing else changes
    settings = {**SETTINGS, "label_tertiary": False}
    plain, _ = synthesize_specimen("phases", "s00", {**settings, "tertiary_contrast": 0.0}, seed=4)
    dark, spec = synthesize_specimen(
        "phases", "s00", {**settings, "tertiary_contrast": 0.5}, seed=4
    )
    assert spec["tertiary_contrast"] == 0.5
    for a, b in zip(plain, dark):
        assert all(np.array_equal(a.labels[k], b.labels[k]) for k in a.labels)


def test_edge_band_darkens_the_gamma_prime_outline_and_keeps_the_labels():
    phase = superalloy_phase((96, 96), area_fraction=0.45, particle_diameter_px=30, rng=5)
    tertiary = np.zeros_like(phase)
    quiet = {**QUIET, "blur_px": 0}
    plain = render_sem_superalloy(phase, tertiary, edge_contrast=0.0, **quiet)
    etched = render_sem_superalloy(phase, tertiary, edge_contrast=1.0, edge_px=2.0, **quiet)
    inside = ndimage.distance_transform_edt(phase)
    edge, core = (inside == 1), (inside >= 12)
    # on the edge pixel the tone moves by the whole difference, 0.4 + (0.4 - 0.7) = 0.1
    np.testing.assert_allclose(etched[edge], 0.1, atol=1e-3)
    # e^-(d - 1) / 2 fades it inwards: at 12 px under 0.3 x e^-5.5 = 0.0012
    np.testing.assert_allclose(etched[core], plain[core], atol=2e-3)
    np.testing.assert_allclose(etched[~phase], plain[~phase], atol=1e-5)  # the γ unchanged
    # in a specimen: drawn per session within the range, the labels the same as without
    off, spec_off = synthesize_specimen("phases", "s00", SETTINGS, seed=4)
    on, _ = synthesize_specimen(
        "phases", "s00", {**SETTINGS, "gamma_prime_edge_contrast": [0.5, 1.0]}, seed=4
    )
    assert all(s.params["edge_contrast"] == 0.0 for s in off)
    assert all(0.5 <= s.params["edge_contrast"] <= 1.0 for s in on)
    assert all(1.0 <= s.params["edge_px"] <= 4.0 for s in on)
    for a, b in zip(off, on):
        assert not np.array_equal(a.image, b.image)
        assert all(np.array_equal(a.labels[k], b.labels[k]) for k in a.labels)


def test_gamma_prime_fraction_per_field_varies_within_a_specimen():
    """'material': one γ′ fraction per specimen; 'field': each image its own, within the range."""

    def fractions(per):
        samples, spec = synthesize_specimen(
            "phases", "s00", {**SETTINGS, "gamma_prime_fraction": per}, seed=6
        )
        drawn = [s.params["area_fraction"] for s in samples]
        labelled = [float(s.labels["phase"].mean()) for s in samples]
        return spec, drawn, labelled

    spec, drawn, _ = fractions("material")
    assert spec["gamma_prime_fraction"] == "material" and len(set(drawn)) == 1
    spec, drawn, labelled = fractions("field")
    assert len(set(drawn)) == len(drawn) == 4
    assert all(0.3 <= f <= 0.5 for f in drawn)
    # the label follows each image's own fraction, not the specimen's
    assert np.corrcoef(drawn, labelled)[0, 1] > 0.9
    assert max(abs(d - t) for d, t in zip(drawn, labelled)) < 0.08
