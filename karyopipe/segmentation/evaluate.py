"""``karyopipe eval-seg``: COCO mask/box AP, counts and speed of a segmenter.

Ground truth and predictions are turned into COCO structures and scored with
pycocotools' ``COCOeval`` (one category, "chromosome"). Box-only data (YOLO /
VOC boxes, e.g. Giemsa spreads) get box AP and recall at IoU 0.5 only;
``segm_*`` is then null.

Usage::

    karyopipe eval-seg /path/to/labelme_folder --split val --json seg_val.json
    karyopipe eval-seg /path/to/labelme_folder --baseline --split val
    karyopipe eval-seg giemsa_boxes/ --weights weights/mask_rcnn_karyotype_best.pth
"""
from __future__ import annotations

import argparse
import contextlib
import io as _io
import json
import sys
import time
from pathlib import Path

import numpy as np

from karyopipe.cli import add_precision_argument
from karyopipe.stats import format_interval, rate_interval


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_ious(pred_masks, true_masks) -> np.ndarray:
    """Mask IoU of every prediction (rows) with every truth (columns), by pycocotools.

    Parameters
    ----------
    pred_masks, true_masks : sequences of ndarray, each shape (H, W), bool

    Returns
    -------
    ndarray, shape (n_pred, n_true), float
    """
    from pycocotools import mask as mask_utils

    if not len(pred_masks) or not len(true_masks):
        return np.zeros((len(pred_masks), len(true_masks)))

    def encode(masks):
        return [mask_utils.encode(np.asfortranarray(np.asarray(m, np.uint8))) for m in masks]

    ious = mask_utils.iou(encode(pred_masks), encode(true_masks), [0] * len(true_masks))
    return np.asarray(ious, float).reshape(len(pred_masks), len(true_masks))


