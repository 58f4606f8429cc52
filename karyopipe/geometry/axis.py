"""Chromosome masks and medial axes.

The medial axis is the skeleton's longest tip-to-tip path, cut back where it
forks near a tip (split chromatids, ragged ends), smoothed, extended along its
end tangents to the real tips (skeletons stop about one half-width short) and
resampled at one point per pixel of arc length. Short, round chromosomes
(21, 22, Y) have no useful skeleton; they get the PCA major axis instead.

All coordinates are ``(x, y)`` = ``(column, row)`` in pixels.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

# Below this elongation (sqrt of the PCA eigenvalue ratio) a shape is a disc; so
# is one whose skeleton is shorter than its width. A skeleton is then mostly
# noise and a straight major axis describes the shape better. (A folded
# chromosome can be as round as a disc by PCA but has a long skeleton.)
ROUND_ELONGATION = 1.1
# A crop whose darkest value covers at least this fraction is a cut-out on a flat background.
CUTOUT_FRACTION = 0.05
# Masks smaller than this are "tiny": fewer pixels than a 4x4 square.
TINY_AREA = 16


def cutout_fill(gray: np.ndarray) -> np.ndarray | None:
    """The flat fill around a cut-out crop (karyogram tile, BioImLab crop), or None if it is not one.

    A crop is a cut-out when at least ``CUTOUT_FRACTION`` of its pixels hold its
    minimum value: everything above that value is chromosome.

    Returns
    -------
    ndarray, shape (H, W), bool, or None
    """
    fill = gray <= float(gray.min()) + 1e-3
    return fill if fill.mean() >= CUTOUT_FRACTION else None


def _highest_flat_level(gray: np.ndarray, below: float) -> float:
    """The highest grey value under ``below`` held by ``CUTOUT_FRACTION`` of the pixels (the fill's, at least)."""
    values, counts = np.unique(gray[gray < below], return_counts=True)
    flat = values[counts >= CUTOUT_FRACTION * gray.size]
    return float(flat.max()) if len(flat) else float(gray.min())


def mask_from_crop(gray: np.ndarray) -> np.ndarray:
    """Chromosome mask of a single-chromosome crop in canonical polarity.

    Otsu threshold, largest connected component, holes filled. Cut-out crops
    (a flat background value on at least 5% of the pixels) are thresholded
    just above that value instead, so pale bands stay inside the chromosome.

    Parameters
    ----------
    gray : ndarray, shape (H, W), float
        Canonical crop: chromosome bright on a dark background.

    Returns
    -------
    mask : ndarray, shape (H, W), bool
        Empty when the crop is flat (no contrast to threshold).
    """
    from skimage.filters import threshold_otsu

    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2:
        raise ValueError(f"mask_from_crop needs a 2-D grey crop, got shape {gray.shape}")
    if gray.size == 0 or not np.isfinite(gray).all() or float(gray.max() - gray.min()) < 1e-6:
        return np.zeros(gray.shape, bool)
    smooth = ndi.gaussian_filter(gray, 0.7)
    threshold = float(threshold_otsu(smooth))
    low = float(gray.min())
    if cutout_fill(gray) is not None:
        # A cut-out crop (karyogram tiles, BioImLab crops): the background is one
        # flat value and everything above it is chromosome. Otsu would split
        # the chromosome at its pale bands instead.
        otsu = threshold
        threshold = min(otsu, low + max(0.03, 0.1 * (otsu - low)))
        # Many BioImLab crops hold a second flat level one grey step above the fill: background too.
        # A camera gamma lifts it past the floor above (1/255 -> 0.036 at gamma 0.6) and the mask
        # would swallow the whole cut. Only a level within the lowest fifth of the way to Otsu
        # counts, so a flat pale band stays inside (1 of 2576 BioImLab training masks changes).
        threshold = max(threshold, _highest_flat_level(gray, below=low + 0.2 * (otsu - low)) + 1e-3)
        mask = ndi.binary_opening(gray > threshold, np.ones((2, 2), bool))
    else:
        mask = smooth > threshold
    return largest_component(fill_holes(mask))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask (empty stays empty)."""
    import cv2

    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 2:
        return mask > 0
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def distance_to_background(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each mask pixel to the nearest background pixel (outside the image counts)."""
    import cv2

    padded = np.pad(np.asarray(mask, np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a boolean mask (scipy's, on the bounding box only, for speed)."""
    if not mask.any():
        return mask.astype(bool)
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    out = np.zeros(mask.shape, bool)
    out[r0:r1, c0:c1] = ndi.binary_fill_holes(mask[r0:r1, c0:c1])
    return out


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """One solid body: holes filled, sister chromatids that fell apart joined again.

    Only when the mask is in several sizeable pieces (each at least a fifth of
    the largest) is it closed, with a radius from the chromosome's own
    half-width; a closing on every mask would also weld the two arms of a
    folded chromosome together. Otherwise the largest piece is kept.
    """
    import cv2

    mask = np.asarray(mask, bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    if n > 2 and areas.max() >= TINY_AREA and (areas >= 0.2 * areas.max()).sum() > 1:
        keep = np.isin(labels, 1 + np.nonzero(areas >= 0.2 * areas.max())[0])
        half_width = float(distance_to_background(keep).max())
        radius = int(np.clip(round(0.8 * half_width), 2, 8))
        pad = radius + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        closed = cv2.morphologyEx(np.pad(keep, pad).astype(np.uint8), cv2.MORPH_CLOSE, kernel)
        mask = (closed[pad:-pad, pad:-pad] > 0) | keep
    return largest_component(fill_holes(largest_component(mask)))


def principal_axis(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centroid, unit major-axis direction (x, y) and elongation of a mask.

    Elongation is ``sqrt(lambda_major / lambda_minor)``: 1 for a disc.
    """
    ys, xs = np.nonzero(mask)
    points = np.stack([xs, ys], 1).astype(np.float64)
    centroid = points.mean(0)
    if len(points) < 2:
        return centroid, np.array([0.0, 1.0]), 1.0
    cov = np.cov((points - centroid).T) + np.eye(2) * (1.0 / 12.0)  # pixel extent
    evals, evecs = np.linalg.eigh(cov)
    direction = evecs[:, 1]
    if direction[1] < 0:  # point "down" the image so vertical crops run top -> bottom
        direction = -direction
    return centroid, direction, float(np.sqrt(evals[1] / max(evals[0], 1e-9)))


def pca_axis(mask: np.ndarray) -> np.ndarray:
    """Straight axis along the major principal direction, clipped to the mask.

    Returns
    -------
    axis : ndarray, shape (N, 2), float64, xy
    """
    centroid, direction, _ = principal_axis(mask)
    ys, xs = np.nonzero(mask)
    offsets = (np.stack([xs, ys], 1) - centroid) @ direction
    # Pixel centres lie half a pixel inside the boundary.
    lo, hi = float(offsets.min()) - 0.5, float(offsets.max()) + 0.5
    n = max(int(np.ceil(hi - lo)) + 1, 2)
    return centroid + np.linspace(lo, hi, n)[:, None] * direction


def _skeleton_graph(skeleton: np.ndarray):
    """Sparse 8-neighbour graph of skeleton pixels with Euclidean edge weights."""
    from scipy.sparse import csr_matrix

    ys, xs = np.nonzero(skeleton)
    index = -np.ones(skeleton.shape, np.int64)
    index[ys, xs] = np.arange(len(ys))
    padded = np.pad(index, 1, constant_values=-1)
    rows, cols, weights = [], [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        neighbour = padded[ys + 1 + dy, xs + 1 + dx]
        ok = neighbour >= 0
        rows.append(np.arange(len(ys))[ok])
        cols.append(neighbour[ok])
        weights.append(np.full(ok.sum(), np.hypot(dy, dx)))
    rows, cols, weights = map(np.concatenate, (rows, cols, weights))
    n = len(ys)
    both = (np.concatenate([rows, cols]), np.concatenate([cols, rows]))
    graph = csr_matrix((np.concatenate([weights, weights]), both), shape=(n, n))
    degree = np.diff(graph.indptr)
    return graph, np.stack([xs, ys], 1).astype(np.float64), degree


def longest_skeleton_path(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longest geodesic path through a skeleton (double-sweep tree diameter).

    Returns
    -------
    path : ndarray, shape (N, 2), xy pixel centres along the path
    degree : ndarray, shape (N,), skeleton neighbour count of each path pixel
    """
    from scipy.sparse.csgraph import dijkstra

    graph, points, degree = _skeleton_graph(skeleton)
    if len(points) == 0:
        return points, degree
    dist = dijkstra(graph, indices=0)
    dist[~np.isfinite(dist)] = -1
    start = int(np.argmax(dist))
    dist, pred = dijkstra(graph, indices=start, return_predecessors=True)
    dist[~np.isfinite(dist)] = -1
    node = int(np.argmax(dist))
    order = [node]
    while pred[node] >= 0:
        node = int(pred[node])
        order.append(node)
    order = np.array(order[::-1])
    return points[order], degree[order]


def arc_length(path: np.ndarray) -> np.ndarray:
    """Cumulative arc length ``(N,)`` of a polyline ``(N, 2)``, starting at 0."""
    if len(path) < 2:
        return np.zeros(len(path))
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(path, axis=0).T))])


def resample(path: np.ndarray, step: float = 1.0) -> np.ndarray:
    """Resample a polyline at (nearly) equal arc-length steps, keeping both ends."""
    s = arc_length(path)
    if len(path) < 2 or s[-1] <= 1e-9:
        return np.asarray(path, np.float64)[:1].repeat(2, 0) if len(path) else np.zeros((2, 2))
    keep = np.concatenate([[True], np.diff(s) > 1e-9])
    path, s = path[keep], s[keep]
    n = max(int(round(s[-1] / step)) + 1, 2)
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, path[:, 0]), np.interp(t, s, path[:, 1])], 1)


