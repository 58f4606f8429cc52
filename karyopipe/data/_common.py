"""Helpers shared by the readers: problem records, lazy loaders, labels, polygons.

Loaders are ``functools.partial`` objects over module-level functions, not
lambdas, so samples pickle into ``torch.utils.data.DataLoader`` workers.
"""
from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

import numpy as np

from karyopipe.classes import UnknownLabelError, parse_label
from karyopipe.data.model import Problem
from karyopipe.io import is_image_path, read_image

logger = logging.getLogger("karyopipe.data")

CHROMOSOME, NUCLEUS, DEBRIS = "chromosome", "nucleus", "debris"
# Labels that name an object type rather than a class.
_CATEGORY_WORDS = {
    "chr": CHROMOSOME, "chrom": CHROMOSOME, "chromosome": CHROMOSOME, "chromosomes": CHROMOSOME,
    "nucleus": NUCLEUS, "nuclei": NUCLEUS, "interphase": NUCLEUS,
    "debris": DEBRIS, "dirt": DEBRIS, "artifact": DEBRIS, "artefact": DEBRIS,
}


def add_problem(problems: list[Problem], path, reason: str) -> None:
    """Record a skipped item and say so on the ``karyopipe.data`` logger."""
    problem = Problem(str(path), reason)
    problems.append(problem)
    logger.warning("skipped %s", problem)


def natural_key(text) -> list:
    """Sort key that orders ``"2" < "10"`` and ``"clase2" < "clase10"``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(text))]


def image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (not folders named like images), naturally sorted."""
    return sorted(
        (p for p in folder.iterdir() if is_image_path(p) and p.is_file()), key=lambda p: natural_key(p.name)
    )


def subfolders(folder: Path) -> list[Path]:
    """Sub-folders of ``folder``, hidden ones excluded, naturally sorted."""
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )


def file_loader(path: Path):
    """Picklable zero-argument loader that reads ``path`` with :func:`karyopipe.io.read_image`."""
    return functools.partial(read_image, Path(path))


def map_label(text) -> tuple[int | None, str]:
    """Map an annotation label to ``(class number or None, category)``.

    ``chr``/``chromosome`` give an unlabelled chromosome, ``nucleus`` and
    ``debris`` their category, anything else goes through
    :func:`karyopipe.classes.parse_label`.

    Raises
    ------
    UnknownLabelError
        For a label that is neither a category word nor a class.
    """
    word = str(text).strip().lower()
    if word in _CATEGORY_WORDS:
        return None, _CATEGORY_WORDS[word]
    return parse_label(text), CHROMOSOME


def check_polygon(points, width: int | None, height: int | None) -> tuple[np.ndarray, bool]:
    """Validate an annotated outline and clip it to the image.

    Parameters
    ----------
    points : array-like, shape (N, 2)
        ``(x, y)`` vertices.
    width, height : int or None
        Image size; ``None`` skips the bounds check.

    Returns
    -------
    polygon : ndarray, shape (N, 2), float32
        Vertices clipped to ``[0, width] x [0, height]``.
    clipped : bool
        True when some vertex lay outside the image.

    Raises
    ------
    ValueError
        Fewer than 3 vertices, non-finite coordinates, zero area, or an
        outline wholly outside the image.
    """
    try:
        polygon = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("polygon points are not numbers") from None
    if polygon.ndim != 2 or polygon.shape[1] != 2:
        raise ValueError(f"polygon points must be (x, y) pairs, got shape {polygon.shape}")
    if len(polygon) < 3:
        raise ValueError(f"polygon has {len(polygon)} point(s), needs at least 3")
    if not np.isfinite(polygon).all():
        raise ValueError("polygon has non-finite coordinates")
    x, y = polygon[:, 0], polygon[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    if area <= 0.0:
        raise ValueError("polygon has zero area")
    clipped = False
    if width is not None and height is not None:
        if x.max() <= 0 or y.max() <= 0 or x.min() >= width or y.min() >= height:
            raise ValueError(f"polygon lies outside the {width}x{height} image")
        inside = np.clip(polygon, 0, [width, height])
        clipped = bool(np.any(inside != polygon))
        polygon = inside
    return polygon.astype(np.float32), clipped


def check_box(x0: float, y0: float, x1: float, y1: float, width: int | None, height: int | None):
    """Validate a box ``(x0, y0, x1, y1)`` and clip it to the image; like :func:`check_polygon`."""
    box = np.array([x0, y0, x1, y1], dtype=np.float64)
    if not np.isfinite(box).all():
        raise ValueError("box has non-finite coordinates")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"empty box {tuple(round(float(v), 2) for v in box)}")
    clipped = False
    if width is not None and height is not None:
        if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
            raise ValueError(f"box lies outside the {width}x{height} image")
        inside = np.clip(box, 0, [width, height, width, height])
        clipped = bool(np.any(inside != box))
        box = inside
    return tuple(float(v) for v in box), clipped


