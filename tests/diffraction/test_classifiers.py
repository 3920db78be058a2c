"""Crystal-system classification: metrics by hand, folds, tiny trainings, transfer, scan maps."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from grainflow.checkpoint import load_checkpoint, model_from_checkpoint, sha256_file
from grainflow.diffraction.data import CLASSES, PatternDataset, fold_rows, subsample_per_class
from grainflow.diffraction.evaluate import (
    confusion_matrix,
    evaluate_classifier,
    expected_calibration_error,
    model_choice,
    model_choice_headline,
    per_class_table,
    predict_proba,
    reliability_table,
)
from grainflow.diffraction.representation import (
    angular_spectrum,
    log_polar,
    log_polar_highpass,
    radial_profile,
    represent,
    representation_of,
    rotate_pattern,
)
from grainflow.diffraction.scan import (
    classify_scan,
    prepare_patterns,
    read_scan,
    read_scan_map,
    scan_map,
    synthetic_scan,
    write_scan,
)
from grainflow.diffraction.simulate import synthesize_diffraction_specimen
from grainflow.diffraction.train import classifier_config, train_diffraction_fold, transfer_run
from grainflow.io.hdf5 import write_specimen
from grainflow.models.resnet import ResNet18
from grainflow.splits import make_manifest, write_manifest

SETTINGS = {"sessions_per_specimen": 2, "images_per_session": 2}
SHARED = {"device": "cpu", "deterministic": True, "progress": False, "batch_size": 8}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 crystals (4 per system), 4 patterns each, split into 2 folds."""
    root = tmp_path_factory.mktemp("diffraction")
    files = []
    for i in range(12):
        name = f"s{i:02d}"
        samples, spec = synthesize_diffraction_specimen(name, SETTINGS, seed=100 + i)
        files.append(root / f"{name}.h5")
        write_specimen(files[-1], samples, task="diffraction", specimen=name, specimen_params=spec)
    manifest = make_manifest(files, folds=2, stratify_by="crystal_system")
    write_manifest(manifest, root / "split.tsv")
    return root, manifest


def test_confusion_and_per_class_by_hand():
    true = ["cubic"] * 4 + ["hexagonal"] * 3 + ["orthorhombic"] * 3
    pred = [
        "cubic",
        "cubic",
        "cubic",
        "hexagonal",
        "hexagonal",
        "hexagonal",
        "cubic",
        "orthorhombic",
        "orthorhombic",
        "orthorhombic",
    ]
    cm = confusion_matrix(true, pred)
    assert cm.to_numpy().tolist() == [[3, 1, 0], [1, 2, 0], [0, 0, 3]]
    table = per_class_table(cm).set_index("class")
    assert table.loc["cubic", "precision"] == pytest.approx(3 / 4)
    assert table.loc["cubic", "recall"] == pytest.approx(3 / 4)
    assert table.loc["hexagonal", "precision"] == pytest.approx(2 / 3)
    assert table.loc["orthorhombic", "f1"] == pytest.approx(1.0)
    assert table["support"].tolist() == [4, 3, 3]


def test_expected_calibration_error_by_hand():
    # bin [0.6, 0.8): confidences 0.7, 0.7, one right -> |0.5 - 0.7| = 0.2, weight 2/4
    # bin [0.8, 1.0]: 0.9, 0.9, both right -> |1 - 0.9| = 0.1, weight 2/4
    conf = np.array([0.7, 0.7, 0.9, 0.9])
    correct = np.array([1, 0, 1, 1])
    assert expected_calibration_error(conf, correct, bins=5) == pytest.approx(0.15)
    table = reliability_table(conf, correct, bins=5)
    assert table["count"].tolist() == [0, 0, 0, 2, 2]
    assert expected_calibration_error(np.ones(3), np.ones(3), bins=10) == 0.0
    with pytest.raises(ValueError, match="bins"):
        reliability_table(conf, correct, bins=0)


def test_rotate_pattern_quarter_turn_is_rot90():
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    # inside the border (edge samples fall a rounding error outside and take the fill)
    inner = (slice(1, -1), slice(1, -1))
    turned = rotate_pattern(image, 90.0)
    np.testing.assert_allclose(turned[inner], np.rot90(image)[inner], atol=1e-5)


