"""Hand-set kernels, correlation, pooling, sizes, parameters and receptive fields.

The lecture's worked examples (:mod:`grainflow.anatomy`) computed, so that the report's
numbers come from code. Images are ``(row, col)`` arrays; angles are degrees
counter-clockwise from the image's +column axis as seen on screen (towards −row), as in
:mod:`grainflow.synth`.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from skimage.segmentation import find_boundaries
from torch import nn

from grainflow.seeds import as_rng
from grainflow.synth.bicrystal import bicrystal
from grainflow.synth.imaging import render_bicrystal

__all__ = [
    "SOBEL_VERTICAL",
    "SOBEL_HORIZONTAL",
    "LAPLACIAN",
    "GAUSSIAN",
    "HAND_SET_KERNELS",
    "WORKED_PATCH",
    "WORKED_KERNEL",
    "POOLING_EXAMPLES",
    "OUTPUT_SIZE_EXAMPLES",
    "PADDING_MODES",
    "correlate2d",
    "convolve2d",
    "worked_example",
    "conv_output_size",
    "max_pool2d",
    "mlp_first_layer_params",
    "conv_layer_params",
    "parameter_table",
    "receptive_field",
    "stacked_receptive_fields",
    "random_cnn",
    "gradient_map",
    "measured_receptive_field",
    "feature_maps",
    "boundary_orientation_masks",
    "boundary_response",
    "designed_boundary_kernel",
    "gradient_magnitude",
    "relu_unit",
    "Selectivity",
    "boundary_selectivity",
]


def _frozen(rows) -> np.ndarray:
    array = np.array(rows, dtype=np.float64)
    array.setflags(write=False)
    return array


#: Responds to vertical boundaries: the intensity step along +column (right minus left).
SOBEL_VERTICAL = _frozen([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
#: Responds to horizontal boundaries: the intensity step along +row (below minus above).
SOBEL_HORIZONTAL = _frozen([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
#: Discrete Laplacian (4-neighbour): zero on flat and linear regions, ± on both sides of a step.
LAPLACIAN = _frozen([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
#: Binomial approximation of a Gaussian with sigma ≈ 0.85 px; weights sum to 1.
GAUSSIAN = _frozen(np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)

HAND_SET_KERNELS: dict[str, np.ndarray] = {
    "vertical Sobel": SOBEL_VERTICAL,
    "horizontal Sobel": SOBEL_HORIZONTAL,
    "Laplacian": LAPLACIAN,
    "Gaussian": GAUSSIAN,
}

#: The lecture's worked example: a 3×3 patch across a boundary (dark left, bright right) ...
WORKED_PATCH = _frozen([[12, 15, 80], [10, 13, 85], [11, 14, 82]])
#: ... under a kernel that is −1 0 +1 in each row.
WORKED_KERNEL = _frozen([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]])

#: The lecture's 4×4 feature maps for 2×2 max pooling with stride 2.
POOLING_EXAMPLES: tuple[np.ndarray, ...] = (
    _frozen([[1, 3, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]),
    _frozen([[1, 3, 2, 4], [5, 6, 1, 2], [7, 1, 8, 3], [2, 4, 5, 6]]),
)

#: The lecture's output-size examples (H, k, p, s): "same" padding and a strided convolution,
#: followed by other common layer settings.
OUTPUT_SIZE_EXAMPLES: tuple[dict[str, int], ...] = (
    dict(size=64, kernel_size=3, padding=1, stride=1),
    dict(size=64, kernel_size=3, padding=0, stride=2),
    dict(size=64, kernel_size=3, padding=0, stride=1),
    dict(size=64, kernel_size=5, padding=2, stride=1),
    dict(size=64, kernel_size=2, padding=0, stride=2),
    dict(size=224, kernel_size=7, padding=3, stride=2),
)

#: Padding modes, named as in ``torch.nn.Conv2d``, and their ``numpy.pad`` equivalents.
PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


# --------------------------------------------------------------------------- correlation


def _pair(value, name: str, *, low: int) -> tuple[int, int]:
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(pair) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low for v in pair
    ):
        raise ValueError(
            f"{name} must be an integer >= {low} or a pair of them, got {name}={value!r}"
        )
    return int(pair[0]), int(pair[1])


def correlate2d(
    image: np.ndarray,
    kernel: np.ndarray,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    padding_mode: str = "zeros",
) -> np.ndarray:
    """2-D cross-correlation, as a convolution layer of a CNN computes it.

    ``out[i, j] = sum_{u, v} padded[i * s + u, j * s + v] * kernel[u, v]``: the
    kernel slides over the image without being flipped. This equals
    ``torch.nn.functional.conv2d`` (one input and one output channel, no bias)
    and, for odd kernels with ``padding = k // 2``, ``scipy.ndimage.correlate``
    with ``mode="constant"``.

    Parameters
    ----------
    image : ndarray of shape (H, W)
    kernel : ndarray of shape (kH, kW)
    stride : int or (int, int), optional
        Step of the kernel in pixels, along rows and columns.
    padding : int or (int, int), optional
        Pixels added on each side, along rows and columns.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}, optional
        How padded pixels are filled (the names of ``torch.nn.Conv2d``).

    Returns
    -------
    out : ndarray of shape (H_out, W_out), float64
        ``H_out = (H + 2 p - kH) // s + 1`` (see :func:`conv_output_size`).
    """
    image = np.asarray(image, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    if image.ndim != 2 or kernel.ndim != 2:
        raise ValueError(f"image and kernel must be 2-D, got {image.shape=} and {kernel.shape=}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {tuple(PADDING_MODES)}, got {padding_mode=}")
    sr, sc = _pair(stride, "stride", low=1)
    pr, pc = _pair(padding, "padding", low=0)
    rows = conv_output_size(image.shape[0], kernel_size=kernel.shape[0], padding=pr, stride=sr)
    cols = conv_output_size(image.shape[1], kernel_size=kernel.shape[1], padding=pc, stride=sc)
    padded = np.pad(image, ((pr, pr), (pc, pc)), mode=PADDING_MODES[padding_mode])
    windows = sliding_window_view(padded, kernel.shape)[::sr, ::sc][:rows, :cols]
    return np.einsum("ijuv,uv->ij", windows, kernel)


def convolve2d(
    image: np.ndarray,
    kernel: np.ndarray,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    padding_mode: str = "zeros",
) -> np.ndarray:
    """True 2-D convolution: :func:`correlate2d` with the kernel flipped in both axes.

    Equals ``scipy.ndimage.convolve`` (``mode="constant"``, odd kernels,
    ``padding = k // 2``). For a kernel with a point symmetry (Gaussian,
    Laplacian) it equals the correlation; for an antisymmetric one (Sobel) it
    is its negative. Parameters and shapes as in :func:`correlate2d`.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-D, got {kernel.shape=}")
    return correlate2d(
        image, kernel[::-1, ::-1], stride=stride, padding=padding, padding_mode=padding_mode
    )


