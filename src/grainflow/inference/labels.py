"""Label maps from probabilities: grains that close, particles that count."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from skimage.measure import label as connected_components
from skimage.segmentation import relabel_sequential, watershed

from grainflow.io.ome_zarr import block_slices
from grainflow.tasks import LABEL_NAMES, segments_particles

__all__ = ["labels_from_probability", "label_plane", "drop_small"]


def drop_small(regions: np.ndarray, min_px: int) -> np.ndarray:
    """A copy of the label image ``regions`` with the regions of fewer than ``min_px``
    pixels set to 0 (background)."""
    small = np.bincount(regions.ravel()) < min_px
    small[0] = True
    out = regions.copy()
    out[small[regions]] = 0
    return out


def _markers(regions: np.ndarray, split_px: float) -> np.ndarray:
    """Seed mask of ``regions``: one seed per region, or per lobe of a region.

    With ``split_px == 0`` the seeds are the regions themselves. Otherwise they are
    the h-maxima (h = ``split_px``) of the regions' Euclidean distance transform:
    a region pinched by a neck becomes two seeds when the neck's half width lies at
    least ``split_px`` below both lobes' inscribed radii. Pixels outside the regions
    sit at ``-split_px``, so every region keeps at least one seed however small.
    """
    if split_px <= 0:
        return regions
    from scipy import ndimage
    from skimage.morphology import local_maxima, reconstruction

    dist = ndimage.distance_transform_edt(regions)
    dist[~regions] = -float(split_px)
    # the h-maxima transform (reconstruction by dilation of dist - h under dist) flattens
    # every dome of dynamic below h; its regional maxima (plateaus) are the seeds
    domes = reconstruction(dist - float(split_px), dist, method="dilation", footprint=_CROSS)
    return local_maxima(domes, connectivity=1, allow_borders=True) & regions


#: a split is kept only where the neck's half width is at most this fraction of the
#: smaller lobe's inscribed radius: a gap in a boundary is a narrow neck between two
#: round grains, a waist of one irregular grain is not
NECK_RATIO = 0.5


def _neck_pairs(ids: np.ndarray, regions: np.ndarray, dist: np.ndarray):
    """Pairs of labels that touch through ``regions`` (not through a boundary), with the
    widest half width of the neck between them: ``(pairs of shape (k, 2), widths (k,))``."""
    found, widths = [], []
    for a, b, da, db, ra, rb in (
        (ids[:, :-1], ids[:, 1:], dist[:, :-1], dist[:, 1:], regions[:, :-1], regions[:, 1:]),
        (ids[:-1], ids[1:], dist[:-1], dist[1:], regions[:-1], regions[1:]),
    ):
        cut = ra & rb & (a != b) & (a > 0) & (b > 0)
        found.append(np.sort(np.stack([a[cut], b[cut]], axis=1), axis=1))
        widths.append(np.minimum(da[cut], db[cut]))
    pairs, widths = np.concatenate(found).astype(np.int64), np.concatenate(widths)
    if len(pairs) == 0:
        return pairs.reshape(0, 2), widths
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    widest = np.zeros(len(unique))
    np.maximum.at(widest, inverse.ravel(), widths)
    return unique, widest


def _unsplit(pairs, widths, radius, n: int, ratio: float = NECK_RATIO) -> np.ndarray:
    """Lookup table 0..n -> label that joins the pairs whose neck is too wide to be a gap
    (``width > ratio * smaller radius``); each joined group takes its smallest label."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as graph_components

    join = widths > ratio * np.minimum(radius[pairs[:, 0]], radius[pairs[:, 1]])
    edges = pairs[join]
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n + 1, n + 1))
    _, group = graph_components(graph, directed=False)
    smallest = np.full(group.max() + 1, n + 1)
    np.minimum.at(smallest, group, np.arange(n + 1))
    return smallest[group]