def ring_image(radius, size=64, sigma=0.7):
    c = (size - 1) / 2
    r = np.hypot(*np.mgrid[0:size, 0:size] - c)
    return np.exp(-0.5 * ((r - radius) / sigma) ** 2).astype(np.float32)


def test_log_polar_turns_rings_into_columns_and_rotations_into_shifts():
    size, r_min = 64, 2.0
    radius_of = r_min * (32 / r_min) ** ((np.arange(size) + 0.5) / size)  # column radii, px
    for radius in (6.0, 12.0, 20.0):
        lp = log_polar(ring_image(radius), r_min_px=r_min)
        profile = lp.mean(axis=0)
        assert abs(radius_of[profile.argmax()] / radius - 1) < 0.05  # the ring's column
        assert np.abs(lp.argmax(axis=1) - profile.argmax()).max() <= 1  # at every azimuth
    # two Friedel spots on the +x axis: one row (0°), and a quarter turn moves it by 32 rows
    image = np.zeros((size, size), np.float32)
    image[31:33, 41:43] = image[31:33, 21:23] = 1.0
    lp = log_polar(image)
    turned = log_polar(np.rot90(image).copy())
    np.testing.assert_allclose(turned, np.roll(lp, size // 2, axis=0), atol=1e-5)
    assert lp.sum(axis=1).argmax() in (0, size - 1) and turned.sum(axis=1).argmax() in (31, 32)
    with pytest.raises(ValueError, match="r_min_px"):
        log_polar(image, r_min_px=40.0)


def net_image(vectors, size=64, sigma=0.6, orders=3):
    """Gaussian spots at the points i a + j b of a 2-D net (|i|, |j| <= orders), centre excluded."""
    c = (size - 1) / 2
    rr, cc = np.mgrid[0:size, 0:size] - c
    image = np.zeros((size, size))
    for i in range(-orders, orders + 1):
        for j in range(-orders, orders + 1):
            if i or j:
                x, y = i * np.asarray(vectors[0]) + j * np.asarray(vectors[1])
                image += np.exp(-0.5 * ((cc - x) ** 2 + (rr + y) ** 2) / sigma**2)
    return image.astype(np.float32)


def polar_net(length, angles_deg, turn_deg=0.0):
    t = np.radians(np.asarray(angles_deg, float) + turn_deg)
    return [length * np.array([np.cos(u), np.sin(u)]) for u in t]


def test_angular_spectrum_shows_the_fold_of_a_net_in_any_orientation():
    # rows k are the harmonics m = 2k: a 4-fold net lives on even k, a 6-fold one on k = 0 mod 3
    square, hexagonal = [0, 90], [0, 60]

    def harmonics(image):  # linear magnitudes at the radius of the strongest shell
        spectrum = np.expm1(angular_spectrum(image)) / 10
        return spectrum[1:9, spectrum[0].argmax()]  # k = 1..8

    for turn in (0.0, 17.0, 41.0):
        for angles, allowed in ((square, lambda k: k % 2 == 0), (hexagonal, lambda k: k % 3 == 0)):
            c = harmonics(net_image(polar_net(6.0, angles, turn), sigma=0.8))
            on = [c[k - 1] for k in range(1, 9) if allowed(k)]
            off = [c[k - 1] for k in range(1, 9) if not allowed(k)]
            assert max(off) < 0.1 * max(on), (angles, turn, on, off)
    c = harmonics(net_image([np.array([6.0, 0.0]), np.array([0.0, 8.0])], sigma=0.8))
    assert c[0] > 0.2 * c.max()  # a rectangular net is two-fold: harmonic m = 2 is there
    # rotation invariant up to the pixel sampling of the spots, mirror invariant exactly
    image = net_image(polar_net(5.0, [0, 75]), sigma=1.0, orders=2)
    a = angular_spectrum(image)

    def distance(other):
        return np.linalg.norm(angular_spectrum(other) - a) / np.linalg.norm(a)

    assert distance(net_image(polar_net(5.0, [0, 75], 33.0), sigma=1.0, orders=2)) < 0.1
    assert distance(net_image(polar_net(5.0, [0, 90], 33.0), sigma=1.0, orders=2)) > 0.3
    np.testing.assert_allclose(angular_spectrum(image[:, ::-1].copy()), a, atol=1e-4 * a.max())
    assert angular_spectrum(2.5 * image) == pytest.approx(a, abs=1e-5)  # scale free
    with pytest.raises(ValueError, match="one pattern"):
        angular_spectrum(image[None])


def test_log_polar_highpass_removes_the_diffuse_background_and_keeps_the_rings():
    c = 31.5
    r = np.hypot(*np.mgrid[0:64, 0:64] - c)
    rings = ring_image(9.0) + 0.6 * ring_image(15.6)  # radii in the ratio of sqrt(3)
    background = 3.0 * np.exp(-r / 6.0)  # diffuse inelastic background, larger than the rings
    clean, dirty = log_polar_highpass(rings), log_polar_highpass(rings + background)
    assert abs(clean.mean()) < 1e-5 and clean.std() == pytest.approx(1.0, rel=1e-5)
    profile = dirty.mean(axis=0)
    top_two = sorted(np.argsort(profile)[-2:])
    np.testing.assert_array_equal(top_two, sorted(np.argsort(clean.mean(axis=0))[-2:]))
    assert np.corrcoef(profile, clean.mean(axis=0))[0, 1] > 0.9
    plain = log_polar(rings + background).mean(axis=0)  # without the subtraction: the background
    assert np.corrcoef(plain, clean.mean(axis=0))[0, 1] < 0.5
    assert not log_polar_highpass(np.ones((64, 64), np.float32)).any()  # no structure: zeros


def test_represent_puts_each_kind_in_its_form():
    images = np.stack([ring_image(8.0), ring_image(8.0)])
    out = represent(images, ["spot", "ring"], {"spot": "angular_spectrum", "ring": "log_polar"})
    np.testing.assert_allclose(out[0], angular_spectrum(images[0]))
    np.testing.assert_allclose(out[1], log_polar(images[1]))
    np.testing.assert_array_equal(represent(images, ["spot", "ring"], "cartesian"), images)
    # the older single setting named the ring form; spots stayed as recorded
    legacy = represent(images, ["spot", "ring"], "log_polar")
    np.testing.assert_array_equal(legacy[0], images[0])
    assert representation_of(None) == {"spot": "angular_spectrum", "ring": "log_polar_highpass"}
    assert representation_of({"ring": "cartesian"})["spot"] == "angular_spectrum"
    ds = PatternDataset(
        images, [0, 1], ["a", "b"], modalities=["spot", "ring"], representation=None
    )
    np.testing.assert_allclose(ds[1][0][0].numpy(), log_polar_highpass(images[1]))
    torch.manual_seed(0)  # augmented: rotated and mirrored before the log-polar resampling
    augmented = PatternDataset(
        images,
        [0, 1],
        ["a", "b"],
        rotate=True,
        flips=True,
        modalities=["spot", "ring"],
        representation=None,
    )
    x = augmented[1][0][0].numpy()
    plain = log_polar_highpass(images[1]).mean(axis=0)  # a ring's profile is rotation invariant
    assert x.mean(axis=0).argmax() == plain.argmax()
    assert np.abs(x.mean(axis=0) - plain).max() < 0.15 * np.abs(plain).max()
    # an angular spectrum ignores rotations and mirrors: prepared once, never augmented
    np.testing.assert_array_equal(augmented[0][0][0].numpy(), angular_spectrum(images[0]))
    with pytest.raises(ValueError, match="representation"):
        represent(images, ["spot", "ring"], "polar")
    with pytest.raises(ValueError, match="forms must be one of"):
        represent(images, ["spot", "ring"], {"spot": "polar"})
    with pytest.raises(ValueError, match="unknown pattern kind"):
        representation_of({"powder": "log_polar"})
    with pytest.raises(ValueError, match="one modality per pattern"):
        PatternDataset(images, [0, 1], ["a", "b"], modalities=["ring"])


def test_pattern_dataset_items_and_digest():
    images = np.random.default_rng(1).random((4, 32, 32)).astype(np.float32)
    ds = PatternDataset(images, [0, 1, 2, 1], ["a", "b", "c", "d"])
    x, y = ds[2]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and int(y) == 2
    assert ds.class_counts(3).tolist() == [1, 2, 1]
    changed = images.copy()
    changed[0, 0, 0] += 0.5
    other = PatternDataset(changed, [0, 1, 2, 1], ["a", "b", "c", "d"])
    assert ds.content_digest() != other.content_digest()  # same ids, other pixels
    with pytest.raises(ValueError, match="need images"):
        PatternDataset(images, [0, 1], ["a", "b"])


def test_fold_rows_keep_crystals_apart(data):
    _, manifest = data
    train, val, test = fold_rows(manifest, 0, val_specimens_per_class=1, seed=3)
    sets = [set(x["specimen"]) for x in (train, val, test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert (test["fold"] == 0).all() and set(val["fold"]) == {1}
    assert sorted(val.groupby("crystal_system")["specimen"].nunique()) == [1, 1, 1]
    assert len(train) + len(val) + len(test) == len(manifest)
    small = subsample_per_class(train, 2, seed=0)
    assert small["crystal_system"].value_counts().tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="patterns asked for"):
        subsample_per_class(train, 1000, seed=0)
    with pytest.raises(ValueError, match="validation"):
        fold_rows(manifest, 0, val_specimens_per_class=5)


def test_tiny_training_is_deterministic_and_evaluates(data, tmp_path):
    root, manifest = data
    arch = {"model": "diffraction_cnn", "epochs": 2}
    paths = {}
    for run in ("a", "b"):
        out = tmp_path / run
        train_diffraction_fold(
            root / "split.tsv",
            0,
            arch=arch,
            shared=SHARED,
            best_path=out / "best.pt",
            history_path=out / "history.tsv",
            last_path=out / "last.pt",
            seed=5,
            validation_seed=3,
        )
        paths[run] = out / "best.pt"
    a, b = load_checkpoint(paths["a"]), load_checkpoint(paths["b"])
    assert a["model_name"] == "diffraction_cnn" and a["extra"]["classes"] == list(CLASSES)
    # the default forms, used again by evaluation
    assert a["extra"]["representation"] == {
        "spot": "angular_spectrum",
        "ring": "log_polar_highpass",
    }
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    for name in ("best.pt", "last.pt"):  # the resume checkpoint too: no timings in it
        assert sha256_file(tmp_path / "a" / name) == sha256_file(tmp_path / "b" / name), name
    history = pd.read_csv(tmp_path / "a" / "history.tsv", sep="\t")
    assert history["epoch"].tolist() == [1, 2]
    pred, tables = evaluate_classifier(root / "split.tsv", {0: paths["a"], 1: paths["b"]}, bins=5)
    assert len(pred) == len(manifest)
    probs = pred[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (pred["pred"] == np.array(CLASSES)[probs.argmax(axis=1)]).all()
    summary = tables["summary"].set_index("fold")
    assert summary.loc["all", "patterns"] == len(manifest)
    assert summary.loc["all", "accuracy"] == pytest.approx((pred["true"] == pred["pred"]).mean())
    pooled = tables["confusion"].query("fold == 'all'")["count"].sum()
    assert pooled == len(manifest)
    assert set(tables["breakdown"]["by"]) >= {"modality", "dose_bin", "modality+dose_bin"}
    # spots at 64 px and rings at 128 px in one dataset: every form 64 x 64
    assert a["extra"]["form_px"] == 64 and a["extra"]["kinds"] == ["ring", "spot"]


def test_ring_profile_trains_on_rings_and_is_scored_on_rings_only(data, tmp_path):
    root, manifest = data
    out = tmp_path / "ring_profile"
    train_diffraction_fold(
        root / "split.tsv",
        0,
        arch={"model": "ring_profile", "epochs": 1},
        shared=SHARED,
        best_path=out / "best.pt",
        history_path=out / "history.tsv",
        last_path=out / "last.pt",
        seed=5,
        validation_seed=3,
    )
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["extra"]["kinds"] == ["ring"]
    assert ckpt["extra"]["representation"]["ring"] == "radial_profile"
    pred, tables = evaluate_classifier(root / "split.tsv", {0: out / "best.pt"}, bins=5)
    assert set(pred["modality"]) == {"ring"}
    assert len(pred) == (manifest["fold"] == 0).sum() // 2  # a ring session per crystal
    assert set(tables["breakdown"].query("by == 'modality'")["modality"]) == {"ring"}
    scan = synthetic_scan(SETTINGS, scan_shape=(2, 2), modality="spot", rng=0)[0]
    with pytest.raises(ValueError, match="reads \\['ring'\\] patterns, not 'spot'"):
        classify_scan(scan, [out / "best.pt"], modality="spot", size=64)


def test_frozen_transfer_from_a_local_file_trains_only_the_head(data, tmp_path):
    root, manifest = data
    torch.manual_seed(0)
    source = ResNet18(num_classes=8)  # e.g. pretrained on Bravais lattices
    weights = tmp_path / "weights.pt"
    torch.save(source.state_dict(), weights)
    _, _, config = classifier_config({"model": "resnet18"}, shared=SHARED, seed=1)
    row = transfer_run(
        manifest,
        0,
        strategy="frozen",
        n_per_class=2,
        steps=2,
        config=config,
        pretrained=str(weights),
        out_dir=tmp_path / "t",
        root=".",
        validation_seed=3,
    )
    assert row["strategy"] == "frozen" and row["test_patterns"] == (manifest["fold"] == 0).sum()
    assert row["trainable_parameters"] == 512 * 3 + 3
    state = load_checkpoint(tmp_path / "t" / "best.pt")["model_state"]
    own = source.state_dict()
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.bn2.running_mean"):
        assert torch.equal(state[key], own[key]), key
    assert state["fc.weight"].shape == (3, 512)
    with pytest.raises(ValueError, match="strategy"):
        transfer_run(
            manifest,
            0,
            strategy="partial",
            n_per_class=2,
            steps=1,
            config=config,
            pretrained=str(weights),
            out_dir=tmp_path / "u",
        )


def test_scan_map_is_pattern_by_pattern_and_ome_zarr(data, tmp_path):
    root, manifest = data
    out = tmp_path / "m"
    train_diffraction_fold(
        root / "split.tsv",
        1,
        arch={"model": "diffraction_cnn", "epochs": 1},
        shared=SHARED,
        best_path=out / "best.pt",
        history_path=out / "history.tsv",
        last_path=out / "last.pt",
    )
    counts, truth, grains, info = synthetic_scan(
        SETTINGS, scan_shape=(3, 5), grain_diameter_px=2.5, rng=0
    )
    assert counts.shape == (3, 5, 64, 64) and truth.shape == (3, 5)
    assert set(np.unique(truth)) <= {1, 2, 3} and grains.max() >= 1
    write_scan(tmp_path / "scan.zarr", counts, truth=truth, attrs=info)
    patterns = read_scan(tmp_path / "scan.zarr")
    probs = classify_scan(patterns, [out / "best.pt"], batch_size=4)  # blocks of rows
    assert probs.shape == (3, 3, 5)
    model = model_from_checkpoint(out / "best.pt")
    flat = prepare_patterns(counts.reshape(-1, 64, 64), size=64)
    # patterns are prepared as the model was trained: spots as angular spectra, rings log-polar
    direct = predict_proba(model, np.stack([angular_spectrum(x) for x in flat]))
    np.testing.assert_allclose(probs.reshape(3, -1).T, direct, rtol=1e-5, atol=1e-6)
    summary = scan_map(
        tmp_path / "scan.zarr", tmp_path / "map.ome.zarr", [out / "best.pt"], scan_step_um=0.01
    )
    back, labels, attrs = read_scan_map(tmp_path / "map.ome.zarr")
    np.testing.assert_allclose(back, probs, rtol=1e-6)
    assert np.array_equal(labels, probs.argmax(axis=0) + 1)
    assert attrs["agreement_with_truth"] == pytest.approx(np.mean(labels == truth))
    assert attrs["modality"] == "spot"
    ring_probs = classify_scan(patterns, [out / "best.pt"], modality="ring")
    expected = predict_proba(model, np.stack([log_polar_highpass(x) for x in flat]))
    np.testing.assert_allclose(ring_probs.reshape(3, -1).T, expected, rtol=1e-5, atol=1e-6)
    assert summary["counts"] == {c: int((labels == k + 1).sum()) for k, c in enumerate(CLASSES)}
    meta = json.loads((tmp_path / "map.ome.zarr" / "zarr.json").read_text())
    axes = meta["attributes"]["ome"]["multiscales"][0]["axes"]
    assert [a["name"] for a in axes] == ["c", "y", "x"] and axes[1]["unit"] == "micrometer"
    # any OME-Zarr reader finds the probabilities and the label map
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ome_zarr.io import parse_url
        from ome_zarr.reader import Reader

        nodes = list(Reader(parse_url(str(tmp_path / "map.ome.zarr")))())
    label = next(n for n in nodes if any(type(s).__name__ == "Label" for s in n.specs))
    assert nodes[0].data[0].shape == (3, 3, 5)
    assert np.array_equal(np.asarray(label.data[0]), labels)


def test_mixed_pattern_sizes_reach_a_2d_model_at_one_side():
    (spot, ring), _ = synthesize_diffraction_specimen(
        "s00", {"sessions_per_specimen": 2, "images_per_session": 1}, seed=1
    )
    assert (spot.modality, spot.image.shape, ring.image.shape) == ("spot", (64, 64), (128, 128))
    forms = represent([spot.image, ring.image], ["spot", "ring"])
    assert forms.shape == (2, 64, 64)  # the smaller side, for both kinds
    # a 128-px ring's 64-px log-polar form spans the radius ratios of a 64-px ring's
    binned = ring.image.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    assert np.corrcoef(forms[1].ravel(), log_polar_highpass(binned).ravel())[0, 1] > 0.8
    ds = PatternDataset(
        [spot.image, ring.image], [0, 0], ["a", "b"], modalities=["spot", "ring"], rotate=True
    )
    assert ds[0][0].shape == ds[1][0].shape == (1, 64, 64)


def test_radial_profile_ignores_rotations_and_reads_rings_finely():
    (ring,), _ = synthesize_diffraction_specimen(
        "s01", {"modalities": ["ring"], "sessions_per_specimen": 1, "images_per_session": 1}, seed=2
    )
    profile = radial_profile(ring.image)
    assert profile.shape == (1, 128) and profile.dtype == np.float32
    assert abs(profile.mean()) < 1e-5 and profile.std() == pytest.approx(1.0, rel=1e-4)
    turned = radial_profile(np.rot90(ring.image))
    np.testing.assert_allclose(turned, profile, atol=1e-4)
    with pytest.raises(ValueError, match="radial_profile is for ring_profile only"):
        represent([ring.image, ring.image], ["ring", "spot"], {"spot": "radial_profile"})


def test_model_choice_picks_the_most_accurate_classifier_per_kind(tmp_path):
    def breakdown(name, rows):
        path = tmp_path / f"{name}.tsv"
        pd.DataFrame(
            [{"by": "modality", "modality": m, "patterns": n, "accuracy": a} for m, n, a in rows]
            + [{"by": "dose_bin", "modality": "", "patterns": 9, "accuracy": 1.0}]
        ).to_csv(path, sep="\t", index=False)
        return path

    paths = {
        "diffraction_cnn": breakdown("cnn", [("ring", 48, 0.5), ("spot", 48, 0.9)]),
        "resnet18": breakdown("resnet", [("ring", 48, 0.45), ("spot", 48, 1.0)]),
        "ring_profile": breakdown("profile", [("ring", 48, 0.75)]),  # rings only
    }
    table = model_choice(paths)
    assert table["modality"].tolist() == ["spot", "spot", "ring", "ring", "ring"]
    use = table[table["use"]].set_index("modality")["classifier"].to_dict()
    assert use == {"spot": "resnet18", "ring": "ring_profile"}
    h = model_choice_headline(table)
    assert h["ring"] == {
        "use": "ring_profile",
        "accuracy": 75.0,
        "patterns": 48,
        "all": {"diffraction_cnn": 50.0, "resnet18": 45.0, "ring_profile": 75.0},
    }
    assert set(h["spot"]["all"]) == {"diffraction_cnn", "resnet18"}
