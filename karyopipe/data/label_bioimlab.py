"""``karyopipe label-bioimlab``: give BioImLab metaphase polygons their classes from the labelled crops.

The labelme polygons of ``metaphases/original_<cell>[a-d].json`` carry no class,
but ``crops/<cell>/`` holds the same cell's 46 chromosomes, labelled, most cut
from these frames (black background), some rotated. Each polygon is matched
to a crop:

1. Descriptor of every object (polygon cut-out and crop alike): the masked
   patch rotated so its principal axis is vertical, resized to a fixed
   ``(64, 24)`` grid, plus its area and principal-axis length (rotation invariant).
2. Cost of a polygon-crop pair: ``1 - NCC`` of the upright patches (best of
   0 and 180 degrees: principal-axis alignment leaves that ambiguity) plus
   log-ratio penalties on area and length (crops are at native scale).
3. One global assignment per frame (:func:`scipy.optimize.linear_sum_assignment`):
   each crop goes to at most one polygon of a frame.
4. A second assignment at native resolution, once the polygon/crop scale is
   known from the first: the NCC of a pair is the better of the upright
   patches (:func:`native_ncc`) and of the unrotated patches under the eight
   quarter turns and mirrorings (:func:`dihedral_ncc`), because most crops
   are the frame's own pixels turned by quarter turns.

A match is *confident* when its NCC is high, its size agrees, and the
assigned crop's class is also the class of the polygon's cheapest crop (a
homolog swap does not matter: same class). Unconfident matches keep their
class in the output but are listed with ``extra["label_confidence"]``;
polygons matched to nothing acceptable stay unlabelled (category
``chromosome``) and are reported per cell.

Examples
--------
    karyopipe label-bioimlab data/bioimlab/metaphases data/bioimlab/crops --out .cache/bioimlab_labelled.json

Which crop folder belongs to which frame is found, not assumed: the crop
folders are numbered on their own (frame ``original_112`` is crop folder
``114``, ``original_36a-c`` are ``34``; only 4 of 107 frames share their
number with their crops). Every frame is matched against every crop folder
(:func:`best_crop_cell`: the median NCC of the assigned pairs) and takes the
best one when it is clearly best; otherwise its polygons stay unlabelled and
no karyotype is recorded. The frame keeps its own ``cell_id`` (the
segmentation split uses it); ``meta["crop_cell"]`` names its crop folder.

The output is derived from the data: write it to an ignored path (``.cache/``, ``runs/``).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GRID = (64, 24)
AREA_WEIGHT = 2.0
LENGTH_WEIGHT = 2.0
# Beyond this cost a match is refused (e.g. NCC < 0 with 30% size error).
MAX_COST = 1.5
# Chosen when frames were still matched to the wrong crop folders (same chromosome seen in two
# frames of a cell, 213 pairs: labels agree 41% overall, 61% where both NCC >= 0.88, 17/19 where
# both >= 0.92). With each frame's own folder and the dihedral NCC: 104/105 where both are confident.
CONFIDENT_NCC = 0.92
CONFIDENT_SIZE = 0.25  # |log ratio| of area and length
# Size differences a crop's mask and its polygon show for one chromosome (|log ratio|): the
# pixel-exact pairs of BioImLab frames spread over about +-0.2 in area and length.
SIZE_TOLERANCE = 0.25
# First-round (fixed-grid) pairs at least this similar set the polygon/crop scale.
SCALE_FIT_NCC = 0.75
# A frame's crop folder: the best folder's median pair NCC must reach CELL_NCC and
# beat the runner-up by CELL_MARGIN. Frames whose folder is certain (several
# frames of one metaphase agreeing) score 0.88-0.98, a wrong folder 0.75-0.87.
CELL_NCC = 0.88
CELL_MARGIN = 0.02
# Where that is unclear, the FINE_CELLS best folders are matched as in match_frame. Frames whose folder
# the coarse rule finds score 0.95-1.0 there (median pair NCC), their runners-up at most 0.96 and 0.03
# below; frames with no clear folder stay under 0.95 or within 0.04 of the runner-up.
FINE_CELLS = 3
FINE_CELL_NCC = 0.95
FINE_CELL_MARGIN = 0.05


@dataclass
class Descriptor:
    """Rotation-invariant description of one object.

    Attributes
    ----------
    upright : ndarray, shape GRID, float32
        Masked intensity, principal axis vertical, resized; zero mean, unit norm.
    area : float
        Mask pixels.
    length : float
        Principal-axis length (px, ``regionprops.axis_major_length``).
    native : ndarray, shape (L, W), float32
        The upright masked patch at native resolution (banding detail kept).
    raw : ndarray, shape (h, w), float32
        The masked patch as it lies in its image, not rotated.
    """

    upright: np.ndarray
    area: float
    length: float
    native: np.ndarray | None = None
    raw: np.ndarray | None = None


@dataclass
class Match:
    """The crop chosen for one polygon (``crop = -1`` when none)."""

    crop: int = -1
    label: int | None = None
    cost: float = float("inf")
    ncc: float = float("nan")
    size_error: float = float("nan")
    best_label: int | None = None
    confident: bool = False
    extra: dict = field(default_factory=dict)


def describe(gray: np.ndarray, mask: np.ndarray) -> Descriptor:
    """Descriptor of the object ``mask`` in ``gray`` (both (H, W); gray bright on dark)."""
    import cv2
    from skimage.measure import regionprops

    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    if len(ys) < 3:
        return Descriptor(np.zeros(GRID, np.float32), float(len(ys)), 0.0)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    m = mask[y0:y1, x0:x1]
    patch = np.where(m, np.asarray(gray, np.float32)[y0:y1, x0:x1], 0).astype(np.float32)
    props = regionprops(m.astype(np.uint8))[0]
    # orientation: angle between rows and the major axis; rotating by it makes the axis vertical.
    angle = np.degrees(props.orientation)
    h, w = m.shape
    side = int(np.ceil(np.hypot(h, w))) + 2
    canvas = np.zeros((side, side), np.float32)
    mcanvas = np.zeros((side, side), np.float32)
    oy, ox = (side - h) // 2, (side - w) // 2
    canvas[oy:oy + h, ox:ox + w] = patch
    mcanvas[oy:oy + h, ox:ox + w] = m
    best = None
    for a in (angle, -angle):
        rot = cv2.getRotationMatrix2D((side / 2, side / 2), a, 1.0)
        rm = cv2.warpAffine(mcanvas, rot, (side, side)) > 0.5
        if not rm.any():
            continue
        ry, rx = np.nonzero(rm)
        tall = (ry.max() - ry.min() + 1) / (rx.max() - rx.min() + 1)
        if best is None or tall > best[0]:
            best = (tall, rot, (ry.min(), ry.max() + 1, rx.min(), rx.max() + 1))
    _, rot, (a0, a1, b0, b1) = best
    native = cv2.warpAffine(canvas, rot, (side, side), flags=cv2.INTER_LINEAR)[a0:a1, b0:b1]
    up = cv2.resize(native, (GRID[1], GRID[0]), interpolation=cv2.INTER_AREA)
    up = up - up.mean()
    norm = float(np.linalg.norm(up))
    return Descriptor((up / norm if norm > 0 else up).astype(np.float32), float(m.sum()), float(props.axis_major_length),
                      np.ascontiguousarray(native, np.float32), patch)


def native_ncc(a: np.ndarray, b: np.ndarray, scale: float = 1.0, shift: int = 4) -> float:
    """Best normalised cross-correlation of two upright patches over small shifts and a half turn.

    ``a`` is resized by ``1 / scale`` to ``b``'s pixel scale first.
    """
    import cv2

    if a is None or b is None or a.size == 0 or b.size == 0:
        return 0.0
    if abs(scale - 1.0) > 0.03:
        a = cv2.resize(a, (max(1, round(a.shape[1] / scale)), max(1, round(a.shape[0] / scale))), interpolation=cv2.INTER_LINEAR)
    h, w = max(a.shape[0], b.shape[0]) + 2 * shift, max(a.shape[1], b.shape[1]) + 2 * shift
    big = np.zeros((h, w), np.float32)
    y, x = (h - b.shape[0]) // 2, (w - b.shape[1]) // 2
    big[y:y + b.shape[0], x:x + b.shape[1]] = b
    best = -1.0
    for t in (a, a[::-1, ::-1]):
        # Pad the template to the size it would have with shift px of room, keeping it centred.
        th, tw = h - 2 * shift, w - 2 * shift
        tpl = np.zeros((th, tw), np.float32)
        ty, tx = (th - t.shape[0]) // 2, (tw - t.shape[1]) // 2
        tpl[ty:ty + t.shape[0], tx:tx + t.shape[1]] = t
        if tpl.std() == 0 or big.std() == 0:
            continue
        best = max(best, float(cv2.matchTemplate(big, tpl, cv2.TM_CCOEFF_NORMED).max()))
    return best


def dihedral_ncc(a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> float:
    """Best NCC of ``a`` against ``b`` turned by any multiple of 90 degrees or mirrored.

    Most BioImLab crops are the frame's own pixels, turned by quarter turns only,
    so the unrotated patches match almost exactly (NCC 0.95-0.99) where the
    principal-axis alignment of :func:`native_ncc` blurs the comparison by resampling.
    """
    if a is None or b is None or a.size == 0 or b.size == 0:
        return 0.0
    # native_ncc also tries a half turn of ``a``, so four views of ``b`` cover all eight.
    views = (b, np.rot90(b), b[:, ::-1], np.rot90(b[:, ::-1]))
    return max(native_ncc(a, np.ascontiguousarray(v), scale) for v in views)


def cost_matrix(polys: list[Descriptor], crops: list[Descriptor], scale: tuple[float, float] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cost, NCC and size error of every polygon (rows) - crop (columns) pair.

    ``scale`` = (length, area) ratio polygon / crop. The crops are not at the
    frame's scale (BioImLab crops are ~1.0-1.5x larger, and cut-outs carry a
    halo), so by default sizes are compared relative to each side's median.
    """
    P = np.stack([d.upright.ravel() for d in polys])
    C = np.stack([d.upright.ravel() for d in crops])
    C180 = np.stack([d.upright[::-1, ::-1].ravel() for d in crops])
    ncc = np.maximum(P @ C.T, P @ C180.T)
    if scale is None:
        scale = (np.median([d.length for d in polys]) / np.median([d.length for d in crops]),
                 np.median([d.area for d in polys]) / np.median([d.area for d in crops]))
    area_err, len_err = _size_errors(polys, crops, scale)
    cost = (1 - ncc) + AREA_WEIGHT * area_err + LENGTH_WEIGHT * len_err
    return cost, ncc, np.maximum(area_err, len_err)


