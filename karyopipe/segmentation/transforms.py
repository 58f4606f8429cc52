"""Training augmentation for spreads: geometry on polygons, photometry on pixels.

Geometry (rotation by any angle, flips, scale, crop) is one affine map applied
to the image with OpenCV and to the outline polygons exactly, so masks are
rasterised once, after augmentation, at the crop's resolution. Photometry
covers what differs between microscopes and stains: gamma, contrast and
brightness, occasional polarity inversion (in case polarity detection fails on
an unusual image), blur and noise. Copy-paste (:func:`paste_instances`) adds
chromosomes cut from other spreads, most of them against or across one already
there: touching and crossing pairs are where the detector most often returns
one object for two.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

# Instances cut by the crop border are kept only if this much of them is
# visible; smaller stubs would teach the model to fire on chromosome ends.
MIN_VISIBLE_FRACTION = 0.4
MIN_VISIBLE_PIXELS = 16


def prepare_polygons(instances, shape) -> list:
    """Outlines in pixel-centre coordinates, or masks for mask-only instances.

    Returns
    -------
    list of ("poly", (N, 2) float32) or ("mask", (H, W) uint8)
        Only chromosome instances; labelme/COCO polygons run along pixel edges,
        hence the half-pixel shift to OpenCV's pixel-centre convention.
    """
    out = []
    for inst in instances:
        if inst.category != "chromosome":
            continue
        if inst.polygon is not None:
            out.append(("poly", np.asarray(inst.polygon, np.float32) - 0.5))
        elif inst.mask is not None:
            out.append(("mask", inst.mask.astype(np.uint8)))
    return out


def _affine(center, angle_deg: float, scale: float, flip: bool, size: int) -> np.ndarray:
    """2x3 matrix taking source pixels to a ``size`` crop centred on ``center``."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * scale
    if flip:
        rot = rot @ np.array([[-1.0, 0.0], [0.0, 1.0]])
    shift = np.array([size / 2.0 - 0.5, size / 2.0 - 0.5]) - rot @ np.asarray(center, float)
    return np.hstack([rot, shift[:, None]]).astype(np.float64)


def rasterize_polygon(points: np.ndarray, shape) -> np.ndarray:
    """Fill a pixel-centre polygon into a uint8 mask with 1/16 px precision."""
    mask = np.zeros(shape, np.uint8)
    pts = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask


#: Default widest gamma of :func:`photometric`: exp(0.5), so gamma is drawn in 0.61-1.65.
GAMMA_MAX = float(np.exp(0.5))


