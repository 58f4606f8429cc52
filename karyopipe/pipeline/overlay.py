"""Overlay picture of a segmented, classified spread.

Each chromosome gets a translucent colour fill, its outline, and a tag
``id:class``. Low-confidence chromosomes (unclassified, uncertain, or below
:data:`karyopipe.pipeline.core.LOW_CONFIDENCE`) are outlined in red with a ``?``.
"""
from __future__ import annotations

import numpy as np


def _palette(n: int) -> np.ndarray:
    import colorsys

    # Golden-ratio hues: neighbouring ids get distinct colours.
    return np.array([colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 1.0) for i in range(max(n, 1))]) * 255


def draw_overlay(gray: np.ndarray, chromosomes, *, banding: str = "q", alpha: float = 0.35,
                 title: str | None = None) -> np.ndarray:
    """Draw masks, outlines, ids and class labels over a spread.

    Parameters
    ----------
    gray : ndarray, shape (H, W), float in [0, 1]
        Canonical-polarity image (chromosomes bright).
    chromosomes : list of ChromosomeResult
    banding : {"g", "q"}
        ``"g"`` shows the image as brightfield (dark chromosomes on white).
    alpha : float
        Opacity of the mask fill.
    title : str, optional
        Written in the top-left corner (e.g. the karyotype).

    Returns
    -------
    ndarray, shape (H, W, 3), uint8
    """
    import cv2

    g = np.clip(np.asarray(gray, np.float32), 0, 1)
    if banding.lower().startswith("g"):
        g = 1.0 - g
    rgb = np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=2)
    colours = _palette(len(chromosomes))
    fill = rgb.astype(np.float32)
    for c, colour in zip(chromosomes, colours):
        if c.mask is not None:
            fill[c.mask] = (1 - alpha) * fill[c.mask] + alpha * colour
    out = np.ascontiguousarray(fill.clip(0, 255).astype(np.uint8))
    scale = max(0.35, min(out.shape[:2]) / 1400)
    thick = max(1, round(scale * 2))
    for c, colour in zip(chromosomes, colours):
        low = c.low_confidence
        edge = (255, 40, 40) if low else tuple(int(v) for v in colour)
        if len(c.polygon) >= 2:
            cv2.polylines(out, [np.round(c.polygon).astype(np.int32)[:, None, :]], True, edge, thick if not low else thick + 1)
        text = f"{c.id}:{c.class_name}" + ("?" if low and c.label else "")
        x0, y0 = int(c.bbox[0]), int(c.bbox[1])
        org = (max(0, x0), max(10, y0 - 2))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, edge, thick, cv2.LINE_AA)
    if title:
        org = (6, int(24 * scale * 2))
        cv2.putText(out, title, org, cv2.FONT_HERSHEY_SIMPLEX, scale * 1.6, (0, 0, 0), thick + 3, cv2.LINE_AA)
        cv2.putText(out, title, org, cv2.FONT_HERSHEY_SIMPLEX, scale * 1.6, (255, 255, 0), thick, cv2.LINE_AA)
    return out