def _size_errors(polys, crops, scale) -> tuple[np.ndarray, np.ndarray]:
    """``|log|`` area and length ratios of every polygon-crop pair, after the (length, area) ``scale``."""
    pa, ca = (np.maximum([d.area for d in ds], 1.0) for ds in (polys, crops))
    pl, cl = (np.maximum([d.length for d in ds], 1.0) for ds in (polys, crops))
    return (np.abs(np.log(pa[:, None] / (scale[1] * ca[None]))),
            np.abs(np.log(pl[:, None] / (scale[0] * cl[None]))))


def match_frame(polys: list[Descriptor], crops: list[Descriptor], labels: list[int]) -> list[Match]:
    """Globally assign crops to the polygons of one frame (each crop at most once)."""
    from scipy.optimize import linear_sum_assignment

    matches = [Match() for _ in polys]
    if not polys or not crops:
        return matches
    cost, ncc, size = cost_matrix(polys, crops)
    rows, cols = linear_sum_assignment(cost)
    # Refine the polygon/crop scale on the good first-round pairs, then assign again.
    good = ncc[rows, cols] >= SCALE_FIT_NCC
    if good.sum() >= 5:
        pl = np.array([polys[r].length for r in rows[good]]) / np.maximum([crops[c].length for c in cols[good]], 1)
        pa = np.array([polys[r].area for r in rows[good]]) / np.maximum([crops[c].area for c in cols[good]], 1)
        scale = (float(np.median(pl)), float(np.median(pa)))
        # Second round at native resolution: band detail separates look-alike chromosomes, and
        # a crop cut from this frame by quarter turns matches its polygon pixel for pixel.
        ncc = np.array([[max(native_ncc(p.native, c.native, scale[0]), dihedral_ncc(p.raw, c.raw, scale[0]))
                         for c in crops] for p in polys])
        # The NCC at the fitted scale already punishes a wrong size; a crop's thresholded mask and an
        # annotator's polygon differ by up to SIZE_TOLERANCE for the same chromosome, so only sizes
        # beyond that add cost (inside it, the size terms swapped homolog-sized look-alikes).
        area_err, len_err = _size_errors(polys, crops, scale)
        size = np.maximum(area_err, len_err)
        cost = (1 - ncc) + AREA_WEIGHT * np.maximum(area_err - SIZE_TOLERANCE, 0) + \
            LENGTH_WEIGHT * np.maximum(len_err - SIZE_TOLERANCE, 0)
        rows, cols = linear_sum_assignment(cost)
    for r, c in zip(rows, cols):
        m = matches[r]
        m.best_label = int(labels[int(np.argmin(cost[r]))])
        if cost[r, c] > MAX_COST:
            continue
        m.crop, m.label, m.cost = int(c), int(labels[c]), float(cost[r, c])
        m.ncc, m.size_error = float(ncc[r, c]), float(size[r, c])
        m.confident = m.ncc >= CONFIDENT_NCC and m.size_error <= CONFIDENT_SIZE and m.label == m.best_label
    return matches


