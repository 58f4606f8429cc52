"""Crop -> upright fixed-size image + per-cell features, the classifier's input.

A chromosome is scored in the context of its cell: its length, area and
integrated brightness mean little alone but a lot relative to the other
chromosomes of the same metaphase (all crops of one cell share one scale).

Two straightening modes:

``"geometry"``
    :func:`karyopipe.geometry.analyze_chromosome` (medial-axis straightening,
    p-arm up) and :func:`karyopipe.geometry.cell_features` (30 features).
``"pca"``
    Rotate the crop so the mask's major axis is vertical, by the smallest
    angle, so crops that are already upright (karyogram cut-outs) keep their
    p-arm up; 6 size and brightness features. The shipped weights use it
    (BENCHMARKS.md compares the two).

Both resize the chromosome, aspect preserved, into a ``(L, W)`` canvas with a
black background (canonical polarity: chromosome bright).
"""
from __future__ import annotations

import numpy as np

#: Features computed by the fallback (``"pca"``) preprocessing, relative to the cell.
FALLBACK_FEATURE_NAMES: tuple[str, ...] = (
    "rel_length",      # length / mean length of the cell
    "rel_area",        # area / mean area of the cell
    "rel_intensity",   # integrated brightness / mean of the cell
    "rel_width",       # mean width (area / length) / mean of the cell
    "length_rank",     # 0 (shortest) .. 1 (longest) within the cell
    "aspect",          # length / width
)


def mask_from_crop(gray: np.ndarray) -> np.ndarray:
    """Foreground mask of a single-chromosome crop in canonical polarity.

    :func:`karyopipe.geometry.mask_from_crop`, with the whole crop as the
    mask when it finds nothing (a blank crop still gets scored, and flagged
    by its features).

    Parameters
    ----------
    gray : ndarray, shape (H, W), float in [0, 1], chromosome bright

    Returns
    -------
    mask : ndarray, shape (H, W), bool
    """
    from karyopipe.geometry import mask_from_crop as _geometry_mask

    mask = np.asarray(_geometry_mask(gray), dtype=bool)
    return mask if mask.any() else np.ones(np.shape(gray), dtype=bool)


