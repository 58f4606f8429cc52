"""Write synthetic spreads as a COCO dataset (``images/*.png`` + ``annotations.json``).

Output is byte-for-byte reproducible: PNGs carry no metadata, JSON keys keep a
fixed order and floats a fixed rounding.

Category ids follow :func:`karyopipe.data.write_coco`: 1..24 the classes
(``"1"``..``"22"``, ``"X"``, ``"Y"``), 25 ``chromosome``, 26 ``nucleus``,
27 ``debris``. Each annotation carries ``segmentation`` (visible mask, RLE),
``amodal_segmentation`` (whole object, RLE), ``bbox`` of the visible part and,
for chromosomes, ``centromere`` [x, y], ``axis`` [[x, y], ...] p-tip to q-tip,
``length_px``, ``centromere_index`` and ``occluded_fraction``. Each image
carries ``karyotype``, ``banding``, ``polarity``, ``cell_id`` and the drawn
``settings``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from karyopipe.classes import CLASS_NAMES

CHROMOSOME_ID, NUCLEUS_ID, DEBRIS_ID = 25, 26, 27
CATEGORIES = (
    [{"id": k, "name": CLASS_NAMES[k - 1], "supercategory": "chromosome"} for k in range(1, 25)]
    + [
        {"id": CHROMOSOME_ID, "name": "chromosome", "supercategory": "chromosome"},
        {"id": NUCLEUS_ID, "name": "nucleus", "supercategory": "other"},
        {"id": DEBRIS_ID, "name": "debris", "supercategory": "other"},
    ]
)


def _r(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(mask if mask.flags.f_contiguous and mask.dtype == np.uint8 else np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _crop_bbox(crop: np.ndarray, origin: tuple[int, int]) -> list[float]:
    rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
    if len(rows) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, y0 = origin
    return [float(x0 + cols[0]), float(y0 + rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def spread_annotations(spread, image_id: int, first_ann_id: int) -> list[dict]:
    """COCO annotations of one :class:`SynthSpread`, ids from ``first_ann_id``."""
    anns = []
    canvas = np.zeros(spread.image_u8.shape, dtype=np.uint8, order="F")
    for inst in spread.instances:
        visible = inst.visible_crop if inst.visible_crop is not None else inst.amodal_crop
        amodal = inst.amodal_crop
        if inst.category == "nucleus":
            cat = NUCLEUS_ID
        elif inst.category == "debris":
            cat = DEBRIS_ID
        else:
            cat = inst.number or CHROMOSOME_ID
        box = _crop_bbox(visible, inst.origin) if visible.any() else _crop_bbox(amodal, inst.origin)
        x0, y0 = inst.origin
        h, w = amodal.shape
        rles = []
        for crop in (visible, amodal):
            # Reuse one full-size canvas: only the crop's window changes between instances.
            canvas[y0:y0 + h, x0:x0 + w] = crop
            rles.append(_rle(canvas))
            canvas[y0:y0 + h, x0:x0 + w] = 0
        ann = {
            "id": first_ann_id + len(anns),
            "image_id": image_id,
            "category_id": int(cat),
            "iscrowd": 0,
            "segmentation": rles[0],
            "amodal_segmentation": rles[1],
            "area": float(visible.sum()),
            "amodal_area": float(amodal.sum()),
            "bbox": box,
            "z": int(inst.z),
            "occluded_fraction": _r(inst.occluded_fraction, 4),
        }
        if inst.axis is not None:
            ann["centromere"] = [_r(v) for v in inst.centromere_xy]
            ann["axis"] = [[_r(x), _r(y)] for x, y in inst.axis]
            ann["length_px"] = _r(inst.length_px, 3)
            ann["centromere_index"] = _r(inst.centromere_index, 4)
            ann["width_px"] = _r(inst.width_px, 3)
        if inst.extra:
            ann.update({k: inst.extra[k] for k in sorted(inst.extra)})
        anns.append(ann)
    return anns


def save_png(path: Path, image_u8: np.ndarray) -> None:
    """Grey 8-bit PNG without metadata (so the bytes depend on the pixels only)."""
    import cv2

    ok, buf = cv2.imencode(".png", image_u8, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


def image_entry(spread, image_id: int, file_name: str, cell_id: str, extra: dict | None = None) -> dict:
    h, w = spread.image_u8.shape
    entry = {
        "id": image_id,
        "file_name": file_name,
        "width": int(w),
        "height": int(h),
        "cell_id": cell_id,
        "karyotype": spread.karyotype,
        "banding": spread.banding,
        "polarity": spread.polarity,
        "settings": {k: (_r(v, 4) if isinstance(v, float) else v) for k, v in sorted(spread.settings.items())},
    }
    if extra:
        entry.update(extra)
    return entry


def write_annotations(path: Path, images: list[dict], annotations: list[dict], info: dict) -> Path:
    doc = {"info": info, "images": images, "annotations": annotations, "categories": CATEGORIES}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
    return path