def best_crop_cell(polys: list[Descriptor], cells: dict) -> tuple[str | None, float, float]:
    """The crop folder whose crops match a frame's polygons best.

    Parameters
    ----------
    polys : list of Descriptor
        The frame's polygons.
    cells : dict of str to (list of Descriptor, labels, names)
        Crop descriptors per folder.

    Returns
    -------
    cell : str or None
        The best folder, or None when it is not clearly the best: its median NCC on the
        coarse grid is below :data:`CELL_NCC` or within :data:`CELL_MARGIN` of the runner-up,
        and matched as :func:`match_frame` does (the :data:`FINE_CELLS` best folders only),
        below :data:`FINE_CELL_NCC` or within :data:`FINE_CELL_MARGIN`.
    score, runner_up : float
        Median NCC of the assigned polygon-crop pairs for the best and second-best folder,
        from whichever of the two comparisons decided.
    """
    from scipy.optimize import linear_sum_assignment

    if not polys or not cells:
        return None, float("nan"), float("nan")
    scores = {}
    for cell, (descs, _, _) in cells.items():
        cost, ncc, _ = cost_matrix(polys, descs)
        rows, cols = linear_sum_assignment(cost)
        scores[cell] = float(np.median(ncc[rows, cols]))
    ranked = sorted(scores, key=scores.get, reverse=True)
    best = scores[ranked[0]]
    second = scores[ranked[1]] if len(ranked) > 1 else -1.0
    if best >= CELL_NCC and best - second >= CELL_MARGIN:
        return ranked[0], best, second
    # Unclear on the coarse grid: match the few best folders at native resolution (slower, sharper).
    fine = {}
    for cell in ranked[:FINE_CELLS]:
        descs, labels, _ = cells[cell]
        nccs = [m.ncc for m in match_frame(polys, descs, labels) if m.crop >= 0]
        fine[cell] = float(np.median(nccs)) if nccs else 0.0
    ranked = sorted(fine, key=fine.get, reverse=True)
    best = fine[ranked[0]]
    second = fine[ranked[1]] if len(ranked) > 1 else -1.0
    ok = best >= FINE_CELL_NCC and best - second >= FINE_CELL_MARGIN
    return (ranked[0] if ok else None), best, second