def photometric(image: np.ndarray, rng: np.random.Generator, gamma_max: float = GAMMA_MAX) -> np.ndarray:
    """Random gamma, contrast/brightness, inversion, blur and noise on a [0, 1] image.

    Gamma is log-uniform in ``1/gamma_max .. gamma_max``. A camera's gamma
    beyond that range breaks G-band chromosomes apart at their pale bands
    (BENCHMARKS.md, End to end), so a run with G-band spreads may widen it.
    """
    if not gamma_max >= 1.0:
        raise ValueError(f"gamma_max must be at least 1, got {gamma_max}")
    image = np.clip(image, 0.0, 1.0) ** float(np.exp(rng.uniform(-np.log(gamma_max), np.log(gamma_max))))
    image = image * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.1:
        image = 1.0 - image
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.5:
        image = image + rng.normal(0.0, rng.uniform(0.005, 0.04), image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def cut_instances(gray: np.ndarray, polys, scale: float = 1.0, margin: int = 3) -> list:
    """Chromosomes of one spread as ``(patch, mask)`` pairs for :func:`paste_instances`.

    Parameters
    ----------
    gray : ndarray, shape (H, W), float32
    polys : list
        From :func:`prepare_polygons`; only polygon outlines are cut.
    scale : float
        Resize factor applied to each cut (the spread's training scale).

    Returns
    -------
    list of (ndarray (h, w) float32, ndarray (h, w) uint8)
    """
    h, w = gray.shape
    out = []
    for kind, data in polys:
        if kind != "poly":
            continue
        x0, y0 = np.floor(data.min(axis=0)).astype(int) - margin
        x1, y1 = np.ceil(data.max(axis=0)).astype(int) + margin + 1
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        patch = gray[y0:y1, x0:x1]
        mask = rasterize_polygon(data - np.array([x0, y0], np.float32), patch.shape)
        if abs(scale - 1.0) > 0.02:
            size = (max(1, round(patch.shape[1] * scale)), max(1, round(patch.shape[0] * scale)))
            patch = cv2.resize(patch, size, interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        if mask.sum() >= MIN_VISIBLE_PIXELS:
            out.append((np.ascontiguousarray(patch, np.float32), mask))
    return out


def paste_instances(image: np.ndarray, masks: list, donors: list, rng: np.random.Generator, n: int,
                    scale: float = 1.0, touching: float = 0.5, crossing: float = 0.3,
                    attempts: int = 30) -> tuple[np.ndarray, list]:
    """Paste ``n`` donor chromosomes into a crop, most of them against or across one already there.

    A touching chromosome overlaps the others by at most 3 % of its area; a
    crossing one lies over 5-40 % of its own area on others, and covers less
    than half of any of them. As in annotated spreads, both masks keep the
    crossing. The donor is added above its own background level over its
    outline grown by one pixel (keeping its blurred rim): where it lies on
    background that equals the donor, where it crosses another chromosome the
    two add up, as light does in fluorescence and absorbance does in
    brightfield (chromosomes are bright in canonical polarity).

    Parameters
    ----------
    image : ndarray, shape (S, S), float32
    masks : list of ndarray, shape (S, S), uint8
    donors : list
        From :func:`cut_instances`.
    n : int
    scale : float
        Extra resize of the donors (the crop's scale jitter).
    touching, crossing : float
        Probabilities that a pasted chromosome is placed against another or
        across one; otherwise anywhere it does not overlap.

    Returns
    -------
    image, masks
        New arrays; the pasted chromosomes' masks are appended.
    """
    from scipy import ndimage as ndi

    if not donors or n <= 0:
        return image, masks
    image = image.copy()
    masks = list(masks)
    size_y, size_x = image.shape
    union = np.zeros(image.shape, bool)
    for m in masks:
        union |= m.astype(bool)
    areas = [int(m.sum()) for m in masks]
    for _ in range(n):
        patch, mask = donors[rng.integers(len(donors))]
        angle, flip = rng.uniform(0, 360), rng.random() < 0.5
        ph, pw = patch.shape
        side = int(np.ceil(np.hypot(ph, pw) * scale)) + 2
        matrix = _affine(np.array([(pw - 1) / 2, (ph - 1) / 2]), angle, scale, flip, side)
        background = float(np.percentile(patch, 10))
        p = cv2.warpAffine(patch, matrix, (side, side), flags=cv2.INTER_LINEAR, borderValue=background)
        m = cv2.warpAffine(mask, matrix, (side, side), flags=cv2.INTER_NEAREST) > 0
        area = int(m.sum())
        if area < MIN_VISIBLE_PIXELS:
            continue
        near = ndi.binary_dilation(union, iterations=2) if union.any() else None
        ring = np.argwhere(near & ~union) if near is not None else np.zeros((0, 2))
        inside = np.argwhere(union)
        draw = rng.random()
        how = "cross" if len(inside) and draw < crossing else \
            "touch" if len(ring) and draw < crossing + touching else "free"
        for _attempt in range(attempts):
            if how == "free":
                cy, cx = rng.uniform(0, size_y), rng.uniform(0, size_x)
            else:
                anchors = inside if how == "cross" else ring
                cy, cx = anchors[rng.integers(len(anchors))] + rng.normal(0, side / 4, 2)
            y0, x0 = int(round(cy - side / 2)), int(round(cx - side / 2))
            ys, xs = slice(max(0, y0), min(size_y, y0 + side)), slice(max(0, x0), min(size_x, x0 + side))
            if ys.start >= ys.stop or xs.start >= xs.stop:
                continue
            sub = m[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
            visible = int(sub.sum())
            if visible < max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * area):
                continue
            shared = int((sub & union[ys, xs]).sum())
            if how == "cross":
                if not 0.05 * visible <= shared <= 0.4 * visible or \
                        any((sub & (o[ys, xs] > 0)).sum() > 0.5 * a for o, a in zip(masks, areas)):
                    continue
            elif shared > 0.03 * visible or (how == "touch" and not (sub & near[ys, xs]).any()):
                continue
            grown = ndi.binary_dilation(sub, iterations=1)
            region = image[ys, xs]
            lift = np.maximum(p[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] - background, 0.0)
            region[grown] = np.clip(region[grown] + lift[grown], 0.0, 1.0)
            full = np.zeros(image.shape, np.uint8)
            full[ys, xs] = sub
            masks.append(full)
            areas.append(visible)
            union |= full.astype(bool)
            break
    return image, masks


def augment_sample(gray, polys, rng: np.random.Generator, size: int = 384, scale_range=(0.75, 1.35),
                   augment: bool = True, donors=None, paste: int = 0, gamma_max: float = GAMMA_MAX):
    """Random rotated, flipped, scaled ``size`` x ``size`` crop with its outlines.

    Parameters
    ----------
    gray : ndarray, shape (H, W), float32 in [0, 1]
    polys : list
        From :func:`prepare_polygons`.
    augment : bool
        If False, a centred crop at the middle of ``scale_range`` without
        photometric changes.
    donors, paste : list, int
        Paste this many chromosomes from ``donors`` (:func:`paste_instances`)
        before the photometric changes, so they are changed alike.
    gamma_max : float
        :func:`photometric`'s widest gamma.

    Returns
    -------
    image : ndarray, shape (size, size), float32
    masks : list of ndarray, shape (size, size), uint8
        Visible instances only (see :data:`MIN_VISIBLE_FRACTION`).
    """
    h, w = gray.shape
    if augment:
        if polys and rng.random() < 0.8:
            kind, data = polys[rng.integers(len(polys))]
            center = data.mean(axis=0) if kind == "poly" else np.argwhere(data)[:, ::-1].mean(axis=0)
            center = center + rng.normal(0, size / 6, 2)
        else:
            center = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        angle = rng.uniform(0, 360)
        scale = float(np.exp(rng.uniform(*np.log(scale_range))))
        flip = bool(rng.random() < 0.5)
    else:
        center, angle, flip = np.array([w / 2 - 0.5, h / 2 - 0.5]), 0.0, False
        scale = float(np.sqrt(scale_range[0] * scale_range[1]))
    matrix = _affine(center, angle, scale, flip, size)
    background = float(np.percentile(gray, 20))
    image = cv2.warpAffine(gray, matrix, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=background)
    masks = []
    for kind, data in polys:
        if kind == "poly":
            pts = data @ matrix[:, :2].T + matrix[:, 2]
            full = abs(cv2.contourArea(pts.astype(np.float32)))
            mask = rasterize_polygon(pts, (size, size))
        else:
            full = float(data.sum()) * scale * scale
            mask = cv2.warpAffine(data, matrix, (size, size), flags=cv2.INTER_NEAREST)
        visible = int(mask.sum())
        if visible >= MIN_VISIBLE_PIXELS and visible >= MIN_VISIBLE_FRACTION * full:
            masks.append(mask)
    if augment and donors and paste:
        jitter = float(np.exp(rng.uniform(*np.log(scale_range)))) / float(np.sqrt(scale_range[0] * scale_range[1]))
        image, masks = paste_instances(image, masks, donors, rng, paste, scale=jitter)
    if augment:
        image = photometric(image, rng, gamma_max)
    return image, masks


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` masks to ``(N, 4)`` boxes ``x0, y0, x1, y1`` with exclusive upper bounds."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        ys = np.flatnonzero(m.any(axis=1))
        xs = np.flatnonzero(m.any(axis=0))
        boxes[k] = xs[0], ys[0], xs[-1] + 1, ys[-1] + 1
    return boxes


def to_target(image: np.ndarray, masks: list):
    """Tensors for torchvision Mask R-CNN: ``(1, H, W)`` image and its target dict."""
    h, w = image.shape
    stack = np.stack(masks) if masks else np.zeros((0, h, w), np.uint8)
    target = {
        "boxes": torch.from_numpy(masks_to_boxes(stack)).reshape(-1, 4),
        "labels": torch.ones(len(stack), dtype=torch.int64),
        "masks": torch.from_numpy(stack),
    }
    return torch.from_numpy(np.ascontiguousarray(image))[None], target
