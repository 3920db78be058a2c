"""Figures of the CNN anatomy: kernels, feature maps, worked examples, sizes, parameters.

Each function returns a matplotlib ``Figure``; the ``anatomy`` rules' scripts
save them. Numbers printed in the figures are computed here from
:mod:`grainflow.anatomy.kernels` and :mod:`grainflow.anatomy.studies`, never typed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy import ndimage as ndi
from torch import nn

from grainflow.anatomy import kernels as K
from grainflow.anatomy.studies import DesignedKernelStudy

__all__ = [
    "kernel_weights",
    "hand_set_feature_maps",
    "correlation_example",
    "output_size_examples",
    "max_pooling_examples",
    "parameter_counts",
    "parameter_table_figure",
    "receptive_field_figure",
    "feature_hierarchy",
    "designed_kernel_figure",
    "encoder_trace_figure",
]

DIVERGING = "RdBu_r"


def _fmt(value: float) -> str:
    value = float(value)
    if value.is_integer():
        return f"{int(value)}"
    return f"{value:.2f}".replace("0.", ".", 1) if abs(value) < 1 else f"{value:.1f}"


def _common_denominator(kernel: np.ndarray, limit: int = 64) -> int:
    """Smallest d <= limit such that kernel * d is all integers (1 when there is none)."""
    for d in range(1, limit + 1):
        scaled = kernel * d
        if np.allclose(scaled, np.round(scaled)):
            return d
    return 1


def _number_grid(
    ax,
    array: np.ndarray,
    *,
    cmap=DIVERGING,
    vmax=None,
    fontsize=10,
    highlight: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> None:
    """Draw ``array`` as coloured cells with its values written in them."""
    array = np.asarray(array, dtype=np.float64)
    vmax = float(np.abs(array).max()) if vmax is None else vmax
    vmax = vmax or 1.0
    vmin = -vmax if cmap == DIVERGING else 0.0
    im = ax.imshow(array, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    for (i, j), v in np.ndenumerate(array):
        text = _fmt(v) if labels is None else labels[i, j]
        r, g, b, _ = im.cmap(im.norm(v))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # white text on dark cells
        weight = "bold" if highlight is not None and highlight[i, j] else "normal"
        ax.text(
            j,
            i,
            text,
            ha="center",
            va="center",
            fontsize=fontsize,
            fontweight=weight,
            color="white" if dark else "black",
        )
    ax.set_xticks(np.arange(array.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(array.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="0.3", linewidth=0.6)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)


def _image(ax, image, *, title="", cmap="gray", signed=False, px_axes=False, fontsize=8, vmax=None):
    image = np.asarray(image)
    if signed:
        vmax = vmax or float(np.abs(image).max()) or 1.0
        ax.imshow(image, cmap=DIVERGING, vmin=-vmax, vmax=vmax, interpolation="nearest")
    else:
        ax.imshow(image, cmap=cmap, interpolation="nearest")
    ax.set_title(title, fontsize=fontsize)
    if px_axes:
        ax.set_xlabel("column (px)", fontsize=7)
        ax.set_ylabel("row (px)", fontsize=7)
        ax.tick_params(labelsize=6)
    else:
        ax.set_xticks([])
        ax.set_yticks([])


# --------------------------------------------------------------------------- 1. kernels


def kernel_weights(kernels: Mapping[str, np.ndarray] = K.HAND_SET_KERNELS) -> Figure:
    """The hand-set kernels, each cell showing its weight (a common factor in the title)."""
    fig = Figure(figsize=(2.3 * len(kernels), 2.6), layout="constrained")
    axes = fig.subplots(1, len(kernels), squeeze=False)[0]
    for ax, (name, kernel) in zip(axes, kernels.items(), strict=True):
        kernel = np.asarray(kernel, dtype=np.float64)
        d = _common_denominator(kernel)
        _number_grid(ax, kernel * d, fontsize=12)
        factor = f"  (× 1/{d})" if d > 1 else ""
        ax.set_title(
            f"{name}{factor}\n{kernel.shape[0]}×{kernel.shape[1]}, sum {kernel.sum():g}", fontsize=9
        )
    fig.suptitle(
        "Hand-set kernels: the weights a convolution layer would otherwise learn", fontsize=10
    )
    return fig


def hand_set_feature_maps(
    images: Mapping[str, tuple[np.ndarray, np.ndarray]],
    kernels: Mapping[str, np.ndarray] = K.HAND_SET_KERNELS,
) -> Figure:
    """Each image beside its feature maps under each kernel (replicate padding, same size).

    Parameters
    ----------
    images : mapping of name -> (image (M, N), labels (M, N))
        E.g. :func:`grainflow.anatomy.studies.example_images`.
    kernels : mapping of name -> ndarray (k, k)

    Titles give the mean ``|response|`` on vertical boundaries over that on
    horizontal ones (V/H): the vertical Sobel's is large, the horizontal
    Sobel's small, the isotropic kernels' near 1.
    """
    fig = Figure(figsize=(2.0 * (len(kernels) + 1), 2.2 * len(images)), layout="constrained")
    axes = fig.subplots(len(images), len(kernels) + 1, squeeze=False)
    for row, (name, (image, labels)) in enumerate(images.items()):
        h, w = image.shape
        _image(axes[row, 0], image, title=f"{name} ({h}×{w} px)", px_axes=True)
        for col, (kname, kernel) in enumerate(kernels.items(), start=1):
            pad = np.shape(kernel)[0] // 2
            feature = K.correlate2d(image, kernel, padding=pad, padding_mode="replicate")
            r = K.boundary_response(feature, labels)
            signed = bool(np.any(np.asarray(kernel) < 0))
            _image(
                axes[row, col],
                feature,
                signed=signed,
                title=f"{kname}\nV/H = {r['vertical'] / r['horizontal']:.2g}",
            )
    fig.suptitle(
        "Feature maps of hand-set kernels (red > 0 > blue; V/H = mean |response| on "
        "vertical / horizontal boundary pixels)",
        fontsize=9,
    )
    return fig


# --------------------------------------------------------------------------- 2. correlation


def correlation_example(image: np.ndarray, kernel: np.ndarray = K.SOBEL_VERTICAL) -> Figure:
    """The lecture's worked example, and correlation against convolution on an image.

    Top: patch, kernel, their elementwise products and the sum (one output
    value). Bottom: ``kernel`` correlated with ``image`` (what a CNN layer
    computes), the true convolution (the flipped kernel), and the agreement of
    the package's correlation with ``torch.nn.functional.conv2d`` and
    ``scipy.ndimage.correlate`` (zero padding).
    """
    ex = K.worked_example()
    fig = Figure(figsize=(10, 6.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.15])
    axes = top.subplots(1, 4, width_ratios=[1, 1, 1, 1.2])
    vmax = float(np.abs(ex["products"]).max())
    _number_grid(axes[0], ex["patch"], cmap="gray", vmax=float(ex["patch"].max()) * 1.3)
    axes[0].set_title("image patch (intensities)", fontsize=9)
    _number_grid(axes[1], ex["kernel"], fontsize=12)
    axes[1].set_title("kernel", fontsize=9)
    _number_grid(axes[2], ex["products"], vmax=vmax)
    axes[2].set_title("patch × kernel, element by element", fontsize=9)
    axes[3].set_axis_off()
    nonzero = ex["products"][ex["products"] != 0]
    terms = f"{nonzero[0]:g}".replace("-", "−") + "".join(
        f" {'+' if v >= 0 else '−'} {abs(v):g}" for v in nonzero[1:]
    )
    axes[3].text(0.0, 0.6, f"sum = {terms}", fontsize=9, transform=axes[3].transAxes)
    axes[3].text(
        0.0,
        0.35,
        f"= {ex['total']:+g}",
        fontsize=16,
        fontweight="bold",
        transform=axes[3].transAxes,
    )
    axes[3].text(
        0.0,
        0.1,
        "one value of the feature map:\nbright on the right → positive",
        fontsize=8,
        transform=axes[3].transAxes,
    )
    top.suptitle("Cross-correlation, one position: multiply and add", fontsize=10)

    image = np.array(image, dtype=np.float64)
    kernel = np.array(kernel, dtype=np.float64)  # a writable copy (the constants are read-only)
    pad = kernel.shape[0] // 2
    ours = K.correlate2d(image, kernel, padding=pad)
    conv = K.convolve2d(image, kernel, padding=pad)
    ref_torch = F.conv2d(
        torch.from_numpy(image)[None, None], torch.from_numpy(kernel)[None, None], padding=pad
    )[0, 0].numpy()
    ref_scipy = ndi.correlate(image, kernel, mode="constant", cval=0.0)
    ref_conv = ndi.convolve(image, kernel, mode="constant", cval=0.0)
    axes = bottom.subplots(1, 4)
    _image(axes[0], image, title=f"input ({image.shape[0]}×{image.shape[1]} px)", px_axes=True)
    # colour scale from the interior: zero padding makes the image edge a strong step
    vmax = float(np.abs(ours[2 * pad : -2 * pad, 2 * pad : -2 * pad]).max())
    _image(axes[1], ours, signed=True, vmax=vmax, title="correlation (CNN layer)\nkernel as stored")
    _image(
        axes[2],
        conv,
        signed=True,
        vmax=vmax,
        title="true convolution\nkernel flipped: sign reversed",
    )
    axes[3].set_axis_off()
    lines = [
        "max |difference|, zero padding:",
        f"correlation − torch conv2d: {np.abs(ours - ref_torch).max():.1e}",
        f"correlation − scipy correlate: {np.abs(ours - ref_scipy).max():.1e}",
        f"convolution − scipy convolve: {np.abs(conv - ref_conv).max():.1e}",
        f"correlation − convolution: {np.abs(ours - conv).max():.2g}",
    ]
    axes[3].text(
        0.0,
        0.5,
        "\n".join(lines),
        fontsize=8,
        va="center",
        transform=axes[3].transAxes,
        family="monospace",
    )
    bottom.suptitle(
        "CNNs correlate: convolution flips the kernel, which reverses an "
        "antisymmetric kernel such as Sobel",
        fontsize=10,
    )
    return fig


# --------------------------------------------------------------------------- 3./4. sizes, pooling


def output_size_examples(examples: Sequence[Mapping[str, int]] = K.OUTPUT_SIZE_EXAMPLES) -> Figure:
    """A table of output sizes by the formula, checked against a torch layer of those settings."""
    rows = []
    for ex in examples:
        h, k, p, s = ex["size"], ex["kernel_size"], ex["padding"], ex["stride"]
        out = K.conv_output_size(h, kernel_size=k, padding=p, stride=s)
        layer = nn.Conv2d(1, 1, k, stride=s, padding=p, bias=False)
        with torch.inference_mode():
            torch_out = layer(torch.zeros(1, 1, h, h)).shape[-1]
        rows.append(
            [
                f"{h}",
                f"{k}",
                f"{p}",
                f"{s}",
                f"⌊({h} + 2·{p} − {k}) / {s}⌋ + 1",
                f"{out}",
                f"{torch_out}",
            ]
        )
    fig = Figure(figsize=(9, 0.3 * len(rows) + 0.8), layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    table = ax.table(
        cellText=rows,
        colLabels=[
            "H (px)",
            "k (px)",
            "p (px)",
            "s (px)",
            "formula",
            "H_out (px)",
            "torch Conv2d (px)",
        ],
        colWidths=[0.09, 0.09, 0.09, 0.09, 0.3, 0.12, 0.18],
        loc="center",
        cellLoc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1.0, 1.5)
    for col in range(7):
        table[0, col].set_facecolor("0.88")
    for row in (1, 2):  # the lecture's two examples
        for col in range(7):
            table[row, col].set_facecolor("#fff3c4")
    ax.set_title(
        "Output size H_out = ⌊(H + 2p − k) / s⌋ + 1 (the lecture's two examples highlighted)",
        fontsize=10,
    )
    return fig


def max_pooling_examples(examples: Sequence[np.ndarray] = K.POOLING_EXAMPLES) -> Figure:
    """Each feature map with its 2×2 windows, the maximum of each in bold, and the pooled map."""
    fig = Figure(figsize=(6.5, 3.0 * len(examples)), layout="constrained")
    axes = fig.subplots(len(examples), 2, squeeze=False, width_ratios=[2, 1])
    colours = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3"]
    for row, x in enumerate(examples):
        x = np.asarray(x, dtype=np.float64)
        pooled = K.max_pool2d(x)
        windows = np.lib.stride_tricks.sliding_window_view(x, (2, 2))[::2, ::2]
        is_max = np.zeros(x.shape, bool)
        for (i, j), _ in np.ndenumerate(pooled):
            w = windows[i, j]
            a, b = np.unravel_index(np.argmax(w), w.shape)
            is_max[2 * i + a, 2 * j + b] = True
        vmax = float(x.max())
        _number_grid(axes[row, 0], x, cmap="Greys", vmax=vmax * 2.2, fontsize=12, highlight=is_max)
        _number_grid(
            axes[row, 1],
            pooled,
            cmap="Greys",
            vmax=vmax * 2.2,
            fontsize=12,
            highlight=np.ones(pooled.shape, bool),
        )
        for k, ((i, j), _) in enumerate(np.ndenumerate(pooled)):
            c = colours[k % len(colours)]
            axes[row, 0].add_patch(
                Rectangle(
                    (2 * j - 0.45, 2 * i - 0.45), 1.9, 1.9, fill=False, edgecolor=c, linewidth=2.5
                )
            )
            axes[row, 1].add_patch(
                Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor=c, linewidth=2.5)
            )
        axes[row, 0].set_title(f"feature map {row + 1} ({x.shape[0]}×{x.shape[1]})", fontsize=9)
        axes[row, 1].set_title(
            f"2×2 max pool, stride 2 ({pooled.shape[0]}×{pooled.shape[1]})", fontsize=9
        )
    fig.suptitle("Max pooling keeps the strongest response of each window", fontsize=10)
    return fig


# --------------------------------------------------------------------------- 5. parameters


def parameter_counts(
    *,
    image_sides_px: Sequence[int] = (32, 64, 128, 256, 512, 1024),
    hidden_units: int = 1000,
    conv_filters: int = 64,
    kernel_px: int = 3,
) -> Figure:
    """Weights of a dense first layer against one convolution layer, by image side (log scale)."""
    sides = np.asarray(image_sides_px, dtype=np.int64)
    mlp = K.mlp_first_layer_params(sides, hidden=hidden_units)
    conv = K.conv_layer_params(filters=conv_filters, kernel_size=kernel_px)
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(sides, mlp, "o-", label=f"dense layer: side² pixels × {hidden_units} hidden units")
    ax.plot(
        sides,
        np.full(sides.shape, conv),
        "s-",
        label=f"conv layer: {conv_filters} filters × {kernel_px}×{kernel_px} weights",
    )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sides, [f"{s}²" for s in sides])
    ax.set_xlabel("image size (px × px)")
    ax.set_ylabel("weights in the first layer (biases not counted)")
    ax.annotate(
        f"{mlp[-1]:,} ≈ {mlp[-1]:.3g}",
        (sides[-1], mlp[-1]),
        xytext=(-10, -18),
        textcoords="offset points",
        ha="right",
        fontsize=8,
    )
    ax.annotate(
        f"{conv:,}, at any size",
        (sides[-1], conv),
        xytext=(-10, 8),
        textcoords="offset points",
        ha="right",
        fontsize=8,
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    ax.set_title("A dense layer grows with the image; a convolution layer does not", fontsize=10)
    return fig


def parameter_table_figure(
    model: nn.Module, *, input_shape: tuple[int, int, int], title: str = ""
) -> Figure:
    """Per-layer parameters of ``model``, read from the model, with totals.

    Batch-norm layers are listed in grey: each has two trainable vectors
    (scale and shift) per channel; its running mean and variance are buffers,
    not parameters.
    """
    rows = K.parameter_table(model, input_shape=input_shape)
    total = sum(r["params"] for r in rows)
    bn = sum(r["params"] for r in rows if r["kind"].startswith("BatchNorm"))
    cells = [
        [
            r["name"],
            r["kind"],
            r["shapes"],
            "×".join(map(str, r["output_shape"])),
            f"{r['params']:,}",
        ]
        for r in rows
    ]
    cells.append(["total", "", "", "", f"{total:,}"])
    cells.append(["without batch norm", "", "", "", f"{total - bn:,}"])
    fig = Figure(figsize=(8.5, 0.27 * len(cells) + 0.8), layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    table = ax.table(
        cellText=cells,
        colLabels=["layer", "kind", "parameter shapes", "output (C×H×W)", "parameters"],
        loc="center",
        cellLoc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8.5)
    table.scale(1.0, 1.35)
    for col in range(5):
        table[0, col].set_facecolor("0.88")
        for i, r in enumerate(rows, start=1):
            if r["kind"].startswith("BatchNorm"):
                table[i, col].get_text().set_color("0.45")
        for i in (len(rows) + 1, len(rows) + 2):
            table[i, col].get_text().set_fontweight("bold")
    c, h, w = input_shape
    ax.set_title(
        f"{title or type(model).__name__}: parameters per layer, input {c}×{h}×{w}", fontsize=10
    )
    return fig


# --------------------------------------------------------------------------- 6. receptive field


def receptive_field_figure(
    image: np.ndarray,
    fields: Sequence[Mapping[str, int]],
    *,
    channels: int = 8,
    rng: int | np.random.Generator | None = None,
) -> Figure:
    """Analytic against measured receptive fields, and the fields drawn on an image.

    Parameters
    ----------
    image : ndarray of shape (M, N)
    fields : sequence of mapping
        Rows of :func:`grainflow.anatomy.studies.measured_receptive_fields`.
    channels : int
        Channels of the random CNN whose input gradient is overlaid.
    rng : int or Generator, optional
        Seeds that CNN and its probes.
    """
    layers = np.array([f["layers"] for f in fields])
    analytic = np.array([f["analytic"] for f in fields])
    measured = np.array([f["measured_rows"] for f in fields])
    fig = Figure(figsize=(10, 4.3), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1, 1.1])
    ax1.plot(layers, analytic, "-", color="0.5", lw=2, label="analytic: 1 + L·(k − 1)")
    ax1.plot(
        layers,
        measured,
        "o",
        ms=7,
        mfc="none",
        mew=2,
        label="measured: extent of the input gradient",
    )
    for x, y in zip(layers, analytic, strict=True):
        ax1.annotate(f"{y}", (x, y), xytext=(-12, 5), textcoords="offset points", fontsize=8)
    ax1.set_xlabel("stacked 3×3 convolution layers L")
    ax1.set_ylabel("receptive field (px)")
    ax1.set_xticks(layers)
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax1.set_title("Each 3×3 layer widens the field by 2 px", fontsize=10)

    image = np.asarray(image)
    size = image.shape[0]
    model = K.random_cnn([channels] * int(layers.max()), rng=rng)
    grad = K.gradient_map(model, size_px=size, rng=rng)
    ax2.imshow(image, cmap="gray", interpolation="nearest")
    shown = np.ma.masked_where(grad <= 0, np.log10(grad + 1e-300))
    ax2.imshow(shown, cmap="magma", alpha=0.55, interpolation="nearest")
    centre = size // 2
    for r in analytic:
        half = r // 2
        ax2.add_patch(
            Rectangle(
                (centre - half - 0.5, centre - half - 0.5),
                r,
                r,
                fill=False,
                edgecolor="#39c",
                linewidth=1.0,
            )
        )
    ax2.plot(centre, centre, "+", color="yellow", ms=8)
    ax2.set_xlabel("column (px)")
    ax2.set_ylabel("row (px)")
    ax2.set_title(
        f"fields of 1…{layers.max()} layers (boxes) and log |input gradient| "
        f"of {layers.max()} layers",
        fontsize=9,
    )
    return fig


# --------------------------------------------------------------------------- 7. hierarchy


def feature_hierarchy(
    image: np.ndarray,
    *,
    channels: Sequence[int] = (8, 16, 32),
    n_show: int = 4,
    rng: int | np.random.Generator | None = None,
    trained: nn.Module | None = None,
    trained_input: np.ndarray | None = None,
    trained_layers: Sequence[str] = ("encoder.0.block", "encoder.1.block", "encoder.2.block"),
    trained_label: str = "trained U-Net",
) -> Figure:
    """Feature maps of layers 1–3 of a tiny random CNN (conv → ReLU → 2×2 max pool) on an image.

    Parameters
    ----------
    image : ndarray of shape (M, N)
    channels : sequence of int
        Channels of the random CNN's layers (one row per layer).
    n_show : int
        Feature maps shown per layer (those with the largest variance).
    rng : int or Generator, optional
    trained : torch.nn.Module, optional
        A trained model (e.g. the U-Net of the ``grains`` task) whose maps at
        ``trained_layers`` are shown below the random ones, so that the reader
        sees what training changes. This is the hook for the "after training"
        figure; the ``anatomy`` rules do not pass a model yet.
    trained_input : ndarray of shape (M, N), optional
        ``image`` normalised as the trained model saw its training images
        (e.g. :func:`grainflow.normalize.normalize_image`); fed as it is.
        Without it, the trained model gets ``image`` standardised, like the random CNN.
    trained_layers : sequence of str
        Module names of ``trained`` (see :func:`grainflow.anatomy.kernels.feature_maps`).
    """
    model = K.random_cnn(channels, pool="max", rng=rng)
    groups = [("random CNN", K.feature_maps(model, image))]
    # receptive field of one pixel of layer n of the random CNN: (3×3 conv, 2×2 pool) n times
    fields = [
        K.receptive_field([3, 2] * n, strides=[1, 2] * n) for n in range(1, len(channels) + 1)
    ]
    if trained is not None:
        if trained_input is None:
            maps = K.feature_maps(trained, image, layers=trained_layers)
        else:
            maps = K.feature_maps(trained, trained_input, layers=trained_layers, standardize=False)
        groups.append((trained_label, maps))
    n_rows = sum(len(maps) for _, maps in groups)
    fig = Figure(figsize=(1.9 * (n_show + 1), 1.9 * n_rows + 0.5), layout="constrained")
    axes = fig.subplots(n_rows, n_show + 1, squeeze=False)
    row = 0
    for label, maps in groups:
        for depth, (name, fmap) in enumerate(maps.items(), start=1):
            _image(axes[row, 0], image, px_axes=row == n_rows - 1)
            if label == "random CNN":
                r = fields[depth - 1]
                c0 = image.shape[0] / 2 - r / 2 - 0.5
                axes[row, 0].add_patch(
                    Rectangle((c0, c0), r, r, fill=False, edgecolor="#f33", linewidth=1.5)
                )
                axes[row, 0].set_title(
                    f"input; field of one\nlayer-{depth} pixel: {r}×{r} px", fontsize=7
                )
            order = np.argsort(fmap.reshape(len(fmap), -1).var(axis=1))[::-1][:n_show]
            for col, ch in enumerate(order, start=1):
                ax = axes[row, col]
                ax.imshow(fmap[ch], cmap="viridis", interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 1:
                    ax.set_title(
                        f"{label}, layer {depth} ({name}): {fmap.shape[0]} maps of "
                        f"{fmap.shape[1]}×{fmap.shape[2]} px",
                        fontsize=7,
                        loc="left",
                    )
            for col in range(len(order) + 1, n_show + 1):
                axes[row, col].set_axis_off()
            row += 1
    fig.suptitle(
        "Feature hierarchy: deeper layers see larger regions at coarser resolution "
        "(most varied maps of each layer; red box: receptive field)",
        fontsize=9,
    )
    return fig


# --------------------------------------------------------------------------- 8. designed kernel


def designed_kernel_figure(study: DesignedKernelStudy) -> Figure:
    """The designed kernel, its responses against boundary direction and its selectivity.

    Left: the kernel's weights. Right: the unit's mean boundary response over
    the contrast, against the direction in which the intensity falls (bright
    grain → dark grain), one curve per contrast; the isotropic gradient
    magnitude for comparison; the target band shaded.
    """
    designed, baseline = study.designed, study.baseline
    fig = Figure(figsize=(11, 5.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1, 1.6])
    kernel = study.kernel
    _number_grid(
        ax1,
        kernel * 100,
        fontsize=7 if kernel.shape[0] > 5 else 10,
        labels=np.vectorize(lambda v: f"{round(v) + 0}")(kernel * 100),
    )
    ax1.set_title(
        f"designed kernel ({kernel.shape[0]}×{kernel.shape[1]}, weights × 100)\n"
        f"then ReLU: max(0, kernel ⋆ image)",
        fontsize=9,
    )
    angles = designed.normal_deg
    for c, resp, sel in zip(
        designed.contrasts, designed.response, designed.selectivity, strict=True
    ):
        ax2.plot(
            angles, resp / c, "-", label=f"designed unit, contrast {c:g}: selectivity {sel:.1f}"
        )
    for c, resp, sel in zip(
        baseline.contrasts, baseline.response, baseline.selectivity, strict=True
    ):
        ax2.plot(
            angles,
            resp / c,
            ":",
            color="0.5",
            lw=1,
            label=f"gradient magnitude, contrast {c:g}: {sel:.2f}",
        )
    lo = designed.target_deg - designed.tolerance_deg
    hi = designed.target_deg + designed.tolerance_deg
    ax2.axvspan(lo, hi, color="#ffd966", alpha=0.4, label="target boundaries")
    ax2.set_xlabel(
        "direction of falling intensity, bright → dark grain (° counter-clockwise from +column)"
    )
    ax2.set_ylabel("mean boundary response / contrast")
    ax2.set_xticks(np.arange(-180, 181, 45))
    ax2.set_xlim(-180, 180)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)
    ax2.set_title(
        "Selectivity = mean response to target boundaries / mean response to all others", fontsize=9
    )
    fig.suptitle(
        f"A designed boundary detector: intensity falling towards "
        f"{designed.target_deg:g}° ± {designed.tolerance_deg:g}° "
        f"(0° = brighter grain on the left, boundary vertical)",
        fontsize=10,
    )
    return fig


# --------------------------------------------------------------------------- 9. encoder trace


def encoder_trace_figure(model: nn.Module, *, input_px: int = 256) -> Figure:
    """Channels and spatial size handed on by each encoder stage of a U-Net, read from the model.

    ``model`` must have ``encoder_trace((H, W))`` (:class:`grainflow.models.unet.UNet`).
    Boxes are drawn with height ∝ spatial size and width ∝ log2(channels).
    """
    if not hasattr(model, "encoder_trace"):
        raise ValueError(f"model must have an encoder_trace method, got {type(model).__name__}")
    trace = model.encoder_trace((input_px, input_px))
    in_channels = model.hparams["in_channels"] if hasattr(model, "hparams") else 1
    stages = [("input", in_channels, input_px, input_px)] + [
        (f"stage {i}", c, h, w) for i, (c, h, w) in enumerate(trace, start=1)
    ]
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.5, 1])
    x = 0.0
    for name, c, h, _ in stages:
        width = 0.4 + 0.35 * np.log2(max(c, 1))
        height = h / input_px
        ax1.add_patch(
            Rectangle(
                (x, 0.5 - height / 2), width, height, facecolor="#9ecae1", edgecolor="#08519c"
            )
        )
        ax1.text(
            x + width / 2,
            0.5 + height / 2 + 0.03,
            f"{c} ch\n{h}×{h} px",
            ha="center",
            va="bottom",
            fontsize=8,
        )
        ax1.text(x + width / 2, -0.05, name, ha="center", va="top", fontsize=8)
        x += width + 0.5
    ax1.set_xlim(-0.3, x)
    ax1.set_ylim(-0.15, 1.2)
    ax1.set_axis_off()
    ax1.set_title("each stage: two 3×3 convolutions, then 2×2 max pooling", fontsize=9)
    ax2.set_axis_off()
    cells = [[name, f"{c}", f"{h} × {w}"] for name, c, h, w in stages]
    table = ax2.table(
        cellText=cells, colLabels=["", "channels", "size (px)"], loc="center", cellLoc="center"
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1.0, 1.5)
    for col in range(3):
        table[0, col].set_facecolor("0.88")
    fig.suptitle(
        f"U-Net encoder shapes from a {input_px}×{input_px} input "
        f"(read from the model by a forward pass)",
        fontsize=10,
    )
    return fig