def _crop_descriptors(samples) -> tuple[list[Descriptor], list[int], list[str]]:
    from karyopipe.geometry import mask_from_crop
    from karyopipe.io import to_gray

    descs, labels, names = [], [], []
    for s in samples:
        gray = to_gray(s.loader())
        descs.append(describe(gray, mask_from_crop(gray)))
        labels.append(int(s.label))
        names.append(Path(s.path).name)
    return descs, labels, names


def label_metaphases(metaphases, crops, progress: bool = True) -> tuple[list, dict]:
    """Label every polygon of ``metaphases`` from ``crops`` (both Datasets or paths).

    Returns
    -------
    samples : list of Sample
        The metaphase samples, instances with ``label`` set where matched and
        ``extra`` holding ``label_confidence`` (``"high"``/``"low"``), ``match_ncc``, ``match_crop``;
        ``meta["karyotype"]`` is the cell's karyotype from its crops.
    report : dict
        Totals and, per cell, the polygons left unmatched or unconfident.
    """
    from tqdm import tqdm

    from karyopipe.data import read_dataset
    from karyopipe.io import to_gray
    from karyopipe.karyogram import labels_karyotype

    metaphases = read_dataset(metaphases) if isinstance(metaphases, (str, Path)) else metaphases
    crops = read_dataset(crops) if isinstance(crops, (str, Path)) else crops
    by_cell: dict[str, list] = {}
    for s in crops.samples:
        if s.label is not None:
            by_cell.setdefault(str(s.cell_id), []).append(s)
    cache = {cell: _crop_descriptors(samples) for cell, samples in
             tqdm(sorted(by_cell.items()), desc="crop folders", disable=not progress, file=sys.stderr)}
    report = {"frames": 0, "polygons": 0, "matched": 0, "confident": 0, "cells": {}, "problems": [],
              "crop_cells": {}}
    report["problems"] += [f"{p.path}: {p.reason}" for p in list(metaphases.problems) + list(crops.problems)]
    for sample in tqdm(metaphases.samples, desc="frames", disable=not progress, file=sys.stderr):
        cell = str(sample.cell_id)
        entry = report["cells"].setdefault(cell, {"frames": [], "polygons": 0, "matched": 0, "confident": 0,
                                                   "unmatched": [], "low_confidence": []})
        entry["frames"].append(Path(sample.path).name)
        polys = [inst for inst in sample.instances if inst.category == "chromosome"]
        report["frames"] += 1
        report["polygons"] += len(polys)
        entry["polygons"] += len(polys)
        image = sample.loader()
        gray = to_gray(image)
        h, w = gray.shape
        pdesc = [describe(gray, inst.get_mask((h, w))) for inst in polys]
        crop_cell, score, runner_up = best_crop_cell(pdesc, cache)
        report["crop_cells"][Path(sample.path).name] = {"crop_cell": crop_cell, "ncc": round(score, 4),
                                                        "runner_up_ncc": round(runner_up, 4)}
        if crop_cell is None:
            entry["unmatched"] += [f"{Path(sample.path).name}#{i}" for i in range(len(polys))]
            report["problems"].append(f"{sample.path}: no crop folder clearly matches it (best median NCC "
                                      f"{score:.3f}, runner-up {runner_up:.3f}): polygons left unlabelled")
            continue
        sample.meta["crop_cell"] = crop_cell
        sample.meta["crop_cell_ncc"] = round(score, 4)
        # The crops are the cell's full set, so they give its karyotype even where the
        # frame's polygon labels are unsure; eval-e2e scores complete frames against it.
        sample.meta["karyotype"] = labels_karyotype(crop.label for crop in by_cell[crop_cell])
        cdesc, clabels, cnames = cache[crop_cell]
        for i, (inst, m) in enumerate(zip(polys, match_frame(pdesc, cdesc, clabels))):
            tag = f"{Path(sample.path).name}#{i}"
            if m.crop < 0:
                entry["unmatched"].append(tag)
                continue
            inst.label = m.label
            inst.extra.update({"label_confidence": "high" if m.confident else "low", "match_ncc": round(m.ncc, 4),
                               "match_crop": cnames[m.crop]})
            report["matched"] += 1
            entry["matched"] += 1
            if m.confident:
                report["confident"] += 1
                entry["confident"] += 1
            else:
                entry["low_confidence"].append(f"{tag} -> {cnames[m.crop]} (ncc {m.ncc:.2f}, size {m.size_error:.2f})")
    n = max(report["polygons"], 1)
    report["matched_fraction"] = round(report["matched"] / n, 4)
    report["confident_fraction"] = round(report["confident"] / n, 4)
    report["consistency"] = frame_consistency(metaphases.samples)
    return metaphases.samples, report