def worked_example(
    patch: np.ndarray = WORKED_PATCH, kernel: np.ndarray = WORKED_KERNEL
) -> dict[str, np.ndarray | float]:
    """One output value of a correlation, step by step.

    Returns
    -------
    steps : dict
        ``patch`` and ``kernel`` (k, k), their elementwise ``products`` (k, k)
        and ``total``, the sum of the products: the feature-map value at the
        patch's centre.
    """
    patch = np.asarray(patch, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    if patch.shape != kernel.shape or patch.ndim != 2:
        raise ValueError(
            f"patch and kernel must be 2-D of one shape, got {patch.shape=}, {kernel.shape=}"
        )
    products = patch * kernel
    return dict(patch=patch, kernel=kernel, products=products, total=float(products.sum()))


# --------------------------------------------------------------------------- sizes, pooling


def conv_output_size(size: int, *, kernel_size: int, padding: int = 0, stride: int = 1) -> int:
    """Output length of a convolution or pooling layer along one axis.

    ``H_out = floor((H + 2 p - k) / s) + 1`` (no dilation), as in ``torch.nn.Conv2d``.

    Parameters
    ----------
    size : int
        Input length ``H`` in pixels.
    kernel_size, padding, stride : int
        ``k`` >= 1, ``p`` >= 0, ``s`` >= 1.

    Returns
    -------
    out : int
        ``H_out`` >= 1.
    """
    for name, value, low in (
        ("size", size, 1),
        ("kernel_size", kernel_size, 1),
        ("padding", padding, 0),
        ("stride", stride, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")
    if size + 2 * padding < kernel_size:
        raise ValueError(
            f"the kernel must fit the padded input, got {size=} + 2 * {padding=} < {kernel_size=}"
        )
    return (size + 2 * padding - kernel_size) // stride + 1


def max_pool2d(feature: np.ndarray, *, size: int = 2, stride: int | None = None) -> np.ndarray:
    """Max pooling of a 2-D feature map (windows that do not fit are dropped, as in torch).

    Parameters
    ----------
    feature : ndarray of shape (H, W)
    size : int
        Window side in pixels.
    stride : int, optional
        Step in pixels; defaults to ``size`` (non-overlapping windows).

    Returns
    -------
    pooled : ndarray of shape ((H - size) // stride + 1, (W - size) // stride + 1)
    """
    feature = np.asarray(feature)
    if feature.ndim != 2:
        raise ValueError(f"feature must be 2-D, got {feature.shape=}")
    stride = size if stride is None else stride
    rows = conv_output_size(feature.shape[0], kernel_size=size, stride=stride)
    cols = conv_output_size(feature.shape[1], kernel_size=size, stride=stride)
    windows = sliding_window_view(feature, (size, size))[::stride, ::stride][:rows, :cols]
    return windows.max(axis=(-2, -1))


# --------------------------------------------------------------------------- parameters


def mlp_first_layer_params(
    side_px: int | np.ndarray, *, hidden: int = 1000, channels: int = 1, bias: bool = False
) -> int | np.ndarray:
    """Parameters of a dense layer from a flattened ``side × side`` image to ``hidden`` units.

    ``side**2 * channels * hidden`` weights (plus ``hidden`` biases with ``bias=True``):
    every pixel connects to every unit, so the count grows with the image area.
    """
    side = np.asarray(side_px, dtype=np.int64)
    if np.any(side < 1) or hidden < 1 or channels < 1:
        raise ValueError(f"sizes must be >= 1, got {side_px=}, {hidden=}, {channels=}")
    count = side**2 * channels * hidden + (hidden if bias else 0)
    return int(count) if count.ndim == 0 else count


def conv_layer_params(
    *, filters: int = 64, kernel_size: int = 3, in_channels: int = 1, bias: bool = False
) -> int:
    """Parameters of a convolution layer: ``filters * in_channels * k**2`` (+ ``filters`` biases).

    Independent of the image size: the same kernels slide over every position.
    """
    if filters < 1 or kernel_size < 1 or in_channels < 1:
        raise ValueError(f"sizes must be >= 1, got {filters=}, {kernel_size=}, {in_channels=}")
    return filters * in_channels * kernel_size**2 + (filters if bias else 0)


def parameter_table(model: nn.Module, *, input_shape: tuple[int, ...] | None = None) -> list[dict]:
    """Per-layer parameter counts of a ``torch`` model, read from the model.

    Parameters
    ----------
    model : torch.nn.Module
    input_shape : tuple of int, optional
        ``(C, H, W)`` of one input; when given, a forward pass (on a copy of the
        model, in eval mode) records each layer's output shape.

    Returns
    -------
    rows : list of dict
        One row per module that owns parameters, in registration order:
        ``name`` (dotted module name), ``kind`` (class name), ``params``
        (number of parameters, trainable or not), ``shapes`` (the parameter
        shapes, e.g. ``"32×1×3×3 + 32"``) and, with ``input_shape``,
        ``output_shape`` (C, H, W) or (features,).
    """
    rows = []
    owners = {}
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        owners[name] = len(rows)
        rows.append(
            dict(
                name=name,
                kind=type(module).__name__,
                params=sum(p.numel() for p in own),
                shapes=" + ".join("×".join(map(str, p.shape)) for p in own),
            )
        )
    if input_shape is not None:
        twin = copy.deepcopy(model).eval()
        modules = dict(twin.named_modules())
        hooks = []
        for name, index in owners.items():

            def record(module, args, output, index=index):
                rows[index]["output_shape"] = tuple(output.shape[1:])

            hooks.append(modules[name].register_forward_hook(record))
        try:
            with torch.inference_mode():
                twin(torch.zeros(1, *input_shape))
        finally:
            for hook in hooks:
                hook.remove()
    return rows


# --------------------------------------------------------------------------- receptive field


def receptive_field(kernel_sizes: Sequence[int], *, strides: Sequence[int] | None = None) -> int:
    """Receptive field, in input pixels, of one output pixel of a stack of layers.

    ``r_l = r_{l-1} + (k_l - 1) * j_{l-1}`` and ``j_l = j_{l-1} * s_l`` with
    ``r_0 = j_0 = 1``: each layer widens the field by ``k - 1`` of its input's
    pixels, each of which spans ``j`` (the product of earlier strides) input
    pixels. Stacked 3×3 convolutions with stride 1 give 3, 5, 7, …

    Parameters
    ----------
    kernel_sizes : sequence of int
        Kernel side of each layer (pooling layers included).
    strides : sequence of int, optional
        Stride of each layer; 1 for all by default.
    """
    kernel_sizes = list(kernel_sizes)
    strides = [1] * len(kernel_sizes) if strides is None else list(strides)
    if len(strides) != len(kernel_sizes):
        raise ValueError(f"one stride per layer, got {kernel_sizes=} and {strides=}")
    if any(k < 1 for k in kernel_sizes) or any(s < 1 for s in strides):
        raise ValueError(f"kernel sizes and strides must be >= 1, got {kernel_sizes=}, {strides=}")
    field, jump = 1, 1
    for k, s in zip(kernel_sizes, strides, strict=True):
        field += (k - 1) * jump
        jump *= s
    return field


def stacked_receptive_fields(n_layers: int, *, kernel_size: int = 3) -> np.ndarray:
    """Receptive fields after 1 … ``n_layers`` stacked stride-1 convolutions (3, 5, 7 … for 3×3)."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers=}")
    return np.array([receptive_field([kernel_size] * n) for n in range(1, n_layers + 1)])


def _torch_generator(rng) -> torch.Generator:
    seed = int(as_rng(rng).integers(0, 2**62))
    return torch.Generator().manual_seed(seed)


def random_cnn(
    channels: Sequence[int] = (8, 16, 32),
    *,
    in_channels: int = 1,
    kernel_size: int = 3,
    pool: str | None = None,
    rng: int | np.random.Generator | None = None,
) -> nn.Sequential:
    """A tiny untrained CNN: blocks ``layer1``, ``layer2``, … of conv → ReLU (→ 2×2 pool).

    Parameters
    ----------
    channels : sequence of int
        Output channels of each block.
    in_channels : int
        Channels of the input image.
    kernel_size : int
        Odd kernel side; padding ``k // 2`` keeps the size ("same").
    pool : {None, "max", "avg"}
        Pooling (2×2, stride 2) at the end of each block.
    rng : int or Generator, optional
        Seeds the He-normal weights (biases are zero).

    Returns
    -------
    model : torch.nn.Sequential in eval mode, float32
        (N, in_channels, H, W) -> (N, channels[-1], H / 2**L, W / 2**L) with
        pooling, (N, channels[-1], H, W) without.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size=}")
    if pool not in (None, "max", "avg"):
        raise ValueError(f"pool must be None, 'max' or 'avg', got {pool=}")
    if not channels or any(c < 1 for c in channels):
        raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels=}")
    generator = _torch_generator(rng)
    blocks = OrderedDict()
    c_in = in_channels
    for i, c_out in enumerate(channels, start=1):
        conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu", generator=generator)
        nn.init.zeros_(conv.bias)
        layers = [conv, nn.ReLU()]
        if pool == "max":
            layers.append(nn.MaxPool2d(2))
        elif pool == "avg":
            layers.append(nn.AvgPool2d(2))
        blocks[f"layer{i}"] = nn.Sequential(*layers)
        c_in = c_out
    return nn.Sequential(blocks).eval()


def gradient_map(
    model: nn.Module,
    *,
    size_px: int = 64,
    in_channels: int = 1,
    n_probes: int = 4,
    rng: int | np.random.Generator | None = None,
) -> np.ndarray:
    """How much each input pixel can change the centre output pixel of ``model``.

    The sum over output channels of the centre pixel is back-propagated to
    ``n_probes`` random inputs (float64, standard normal); the absolute input
    gradients are summed. A pixel whose every path is switched off by a ReLU
    for one input is still reached by the others, so the support of the map is
    the receptive field.

    Returns
    -------
    grad : ndarray of shape (size_px, size_px), float64, >= 0
    """
    if size_px < 1 or n_probes < 1:
        raise ValueError(f"size_px and n_probes must be >= 1, got {size_px=}, {n_probes=}")
    twin = copy.deepcopy(model).double().eval()
    generator = _torch_generator(rng)
    x = torch.randn(
        n_probes,
        in_channels,
        size_px,
        size_px,
        generator=generator,
        dtype=torch.float64,
        requires_grad=True,
    )
    y = twin(x)
    y[:, :, y.shape[-2] // 2, y.shape[-1] // 2].sum().backward()
    return x.grad.abs().sum(dim=(0, 1)).numpy()


def measured_receptive_field(
    model: nn.Module,
    *,
    size_px: int = 64,
    in_channels: int = 1,
    n_probes: int = 4,
    rng: int | np.random.Generator | None = None,
) -> tuple[int, int]:
    """Receptive field of ``model``'s centre output pixel, measured from input gradients.

    Returns
    -------
    extent : (int, int)
        Rows and columns spanned by the input pixels with a non-zero gradient
        (see :func:`gradient_map`).

    Raises
    ------
    ValueError
        When the field reaches the edge of the ``size_px`` input, which would
        cut it: use a larger ``size_px``.
    """
    grad = gradient_map(model, size_px=size_px, in_channels=in_channels, n_probes=n_probes, rng=rng)
    rows, cols = np.nonzero(grad > 0)
    if rows.size == 0:
        raise ValueError("no input pixel reaches the centre output; is the model constant?")
    if rows.min() == 0 or cols.min() == 0 or rows.max() == size_px - 1 or cols.max() == size_px - 1:
        raise ValueError(f"the receptive field reaches the input's edge; use a larger {size_px=}")
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def feature_maps(
    model: nn.Module,
    image: np.ndarray,
    *,
    layers: Sequence[str] | None = None,
    standardize: bool = True,
) -> dict[str, np.ndarray]:
    """Outputs of named layers of ``model`` for one grey image.

    Parameters
    ----------
    model : torch.nn.Module
        Any model taking (1, 1, H, W); it is run on a CPU copy in eval mode.
    image : ndarray of shape (H, W)
    layers : sequence of str, optional
        Dotted module names (``model.named_modules()``) whose outputs are
        recorded; the top-level children by default (``layer1``, ``layer2``, …
        of :func:`random_cnn`). For :class:`grainflow.models.unet.UNet`, e.g.
        ``("encoder.0.block", "encoder.1.block", "encoder.2.block")``.
    standardize : bool
        Feed ``(image - mean) / std`` instead of the raw intensities.

    Returns
    -------
    maps : dict of name -> ndarray of shape (C, h, w), float32
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got {image.shape=}")
    if standardize:
        image = (image - image.mean()) / (image.std() + 1e-8)
    twin = copy.deepcopy(model).cpu().float().eval()
    modules = dict(twin.named_modules())
    names = [n for n, _ in twin.named_children()] if layers is None else list(layers)
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"model has no layers {missing}; it has {list(modules)[1:]}")
    maps: dict[str, np.ndarray] = {}
    hooks = []
    for name in names:

        def record(module, args, output, name=name):
            maps[name] = output[0].detach().clone().numpy()

        hooks.append(modules[name].register_forward_hook(record))
    try:
        with torch.inference_mode():
            twin(torch.from_numpy(image)[None, None])
    finally:
        for hook in hooks:
            hook.remove()
    return {name: maps[name] for name in names}


# --------------------------------------------------------------------------- boundaries


def boundary_orientation_masks(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the boundary pixels of a label map into vertical and horizontal boundaries.

    A pixel lies on a vertical boundary when its left or right neighbour
    belongs to another grain, on a horizontal boundary when its upper or lower
    neighbour does. Pixels that are both (corners, junctions, steps of a
    slanted boundary) are left out of both.

    Returns
    -------
    vertical, horizontal : ndarray of shape (M, N), bool
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got {labels.shape=}")
    across_cols = labels[:, 1:] != labels[:, :-1]
    across_rows = labels[1:, :] != labels[:-1, :]
    vertical = np.zeros(labels.shape, bool)
    vertical[:, 1:] |= across_cols
    vertical[:, :-1] |= across_cols
    horizontal = np.zeros(labels.shape, bool)
    horizontal[1:, :] |= across_rows
    horizontal[:-1, :] |= across_rows
    both = vertical & horizontal
    return vertical & ~both, horizontal & ~both


def boundary_response(feature: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean absolute response of a feature map on vertical and on horizontal boundaries.

    Parameters
    ----------
    feature : ndarray of shape (M, N)
        A feature map of the same size as ``labels`` (e.g. :func:`correlate2d`
        with ``padding = k // 2``).
    labels : ndarray of shape (M, N), int

    Returns
    -------
    response : dict
        ``vertical`` and ``horizontal``: mean ``|feature|`` over the pixels of
        :func:`boundary_orientation_masks`.
    """
    feature = np.asarray(feature)
    if feature.shape != np.shape(labels):
        raise ValueError(
            f"feature and labels must have one shape, got {feature.shape=}, {np.shape(labels)=}"
        )
    vertical, horizontal = boundary_orientation_masks(labels)
    if not vertical.any() or not horizontal.any():
        raise ValueError("labels need both vertical and horizontal boundary pixels")
    magnitude = np.abs(feature)
    return dict(
        vertical=float(magnitude[vertical].mean()), horizontal=float(magnitude[horizontal].mean())
    )


def designed_boundary_kernel(
    *,
    normal_deg: float = 0.0,
    size_px: int = 7,
    sigma_along_px: float = 2.0,
    sigma_across_px: float = 1.0,
) -> np.ndarray:
    """A kernel that detects one boundary type: one orientation and one polarity.

    The kernel is the derivative, along the boundary normal, of a Gaussian
    stretched along the boundary: ``w(u, v) ∝ -u exp(-u²/2σ_across² - v²/2σ_along²)``
    with ``u`` along the normal and ``v`` along the boundary. Followed by a
    ReLU (a single conv unit), it responds to a boundary whose intensity falls
    along ``normal_deg`` (bright grain behind, dark grain ahead); the
    stretching along the boundary averages noise and sharpens the orientation
    tuning, and the ReLU removes the opposite polarity. ``normal_deg = 0``
    selects vertical boundaries with the brighter grain on the left.

    Parameters
    ----------
    normal_deg : float
        Direction, in degrees counter-clockwise from +column on screen, in
        which the intensity of the target boundary falls.
    size_px : int
        Odd kernel side in pixels.
    sigma_along_px, sigma_across_px : float
        Gaussian widths along the boundary and across it, in pixels.

    Returns
    -------
    kernel : ndarray of shape (size_px, size_px), float64
        Sums to zero; its positive weights sum to 1, so that an ideal step of
        contrast ``c`` along ``normal_deg`` centred on it gives about ``c``.
    """
    if size_px < 3 or size_px % 2 == 0:
        raise ValueError(f"size_px must be odd and >= 3, got {size_px=}")
    if not (sigma_along_px > 0 and sigma_across_px > 0):
        raise ValueError(f"widths must be > 0, got {sigma_along_px=}, {sigma_across_px=}")
    half = size_px // 2
    r, c = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    t = np.deg2rad(normal_deg)
    # screen angle t: +col rotated towards -row
    u = c * np.cos(t) - r * np.sin(t)  # along the normal
    v = c * np.sin(t) + r * np.cos(t)  # along the boundary
    w = -u * np.exp(-(u**2) / (2 * sigma_across_px**2) - v**2 / (2 * sigma_along_px**2))
    w -= w.mean()  # exact zero sum after sampling
    return w / w[w > 0].sum()


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude ``sqrt(gv² + gh²) / 8``, replicate padding, shape of ``image``.

    The division by 8 makes a unit step give about 1 / 2 … 1; the map does not prefer any
    orientation or polarity, which makes it the baseline of :func:`boundary_selectivity`.
    """
    gv = correlate2d(image, SOBEL_VERTICAL, padding=1, padding_mode="replicate")
    gh = correlate2d(image, SOBEL_HORIZONTAL, padding=1, padding_mode="replicate")
    return np.hypot(gv, gh) / 8


@dataclass(frozen=True)
class Selectivity:
    """Responses of a detector to straight bicrystals, by boundary normal and contrast.

    normal_deg : ndarray of shape (A,)
        Direction in which the intensity falls (bright → dark), degrees in [-180, 180).
    contrasts : ndarray of shape (C,)
        Intensity difference between the two grains.
    response : ndarray of shape (C, A)
        Mean response along the boundary.
    target : ndarray of shape (A,), bool
        Normals within ``tolerance_deg`` of the target direction.
    selectivity : ndarray of shape (C,)
        Mean response to target boundaries over mean response to all others.
    """

    normal_deg: np.ndarray
    contrasts: np.ndarray
    response: np.ndarray
    target: np.ndarray
    selectivity: np.ndarray
    target_deg: float
    tolerance_deg: float


def _wrap_deg(angle):
    return (np.asarray(angle, dtype=np.float64) + 180.0) % 360.0 - 180.0


def boundary_selectivity(
    detector,
    *,
    target_deg: float = 0.0,
    tolerance_deg: float = 22.5,
    angle_step_deg: float = 7.5,
    contrasts: Sequence[float] = (0.1, 0.2, 0.4),
    shape: tuple[int, int] = (64, 64),
    rng: int | np.random.Generator | None = None,
) -> Selectivity:
    """Measure how selectively ``detector`` responds to one boundary type.

    Straight bicrystals (:func:`grainflow.synth.bicrystal.bicrystal`) are
    rendered (:func:`grainflow.synth.imaging.render_bicrystal`: tones
    ``0.5 ∓ c/2``, blur, Poisson-Gaussian noise) for boundary lines every
    ``angle_step_deg`` over 180° and both polarities, i.e. for boundary normals
    (bright → dark) all round the circle, at each contrast ``c``. The response
    is the mean of the detector's map over the boundary pixels (both sides)
    inside a central disk that keeps the image edges out.

    Parameters
    ----------
    detector : callable
        ``detector(image) -> feature`` of the same shape, e.g.
        ``lambda im: np.maximum(correlate2d(im, k, padding=3, padding_mode="replicate"), 0)``.
    target_deg : float
        The target normal direction (see :func:`designed_boundary_kernel`).
    tolerance_deg : float
        Normals within this many degrees of ``target_deg`` count as targets.
    angle_step_deg : float
        Step of the boundary angle; must divide 180.
    contrasts : sequence of float
        Grain contrasts in (0, 1].
    shape : tuple of int
        Image shape in pixels.
    rng : int or Generator, optional
        Seeds the noise.

    Returns
    -------
    Selectivity
    """
    steps = 180 / angle_step_deg if angle_step_deg > 0 else 0.5
    if not 0 < angle_step_deg <= 90 or not np.isclose(steps, round(steps)):
        raise ValueError(f"angle_step_deg must divide 180, got {angle_step_deg=}")
    if not 0 < tolerance_deg < 180:
        raise ValueError(f"tolerance_deg must be in (0, 180), got {tolerance_deg=}")
    contrasts = np.asarray(contrasts, dtype=np.float64)
    if contrasts.size == 0 or np.any((contrasts <= 0) | (contrasts > 1)):
        raise ValueError(f"contrasts must be in (0, 1], got {contrasts=}")
    rng = as_rng(rng)
    rows, cols = shape
    r, c = np.mgrid[0:rows, 0:cols] + 0.5
    disk = np.hypot(r - rows / 2, c - cols / 2) < min(rows, cols) / 2 - 8
    line_deg = np.arange(0.0, 180.0, angle_step_deg)
    normals, response = [], []
    for bright in (1, 2):
        for angle in line_deg:
            labels = bicrystal(shape, geometry="straight", angle_deg=angle)
            band = find_boundaries(labels, mode="thick") & disk
            # grain 2 lies on the side of the line at screen angle (angle - 90);
            # the intensity falls from the bright grain towards the dark one
            normals.append(_wrap_deg(angle - 90 if bright == 1 else angle + 90))
            row = []
            for contrast in contrasts:
                tones = (0.5 + contrast / 2, 0.5 - contrast / 2)
                tones = tones if bright == 1 else tones[::-1]
                image = render_bicrystal(labels, tones=tones, rng=rng)
                row.append(float(detector(image)[band].mean()))
            response.append(row)
    normals = np.array(normals)
    order = np.argsort(normals)
    normals = normals[order]
    response = np.array(response)[order].T
    target = np.abs(_wrap_deg(normals - target_deg)) <= tolerance_deg
    if target.all() or not target.any():
        raise ValueError(
            f"{tolerance_deg=} leaves no target or no other boundaries at {angle_step_deg=}"
        )
    selectivity = response[:, target].mean(axis=1) / response[:, ~target].mean(axis=1)
    return Selectivity(
        normal_deg=normals,
        contrasts=contrasts,
        response=response,
        target=target,
        selectivity=selectivity,
        target_deg=float(target_deg),
        tolerance_deg=float(tolerance_deg),
    )


def relu_unit(kernel: np.ndarray, *, bias: float = 0.0, padding_mode: str = "replicate"):
    """A single convolution unit: ``image -> max(0, correlate2d(image, kernel) + bias)``.

    Returns a callable mapping an (M, N) image to an (M, N) feature map
    (padding ``k // 2`` with ``padding_mode``; the kernel must be odd and square).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"kernel must be square with an odd side, got {kernel.shape=}")
    pad = kernel.shape[0] // 2

    def unit(image: np.ndarray) -> np.ndarray:
        out = correlate2d(image, kernel, padding=pad, padding_mode=padding_mode) + bias
        return np.maximum(out, 0.0)

    return unit
