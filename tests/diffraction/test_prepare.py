"""Detector frames to training patterns: centre, first order, crop and bin, on simulated frames."""

import math

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

from grainflow.diffraction.crystal import random_crystal
from grainflow.diffraction.prepare import (
    find_centre,
    prepare_frame,
    prepare_frames,
    resample_about,
    target_first_order_px,
)
from grainflow.diffraction.simulate import (
    detector_counts,
    log_normalize,
    ring_intensity,
    spot_intensity,
)

ZOOM = {"spot": 5.0, "ring": 4.0}  # frame pixels per pixel of the 64-px training pattern
FIRST = {"spot": 4.25, "ring": 7.0}  # first order of the rendered pattern, 64-px pixels
CRYSTAL = {"spot": ("cubic", 3), "ring": ("orthorhombic", 10)}  # first orders that are strong
BEAM = (255.5 + 32.3, 255.5 - 23.8)  # 40 px from the middle of a 512² frame, off the pixel grid


def session(modality, first_order_px):
    p = {
        "modality": modality,
        "voltage_kv": 200.0,
        "detector_pixel_mm": 0.48,
        "first_order_px": first_order_px,
        "rotation_deg": 17.0,
        "central_ratio": 20.0,
        "background": 0.02,
        "background_decay_px": 12.0,
        "beam_stop": False,
        "dose_counts": None,
    }
    if modality == "spot":
        p.update(
            zone_axis=[0, 0, 1],
            tilt_mrad=0.0,
            relrod_inv_A=0.03,
            spot_sigma_px=0.55,
            dynamical_gamma=0.8,
            intensity_spread=0.0,
        )
    else:
        p.update(
            ring_sigma_px=0.7,
            crystallite_nm=20.0,
            texture=0.2,
            texture_azimuth_deg=30.0,
            texture_seed=1,
        )
    return p


def diffracted(crystal, p, size):
    if p["modality"] == "spot":
        return spot_intensity(crystal, p, size=size, rng=0)[0]
    return ring_intensity(crystal, p, size=size)[0]


def stop_mask(shape, centre, *, radius, angle_deg=35.0):
    """A beam stop: a disc a little off the beam and an arm from it to the frame's edge."""
    rows, cols = np.indices(shape, dtype=float)
    dr, dc = rows - centre[0] - 1.5, cols - centre[1] + 2.0
    t = math.radians(angle_deg)
    along = dc * math.cos(t) - dr * math.sin(t)
    across = dc * math.sin(t) + dr * math.cos(t)
    return (np.hypot(dr, dc) <= radius) | ((along >= 0) & (np.abs(across) <= 0.45 * radius))


def detector_frame(modality, *, stop=False, saturate=False, shape=512, centre=BEAM, seed=0):
    """A frame recorded at ``ZOOM`` times the training scale: the detector model of
    ``detector_counts`` with every length scaled, the beam at ``centre``."""
    zoom = ZOOM[modality]
    system, xseed = CRYSTAL[modality]
    crystal = random_crystal(system, rng=xseed)
    p = session(modality, FIRST[modality] * zoom)
    for key in ("spot_sigma_px", "ring_sigma_px"):
        if key in p:
            p[key] *= zoom
    # the pattern as far out as a 64-px output reaches, placed with its centre at ``centre``
    half = int(math.ceil(32 * math.sqrt(2) * zoom)) + 8
    d = diffracted(crystal, p, 2 * half)
    whole = (np.floor(centre[0]) - (half - 1), np.floor(centre[1]) - (half - 1))
    d = ndi.shift(d, (centre[0] % 1 - 0.5, centre[1] % 1 - 0.5), order=3, mode="constant")
    layer = np.zeros((shape, shape))
    r0, c0 = int(whole[0]), int(whole[1])
    rs, cs = (
        slice(max(r0, 0), min(r0 + 2 * half, shape)),
        slice(max(c0, 0), min(c0 + 2 * half, shape)),
    )
    layer[rs, cs] = d[rs.start - r0 : rs.stop - r0, cs.start - c0 : cs.stop - c0]
    peak = layer.max()
    rows, cols = np.indices(layer.shape, dtype=float)
    r = np.hypot(rows - centre[0], cols - centre[1])
    beam = p["central_ratio"] * peak * np.exp(-0.5 * (r / (0.8 * zoom)) ** 2)
    background = p["background"] * peak * np.exp(-r / (p["background_decay_px"] * zoom))
    total = ndi.gaussian_filter(layer + beam + background, 0.4 * zoom, mode="reflect")
    blocked = (
        stop_mask(layer.shape, centre, radius=2.2 * zoom) if stop else np.zeros_like(layer, bool)
    )
    total[blocked] = 0.0
    dose = 300.0  # counts at the brightest diffracted frame pixel
    counts = np.random.default_rng(seed).poisson(total * dose / peak).astype(float)
    if saturate:
        counts = np.minimum(counts, 250.0)
    return counts, {
        "crystal": crystal,
        "radius_px": FIRST[modality] * zoom,
        "blocked": blocked,
    }