def _xywh(box) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def coco_scores(ground_truth: list, predictions: list, shapes: list, with_masks: bool = True) -> dict:
    """COCO metrics of predicted instances against ground truth, image by image.

    Parameters
    ----------
    ground_truth, predictions : list of list of Instance
        One list per image; predictions need ``score``.
    shapes : list of (H, W)
    with_masks : bool
        Score masks (``segm``) as well as boxes.

    Returns
    -------
    dict
        ``segm_AP``, ``segm_AP50``, ``segm_AP75`` (None without masks),
        ``bbox_AP``, ``bbox_AP50``, ``recall50`` (fraction of ground-truth
        objects matched at box IoU 0.5 by any detection, pycocotools' AR@100).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for image_id, (gts, preds, (h, w)) in enumerate(zip(ground_truth, predictions, shapes), 1):
        images.append({"id": image_id, "height": int(h), "width": int(w)})
        for inst in gts:
            if inst.category != "chromosome":
                continue
            box = _xywh(inst.get_bbox())
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "bbox": box,
                   "area": box[2] * box[3], "iscrowd": 0}
            if with_masks:
                mask = inst.get_mask((h, w))
                ann["segmentation"] = _rle(mask)
                ann["area"] = float(mask.sum())
            anns.append(ann)
        for inst in preds:
            det = {"image_id": image_id, "category_id": 1, "bbox": _xywh(inst.get_bbox()), "score": float(inst.score)}
            if with_masks:
                det["segmentation"] = _rle(inst.get_mask((h, w)))
            dets.append(det)
    result = {"segm_AP": None, "segm_AP50": None, "segm_AP75": None, "bbox_AP": 0.0, "bbox_AP50": 0.0, "recall50": 0.0}
    if not anns:
        raise ValueError("no ground-truth chromosomes to score against")
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "chromosome"}]}
    with contextlib.redirect_stdout(_io.StringIO()):
        gt.createIndex()
    if not dets:
        return result | {"segm_AP": 0.0 if with_masks else None, "segm_AP50": 0.0 if with_masks else None,
                         "segm_AP75": 0.0 if with_masks else None}
    with contextlib.redirect_stdout(_io.StringIO()):
        dt = gt.loadRes(dets)
    for iou_type in (["segm"] if with_masks else []) + ["bbox"]:
        ev = COCOeval(gt, dt, iou_type)
        with contextlib.redirect_stdout(_io.StringIO()):
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = ev.stats
        result[f"{iou_type}_AP"] = float(stats[0])
        result[f"{iou_type}_AP50"] = float(stats[1])
        if iou_type == "segm":
            result["segm_AP75"] = float(stats[2])
        if iou_type == "bbox":
            # recall at IoU 0.5, max 100 detections, all areas
            recall = ev.eval["recall"][0, 0, 0, -1]
            result["recall50"] = float(recall) if recall >= 0 else 0.0
    return result


def count_errors(ground_truth: list, predictions: list, score_thresh: float) -> dict:
    """Mean absolute count error and share of spreads counted within +-1."""
    return count_summary(per_image_counts(ground_truth, predictions, score_thresh))


def count_summary(rows: list[dict], cells: list | None = None) -> dict:
    """:func:`count_errors` of :func:`per_image_counts`'s rows.

    With ``cells`` (each image's cell), ``count_within_1_ci95`` is its 95 %
    interval over cells (:mod:`karyopipe.stats`).
    """
    errors = np.asarray([row["error"] for row in rows], float)
    summary = {
        "count_mae": float(np.abs(errors).mean()) if len(errors) else None,
        "count_within_1": float((np.abs(errors) <= 1).mean()) if len(errors) else None,
        "count_bias": float(errors.mean()) if len(errors) else None,
    }
    if cells is not None and len(errors):
        summary["count_within_1_ci95"] = rate_interval(np.abs(errors) <= 1, np.ones(len(errors)), cells)
    return summary


def per_image_counts(ground_truth: list, predictions: list, score_thresh: float, paths: list | None = None) -> list[dict]:
    """Each image's true and counted chromosomes, for finding where counts go wrong.

    ``paths`` name the images (``image`` is None without them).

    Returns
    -------
    list of dict
        ``image``, ``truth``, ``counted`` (detections scoring >= ``score_thresh``)
        and ``error`` (counted - truth), one per image in the given order.
    """
    rows = []
    for path, gts, preds in zip(paths or [None] * len(ground_truth), ground_truth, predictions):
        n_gt = sum(i.category == "chromosome" for i in gts)
        n_pred = sum((i.score or 0.0) >= score_thresh and i.category == "chromosome" for i in preds)
        rows.append({"image": None if path is None else str(path), "truth": int(n_gt), "counted": int(n_pred),
                     "error": int(n_pred - n_gt)})
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe eval-seg", description="Score chromosome segmentation with COCO metrics.")
    p.add_argument("data", help="labelme folder/file, COCO JSON, or YOLO/VOC box folder")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--weights", default=None, help="Mask R-CNN weights (default: the shipped ones)")
    how.add_argument("--baseline", action="store_true", help="score the threshold + watershed baseline instead")
    p.add_argument("--format", default=None, help="force the data format (labelme, coco, voc, yolo)")
    p.add_argument("--split", default="all", choices=["all", "train", "val"],
                   help="evaluate the held-out cells of the deterministic split (val), the others, or all")
    p.add_argument("--json", default=None, help="write the metrics here")
    p.add_argument("--count-thresh", type=float, default=None,
                   help="score threshold for counting (default: the score_thresh stored with the weights)")
    p.add_argument("--no-rescale", action="store_true", help="do not resize spreads to the training chromosome width")
    p.add_argument("--no-refine", action="store_true", help="keep the mask head's own outlines (no refine_mask)")
    p.add_argument("--no-learned-outline", action="store_true",
                   help="draw outlines with refine_mask's rule even when the weights carry an outline model")
    p.add_argument("--flips", type=int, default=None, choices=[1, 2, 4],
                   help="test-time mirrored views (default: the weights' setting)")
    p.add_argument("--paste", choices=["exact", "torchvision"], default=None,
                   help="how mask probabilities are placed in the image (default: the weights' setting; "
                        "see InferenceSettings.exact_paste)")
    add_precision_argument(p)
    p.add_argument("--max-proposals", type=int, default=None,
                   help="at most this many RPN proposals per tile for the box head (default: the weights' own)")
    p.add_argument("--mask-nms", type=float, default=None,
                   help="mask IoU above which the lower-scored of two detections is dropped (default: the weights' "
                        "setting; see InferenceSettings.nms_thresh)")
    p.add_argument("--box-nms", type=float, default=None,
                   help="box IoU of the network's own NMS (default: the weights' setting; see "
                        "InferenceSettings.box_nms_thresh)")
    p.add_argument("--limit", type=int, default=0, help="score only the first N images")
    p.add_argument("--device", default="cpu")
    return p


def cells_of_split(dataset, split: str, weights=None, config: dict | None = None) -> tuple[set | None, str]:
    """The cells of ``split`` ("train", "val" or "all") for segmentation weights.

    Weights record the cells they trained on and were selected on; without
    them, the deterministic :func:`~karyopipe.segmentation.dataset.split_cells`.
    Pass ``config`` (a loaded Segmenter's ``config``) to spare reading the
    weights file again; ``weights`` then only names it in the note.

    Returns
    -------
    cells : set of str, or None for "all"
    note : str
        Where the split came from, for reports.
    """
    from karyopipe.segmentation.dataset import split_cells
    from karyopipe.weights import SEGMENTATION_WEIGHTS, load_weights, weights_path

    if split == "all":
        return None, "all images"
    path = weights_path(weights, SEGMENTATION_WEIGHTS)
    if config is None:
        config = load_weights(path)[1] if path.is_file() else {}
    key = f"{split}_cells"
    if config.get(key):
        return set(config[key]), f"{split} cells recorded in {path}"
    train, val = split_cells(dataset.cells)
    return set(val if split == "val" else train), f"{split} cells of split_cells(seed 0, 0.2)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from karyopipe.segmentation.dataset import has_masks, load_gray, load_spreads

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    dataset = load_spreads(args.data, args.format)
    if args.baseline:
        from karyopipe.segmentation.baseline import segment_watershed

        method, count_thresh, config = "watershed baseline", 0.0, None

        def predict(gray):
            return segment_watershed(gray)
    else:
        from karyopipe.segmentation.infer import Segmenter

        overrides = {"score_thresh": 0.05}
        if args.no_rescale:
            overrides["rescale"] = False
        if args.no_refine:
            overrides["refine"] = False
        if args.no_learned_outline:
            overrides["learned_outline"] = False
        if args.flips:
            overrides["flips"] = args.flips
        if args.paste:
            overrides["exact_paste"] = args.paste == "exact"
        overrides["precision"] = args.precision
        for option, setting in (("max_proposals", "max_proposals"), ("mask_nms", "nms_thresh"),
                                ("box_nms", "box_nms_thresh")):
            if getattr(args, option) is not None:
                overrides[setting] = getattr(args, option)
        segmenter = Segmenter.from_pretrained(args.weights, device=args.device, **overrides)
        # AP is scored over all detections; counts use the score threshold the weights ship with.
        count_thresh = float(segmenter.config.get("inference", {}).get("score_thresh", 0.5))
        method = f"Mask R-CNN {args.weights or 'shipped weights'}"
        predict, config = segmenter, segmenter.config
    cells, split_note = cells_of_split(dataset, args.split, args.weights, config)
    samples = [s for s in dataset.samples if cells is None or s.cell_id in cells]
    if args.limit:
        samples = samples[: args.limit]
    if not samples:
        raise ValueError(f"{args.data}: no images in the {args.split} split")
    with_masks = all(has_masks(s) for s in samples)
    if args.count_thresh is not None:
        count_thresh = args.count_thresh
    gts, preds, shapes, paths, cells_scored = [], [], [], [], []
    problems = [f"{p.path}: {p.reason}" for p in dataset.problems]
    seconds = 0.0
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):
            return x
    for sample in tqdm(samples, desc="eval-seg", leave=False, mininterval=10):
        try:
            gray = load_gray(sample)
        except Exception as exc:
            problems.append(str(exc) if str(sample.path) in str(exc) else f"{sample.path}: {exc}")
            continue
        start = time.perf_counter()
        preds.append(predict(gray))
        seconds += time.perf_counter() - start
        gts.append(sample.instances)
        shapes.append(gray.shape)
        paths.append(sample.path)
        cells_scored.append(str(sample.cell_id))
    if not gts:
        raise ValueError(f"{args.data}: none of the images could be read")
    metrics = {"method": method, "data": str(args.data), "split": split_note}
    metrics |= coco_scores(gts, preds, shapes, with_masks=with_masks)
    counts = per_image_counts(gts, preds, count_thresh, paths)
    metrics |= count_summary(counts, cells_scored)
    metrics |= {"images": len(gts), "instances": int(sum(len(g) for g in gts)),
                "seconds_per_image": seconds / len(gts), "count_thresh": count_thresh,
                "masks_scored": with_masks, "problems": problems,
                "per_image": counts}
    for key, value in metrics.items():
        if key in ("problems", "per_image") or key.endswith("_ci95"):
            continue
        interval = format_interval(metrics.get(f"{key}_ci95"))
        print(f"{key:>18}: {value:.4f}{interval}" if isinstance(value, float) else f"{key:>18}: {value}")
    if problems:
        print(f"{len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
