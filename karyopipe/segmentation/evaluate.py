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


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


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
    errors = []
    for gts, preds in zip(ground_truth, predictions):
        n_gt = sum(i.category == "chromosome" for i in gts)
        n_pred = sum((i.score or 0.0) >= score_thresh and i.category == "chromosome" for i in preds)
        errors.append(n_pred - n_gt)
    errors = np.asarray(errors, float)
    return {
        "count_mae": float(np.abs(errors).mean()) if len(errors) else None,
        "count_within_1": float((np.abs(errors) <= 1).mean()) if len(errors) else None,
        "count_bias": float(errors.mean()) if len(errors) else None,
    }