def upright(gray: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a chromosome so its major axis is vertical, and crop it to its mask.

    The rotation is the smallest one (|angle| <= 90 degrees), so an already
    upright chromosome keeps its p-arm at the top.

    Returns
    -------
    gray, mask : ndarray, shape (h, w)
        Background (outside the mask) set to 0.
    """
    from skimage.measure import regionprops
    from skimage.transform import rotate

    mask = np.asarray(mask, dtype=bool)
    gray = np.asarray(gray, dtype=np.float32) * mask
    props = regionprops(mask.astype(np.uint8))
    if props:
        angle = -float(np.degrees(props[0].orientation))
        if abs(angle) > 0.5:
            gray = rotate(gray, angle, resize=True, order=1, preserve_range=True).astype(np.float32)
            mask = rotate(mask.astype(np.float32), angle, resize=True, order=1, preserve_range=True) > 0.5
            gray = gray * mask
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return gray, mask
    return gray[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1], mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


def fit_canvas(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``image`` (aspect preserved) into a zero canvas of ``size = (L, W)``, centred.

    Returns
    -------
    canvas : ndarray, shape (L, W), float32
    """
    import cv2

    length, width = size
    h, w = image.shape[:2]
    out = np.zeros((length, width), dtype=np.float32)
    if h == 0 or w == 0:
        return out
    scale = min(length / h, width / w)
    nh, nw = max(1, min(length, round(h * scale))), max(1, min(width, round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (nw, nh), interpolation=interp)
    y0, x0 = (length - nh) // 2, (width - nw) // 2
    out[y0: y0 + nh, x0: x0 + nw] = resized
    return out


def chromosome_measures(gray_up: np.ndarray, mask_up: np.ndarray) -> dict:
    """Absolute measures of one upright chromosome (pixels, native scale)."""
    area = float(mask_up.sum())
    length = float(mask_up.shape[0]) if mask_up.size else 0.0
    return {
        "length_px": length,
        "area_px": area,
        "intensity": float(gray_up[mask_up].sum()) if area else 0.0,
        "width_px": area / length if length else 0.0,
    }


def fallback_cell_features(measures: list[dict], reference=None) -> np.ndarray:
    """FALLBACK for :func:`karyopipe.geometry.cell_features`: features relative to the cell.

    Parameters
    ----------
    measures : list of dict
        :func:`chromosome_measures` of every chromosome of one cell.
    reference : array_like of bool, shape (n,), optional
        The objects the cell is measured by (means and length ranks); default
        all. A segmented spread also holds debris and fragments, which would
        otherwise shift every chromosome's relative size.

    Returns
    -------
    features : ndarray, shape (n, 6), float32
        Columns as in :data:`FALLBACK_FEATURE_NAMES`.
    """
    n = len(measures)
    if n == 0:
        return np.zeros((0, len(FALLBACK_FEATURE_NAMES)), dtype=np.float32)
    length = np.array([m["length_px"] for m in measures], dtype=np.float64)
    area = np.array([m["area_px"] for m in measures], dtype=np.float64)
    inten = np.array([m["intensity"] for m in measures], dtype=np.float64)
    width = np.array([m["width_px"] for m in measures], dtype=np.float64)

    from karyopipe.geometry.features import reference_mask

    ref = reference_mask(reference, n)

    def rel(v):
        return v / max(float(v[ref].mean()), 1e-6)

    if ref.all():
        rank = np.argsort(np.argsort(length, kind="stable"), kind="stable") / max(n - 1, 1)
    else:
        # Where each object would stand among the reference objects (its own place excluded).
        below = np.array([np.sum(length[ref] < v) + np.sum((length[ref] == v) & (np.flatnonzero(ref) < i))
                          for i, v in enumerate(length)], np.float64)
        rank = np.clip(below / max(int(ref.sum()) - 1, 1), 0.0, 1.0)
    aspect = length / np.maximum(width, 1e-6)
    return np.stack([rel(length), rel(area), rel(inten), rel(width), rank, aspect], axis=1).astype(np.float32)


def prepare_cell(
    crops: list[tuple[np.ndarray, np.ndarray | None]],
    size: tuple[int, int] = (64, 32),
    mode: str = "pca",
    reference=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn the chromosome crops of ONE cell into classifier inputs.

    Parameters
    ----------
    crops : list of (gray, mask)
        Canonical-polarity float grey crops in [0, 1] and their boolean masks
        (``None``: computed by :func:`mask_from_crop`), all at the cell's scale.
    size : (L, W)
        Canvas size of the straightened images.
    mode : {"pca", "geometry"}
    reference : array_like of bool, shape (n,), optional
        The objects the cell is measured by (:func:`fallback_cell_features`).

    Returns
    -------
    images : ndarray, shape (n, L, W), float32
    features : ndarray, shape (n, F), float32
    """
    if mode == "geometry":
        from karyopipe.geometry import analyze_chromosome

        geoms = []
        for gray, mask in crops:
            gray = np.asarray(gray, dtype=np.float32)
            geoms.append(analyze_chromosome(mask_from_crop(gray) if mask is None else mask, gray))
        return prepare_geometries(geoms, size, reference)
    if mode != "pca":
        raise ValueError(f"unknown preprocessing mode {mode!r}: use 'pca' or 'geometry'")
    images, measures = [], []
    for gray, mask in crops:
        gray = np.asarray(gray, dtype=np.float32)
        mask = mask_from_crop(gray) if mask is None else np.asarray(mask, dtype=bool)
        g_up, m_up = upright(gray, mask)
        images.append(fit_canvas(g_up, size))
        measures.append(chromosome_measures(g_up, m_up))
    images = np.stack(images) if images else np.zeros((0, *size), np.float32)
    return images, fallback_cell_features(measures, reference)


def _crop_to_content(image: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(image > 0)
    if len(ys) == 0:
        return image
    return image[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


def geometry_images(geoms: list, size: tuple[int, int] = (64, 32)) -> np.ndarray:
    """Straightened chromosomes (p-arm up), cropped to content and fitted to ``size``: shape (n, L, W), float32."""
    images = [fit_canvas(_crop_to_content(np.clip(np.asarray(g.straightened, dtype=np.float32), 0, None)), size)
              for g in geoms]
    return np.stack(images) if images else np.zeros((0, *size), np.float32)


def prepare_geometries(geoms: list, size: tuple[int, int] = (64, 32), reference=None) -> tuple[np.ndarray, np.ndarray]:
    """Classifier inputs from :class:`karyopipe.geometry.ChromosomeGeometry` of one cell.

    The image is ``straightened`` (p-arm up) cropped to the chromosome; the
    features are the 6 fallback features followed by
    :func:`karyopipe.geometry.cell_features` (F = 6 + len(FEATURE_NAMES)), both
    measured against the ``reference`` objects (default all).
    """
    from karyopipe.geometry import cell_features
    from karyopipe.geometry.features import reference_mask

    measures = []
    for g in geoms:
        straight = np.clip(np.asarray(g.straightened, dtype=np.float32), 0, None)
        fg = straight > 0
        length = float(g.length_px) if g.length_px > 0 else float(straight.shape[0])
        area = float(g.area_px) if g.area_px > 0 else float(fg.sum())
        measures.append({"length_px": length, "area_px": area, "intensity": float(straight[fg].sum()),
                         "width_px": area / max(length, 1e-6)})
    images = geometry_images(geoms, size)
    ref = reference_mask(reference, len(geoms))
    geo = np.asarray(cell_features(geoms, reference=ref), dtype=np.float32).reshape(len(geoms), -1)
    features = np.concatenate([fallback_cell_features(measures, ref), np.nan_to_num(geo)], axis=1)
    return images, features


def prepare_from_geometries(geoms: list, size: tuple[int, int] = (64, 32), mode: str = "geometry", reference=None):
    """Classifier inputs of one cell from its geometries, for a model of either straightening ``mode``.

    This is how chromosomes segmented from a spread reach the classifier.
    ``"geometry"`` models get :func:`prepare_geometries`. A ``"pca"`` model gets
    the straightened chromosome through its own path: it is already upright
    with the p-arm up, so the PCA rotation leaves it as it is. ``reference``
    flags the objects the cell is measured by (default all).

    Returns
    -------
    images : ndarray, shape (n, L, W), float32
    features : ndarray, shape (n, F), float32
    """
    if mode == "geometry":
        return prepare_geometries(geoms, size, reference)
    crops = []
    for g in geoms:
        straight = np.clip(np.asarray(g.straightened, np.float32), 0, None)
        crops.append((straight, straight > 0) if (straight > 0).any() else (straight, None))
    return prepare_cell(crops, size, mode, reference)


def standardize_images(images: np.ndarray) -> np.ndarray:
    """Per-image standardisation over the chromosome pixels (background stays 0).

    Suits from-scratch training and removes Q/G exposure differences; no
    ImageNet statistics are involved.

    Parameters
    ----------
    images : ndarray, shape (..., L, W)
    """
    images = np.asarray(images, dtype=np.float32)
    fg = images > 0
    count = np.maximum(fg.sum(axis=(-2, -1), keepdims=True), 1)
    mean = (images * fg).sum(axis=(-2, -1), keepdims=True) / count
    var = (((images - mean) * fg) ** 2).sum(axis=(-2, -1), keepdims=True) / count
    return np.where(fg, (images - mean) / np.sqrt(var + 1e-4), 0.0).astype(np.float32)