def frame_consistency(samples, max_dist: float = 6.0) -> dict:
    """Agreement of labels between frames of one cell at the same place (``a`` and ``b`` are often one frame).

    A self-check with no ground truth: polygons whose centroids lie within
    ``max_dist`` px in two frames of the same cell are the same chromosome and
    must get the same class. Also reported for pairs where both matches are confident.
    """
    by_cell: dict[str, list] = {}
    for s in samples:
        by_cell.setdefault(str(s.cell_id), []).append(s)
    counts = {"pairs": 0, "agree": 0, "confident_pairs": 0, "confident_agree": 0}

    def objects(sample):
        return [(inst.polygon.mean(0), inst.label, inst.extra.get("label_confidence") == "high")
                for inst in sample.instances if inst.polygon is not None and inst.label]

    for frames in by_cell.values():
        for i in range(len(frames)):
            for j in range(i + 1, len(frames)):
                a, b = objects(frames[i]), objects(frames[j])
                if not a or not b:
                    continue
                cb = np.stack([c for c, _, _ in b])
                for c, lab, conf in a:
                    d = np.linalg.norm(cb - c, axis=1)
                    k = int(np.argmin(d))
                    if d[k] <= max_dist:
                        same = int(b[k][1] == lab)
                        counts["pairs"] += 1
                        counts["agree"] += same
                        if conf and b[k][2]:
                            counts["confident_pairs"] += 1
                            counts["confident_agree"] += same
    counts["agreement"] = round(counts["agree"] / counts["pairs"], 4) if counts["pairs"] else None
    counts["confident_agreement"] = (round(counts["confident_agree"] / counts["confident_pairs"], 4)
                                     if counts["confident_pairs"] else None)
    return counts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe label-bioimlab", description=__doc__.split("\n\n")[0])
    p.add_argument("metaphases", help="BioImLab metaphases folder (labelme original_<cell>*.json)")
    p.add_argument("crops", help="BioImLab crops folder (<cell>/<cell> <class><a|b>.bmp)")
    p.add_argument("--out", required=True, help="COCO JSON to write (use an ignored path: .cache/ or runs/)")
    p.add_argument("--image-dir", default=None, help="where the frames are saved as PNG (default: OUT's folder/images)")
    p.add_argument("--report", default=None, help="matching report JSON (default: OUT with .report.json)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from karyopipe.classification.dataset import source_name
    from karyopipe.data import write_coco

    args = build_parser().parse_args(argv)
    out = Path(args.out)
    samples, report = label_metaphases(args.metaphases, args.crops, progress=not args.no_progress)
    if not samples:
        raise ValueError(f"{args.metaphases}: no metaphase frames found")
    write_coco(samples, out, image_dir=args.image_dir or out.parent / "images")
    # write_coco writes one annotation per instance, in order; add how sure each class is.
    doc = json.loads(out.read_text())
    extras = [inst.extra for s in samples for inst in s.instances]
    if len(extras) == len(doc["annotations"]):
        for ann, extra in zip(doc["annotations"], extras):
            for key in ("label_confidence", "match_ncc", "match_crop"):
                if key in extra:
                    ann[key] = extra[key]
    # The crops' data-set name: a classifier trained on these frames splits them with those crops.
    doc["info"]["source"] = source_name(args.crops)
    out.write_text(json.dumps(doc))
    report_path = Path(args.report) if args.report else out.with_suffix(".report.json")
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{report['frames']} frames, {report['polygons']} polygons: {report['matched']} matched "
          f"({report['matched_fraction']:.1%}), {report['confident']} confident ({report['confident_fraction']:.1%})")
    c = report["consistency"]
    if c["pairs"]:
        print(f"same chromosome in two frames of a cell: {c['agree']}/{c['pairs']} labels agree ({c['agreement']:.1%}); "
              f"both confident: {c['confident_agree']}/{c['confident_pairs']}")
    for cell, e in sorted(report["cells"].items(), key=lambda kv: kv[0]):
        if e["unmatched"] or e["low_confidence"]:
            print(f"  cell {cell}: {len(e['unmatched'])} unmatched, {len(e['low_confidence'])} low-confidence "
                  f"of {e['polygons']}", file=sys.stderr)
    for problem in report["problems"]:
        print(f"  {problem}", file=sys.stderr)
    print(f"wrote {out} and {report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