def pseudo_mask(canonical: np.ndarray, bbox) -> np.ndarray:
    """Chromosome mask derived from a box: Otsu threshold inside it, largest component kept.

    Parameters
    ----------
    canonical : ndarray, shape (H, W), float32
        Image in canonical polarity (chromosomes bright).
    bbox : tuple
        ``(x0, y0, x1, y1)``.

    Returns
    -------
    mask : ndarray, shape (H, W), bool
        Empty only for a flat box.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    h, w = canonical.shape
    x0, y0 = max(int(np.floor(bbox[0])), 0), max(int(np.floor(bbox[1])), 0)
    x1, y1 = min(int(np.ceil(bbox[2])), w), min(int(np.ceil(bbox[3])), h)
    mask = np.zeros((h, w), dtype=bool)
    crop = canonical[y0:y1, x0:x1]
    if crop.size < 4 or float(crop.max() - crop.min()) < 1e-6:
        return mask
    fg = crop > threshold_otsu(crop)
    # A box holds its chromosome, often as two separated sister chromatids,
    # plus corners of neighbours cut by the box edge. Keep the biggest blob
    # and any sizeable blob centred well inside the box, then bridge the
    # chromatid gap so the result is one outline.
    labels, n = ndimage.label(fg)
    if n > 1:
        index = np.arange(1, n + 1)
        sizes = ndimage.sum_labels(fg, labels, index=index)
        centres = np.array(ndimage.center_of_mass(fg, labels, index))
        bh, bw = fg.shape
        central = (
            (centres[:, 0] > 0.15 * bh) & (centres[:, 0] < 0.85 * bh)
            & (centres[:, 1] > 0.15 * bw) & (centres[:, 1] < 0.85 * bw)
        )
        keep = (sizes == sizes.max()) | (central & (sizes >= 0.3 * sizes.max()))
        main = labels == index[int(np.argmax(sizes))]
        fg = main.copy()
        for label in index[keep]:
            part = labels == label
            if not (part & main).any():
                fg |= part | _bridge(fg, part)
    mask[y0:y1, x0:x1] = ndimage.binary_fill_holes(fg)
    return mask


def _bridge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A 3-px wide segment joining the closest pixels of two disjoint blobs."""
    from scipy import ndimage
    from skimage.draw import line

    dist, (iy, ix) = ndimage.distance_transform_edt(~a, return_indices=True)
    ys, xs = np.nonzero(b)
    k = int(np.argmin(dist[ys, xs]))
    rr, cc = line(int(ys[k]), int(xs[k]), int(iy[ys[k], xs[k]]), int(ix[ys[k], xs[k]]))
    out = np.zeros_like(a)
    out[rr, cc] = True
    return ndimage.binary_dilation(out, iterations=1)


def mask_to_polygon(mask: np.ndarray) -> np.ndarray | None:
    """Outline of the largest blob of a mask as an ``(N, 2)`` float32 ``(x, y)`` polygon.

    Vertices sit on the boundary pixels' centres in karyopipe's pixel-edge
    convention (``+0.5``), so :meth:`Instance.get_mask` gives the mask back
    up to the boundary pixels. ``None`` for an empty mask.
    """
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    contour = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float32) + 0.5
    return contour if len(contour) >= 3 else None


def add_pseudo_masks(dataset, problems: list[Problem]) -> None:
    """Give every box-only instance of a dataset a thresholded outline (``pseudo_mask=True``).

    The derived mask is stored as ``Instance.polygon`` (its outline), which
    costs a few hundred bytes where a full-image mask would cost a megabyte,
    and which every stage already reads. The box is kept.
    """
    from karyopipe.io import ImageReadError, normalize_polarity

    for sample in dataset.samples:
        boxes = [inst for inst in sample.instances if inst.polygon is None and inst.mask is None]
        if not boxes:
            continue
        try:
            canonical, polarity = normalize_polarity(sample.load_image())
        except ImageReadError as exc:
            add_problem(problems, sample.path, f"no pseudo masks: {exc.reason}")
            continue
        sample.meta.setdefault("polarity", polarity)
        for index, inst in enumerate(boxes):
            polygon = mask_to_polygon(pseudo_mask(canonical, inst.get_bbox()))
            if polygon is None:
                add_problem(problems, f"{sample.path} box {index}", "no pseudo mask: the box is flat (kept box-only)")
                continue
            inst.polygon = polygon
            inst.pseudo_mask = True


__all__ = [
    "UnknownLabelError", "add_problem", "natural_key", "image_files", "subfolders", "file_loader",
    "map_label", "check_polygon", "check_box", "pseudo_mask", "mask_to_polygon", "add_pseudo_masks", "logger",
]