def reference(modality, truth, *, first_order_px, dose):
    """The same crystal simulated directly as a 64-px pattern (noiseless) at ``first_order_px``."""
    p = session(modality, first_order_px)
    d = diffracted(truth["crystal"], p, 64)
    return log_normalize(dose * detector_counts(d, p, rng=0))


@pytest.mark.parametrize("modality", ["spot", "ring"])
@pytest.mark.parametrize(
    ("stop", "saturate"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["open", "stop", "saturated", "stop+saturated"],
)
def test_prepared_frame_is_centred_scaled_and_like_the_simulated_pattern(modality, stop, saturate):
    frame, truth = detector_frame(modality, stop=stop, saturate=saturate)
    # at 64 px for both kinds (rings are trained at 128 px; the target scales with the size)
    pattern, record = prepare_frame(frame, modality=modality, size=64)

    # the direct beam within a pixel, by its disc when it shows, by symmetry behind a stop
    assert math.dist(record["centre"], BEAM) < 1.0
    assert record["centre_method"] == ("symmetry" if stop else "direct_beam")
    assert (record["saturated_px"] > 0) == saturate
    # the first order found, and where it lands in the 64-px pattern: the trained range
    assert record["first_order_found_px"] == pytest.approx(truth["radius_px"], rel=0.05)
    low, high = target_first_order_px(modality, size=64)
    landed = truth["radius_px"] * record["scale"]
    assert low <= landed <= high
    assert record["bin"] == math.floor(1 / record["scale"])
    assert pattern.shape == (64, 64) and pattern.dtype == np.float32
    assert pattern.min() == 0.0 and pattern.max() == 1.0

    # like the pattern simulated at that first order and dose, wherever the stop does not hide it
    ref = reference(modality, truth, first_order_px=landed, dose=record["dose_counts"])
    hidden, _ = resample_about(
        truth["blocked"].astype(float), record["centre"], scale=record["scale"], size=64
    )
    seen = hidden < 0.01 * hidden.max() if stop else np.ones((64, 64), bool)
    assert np.corrcoef(pattern[seen], ref[seen])[0, 1] > 0.9


def test_each_kind_is_prepared_at_its_trained_size_and_first_order():
    frame, truth = detector_frame("ring")
    pattern, record = prepare_frame(frame, modality="ring")
    assert pattern.shape == (128, 128)  # ring_image_size_px
    assert target_first_order_px("ring") == (10.0, 18.0)
    assert target_first_order_px("ring", size=64) == (5.0, 9.0)
    assert 10.0 <= truth["radius_px"] * record["scale"] <= 18.0
    spot, _ = prepare_frame(detector_frame("spot")[0], modality="spot")
    assert spot.shape == (64, 64)  # image_size_px


def test_centre_behind_a_stop_is_the_centre_of_symmetry_not_the_brightest_spot():
    frame, _ = detector_frame("spot", stop=True, seed=1)
    brightest = np.unravel_index(np.argmax(ndi.gaussian_filter(frame, 2.0)), frame.shape)
    assert math.dist(brightest, BEAM) > 10  # the brightest thing left is a diffracted spot
    found = find_centre(frame)
    assert found["method"] == "symmetry" and found["beam_centre"] is None
    assert math.dist(found["centre"], BEAM) < 1.0


def test_resampling_maps_frame_offsets_to_scaled_output_offsets():
    frame = np.zeros((300, 300))
    centre, scale = (140.3, 151.7), 0.2
    spot = (centre[0] + 40.0, centre[1] - 25.0)  # 8 px down, 5 px left in the output
    rows, cols = np.indices(frame.shape, dtype=float)
    frame += 1e4 * np.exp(-0.5 * ((rows - spot[0]) ** 2 + (cols - spot[1]) ** 2) / 4.0**2)
    image, info = resample_about(frame, centre, scale=scale, size=32)
    assert info["bin"] == 5 and not info["padded"]
    peak = np.array(ndi.center_of_mass(image))
    np.testing.assert_allclose(peak, [15.5 + 8.0, 15.5 - 5.0], atol=0.1)
    # counts are kept: the blob's total over the frame is its total in the output
    assert image.sum() == pytest.approx(frame.sum(), rel=0.01)


def test_known_centre_and_radius_are_used_and_the_crop_is_recorded():
    frame, truth = detector_frame("spot", shape=256, centre=(40.0, 200.0))
    _, record = prepare_frame(
        frame, modality="spot", centre=(40.0, 200.0), radius_px=truth["radius_px"]
    )
    assert record["centre_method"] == "given"
    assert record["scale"] == pytest.approx(4.25 / truth["radius_px"])
    assert record["first_order_px"] == pytest.approx(4.25)
    r0, r1, c0, c1 = record["crop_box"]
    assert r0 < 0 and c1 > 256 and record["padded"]  # the beam near a corner: the crop reaches out
    assert r1 - r0 == pytest.approx(64 / record["scale"], abs=3)


def test_frames_of_a_scan_are_prepared_block_by_block(tmp_path):
    shifts = [[(0.0, 0.0), (6.0, -4.0), (-5.0, 3.0)], [(3.0, 7.0), (-2.0, -6.0), (4.0, 1.0)]]
    frames = np.stack(
        [
            np.stack(
                [
                    detector_frame("spot", shape=192, centre=(95.5 + dr, 95.5 + dc), seed=i)[0]
                    for i, (dr, dc) in enumerate(row)
                ]
            )
            for row in shifts
        ]
    )
    store = zarr.create_array(
        str(tmp_path / "scan.zarr"), shape=frames.shape, chunks=(1, 3, 192, 192), dtype="f4"
    )
    store[...] = frames

    class Reads:  # a scan that records what is read from it
        def __init__(self, array):
            self.array, self.shape, self.chunks, self.sizes = array, array.shape, array.chunks, []

        def __getitem__(self, key):
            block = self.array[key]
            self.sizes.append(block.shape[0])
            return block

    scan = Reads(store)
    out = zarr.create_array(
        str(tmp_path / "out.zarr"), shape=(2, 3, 64, 64), chunks=(1, 3, 64, 64), dtype="f4"
    )
    prepared, records = prepare_frames(scan, modality="spot", out=out)
    assert prepared is out and scan.sizes == [1, 1]  # one chunk row at a time, never whole
    for i, row in enumerate(shifts):
        for j, (dr, dc) in enumerate(row):
            one, rec = prepare_frame(frames[i, j], modality="spot")
            np.testing.assert_array_equal(np.asarray(out[i, j]), one)
            assert records["centre_row"][i, j] == pytest.approx(95.5 + dr, abs=1.0)
            assert records["centre_col"][i, j] == pytest.approx(95.5 + dc, abs=1.0)
            assert records["scale"][i, j] == rec["scale"]
    assert set(records["centre_method"].ravel()) == {"direct_beam"}


def test_bad_frames_are_refused():
    with pytest.raises(ValueError, match="2-D array"):
        prepare_frame(np.zeros(100), modality="spot")
    with pytest.raises(ValueError, match="modality"):
        prepare_frame(np.ones((64, 64)), modality="powder")
    with pytest.raises(ValueError, match="first_order_px"):
        prepare_frame(np.ones((64, 64)), modality="spot", first_order_px=40.0)
    with pytest.raises(ValueError, match=r"\(\*scan_axes, H, W\)"):
        prepare_frames(np.zeros((64, 64)), modality="spot")