def _elevation(probability: np.ndarray, regions: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """What the grain watershed floods when it splits: the regions first (from their cores,
    by ``dist``, their distance transform), then the boundary pixels in order of P."""
    return np.where(regions, 0.5 * probability - dist, 1.0 + probability).astype(np.float32)


def labels_from_probability(
    task: str,
    probability: np.ndarray,
    *,
    threshold: float = 0.5,
    min_grain_px: int = 4,
    split_px: float = 0.0,
    fill_holes: bool = False,
    min_particle_px: int = 0,
) -> dict[str, np.ndarray]:
    """Label maps from the foreground probability of one image.

    Parameters
    ----------
    task : {"grains", "phases", "nanoparticles"}
    probability : ndarray of shape (M, N)
        P(boundary) for grains, P(particle phase) for phases.
    threshold : float
        Probability above which a pixel is boundary / particle.
    min_grain_px : int
        Enclosed regions smaller than this do not seed a grain.
    split_px : float
        Depth, in pixels, of a neck that splits a region into two seeds (0: one
        seed per connected region). Grains: closes gaps in the boundary network,
        two grains joined through a gap narrower than about twice their inscribed
        radius minus ``split_px`` become two. Phases: splits touching particles.
    fill_holes : bool
        Phases: matrix pockets that the particle phase encloses (not touching the
        image edge) become particle phase: particles have no holes, and a texture
        inside a large particle is not matrix. Grains: not used.
    min_particle_px : int
        Phases: regions of the phase mask (4-connected, after ``fill_holes``)
        smaller than this many pixels are matrix, in the mask and the particles
        (specks below the smallest particle the networks were trained on). Grains:
        not used.

    Returns
    -------
    labels : dict
        grains -> ``boundaries`` (uint8) and ``grain_ids`` (uint32, 1..n);
        phases -> ``phase`` (uint8) and ``particle_ids`` (uint32, 0 = matrix).

    Notes
    -----
    Grains: the boundary mask is ``P(boundary) > threshold``; the regions it encloses
    (4-connected, at least ``min_grain_px``) hold the seeds (:func:`_markers`), which
    a watershed floods, first through the regions by distance from the seeds' cores
    (so a gap is closed at its narrowest), then through the boundary pixels by
    P(boundary). Phases: the phase mask is ``P(phase) > threshold``; particles are its
    4-connected components, or with ``split_px`` the watershed basins of their seeds
    within the mask.
    """
    if probability.ndim != 2:
        raise ValueError(f"probability must be 2-D, got {probability.shape=}")
    if not split_px >= 0:
        raise ValueError(f"split_px must be a number >= 0, got {split_px=}")
    if not (isinstance(min_particle_px, (int, np.integer)) and min_particle_px >= 0):
        raise ValueError(f"min_particle_px must be an integer >= 0, got {min_particle_px=}")
    fg = probability > threshold
    if segments_particles(task):
        if fill_holes:
            from scipy import ndimage

            fg = ndimage.binary_fill_holes(fg)
        if min_particle_px > 1:
            fg = drop_small(connected_components(fg, connectivity=1), min_particle_px) > 0
        return {"phase": fg.astype(np.uint8), "particle_ids": _flood(probability, fg, split_px)}
    if task != "grains":
        raise ValueError(f"task must be 'grains', 'phases' or 'nanoparticles', got {task=}")
    interior = drop_small(connected_components(~fg, connectivity=1), min_grain_px)
    seeds = connected_components(_markers(interior > 0, split_px), connectivity=1)
    if seeds.max() == 0:
        grains = np.ones(probability.shape, np.int64)
    else:
        if split_px > 0:
            from scipy import ndimage

            dist = ndimage.distance_transform_edt(~fg)
            grains = watershed(_elevation(probability, ~fg, dist), markers=seeds, connectivity=1)
            grains = _keep_narrow_necks(grains, ~fg, dist)
        else:
            grains = watershed(probability, markers=seeds, connectivity=1)
    grains = relabel_sequential(grains)[0].astype(np.uint32)
    return {"boundaries": fg.astype(np.uint8), "grain_ids": grains}


def _flood(probability: np.ndarray, fg: np.ndarray, split_px: float) -> np.ndarray:
    """Particle labels: components of ``fg``, or basins of their seeds within it."""
    if split_px <= 0:
        return connected_components(fg, connectivity=1).astype(np.uint32)
    from scipy import ndimage

    seeds = connected_components(_markers(fg, split_px), connectivity=1)
    dist = ndimage.distance_transform_edt(fg)
    ids = watershed(-dist, markers=seeds, mask=fg, connectivity=1)
    return relabel_sequential(_keep_narrow_necks(ids, fg, dist))[0].astype(np.uint32)


def _keep_narrow_necks(ids: np.ndarray, regions: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Join again the objects that a split cut apart at a wide neck (:data:`NECK_RATIO`);
    ``dist`` is the regions' distance transform."""
    from scipy import ndimage

    n = int(ids.max())
    radius = np.zeros(n + 1)
    radius[1:] = ndimage.maximum(dist, ids, index=np.arange(1, n + 1))
    pairs, widths = _neck_pairs(ids, regions, dist)
    if len(pairs) == 0:
        return ids
    return _unsplit(pairs, widths, radius, n)[ids]


_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)  # 4-connectivity


def _components(
    read_mask: Callable[[slice, slice], np.ndarray],
    shape: tuple[int, int],
    *,
    block: int,
    scratch,
    min_size: int = 0,
) -> tuple[np.ndarray, int]:
    """Connected components (4-connected) of a mask, block by block.

    Writes provisional labels into ``scratch`` (2-D, uint64) and returns the
    lookup table provisional -> final label (uint32, 0 = background or dropped)
    and the number of final labels. Final labels are 1..n in raster order of
    each component's first pixel (skimage's numbering of the whole plane);
    components smaller than ``min_size`` pixels are dropped.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from skimage.measure import label

    rows, cols = shape
    sizes, firsts, pairs = [np.zeros(1, np.int64)], [np.full(1, -1, np.int64)], []
    offset = 0
    for rs, cs in block_slices(rows, cols, block):
        mask = np.asarray(read_mask(rs, cs), dtype=bool)
        local, n = label(mask, connectivity=1, return_num=True)
        prov = local.astype(np.uint64)
        prov[local > 0] += np.uint64(offset)
        scratch[rs, cs] = prov
        ids, first, counts = np.unique(local, return_index=True, return_counts=True)
        keep = ids > 0
        fr, fc = np.divmod(first[keep].astype(np.int64), local.shape[1])
        firsts.append((rs.start + fr) * cols + cs.start + fc)
        sizes.append(counts[keep].astype(np.int64))
        if rs.start > 0:  # pairs across the edge with the block above
            above = np.asarray(scratch[rs.start - 1, cs])
            both = (above > 0) & (prov[0] > 0)
            pairs.append(np.stack([above[both], prov[0][both]], axis=1))
        if cs.start > 0:  # and with the block to the left
            left = np.asarray(scratch[rs, cs.start - 1])
            both = (left > 0) & (prov[:, 0] > 0)
            pairs.append(np.stack([left[both], prov[:, 0][both]], axis=1))
        offset += n
    sizes, firsts = np.concatenate(sizes), np.concatenate(firsts)
    edges = (
        np.unique(np.concatenate(pairs), axis=0).astype(np.int64)
        if pairs
        else np.zeros((0, 2), np.int64)
    )
    graph = coo_matrix(
        (np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(offset + 1, offset + 1)
    )
    n_comp, comp = connected_components(graph, directed=False)
    comp_size = np.bincount(comp, weights=sizes, minlength=n_comp)
    comp_first = np.full(n_comp, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(comp_first, comp[1:], firsts[1:])
    kept = np.flatnonzero((comp_size >= max(min_size, 1)) & (np.arange(n_comp) != comp[0]))
    if len(kept) >= np.iinfo(np.uint32).max:
        raise ValueError(f"{len(kept)} objects in one plane do not fit uint32 labels")
    number = np.zeros(n_comp, np.uint32)
    number[kept[np.argsort(comp_first[kept], kind="stable")]] = np.arange(
        1, len(kept) + 1, dtype=np.uint32
    )
    lut = number[comp]
    lut[0] = 0
    return lut, len(kept)


def label_plane(
    task: str,
    probability,
    out: Mapping[str, object],
    *,
    block: int = 2048,
    halo: int = 64,
    threshold: float = 0.5,
    min_grain_px: int = 4,
    split_px: float = 0.0,
    fill_holes: bool = False,
    min_particle_px: int = 0,
    whole_plane_max_px: int = 2048 * 2048,
    scratch=None,
) -> dict:
    """Label maps of one plane from its foreground probability, whole or block by block.

    Parameters
    ----------
    task : {"grains", "phases", "nanoparticles"}
    probability : array-like of shape (Y, X)
        P(boundary) for grains, P(particle) for phases; read in blocks (a Zarr
        array, a :class:`~grainflow.inference.tiling.PlaneView`, an ndarray).
    out : mapping of str -> array-like of shape (Y, X)
        Writable label images named as in :data:`LABEL_NAMES` ``[task]``.
    block : int
        Block side, in pixels (a multiple of the outputs' chunks).
    halo : int
        Pixels around a block read for the seeds and the watershed.
    threshold, min_grain_px, split_px, fill_holes, min_particle_px
        As in :func:`grainflow.inference.labels.labels_from_probability`.
    whole_plane_max_px : int
        Planes with at most this many pixels are labelled whole.
    scratch : array-like of shape (Y, X), uint64, optional
        Working array for the block-wise labelling (needed only then; an
        in-memory array is made when None).

    Returns
    -------
    summary : dict
        ``mode`` ("whole plane" or "block-wise") and ``n_objects``.

    Notes
    -----
    A plane of at most ``whole_plane_max_px`` pixels is read whole and labelled by
    :func:`labels_from_probability`. A larger plane is labelled block by block, with
    the same result and bounded memory:

    1. connected components of the mask (grain interiors ``P <= threshold`` for
       grains, particles ``P > threshold`` for phases) are labelled in each block and
       written to ``scratch``; components that touch across a block edge are joined
       (a graph of the label pairs across edges,
       :func:`scipy.sparse.csgraph.connected_components`); each joined component gets
       its size and its first pixel in raster order;
    2. components are numbered 1..n in raster order of their first pixel, which is
       skimage's numbering of the whole plane (seeds of grains smaller than
       ``min_grain_px`` and particles smaller than ``min_particle_px`` are dropped
       first, as in the whole-plane labelling, and the mask follows); so a
       particle or a grain seed crossing block edges has one number;
    3. with ``split_px > 0``, the seeds (h-maxima of each region's distance
       transform, found in each block with its halo) are joined and numbered the
       same way, in raster order of their first pixel;
    4. phases without splitting: the numbers are written; otherwise each block is
       flooded by a watershed from the numbered seeds of the block and a halo of
       ``halo`` pixels around it (grains without splitting: only the unlabelled
       pixels and the seed pixels touching them take part, which gives the same
       flooding several times faster), and the block's own pixels are kept.

    The block-wise labels equal the whole-plane ones wherever the flooding that
    assigns a pixel stays within the halo (boundary ribbons a few pixels wide:
    everywhere; with ``split_px``, regions narrower than the halo), up to ties between
    exactly equal values (e.g. probabilities saturated at 1.0), which the watershed
    breaks in heap order: such a boundary pixel may then go to the other grain
    beside it. A pixel whose block and halo hold no seed at all stays 0.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    if task not in LABEL_NAMES:
        raise ValueError(f"task must be one of {sorted(LABEL_NAMES)}, got {task=}")
    mask_name, ids_name = LABEL_NAMES[task]
    missing = [n for n in (mask_name, ids_name) if n not in out]
    if missing:
        raise ValueError(f"out lacks the label images {missing} of task {task!r}")
    if len(probability.shape) != 2:
        raise ValueError(f"probability must be 2-D (rows, cols), got shape {probability.shape}")
    if block < 1 or halo < 0:
        raise ValueError(f"block must be positive and halo not negative, got {block=}, {halo=}")
    rows, cols = (int(n) for n in probability.shape)
    if rows * cols <= whole_plane_max_px:
        labels = labels_from_probability(
            task,
            np.asarray(probability[:, :], dtype=np.float32),
            threshold=threshold,
            min_grain_px=min_grain_px,
            split_px=split_px,
            fill_holes=fill_holes,
            min_particle_px=min_particle_px,
        )
        out[mask_name][:, :] = labels[mask_name]
        out[ids_name][:, :] = labels[ids_name]
        return {"mode": "whole plane", "n_objects": int(labels[ids_name].max())}

    if scratch is None:
        scratch = np.zeros((rows, cols), np.uint64)

    def window(rs: slice, cs: slice) -> tuple[slice, slice, tuple[slice, slice]]:
        hr = slice(max(rs.start - halo, 0), min(rs.stop + halo, rows))
        hc = slice(max(cs.start - halo, 0), min(cs.stop + halo, cols))
        inner = (
            slice(rs.start - hr.start, rs.stop - hr.start),
            slice(cs.start - hc.start, cs.stop - hc.start),
        )
        return hr, hc, inner

    filled = segments_particles(task) and fill_holes
    from_mask = filled  # read the foreground from the mask written (filled, specks dropped)

    def foreground(rs, cs):
        """The mask of a window: P > threshold, or the phase mask written below."""
        if from_mask:
            return np.asarray(out[mask_name][rs, cs]) > 0
        return np.asarray(probability[rs, cs], dtype=np.float32) > threshold

    if filled:
        # matrix regions that touch no edge of the plane are holes: label the matrix block
        # by block, find the regions on the edges, write the phase with the others filled
        def read_matrix(rs, cs):
            return np.asarray(probability[rs, cs], dtype=np.float32) <= threshold

        matrix, _ = _components(read_matrix, (rows, cols), block=block, scratch=scratch)
        edge = np.concatenate(
            [
                matrix[np.asarray(scratch[0, :]).ravel()],
                matrix[np.asarray(scratch[rows - 1, :]).ravel()],
                matrix[np.asarray(scratch[:, 0]).ravel()],
                matrix[np.asarray(scratch[:, cols - 1]).ravel()],
            ]
        )
        open_matrix = np.zeros(int(matrix.max()) + 1, bool)
        open_matrix[edge] = True
        open_matrix[0] = False
        for rs, cs in block_slices(rows, cols, block):
            region = matrix[np.asarray(scratch[rs, cs])]
            fg = np.asarray(probability[rs, cs], dtype=np.float32) > threshold
            out[mask_name][rs, cs] = (fg | ((region > 0) & ~open_matrix[region])).astype(np.uint8)

    def read_mask(rs, cs):
        fg = foreground(rs, cs)
        if not filled:
            out[mask_name][rs, cs] = fg.astype(np.uint8)
        return ~fg if task == "grains" else fg

    lut, n = _components(
        read_mask,
        (rows, cols),
        block=block,
        scratch=scratch,
        min_size=min_grain_px if task == "grains" else min_particle_px,
    )
    if segments_particles(task) and min_particle_px > 1:
        # the regions dropped are matrix: the mask is written again without them, and the
        # passes below read it as the foreground (as the whole-plane labelling does)
        for rs, cs in block_slices(rows, cols, block):
            out[mask_name][rs, cs] = (lut[np.asarray(scratch[rs, cs])] > 0).astype(np.uint8)
        from_mask = True
    if split_px > 0 and n > 0:
        # seeds: the regions' h-maxima, found in each block with its halo, joined
        # across block edges; ``scratch`` still holds the regions of blocks not yet
        # visited, which is all that read_seeds needs of it

        def read_seeds(rs, cs, regions_lut=lut):
            hr, hc, inner = window(rs, cs)
            fg = foreground(hr, hc)
            regions = ~fg if task == "grains" else fg
            kept = regions_lut[np.asarray(scratch[rs, cs])] > 0
            return _markers(regions, split_px)[inner] & kept

        lut, n = _components(read_seeds, (rows, cols), block=block, scratch=scratch)
    radius = np.zeros(n + 1) if split_px > 0 else None
    pairs, widths = [], []
    for rs, cs in block_slices(rows, cols, block):
        if segments_particles(task) and split_px <= 0:
            out[ids_name][rs, cs] = lut[np.asarray(scratch[rs, cs])]
            continue
        if n == 0:  # no seed in the plane: one grain, as for a whole plane
            empty = np.ones if task == "grains" else np.zeros
            out[ids_name][rs, cs] = empty((rs.stop - rs.start, cs.stop - cs.start), np.uint32)
            continue
        hr, hc, inner = window(rs, cs)
        seeds = lut[np.asarray(scratch[hr, hc])].astype(np.int64)
        p = np.asarray(probability[hr, hc], dtype=np.float32)
        regions = foreground(hr, hc) if segments_particles(task) else p <= threshold
        if segments_particles(task) or split_px > 0:
            dist = ndimage.distance_transform_edt(regions)
        if segments_particles(task):
            ids = watershed(-dist, markers=seeds, mask=regions, connectivity=1)
        elif split_px > 0:
            ids = watershed(_elevation(p, regions, dist), markers=seeds, connectivity=1)
        elif seeds.any():
            # flood only the unlabelled pixels and the seed pixels next to them: seed pixels
            # deeper inside never label a neighbour, and the visiting order of the others is
            # kept, so the result is that of the full watershed, several times faster
            flood = ndimage.binary_dilation(seeds == 0, structure=_CROSS)
            ids = np.where(flood, watershed(p, markers=seeds, connectivity=1, mask=flood), seeds)
        else:
            ids = seeds
        out[ids_name][rs, cs] = ids[inner].astype(np.uint32)
        if split_px > 0:  # the necks of this block and across its top and left edges
            np.maximum.at(radius, ids[inner].ravel(), dist[inner].ravel())
            grown = tuple(slice(max(sl.start - 1, 0), sl.stop) for sl in inner)
            found, width = _neck_pairs(ids[grown], regions[grown], dist[grown])
            pairs.append(found)
            widths.append(width)
    if split_px > 0 and n > 0:
        # join again what was split at a wide neck, then number 1..m in the order of the
        # smallest label of each group (the whole-plane relabel_sequential)
        found, width = np.concatenate(pairs), np.concatenate(widths)
        if len(found):
            unique, inverse = np.unique(found, axis=0, return_inverse=True)
            widest = np.zeros(len(unique))
            np.maximum.at(widest, inverse.ravel(), width)
            joined = _unsplit(unique, widest, radius, n)
        else:
            joined = np.arange(n + 1)
        final = np.zeros(n + 1, np.uint32)
        kept = np.unique(joined[1:])
        final[kept] = np.arange(1, len(kept) + 1, dtype=np.uint32)
        relabel = final[joined]
        for rs, cs in block_slices(rows, cols, block):
            out[ids_name][rs, cs] = relabel[np.asarray(out[ids_name][rs, cs], dtype=np.int64)]
        n = len(kept)
    return {"mode": "block-wise", "n_objects": int(n)}
