"""Pseudo masks: chromosome outlines derived from boxes, for box-only datasets.

Inside each box the canonical-polarity image (chromosomes bright) is
thresholded with Otsu; the biggest blob is kept together with any sizeable
blob centred inside the box (separated sister chromatids), joined by a thin
bridge, holes filled. The result is stored as the instance's outline
(``Instance.polygon``) with ``Instance.pseudo_mask = True``: such masks are
not ground truth and must not be scored as if they were.

:func:`score_pseudo_masks` measures the method where true outlines exist:
it derives a box from each annotated polygon, thresholds inside it and
compares with the polygon. ``python -m karyopipe.data.pseudo PATH`` runs it.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from karyopipe.data._common import add_problem
from karyopipe.data.model import Instance, Problem

MARGIN = 2  # px of background around the outline in score_pseudo_masks' boxes


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


def score_pseudo_masks(dataset) -> dict:
    """IoU of box-derived pseudo masks against the annotated outlines of a dataset.

    Each box is the annotated polygon's extent rounded outwards to whole
    pixels plus a ``MARGIN``-pixel border, as an annotator would draw it.

    Returns
    -------
    dict
        ``instances``, ``mean_iou``, ``median_iou``, ``p10_iou``,
        ``frac_iou_above_0.5``, ``frac_iou_above_0.75``.
    """
    from karyopipe.io import normalize_polarity

    ious = []
    for sample in dataset.samples:
        outlined = [i for i in sample.instances if i.polygon is not None and not i.pseudo_mask]
        if not outlined:
            continue
        canonical, _ = normalize_polarity(sample.load_image())
        for inst in outlined:
            truth = inst.get_mask(canonical.shape)
            x0, y0, x1, y1 = inst.get_bbox()
            box = (np.floor(x0) - MARGIN, np.floor(y0) - MARGIN, np.ceil(x1) + MARGIN, np.ceil(y1) + MARGIN)
            polygon = mask_to_polygon(pseudo_mask(canonical, box))
            derived = Instance(polygon=polygon).get_mask(canonical.shape) if polygon is not None else np.zeros_like(truth)
            ious.append((derived & truth).sum() / max(int((derived | truth).sum()), 1))
    ious = np.asarray(ious, dtype=np.float64)
    if not len(ious):
        raise ValueError(f"{dataset.root}: no annotated outlines to score pseudo masks against")
    return {
        "instances": int(len(ious)),
        "mean_iou": round(float(ious.mean()), 3),
        "median_iou": round(float(np.median(ious)), 3),
        "p10_iou": round(float(np.percentile(ious, 10)), 3),
        "frac_iou_above_0.5": round(float((ious > 0.5).mean()), 3),
        "frac_iou_above_0.75": round(float((ious > 0.75).mean()), 3),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m karyopipe.data.pseudo PATH``: score pseudo masks on a dataset with outlines."""
    import json

    from karyopipe.data.readers import read_dataset

    parser = argparse.ArgumentParser(prog="python -m karyopipe.data.pseudo", description=score_pseudo_masks.__doc__.splitlines()[0])
    parser.add_argument("path", help="dataset with annotated polygons (labelme, COCO)")
    args = parser.parse_args(argv)
    print(json.dumps(score_pseudo_masks(read_dataset(args.path)), indent=1))
    return 0


if __name__ == "__main__":
    from karyopipe.cli import run_guarded

    sys.exit(run_guarded("python -m karyopipe.data.pseudo", main, sys.argv[1:]))
