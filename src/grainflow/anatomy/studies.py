"""The "CNN anatomy" studies: example images, the designed-kernel study and the report's numbers.

Puts the primitives of :mod:`grainflow.anatomy.kernels` together into what the ``anatomy``
rules show; every number the report's captions quote (:func:`anatomy_numbers`) is computed
with the same functions and seeds as the figures (:mod:`grainflow.anatomy.figures`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from grainflow.anatomy import kernels as K
from grainflow.models.registry import build_model
from grainflow.seeds import as_rng
from grainflow.synth.bicrystal import bicrystal
from grainflow.synth.imaging import render_bicrystal, render_sem_grains
from grainflow.synth.tessellation import polycrystal

__all__ = [
    "SEED_NAMES",
    "read_numbers",
    "example_images",
    "DesignedKernelStudy",
    "designed_kernel_study",
    "measured_receptive_fields",
    "hand_set_responses",
    "anatomy_numbers",
]


#: the names whose seeds (derived per run) the anatomy figures and their numbers share
SEED_NAMES = ("examples", "receptive_field", "hierarchy", "designed_kernel")


def read_numbers(path: str | os.PathLike) -> dict:
    """The numbers the anatomy captions quote, as :func:`anatomy_numbers` wrote them (JSON)."""
    with open(path) as f:
        return json.load(f)


def example_images(
    *,
    size_px: int = 64,
    grain_diameter_px: float = 16.0,
    rng: int | np.random.Generator | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The two images the hand-set kernels are applied to.

    Returns
    -------
    images : dict of name -> (image, labels)
        ``"bicrystal"``: the lecture's corner bicrystal (grain 2 fills the
        bottom-right quadrant; tones 0.3 / 0.7, light blur and noise);
        ``"polycrystal"``: a Voronoi polycrystal of ``grain_diameter_px`` mean
        grain diameter rendered as a channelling-contrast SEM image with dark
        boundary grooves. Images (size_px, size_px) float32 in [0, 1],
        labels uint32.
    """
    if size_px < 16:
        raise ValueError(f"size_px must be >= 16, got {size_px=}")
    rng = as_rng(rng)
    shape = (size_px, size_px)
    corner = bicrystal(shape, geometry="corner")
    grains = polycrystal(shape, grain_diameter_px=grain_diameter_px, rng=rng)
    return {
        "bicrystal": (render_bicrystal(corner, rng=rng), corner),
        "polycrystal": (
            render_sem_grains(grains, rng=rng, charging=0.0, groove_depth=0.2, dose=200.0),
            grains,
        ),
    }