def smooth_path(path: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a unit-step polyline with its end points held.

    ``mode="nearest"`` would pull the ends inwards; reflecting the path through
    its end points (odd extension) keeps end positions and end tangents.
    """
    if sigma <= 0 or len(path) < 4:
        return path
    pad = min(len(path) - 1, int(3 * sigma) + 1)
    head = 2 * path[0] - path[pad:0:-1]
    tail = 2 * path[-1] - path[-2:-pad - 2:-1]
    extended = np.concatenate([head, path, tail])
    smoothed = ndi.gaussian_filter1d(extended, sigma, axis=0, mode="nearest")
    return smoothed[pad:pad + len(path)]


def _march_to_boundary(mask_f: np.ndarray, starts: np.ndarray, direction: np.ndarray,
                       limit: float, step: float = 0.25) -> np.ndarray:
    """Distance from each of ``starts`` (K, 2) along ``direction`` to the mask edge (bilinear 0.5 level).

    Returns ``(K,)`` distances, 0 for a start outside the mask.
    """
    n = int(limit / step) + 1
    d = np.arange(1, n + 1) * step
    pts = starts[:, None, :] + d[None, :, None] * direction[None, None, :]
    values = ndi.map_coordinates(mask_f, [pts[..., 1].ravel(), pts[..., 0].ravel()],
                                 order=1, cval=0.0).reshape(len(starts), n)
    out = np.zeros(len(starts))
    for k, row in enumerate(values):
        outside = np.nonzero(row < 0.5)[0]
        if len(outside) == 0:
            out[k] = d[-1]
            continue
        i = int(outside[0])
        if i == 0:
            continue
        # Linear interpolation of the 0.5 crossing between the last inside and first outside sample.
        v0, v1 = row[i - 1], row[i]
        out[k] = d[i - 1] + (v0 - 0.5) / max(v0 - v1, 1e-9) * step
    return out


def _end_tangent(path: np.ndarray, span: int) -> np.ndarray:
    """Unit tangent at the end ``path[-1]`` pointing outwards, fitted over ``span`` points."""
    span = int(np.clip(span, 2, len(path)))
    seg = path[-span:]
    direction = seg[-1] - seg[0]
    if np.hypot(*direction) < 1e-9:
        direction = path[-1] - path[0]
    norm = np.hypot(*direction)
    return direction / norm if norm > 1e-9 else np.array([0.0, 1.0])


def extend_to_tips(path: np.ndarray, mask: np.ndarray, span: int, spread: float = 0.0) -> np.ndarray:
    """Extend both ends of a path straight along their tangents to the mask boundary.

    With ``spread > 0`` two more rays, ``spread`` px to either side of the end,
    march in parallel and the longest one sets the tip: the prongs of split
    sister chromatids reach further than the seam between them. A rounded tip
    is longest on its centre ray, so it is unaffected.
    """
    mask_f = mask.astype(np.float32)
    limit = float(np.hypot(*mask.shape))
    out = path
    for _ in range(2):
        tangent = _end_tangent(out, span)
        normal = np.array([tangent[1], -tangent[0]])
        offsets = np.array([0.0, -spread, spread] if spread > 0 else [0.0])
        starts = out[-1][None, :] + offsets[:, None] * normal[None, :]
        distances = _march_to_boundary(mask_f, starts, tangent, limit)
        # An off-centre ray counts only from a start inside the chromosome.
        inside = np.array([o == 0.0 or mask_f[_clip_index(p, mask.shape)] > 0 for o, p in zip(offsets, starts)])
        distance = float(distances[inside].max())
        if distance > 0.05:
            steps = np.arange(1, int(np.ceil(distance)) + 1, dtype=np.float64)
            steps[-1] = distance
            out = np.concatenate([out, out[-1] + steps[:, None] * tangent[None, :]])
        out = out[::-1]
    return out


def _clip_index(xy: np.ndarray, shape: tuple[int, int]) -> tuple[int, int]:
    return (int(np.clip(round(xy[1]), 0, shape[0] - 1)), int(np.clip(round(xy[0]), 0, shape[1] - 1)))


def medial_axis(mask: np.ndarray, *, smooth_sigma: float | None = None) -> tuple[np.ndarray, list[str]]:
    """Medial axis of a chromosome mask, tip to tip, one point per pixel of arc length.

    Parameters
    ----------
    mask : ndarray, shape (H, W), bool
        One chromosome (already cleaned with :func:`clean_mask`).
    smooth_sigma : float, optional
        Gaussian smoothing of the axis in pixels of arc length; by default
        half the chromosome's half-width (at least 1.5).

    Returns
    -------
    axis : ndarray, shape (N, 2), float64
        xy points from one tip to the other (orientation not yet p -> q).
    flags : list of str
        ``"pca_axis"`` when the shape was too round or small for a skeleton,
        ``"branched"`` when side branches of more than a chromosome width
        in all were pruned off the skeleton.
    """
    import cv2
    from skimage.morphology import skeletonize

    flags: list[str] = []
    area = int(mask.sum())
    if area == 0:
        return np.zeros((2, 2)), ["degenerate"]
    _, _, elongation = principal_axis(mask)
    half_width = float(distance_to_background(mask).max())
    if area < TINY_AREA or elongation < ROUND_ELONGATION:
        return pca_axis(mask), ["pca_axis"]
    # Smoothing the mask first removes the one-pixel notches that grow skeleton spurs.
    smooth_mask = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0) > 0.5
    smooth_mask = largest_component(smooth_mask) if smooth_mask.any() else mask
    skeleton = skeletonize(np.pad(smooth_mask, 1))[1:-1, 1:-1]
    path, degree = longest_skeleton_path(skeleton)
    if len(path) < 3 or arc_length(path)[-1] < 1.2 * half_width:
        return pca_axis(mask), ["pca_axis"]
    # Short spurs from ragged edges are routine; report only side branches that
    # add up to more than a chromosome width (split chromatids, debris, overlaps).
    if (degree > 2).any() and int(skeleton.sum()) - len(path) > 2.0 * half_width:
        flags.append("branched")
    # Forks near a tip (split chromatids, ragged ends) and the last half-width of
    # any skeleton bend towards a corner: cut them and re-extend along the tangent.
    s = arc_length(path)
    total = s[-1]
    cut = max(0.6 * half_width, 1.0)
    reach = min(3.0 * half_width, 0.3 * total)
    junctions = np.nonzero(degree > 2)[0]
    lo_cut, hi_cut = cut, total - cut
    if len(junctions):
        near_start = junctions[s[junctions] <= reach]
        near_end = junctions[s[junctions] >= total - reach]
        if len(near_start):
            lo_cut = max(lo_cut, s[near_start.max()])
        if len(near_end):
            hi_cut = min(hi_cut, s[near_end.min()])
    if hi_cut - lo_cut < 2.0:
        mid = 0.5 * total
        lo_cut, hi_cut = mid - 1.0, mid + 1.0
    keep = (s >= lo_cut) & (s <= hi_cut)
    core = path[keep] if keep.sum() >= 2 else path
    core = resample(core, 1.0)
    sigma = smooth_sigma if smooth_sigma is not None else max(1.5, 0.5 * half_width)
    core = smooth_path(core, min(sigma, max(len(core) / 4.0, 0.5)))
    span = int(np.clip(round(1.5 * half_width), 3, max(3, len(core) // 2)))
    # March to the tips over a closed mask: split sister chromatids fork at the
    # tips, and the seam between the prongs must not stop the extension short.
    radius = int(np.clip(round(0.5 * half_width), 1, 6))
    pad = radius + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    closed = cv2.morphologyEx(np.pad(mask, pad).astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    axis = resample(extend_to_tips(core, closed[pad:-pad, pad:-pad] > 0, span, 0.5 * half_width), 1.0)
    return axis, flags
