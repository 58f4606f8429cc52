"""Writing a :class:`~karyopipe.pipeline.core.KaryotypeResult`: report.json, chromosomes.csv, pictures, instance labels."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

CSV_COLUMNS = ["id", "class", "confidence", "top1", "p1", "top2", "p2", "top3", "p3", "x0", "y0", "x1", "y1",
               "length_px", "relative_length", "centromere_index", "polarity_confidence", "score", "flags", "check"]


def _num(v, digits: int = 4):
    v = float(v)
    return None if not math.isfinite(v) else round(v, digits)


def chromosome_to_dict(c) -> dict:
    """JSON-ready dict of one :class:`ChromosomeResult` (no mask; polygon as [[x, y], ...])."""
    return {
        "id": c.id,
        "class": c.class_name,
        "label": c.label,
        "confidence": _num(c.confidence),
        "top3": [{"class": name, "prob": _num(p)} for name, p in c.top3],
        "bbox": [_num(v, 1) for v in c.bbox],
        "polygon": np.round(np.asarray(c.polygon, float), 1).tolist(),
        "length_px": _num(c.length_px, 2),
        "relative_length": _num(c.relative_length, 3),
        "centromere_index": _num(c.centromere_index),
        "polarity_confidence": _num(c.polarity_confidence),
        "score": _num(c.score),
        "low_confidence": bool(c.low_confidence),
        # Why the overlay and the karyogram mark it for a check (empty when they do not).
        "check_reasons": list(c.check_reasons),
        "flags": list(c.flags),
    }


def result_to_dict(result) -> dict:
    """JSON-ready report of a :class:`KaryotypeResult`."""
    from karyopipe import __version__

    return {
        "source": result.source,
        "karyopipe_version": __version__,
        "image_shape": list(result.image.shape),
        "polarity": result.polarity,
        "karyotype": result.karyotype,
        "statement": result.statement,
        "sex": result.sex,
        "sex_confidence": _num(result.sex_confidence),
        "abnormalities": result.abnormalities,
        "possible_abnormalities": result.possible_abnormalities,
        "n_chromosomes": len(result.chromosomes),
        "n_low_confidence": result.n_to_check,
        "scale": result.scale,
        "relative_length_unit": "percent of the summed axis length of all objects in the spread",
        "timings_s": result.timings,
        "stages": result.stages,
        "fallbacks": [name for name, info in result.stages.items() if info.get("fallback")],
        "warnings": list(result.warnings),
        "review_prompts": result.review_prompts,
        "masks_png": MASKS_PNG,
        "chromosomes": [chromosome_to_dict(c) for c in result.chromosomes],
    }


def write_csv(path, chromosomes) -> Path:
    """One row per chromosome, columns :data:`CSV_COLUMNS`."""
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for c in chromosomes:
            top = list(c.top3) + [("", float("nan"))] * (3 - len(c.top3))
            row = [c.id, c.class_name, _num(c.confidence)]
            for name, p in top[:3]:
                row += [name, _num(p)]
            row += [_num(v, 1) for v in c.bbox]
            row += [_num(c.length_px, 2), _num(c.relative_length, 3), _num(c.centromere_index),
                    _num(c.polarity_confidence), _num(c.score), ";".join(c.flags), ";".join(c.check_reasons)]
            writer.writerow(["" if v is None else v for v in row])
    return path


#: What a pixel of ``masks.png`` holds; also written into report.json.
MASKS_PNG = ("16-bit instance labels: 0 = background, chromosome id + 1 elsewhere; where chromosomes overlap the "
             "pixel belongs to the smaller one, and each polygon in this report keeps its whole outline")


def polygon_mask(polygon, shape) -> np.ndarray:
    """The (H, W) bool mask inside a report's ``polygon`` (``[[x, y], ...]``, pixel centres, as written here)."""
    import cv2

    mask = np.zeros(shape, np.uint8)
    points = np.round(np.asarray(polygon, float)).astype(np.int32).reshape(-1, 2)
    if len(points):
        cv2.fillPoly(mask, [points], 1)
    return mask.astype(bool)


def label_image(chromosomes, shape) -> np.ndarray:
    """Instance label map of a spread, the content of ``masks.png``.

    Parameters
    ----------
    chromosomes : list of ChromosomeResult
        Each with its full-image ``mask``, or, where that is None (a reviewed
        report), its ``polygon``, which is filled instead.
    shape : (H, W)

    Returns
    -------
    ndarray, shape (H, W), uint16
        0 on the background, ``id + 1`` on chromosome ``id``. Overlaps go to the
        smaller chromosome (drawn last), so one lying across a larger one stays whole.
    """
    labels = np.zeros(shape, np.uint16)
    masks = []
    for c in chromosomes:
        mask = np.asarray(c.mask, bool) if c.mask is not None else polygon_mask(c.polygon, shape)
        masks.append((int(mask.sum()), c.id, mask))
    for _, ident, mask in sorted(masks, key=lambda m: -m[0]):
        labels[mask] = ident + 1
    return labels


def save_result(result, out_dir) -> dict[str, Path]:
    """Write ``overlay.png``, ``karyogram.png``, ``masks.png``, ``report.json`` and ``chromosomes.csv`` into ``out_dir``."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("overlay.png", "karyogram.png", "masks.png", "report.json",
                                               "chromosomes.csv")}
    Image.fromarray(result.overlay_image()).save(paths["overlay.png"])
    Image.fromarray(result.karyogram_image()).save(paths["karyogram.png"])
    Image.fromarray(result.label_image()).save(paths["masks.png"])
    paths["report.json"].write_text(json.dumps(result_to_dict(result), indent=1) + "\n")
    write_csv(paths["chromosomes.csv"], result.chromosomes)
    return paths
