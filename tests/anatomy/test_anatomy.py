"""The CNN-anatomy studies and figures: the numbers the report quotes, and figures that draw."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from grainflow.anatomy import figures as FA
from grainflow.anatomy import studies as A
from grainflow.figures import save_figure
from grainflow.models.registry import build_model

matplotlib.use("Agg")

SEEDS = dict(examples=11, receptive_field=12, designed_kernel=13)


@pytest.fixture(scope="module")
def numbers():
    return A.anatomy_numbers(
        image_size_px=64,
        receptive_field_layers=4,
        parameter_counts=dict(image_sides_px=[32, 1024]),
        designed_kernel=dict(angle_step_deg=15.0, contrasts=[0.2]),
        seeds=SEEDS,
    )


def test_numbers_are_json_and_quote_the_course(numbers):
    assert json.loads(json.dumps(numbers)) == numbers
    assert numbers["worked_example"]["total"] == 214  # the course material says +213
    assert [(o["size"], o["out"]) for o in numbers["output_size"][:2]] == [(64, 64), (64, 31)]
    assert [p["output"] for p in numbers["pooling"]] == ["6 8 / 3 4", "6 4 / 7 8"]
    assert numbers["pooling"][0]["input"] == "1 3 2 4 / 5 6 7 8 / 3 2 1 0 / 1 2 3 4"
    mlp = numbers["mlp"]
    assert (mlp["largest_weights"], mlp["largest_weights_sci"]) == (1_048_576_000, "1.05e+09")
    assert mlp["conv_weights"] == 576
    cnn = numbers["diffraction_cnn"]
    assert (cnn["total"], cnn["batch_norm"], cnn["without_batch_norm"]) == (101_571, 448, 101_123)
    assert numbers["encoder"]["text"] == "64/128, 128/64, 256/32, 512/16"


def test_numbers_measure_what_the_figures_show(numbers):
    assert [r["analytic"] for r in numbers["receptive_field"]] == [3, 5, 7, 9]
    assert numbers["receptive_field_agree"] is True
    assert numbers["sobel"]["vertical_sobel_ratio"] > 5
    assert numbers["sobel"]["horizontal_sobel_ratio"] > 5
    assert numbers["designed_kernel"]["min_selectivity"] > 4
    assert 0.8 < numbers["designed_kernel"]["baseline_selectivity"][0] < 1.25
    # the figure's images come from the same seed, so the caption quotes the figure's ratio
    images = A.example_images(size_px=64, rng=SEEDS["examples"])
    r = A.hand_set_responses(images)["bicrystal"]["vertical Sobel"]
    assert round(r["vertical"] / r["horizontal"], 1) == numbers["sobel"]["vertical_sobel_ratio"]


def test_example_images():
    images = A.example_images(size_px=32, grain_diameter_px=8, rng=0)
    assert list(images) == ["bicrystal", "polycrystal"]
    for image, labels in images.values():
        assert image.shape == labels.shape == (32, 32)
        assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    image, labels = images["bicrystal"]
    # grain 2 (bottom-right quadrant) is the bright one
    assert image[labels == 2].mean() > image[labels == 1].mean() + 0.2
    assert images["polycrystal"][1].max() > 4
    again = A.example_images(size_px=32, grain_diameter_px=8, rng=0)
    np.testing.assert_array_equal(again["polycrystal"][0], images["polycrystal"][0])
    with pytest.raises(ValueError, match="size_px"):
        A.example_images(size_px=8)


def test_every_figure_draws():
    images = A.example_images(size_px=32, grain_diameter_px=8, rng=0)
    image = images["polycrystal"][0]
    study = A.designed_kernel_study(angle_step_deg=30.0, contrasts=(0.3,), image_px=32, rng=0)
    fields = A.measured_receptive_fields(3, rng=0)
    unet = build_model("unet", base_channels=4, depth=2)
    figures = {
        "kernels": FA.kernel_weights(),
        "feature_maps": FA.hand_set_feature_maps(images),
        "correlation": FA.correlation_example(images["bicrystal"][0]),
        "output_size": FA.output_size_examples(),
        "pooling": FA.max_pooling_examples(),
        "parameters": FA.parameter_counts(image_sides_px=(32, 64)),
        "table": FA.parameter_table_figure(build_model("diffraction_cnn"), input_shape=(1, 16, 16)),
        "receptive_field": FA.receptive_field_figure(image, fields, rng=0),
        "hierarchy": FA.feature_hierarchy(image, channels=(4, 4), n_show=2, rng=0),
        "designed": FA.designed_kernel_figure(study),
        "encoder": FA.encoder_trace_figure(unet, input_px=32),
    }
    for name, fig in figures.items():
        assert isinstance(fig, Figure), name
        assert fig.axes, name
    # 2 images × (input + 4 kernels)
    assert len(figures["feature_maps"].axes) == 10
    with pytest.raises(ValueError, match="encoder_trace"):
        FA.encoder_trace_figure(build_model("diffraction_cnn"))


def test_feature_hierarchy_hook_for_a_trained_model():
    image = A.example_images(size_px=32, grain_diameter_px=8, rng=0)["polycrystal"][0]
    unet = build_model("unet", base_channels=4, depth=3)
    fig = FA.feature_hierarchy(image, channels=(4, 4, 4), n_show=2, rng=0, trained=unet)
    # 3 random-CNN rows + 3 U-Net rows, each input + 2 maps
    assert len(fig.axes) == 6 * 3
    fig = FA.feature_hierarchy(
        image,
        channels=(4,),
        n_show=2,
        rng=0,
        trained=unet,
        trained_input=image / image.max(),
        trained_layers=("encoder.0.block",),
    )
    assert len(fig.axes) == 2 * 3


def test_save_figure_is_atomic_and_follows_the_extension(tmp_path):
    fig = FA.max_pooling_examples()
    save_figure(fig, tmp_path / "a.png")
    save_figure(fig, tmp_path / "a.svg")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "a.svg").read_bytes()[:500]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.svg"]