def hand_set_responses(
    images: Mapping[str, tuple[np.ndarray, np.ndarray]],
    kernels: Mapping[str, np.ndarray] = K.HAND_SET_KERNELS,
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean ``|response|`` of each kernel on vertical and horizontal boundaries of each image.

    Returns ``{image: {kernel: {"vertical": …, "horizontal": …}}}`` (see
    :func:`grainflow.anatomy.kernels.boundary_response`; replicate padding).
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, (image, labels) in images.items():
        out[name] = {}
        for kname, kernel in kernels.items():
            pad = np.shape(kernel)[0] // 2
            feature = K.correlate2d(image, kernel, padding=pad, padding_mode="replicate")
            out[name][kname] = K.boundary_response(feature, labels)
    return out


@dataclass(frozen=True)
class DesignedKernelStudy:
    """The designed kernel and the selectivity of its unit and of the isotropic baseline."""

    kernel: np.ndarray
    designed: K.Selectivity
    baseline: K.Selectivity


def designed_kernel_study(
    *,
    normal_deg: float = 0.0,
    size_px: int = 7,
    sigma_along_px: float = 2.0,
    sigma_across_px: float = 1.0,
    tolerance_deg: float = 22.5,
    angle_step_deg: float = 7.5,
    contrasts: Sequence[float] = (0.1, 0.2, 0.4),
    image_px: int = 64,
    rng: int | np.random.Generator | None = None,
) -> DesignedKernelStudy:
    """Design a boundary detector for one boundary type and measure its selectivity.

    The unit ``max(0, w ⋆ image)`` with ``w`` from
    :func:`grainflow.anatomy.kernels.designed_boundary_kernel` is compared with the
    Sobel gradient magnitude, which responds to every boundary alike, on the
    same bicrystals (same seed) by :func:`grainflow.anatomy.kernels.boundary_selectivity`.
    Parameters as in those two functions.
    """
    kernel = K.designed_boundary_kernel(
        normal_deg=normal_deg,
        size_px=size_px,
        sigma_along_px=sigma_along_px,
        sigma_across_px=sigma_across_px,
    )
    seed = int(as_rng(rng).integers(0, 2**62))
    common = dict(
        target_deg=normal_deg,
        tolerance_deg=tolerance_deg,
        angle_step_deg=angle_step_deg,
        contrasts=contrasts,
        shape=(image_px, image_px),
    )
    designed = K.boundary_selectivity(K.relu_unit(kernel), rng=seed, **common)
    baseline = K.boundary_selectivity(K.gradient_magnitude, rng=seed, **common)
    return DesignedKernelStudy(kernel=kernel, designed=designed, baseline=baseline)


def measured_receptive_fields(
    n_layers: int, *, channels: int = 8, rng: int | np.random.Generator | None = None
) -> list[dict[str, int]]:
    """Analytic and measured receptive fields of random CNNs of 1 … ``n_layers`` 3×3 layers.

    Returns
    -------
    rows : list of dict
        ``layers``, ``analytic`` (px) and ``measured_rows``, ``measured_cols``
        (px, from :func:`grainflow.anatomy.kernels.measured_receptive_field` on an input
        a few pixels larger than the field).
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers=}")
    rng = as_rng(rng)
    rows = []
    for n, analytic in enumerate(K.stacked_receptive_fields(n_layers), start=1):
        model = K.random_cnn([channels] * n, rng=rng)
        measured = K.measured_receptive_field(model, size_px=int(analytic) + 8, rng=rng)
        rows.append(
            dict(
                layers=n,
                analytic=int(analytic),
                measured_rows=measured[0],
                measured_cols=measured[1],
            )
        )
    return rows


def _grid(array: np.ndarray) -> str:
    """``[[6, 8], [3, 4]]`` -> ``"6 8 / 3 4"`` (integers shown without decimals)."""

    def fmt(v):
        return str(int(v)) if float(v).is_integer() else f"{v:g}"

    return " / ".join(" ".join(fmt(v) for v in row) for row in np.asarray(array))


def anatomy_numbers(
    *,
    image_size_px: int = 64,
    grain_diameter_px: float = 16.0,
    random_cnn_channels: Sequence[int] = (8, 16, 32),
    receptive_field_layers: int = 6,
    parameter_counts: Mapping | None = None,
    designed_kernel: Mapping | None = None,
    encoder: Mapping | None = None,
    diffraction_input_px: int = 64,
    seeds: Mapping[str, int] | None = None,
) -> dict:
    """Every number the CNN-anatomy captions quote, as plain Python values (JSON-ready).

    The keywords are those of the ``anatomy`` block of the config.

    Parameters
    ----------
    image_size_px, grain_diameter_px :
        Size of the example images and mean grain diameter of the polycrystal (px).
    random_cnn_channels : sequence of int
        Channels of the feature-hierarchy CNN (not used by the numbers; accepted so
        that the whole config block can be passed).
    receptive_field_layers : int
        Deepest stack of 3×3 layers whose receptive field is measured.
    parameter_counts : mapping
        ``image_sides_px``, ``hidden_units``, ``conv_filters``, ``kernel_px``.
    designed_kernel : mapping
        Keyword arguments of :func:`designed_kernel_study` (without ``rng``).
    encoder : mapping
        ``input_px``, ``base_channels``, ``depth`` of the U-Net whose encoder is traced.
    diffraction_input_px : int
        Pattern size used for the DiffractionCNN's output shapes.
    seeds : mapping
        ``examples``, ``receptive_field``, ``designed_kernel``: the seeds of the
        figures, so that the captions quote the figures' own numbers.

    Returns
    -------
    numbers : dict
    """
    mlp = {
        **dict(
            image_sides_px=[32, 64, 128, 256, 512, 1024],
            hidden_units=1000,
            conv_filters=64,
            kernel_px=3,
        ),
        **(parameter_counts or {}),
    }
    encoder = {**dict(input_px=256, base_channels=64, depth=4), **(encoder or {})}
    seeds = {**dict(examples=0, receptive_field=0, designed_kernel=0), **(seeds or {})}

    worked = K.worked_example()
    images = example_images(
        size_px=image_size_px, grain_diameter_px=grain_diameter_px, rng=seeds["examples"]
    )
    responses = hand_set_responses(images)
    corner = responses["bicrystal"]
    sobel = dict(
        vertical_sobel_ratio=corner["vertical Sobel"]["vertical"]
        / corner["vertical Sobel"]["horizontal"],
        horizontal_sobel_ratio=corner["horizontal Sobel"]["horizontal"]
        / corner["horizontal Sobel"]["vertical"],
    )

    sides = np.asarray(mlp["image_sides_px"])
    mlp_counts = K.mlp_first_layer_params(sides, hidden=mlp["hidden_units"])
    conv_count = K.conv_layer_params(filters=mlp["conv_filters"], kernel_size=mlp["kernel_px"])

    cnn = build_model("diffraction_cnn")
    table = K.parameter_table(cnn, input_shape=(1, diffraction_input_px, diffraction_input_px))
    bn = sum(r["params"] for r in table if r["kind"].startswith("BatchNorm"))
    total = sum(r["params"] for r in table)

    unet = build_model("unet", base_channels=encoder["base_channels"], depth=encoder["depth"])
    trace = unet.encoder_trace((encoder["input_px"], encoder["input_px"]))

    study = designed_kernel_study(
        image_px=image_size_px, rng=seeds["designed_kernel"], **(designed_kernel or {})
    )

    rf = measured_receptive_fields(receptive_field_layers, rng=seeds["receptive_field"])
    return {
        "worked_example": {
            "patch": _grid(worked["patch"]),
            "kernel": _grid(worked["kernel"]),
            "total": worked["total"],
        },
        "sobel": {k: round(float(v), 1) for k, v in sobel.items()},
        "output_size": [
            {
                **ex,
                "out": K.conv_output_size(
                    ex["size"],
                    kernel_size=ex["kernel_size"],
                    padding=ex["padding"],
                    stride=ex["stride"],
                ),
            }
            for ex in K.OUTPUT_SIZE_EXAMPLES
        ],
        "pooling": [
            {"input": _grid(x), "output": _grid(K.max_pool2d(x))} for x in K.POOLING_EXAMPLES
        ],
        "mlp": {
            "hidden_units": int(mlp["hidden_units"]),
            "largest_side_px": int(sides.max()),
            "largest_weights": int(mlp_counts.max()),
            "largest_weights_sci": f"{mlp_counts.max():.3g}",
            "conv_filters": int(mlp["conv_filters"]),
            "kernel_px": int(mlp["kernel_px"]),
            "conv_weights": int(conv_count),
        },
        "diffraction_cnn": {
            "rows": [
                {k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()} for r in table
            ],
            "total": int(total),
            "batch_norm": int(bn),
            "without_batch_norm": int(total - bn),
        },
        "receptive_field": rf,
        "receptive_field_agree": all(
            r["analytic"] == r["measured_rows"] == r["measured_cols"] for r in rf
        ),
        "designed_kernel": {
            "normal_deg": study.designed.target_deg,
            "tolerance_deg": study.designed.tolerance_deg,
            "contrasts": [float(c) for c in study.designed.contrasts],
            "selectivity": [round(float(s), 1) for s in study.designed.selectivity],
            "baseline_selectivity": [round(float(s), 2) for s in study.baseline.selectivity],
            "min_selectivity": round(float(study.designed.selectivity.min()), 1),
        },
        "encoder": {
            **{k: int(v) for k, v in encoder.items()},
            "trace": [
                {"stage": i + 1, "channels": c, "height": h, "width": w}
                for i, (c, h, w) in enumerate(trace)
            ],
            "text": ", ".join(f"{c}/{h}" for c, h, _ in trace),
        },
        "torch_version": torch.__version__,
    }
