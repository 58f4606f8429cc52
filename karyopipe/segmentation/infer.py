"""Running a trained Mask R-CNN on whole spreads: scale, tiling, merging, filters.

The network is trained at BioImLab scale (chromosomes ~``reference_width`` px
wide). A spread from another microscope is first resized so that its
estimated chromosome width matches, then cut into overlapping tiles if it is
large, and the per-tile detections are merged back with mask NMS. Masks are
returned at the input's full resolution.

Examples
--------
>>> from karyopipe.segmentation import Segmenter           # doctest: +SKIP
>>> seg = Segmenter.from_pretrained()                      # doctest: +SKIP
>>> instances = seg(gray)          # list of karyopipe.data.Instance  # doctest: +SKIP
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
import torch

from karyopipe.data.model import Instance

# Median chromosome width (px) of BioImLab metaphases by estimate_chromosome_width;
# the shipped weights record their own value in their config.
DEFAULT_REFERENCE_WIDTH = 8.5


@dataclass
class InferenceSettings:
    """Thresholds and sizes of :class:`Segmenter` (all in working-scale pixels).

    Attributes
    ----------
    score_thresh : float
        Minimum detection score kept.
    mask_thresh : float
        Threshold on the mask head's probability.
    nms_thresh : float
        Mask IoU above which the lower-scored of two detections is dropped.
    box_nms_thresh : float
        Box IoU above which the network's own NMS drops the lower-scored
        detection, before any mask is drawn. Looser than ``nms_thresh``
        because two crossing chromosomes can have nearly the same box but
        different masks; the mask NMS then removes true duplicates.
    rescale : bool
        Resize the spread so its chromosome width matches ``reference_width``.
    rescale_tolerance : float
        No resizing while the width ratio is within this factor (saves a
        resize when the spread is already at the training scale).
    reference_width : float
        Chromosome width the network was trained at.
    chromosome_width : float or None
        The spreads' chromosome width in pixels, as :func:`estimate_chromosome_width`
        measures it; given, it replaces the estimate. For a fixed camera and
        objective, and for fields where debris misleads the estimate (the
        report's ``chromosome_width_px`` of a clean spread is the value to give).
    tile_size, tile_overlap : int
        Images larger than ``tile_size`` (after rescaling) are cut into tiles;
        the overlap must exceed the longest chromosome so each is whole in one tile.
    min_area_widths2 : float
        Objects smaller than this many ``width**2`` are debris. ``width`` is
        :func:`estimate_chromosome_width`'s, which reads about 1.3-1.5x the
        true width on real spreads, so 0.5 keeps the smallest G-group
        chromosomes (about 2 x 3 true widths).
    max_thickness_widths : float
        Objects thicker (2 x max inscribed radius) than this many widths are
        nuclei: a chromosome, even where two cross, is at most ~1.5 true widths thick.
    max_detections : int
        Per tile.
    max_proposals : int or None
        At most this many RPN proposals per tile reach the box head (the
        weights' ``rpn_post_nms_top_n_test`` when larger; None keeps theirs).
        The box head's cost grows with it: 300 instead of the shipped
        weights' 600 saves about 0.07 s per 768x576 spread on 2 CPU cores, at
        a mask AP 0.0002 lower on the val spreads (BENCHMARKS.md).
    refine : bool
        Redraw each mask's outline from the image (:func:`refine_mask`). The
        mask head predicts 28x28 per box, coarse for a chromosome ~10 px
        wide, while a banded chromosome's edge against the background is sharp.
    refine_support : float
        Mask-head probability that bounds where :func:`refine_mask` may grow.
    refine_grow : float
        How far below the object's Otsu level :func:`refine_mask`'s outline
        reaches, as a fraction of the way from the background level (1 = Otsu
        itself; lower values draw fatter masks).
    learned_outline : bool
        Draw outlines with the weights' :class:`~karyopipe.segmentation.outline.OutlineModel`
        (``karyopipe fit-outline``) when they carry one; otherwise, or when
        False, with :func:`refine_mask`'s rule.
    flips : int
        Test-time views: 1 = the image only, 2 = also mirrored left-right,
        4 = also upside down and both. Detections of the views are matched by
        mask IoU (:func:`vote_detections`); a detection's score is averaged over
        *all* views, so what only one view sees (a speck, a fragment) loses
        score. Each view costs one more network pass.
    precision : {"float32", "bfloat16"}
        Arithmetic of the network's convolution and linear stacks
        (:func:`network_precision`). bfloat16 runs the segmenter about 1.5x
        faster on CPUs with native bfloat16 (AVX512-BF16 or AMX) and slower
        on others; boxes, NMS and masks stay float32.
    exact_paste : bool
        Place mask probabilities by pixel centres (:func:`paste_masks`,
        :func:`crop_to_full_resolution`). False reproduces torchvision's
        paste and whole-pixel crop corners, which move masks by up to a pixel;
        weights whose outline model was fitted that way say so in their config.
    """

    score_thresh: float = 0.5
    mask_thresh: float = 0.5
    nms_thresh: float = 0.5
    box_nms_thresh: float = 0.7
    rescale: bool = True
    reference_width: float = DEFAULT_REFERENCE_WIDTH
    chromosome_width: float | None = None
    tile_size: int = 1024
    tile_overlap: int = 192
    min_area_widths2: float = 0.5
    max_thickness_widths: float = 2.0
    max_detections: int = 150
    max_proposals: int | None = None
    refine: bool = True
    refine_support: float = 0.35
    refine_grow: float = 0.8
    learned_outline: bool = True
    rescale_tolerance: float = 1.1
    scale_bounds: tuple = field(default=(0.25, 4.0))
    flips: int = 1
    exact_paste: bool = True
    precision: str = "float32"


def estimate_chromosome_width(gray: np.ndarray) -> float | None:
    """Typical chromosome width in pixels of a canonical-polarity spread.

    Otsu foreground, then area / skeleton length of each object; the median
    over objects ignores the few nuclei, and touching chromosomes still give
    about one width because their skeleton branches add up their lengths. It
    overestimates short objects slightly (the skeleton stops short of the
    tips), the same way on every image, which is all a scale reference needs.

    Parameters
    ----------
    gray : ndarray, shape (H, W), float in [0, 1], chromosomes bright

    Returns
    -------
    float or None
        None when no plausible objects are found.
    """
    gray = np.asarray(gray, np.float32)
    if gray.size == 0 or float(gray.max() - gray.min()) < 1e-6:
        return None
    smooth = cv2.GaussianBlur(gray, (0, 0), 1.0)
    width = _median_width(smooth)
    # In a wide, vignetted field a global Otsu threshold takes the bright corner
    # for foreground and its noise for thin objects. Flatten the illumination
    # (a blur of 1/16 of the image, far wider than any chromosome, computed at
    # quarter size) and measure again; the flat estimate wins only when the two
    # disagree grossly, so spreads like the training ones keep the estimator the
    # model's reference width was measured with.
    small = cv2.resize(smooth, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    background = cv2.resize(cv2.GaussianBlur(small, (0, 0), max(gray.shape) / 64.0),
                            (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
    flat_width = _median_width(smooth - background)
    if width is None or (flat_width is not None and not 1 / 1.5 <= flat_width / width <= 1.5):
        return flat_width
    return width


def _median_width(image: np.ndarray) -> float | None:
    """Median area / skeleton length of the Otsu foreground objects of ``image``."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from skimage.morphology import skeletonize

    if float(image.max() - image.min()) < 1e-6:
        return None
    fg = ndi.binary_opening(image > threshold_otsu(image), iterations=1)
    labels, n = ndi.label(fg)
    if n == 0:
        return None
    area = np.bincount(labels.ravel(), minlength=n + 1)
    length = np.bincount(labels[skeletonize(fg)], minlength=n + 1)
    ok = (length >= 5) & (area >= 20)
    ok[0] = False
    if not ok.any():
        return None
    return float(np.median(area[ok] / length[ok]))


def _tiles(h: int, w: int, size: int, overlap: int):
    """Top-left corners of overlapping tiles covering an ``h`` x ``w`` image."""
    def starts(n):
        if n <= size:
            return [0]
        step = size - overlap
        out = list(range(0, n - size, step))
        return out + [n - size]

    return [(y, x) for y in starts(h) for x in starts(w)]


def _overlap(a: tuple[int, int, np.ndarray], b: tuple[int, int, np.ndarray]) -> int:
    """Pixels set in both of two boolean mask crops."""
    (ay, ax, am), (by, bx, bm) = a, b
    y0, x0 = max(ay, by), max(ax, bx)
    y1, x1 = min(ay + am.shape[0], by + bm.shape[0]), min(ax + am.shape[1], bx + bm.shape[1])
    if y0 >= y1 or x0 >= x1:
        return 0
    return int(np.logical_and(am[y0 - ay:y1 - ay, x0 - ax:x1 - ax], bm[y0 - by:y1 - by, x0 - bx:x1 - bx]).sum())


def mask_nms(masks: list, scores: np.ndarray, thresh: float, hidden: list | None = None) -> list[int]:
    """Greedy NMS on mask IoU; ``masks`` are (y0, x0, bool crop) triples. Returns kept indices.

    A detection is also dropped when 80 % of it lies inside a better one, or
    80 % of a better one inside it: a fragment of that chromosome, or the two
    touching chromosomes it merged seen whole. Pass a list as ``hidden`` to
    collect the detections dropped only for lying inside a kept one (not as
    duplicates by IoU): the pipeline's second look tries them as the parts
    of a kept detection that merged two chromosomes.
    """
    order = np.argsort(-np.asarray(scores))
    kept: list[int] = []
    for i in order:
        area = masks[i][2].sum()
        duplicate = part = merge = False
        for j in kept:
            inter = _overlap(masks[i], masks[j])
            if not inter:
                continue
            mj = masks[j][2].sum()
            union = area + mj - inter
            if union and inter / union > thresh:
                duplicate = True
                break
            if inter > 0.8 * area:
                part = True  # it lies inside the kept one
            elif inter > 0.8 * mj:
                merge = True  # the kept one lies inside it
            if hidden is None and (part or merge):
                break
        if duplicate or part or merge:
            if hidden is not None and part and not (duplicate or merge):
                hidden.append(int(i))
            continue
        kept.append(int(i))
    return kept


PRECISIONS = ("float32", "bfloat16")


def has_native_bfloat16(device="cpu") -> bool | None:
    """Whether ``device`` computes bfloat16 in hardware; None where that cannot be told.

    CPUs: the AVX512-BF16 or AMX-BF16 flag in ``/proc/cpuinfo`` (Linux).
    Without it oneDNN emulates bfloat16, slower than float32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags))


def _as_float32(output):
    if isinstance(output, torch.Tensor):
        return output.float()
    if isinstance(output, dict):
        return type(output)((k, _as_float32(v)) for k, v in output.items())
    if isinstance(output, (list, tuple)):
        return type(output)(_as_float32(v) for v in output)
    return output


@contextmanager
def network_precision(model, precision: str = "float32", device="cpu"):
    """Run a torchvision Mask R-CNN's heavy stacks under bfloat16 autocast, for the duration.

    Backbone + FPN, the RPN head, the box head and the mask head and
    predictor compute in bfloat16; their outputs come back float32, so
    anchor and box decoding, NMS and mask pasting never see bfloat16 (its
    8-bit mantissa would move a coordinate near 800 px by 2 px). The
    weights stay float32. ``"float32"``, or a model without these parts,
    changes nothing.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    parts = ("backbone", "rpn.head", "roi_heads.box_head", "roi_heads.mask_head", "roi_heads.mask_predictor")
    try:
        modules = [model.get_submodule(name) for name in parts]
    except AttributeError:
        modules = []
    if precision == "float32" or not modules:
        yield
        return
    device_type = torch.device(device).type
    active, handles = [], []

    def enter(module, args):
        context = torch.autocast(device_type, dtype=torch.bfloat16)
        context.__enter__()
        active.append(context)

    def leave(module, args, output):
        active.pop().__exit__(None, None, None)
        return _as_float32(output)

    try:
        for module in modules:
            handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def predict_tile(model, image: np.ndarray, device="cpu", exact_paste: bool = True, precision: str = "float32") -> dict:
    """Raw network output on one ``(H, W)`` float32 image.

    A torchvision Mask R-CNN whose transform keeps the image's size
    (karyopipe's builders) has its ``M x M`` mask probabilities pasted by
    :func:`paste_mask_crops` (``exact=exact_paste``) into one small array per
    detection. torchvision's postprocessing pastes each into a whole-tile
    array and holds them all twice: 8 GB at the peak for a 4000 x 3000
    spread. Any other model is called as is and must return torchvision-style
    full-size masks. ``precision``: see :func:`network_precision`.

    Returns
    -------
    dict
        ``boxes`` (N, 4) x0 y0 x1 y1, ``scores`` (N,), ``crops``: N mask
        crops ``(y0, x0, prob)``, ``prob`` (h, w) float32 over image pixels
        ``[y0, y0 + h) x [x0, x0 + w)``, zero beyond (see :func:`crop_window`).
    """
    tensor = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None].to(device)
    images = None
    if all(hasattr(model, part) for part in ("transform", "backbone", "rpn", "roi_heads")):
        images, _ = model.transform([tensor])
    if images is None or tuple(images.image_sizes[0]) != tuple(image.shape):
        with network_precision(model, precision, device):
            out = model([tensor])[0]
        return {"boxes": out["boxes"].cpu().numpy(), "scores": out["scores"].cpu().numpy(),
                "crops": crops_of_masks(out["masks"][:, 0].cpu().numpy())}
    with network_precision(model, precision, device):
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)
        out = model.roi_heads(features, proposals, images.image_sizes)[0][0]
    boxes = out["boxes"].cpu().numpy()
    return {
        "boxes": boxes,
        "scores": out["scores"].cpu().numpy(),
        "crops": paste_mask_crops(out["masks"][:, 0].cpu().numpy(), boxes, image.shape, exact=exact_paste),
    }


def crops_of_masks(masks: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """Full-size masks ``(N, H, W)`` as mask crops ``(y0, x0, prob)`` around their non-zero pixels."""
    crops = []
    for mask in np.asarray(masks, np.float32):
        ys, xs = np.nonzero(mask)
        if not len(ys):
            crops.append((0, 0, np.zeros((0, 0), np.float32)))
            continue
        y0, x0 = int(ys.min()), int(xs.min())
        crops.append((y0, x0, mask[y0:int(ys.max()) + 1, x0:int(xs.max()) + 1].copy()))
    return crops


def crop_window(crop: tuple[int, int, np.ndarray], y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """A mask crop's values over image pixels ``[y0, y1) x [x0, x1)``, zero where the crop does not reach."""
    cy, cx, values = crop
    out = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), np.float32)
    ya, xa = max(y0, cy), max(x0, cx)
    yb, xb = min(y1, cy + values.shape[0]), min(x1, cx + values.shape[1])
    if ya < yb and xa < xb:
        out[ya - y0:yb - y0, xa - x0:xb - x0] = values[ya - cy:yb - cy, xa - cx:xb - cx]
    return out


def paste_mask_crops(masks: np.ndarray, boxes: np.ndarray, shape: tuple[int, int],
                     exact: bool = True) -> list[tuple[int, int, np.ndarray]]:
    """Place the mask head's box-relative probabilities in the image, sub-pixel exact.

    Parameters
    ----------
    masks : ndarray, shape (N, M, M), float
        Mask-head probabilities; cell ``j`` is sampled, as the training
        targets were (``roi_align``, ``aligned=False``), at image coordinate
        ``x0 + (j + 0.5) * (x1 - x0) / M`` where pixel ``i`` has its centre at ``i``.
    boxes : ndarray, shape (N, 4)
        ``x0, y0, x1, y1`` in image pixels.
    shape : (H, W)
    exact : bool
        False reproduces torchvision's ``paste_masks_in_image`` value for value.

    Returns
    -------
    list of (y0, x0, prob)
        One crop per mask, ``prob`` (h, w) float32, clipped to the image.
        torchvision's paste rounds each box to whole pixels and stretches the
        mask over one extra pixel, which moves a mask by up to a pixel (half a
        pixel up and left on average), a large share of an edge on a 10 px-wide
        chromosome.
    """
    if not exact:
        return _paste_like_torchvision(masks, boxes, shape)
    h, w = shape
    crops = []
    for k in range(len(masks)):
        mask = np.pad(np.asarray(masks[k], np.float32), 1)  # zero border: probability falls off past the box
        m_y, m_x = mask.shape[0] - 2, mask.shape[1] - 2
        x0, y0, x1, y1 = (float(v) for v in boxes[k])
        step_x, step_y = max(x1 - x0, 1e-3) / m_x, max(y1 - y0, 1e-3) / m_y
        # Output pixels within one cell of the box; the padded border brings the edge down to 0.
        ix0, iy0 = max(0, int(np.floor(x0 - step_x))), max(0, int(np.floor(y0 - step_y)))
        ix1, iy1 = min(w, int(np.ceil(x1 + step_x)) + 1), min(h, int(np.ceil(y1 + step_y)) + 1)
        if ix1 <= ix0 or iy1 <= iy0:
            crops.append((0, 0, np.zeros((0, 0), np.float32)))
            continue
        # Inverse map, output pixel i -> padded-mask coordinate (i - x0) / step - 0.5 + 1.
        matrix = np.array([[1 / step_x, 0, (ix0 - x0) / step_x + 0.5],
                           [0, 1 / step_y, (iy0 - y0) / step_y + 0.5]], np.float32)
        crops.append((iy0, ix0, cv2.warpAffine(mask, matrix, (ix1 - ix0, iy1 - iy0),
                                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                               borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)))
    return crops


def paste_masks(masks: np.ndarray, boxes: np.ndarray, shape: tuple[int, int], exact: bool = True) -> np.ndarray:
    """:func:`paste_mask_crops` as full-size masks, shape (N, H, W), float32."""
    out = np.zeros((len(masks),) + tuple(shape), np.float32)
    for k, (y0, x0, values) in enumerate(paste_mask_crops(masks, boxes, shape, exact)):
        out[k, y0:y0 + values.shape[0], x0:x0 + values.shape[1]] = values
    return out


def _paste_like_torchvision(masks: np.ndarray, boxes: np.ndarray, shape) -> list[tuple[int, int, np.ndarray]]:
    """torchvision's ``paste_masks_in_image`` arithmetic, as mask crops."""
    import torch.nn.functional as F
    from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

    if not len(masks):
        return []
    padded, scale = expand_masks(torch.from_numpy(np.asarray(masks, np.float32))[:, None], padding=1)
    int_boxes = expand_boxes(torch.from_numpy(np.asarray(boxes, np.float32)), scale).to(dtype=torch.int64).tolist()
    h, w = shape
    crops = []
    for k, (bx0, by0, bx1, by1) in enumerate(int_boxes):
        size = (max(by1 - by0 + 1, 1), max(bx1 - bx0 + 1, 1))
        resized = F.interpolate(padded[k:k + 1], size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
        x0, x1, y0, y1 = max(bx0, 0), min(bx1 + 1, w), max(by0, 0), min(by1 + 1, h)
        if x1 > x0 and y1 > y0:
            crops.append((y0, x0, np.ascontiguousarray(resized[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0])))
        else:
            crops.append((0, 0, np.zeros((0, 0), np.float32)))
    return crops


# Flip codes of the test-time views, in order: none, left-right, up-down, both.
_VIEWS = ((False, False), (False, True), (True, False), (True, True))


def predict_views(model, image: np.ndarray, flips: int = 1, device="cpu", exact_paste: bool = True,
                  precision: str = "float32") -> list[dict]:
    """:func:`predict_tile` on up to four mirrored views, mapped back to ``image``'s frame.

    Returns
    -------
    list of dict, one per view
        ``boxes`` (N, 4) x0 y0 x1 y1, ``scores`` (N,), ``crops`` (N mask crops) in the original orientation.
    """
    if flips not in (1, 2, 4):
        raise ValueError(f"flips must be 1, 2 or 4, got {flips}")
    h, w = image.shape
    outs = []
    for flip_ud, flip_lr in _VIEWS[:flips]:
        view = image[::-1 if flip_ud else 1, ::-1 if flip_lr else 1]
        out = predict_tile(model, view, device, exact_paste, precision)
        boxes, crops = out["boxes"].copy(), out["crops"]
        if flip_lr:
            boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
            crops = [(y, w - x - c.shape[1], c[:, ::-1]) for y, x, c in crops]
        if flip_ud:
            boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
            crops = [(h - y - c.shape[0], x, c[::-1, :]) for y, x, c in crops]
        outs.append({"boxes": boxes, "scores": out["scores"],
                     "crops": [(int(y), int(x), np.ascontiguousarray(c)) for y, x, c in crops]})
    return outs


def _boxes_touch(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def vote_detections(views: list[dict], iou_thresh: float = 0.5, mask_thresh: float = 0.5) -> dict:
    """Merge the detections of several views of one image into one set.

    Greedy in descending score: a detection gathers, from each *other* view,
    the unused detection whose mask overlaps it best (IoU above
    ``iou_thresh``). The group's mask probability is the mean over its
    members (a view that missed the object does not thin its outline), its
    box the union of theirs, and its score the members' summed scores over
    the number of views (a view that missed it does lower the score).

    Parameters
    ----------
    views : list of dict
        As returned by :func:`predict_views`.

    Returns
    -------
    dict
        ``boxes`` (M, 4), ``scores`` (M,), ``crops`` (M mask crops).
    """
    n_views = len(views)
    if n_views == 1:
        return views[0]
    flat = [(v, i) for v, out in enumerate(views) for i in range(len(out["scores"]))]
    if not flat:
        return {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32), "crops": []}
    binary = {}
    for v, i in flat:
        y, x, values = views[v]["crops"][i]
        binary[v, i] = (y, x, values >= mask_thresh)
    area = {key: int(m.sum()) for key, (_, _, m) in binary.items()}
    flat.sort(key=lambda key: -float(views[key[0]]["scores"][key[1]]))
    used: set = set()
    boxes, scores, crops = [], [], []
    for key in flat:
        if key in used:
            continue
        used.add(key)
        group = [key]
        for v in range(n_views):
            if v == key[0]:
                continue
            best, best_iou = None, iou_thresh
            for i in range(len(views[v]["scores"])):
                other = (v, i)
                if other in used or not area[other] or not area[key] or not _boxes_touch(
                        views[key[0]]["boxes"][key[1]], views[v]["boxes"][i]):
                    continue
                inter = _overlap(binary[key], binary[other])
                iou = inter / (area[key] + area[other] - inter)
                if iou > best_iou:
                    best, best_iou = other, iou
            if best is not None:
                used.add(best)
                group.append(best)
        member_boxes = np.array([views[v]["boxes"][i] for v, i in group])
        boxes.append(np.concatenate([member_boxes[:, :2].min(0), member_boxes[:, 2:].max(0)]))
        scores.append(sum(float(views[v]["scores"][i]) for v, i in group) / n_views)
        members = [views[v]["crops"][i] for v, i in group]
        y0, x0 = min(y for y, _, _ in members), min(x for _, x, _ in members)
        y1 = max(y + c.shape[0] for y, _, c in members)
        x1 = max(x + c.shape[1] for _, x, c in members)
        crops.append((y0, x0, sum(crop_window(m, y0, x0, y1, x1) for m in members) / len(members)))
    order = np.argsort(-np.array(scores))
    return {"boxes": np.array(boxes, np.float32)[order], "scores": np.array(scores, np.float32)[order],
            "crops": [crops[i] for i in order]}


def crop_to_full_resolution(prob: np.ndarray, wy: int, wx: int, scale_y: float, scale_x: float,
                            shape: tuple[int, int], exact: bool = True) -> tuple[int, int, np.ndarray]:
    """Map a crop of the working-scale image back onto the input's pixel grid.

    Parameters
    ----------
    prob : ndarray, shape (ph, pw), float
        Values over working-scale pixels ``[wy, wy + ph) x [wx, wx + pw)``.
    wy, wx : int
        The crop's top-left pixel in the working-scale image.
    scale_y, scale_x : float
        Working size over input size, per axis (as ``cv2.resize`` made it).
    shape : (H, W)
        The input image's shape.
    exact : bool
        False: round the corner down to a whole input pixel and stretch the
        crop over whole pixels (how weights fitted before the exact mapping
        were measured).

    Returns
    -------
    y0, x0 : int
        Top-left input pixel of the returned crop.
    prob : ndarray, shape (h, w), float32
        Resampled at the input's pixel centres: input pixel ``x`` sits at
        working coordinate ``(x + 0.5) * scale_x - 0.5``, the convention of
        ``cv2.resize``. Rounding the crop's corner to whole input pixels
        instead (and stretching the crop to fill them) misplaces every mask by
        up to a pixel, most of the width of a thin chromosome's edge.
    """
    h, w = shape
    ph, pw = prob.shape
    if not exact:
        y0, x0 = int(np.floor(wy / scale_y)), int(np.floor(wx / scale_x))
        y1, x1 = min(h, int(np.ceil((wy + ph) / scale_y))), min(w, int(np.ceil((wx + pw) / scale_x)))
        return y0, x0, cv2.resize(np.asarray(prob, np.float32), (max(1, x1 - x0), max(1, y1 - y0)),
                                  interpolation=cv2.INTER_LINEAR)
    y0 = max(0, int(np.floor((wy - 0.5) / scale_y + 0.5 - 1e-6)))
    x0 = max(0, int(np.floor((wx - 0.5) / scale_x + 0.5 - 1e-6)))
    y1 = min(h, int(np.ceil((wy + ph - 0.5) / scale_y + 0.5)))
    x1 = min(w, int(np.ceil((wx + pw - 0.5) / scale_x + 0.5)))
    # Inverse map, output pixel -> crop coordinate: u = scale * (x0 + x + 0.5) - 0.5 - wx.
    matrix = np.array([[scale_x, 0.0, scale_x * (x0 + 0.5) - 0.5 - wx],
                       [0.0, scale_y, scale_y * (y0 + 0.5) - 0.5 - wy]], np.float32)
    out = cv2.warpAffine(np.asarray(prob, np.float32), matrix, (max(1, x1 - x0), max(1, y1 - y0)),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return y0, x0, out


@dataclass
class Detection:
    """One detection before its outline is drawn, at the input's full resolution.

    Attributes
    ----------
    y0, x0 : int
        Top-left corner of ``prob`` in the spread.
    prob : ndarray, shape (h, w), float32
        Mask-head probability over a crop a few pixels larger than the box.
    score : float
    category : str
        ``"chromosome"``, ``"nucleus"`` or ``"debris"`` (from the head's mask).
    scale : float
        Working scale the network saw the spread at.
    chromosome_width : float or None
        The spread's chromosome width the scale came from (None: not rescaled).
    """

    y0: int
    x0: int
    prob: np.ndarray
    score: float
    category: str
    scale: float = 1.0
    chromosome_width: float | None = None


def object_levels(region: np.ndarray) -> tuple[float, float] | None:
    """Background level and Otsu threshold of a detection's crop, or None for a flat crop.

    The background is the median below the Otsu threshold: the crop is a few
    pixels larger than the box, so its darker class is the surroundings.
    """
    from skimage.filters import threshold_otsu

    if float(region.max() - region.min()) < 1e-6:
        return None
    high = threshold_otsu(region)
    return float(np.median(region[region <= high])), high


def refine_mask(prob: np.ndarray, region: np.ndarray, support: float = 0.35,
                mask_thresh: float = 0.5, grow: float = 0.8, min_kept: float = 0.5,
                levels: tuple[float, float] | None = None) -> np.ndarray:
    """Outline one detection from the image, inside the network's mask support.

    The region's Otsu threshold seeds the chromosome; hysteresis grows it down
    to ``grow`` of the way from the background level to that threshold, so
    pale bands and the blurred rim stay attached. Pixels the mask head gives
    less than ``support`` probability are never taken, which keeps touching
    neighbours out. If the image disagrees grossly with the network (less than
    ``min_kept`` of its mask survives), the network's mask is returned.

    Parameters
    ----------
    prob : ndarray, shape (h, w), float
        Mask-head probability over a crop around the detection.
    region : ndarray, shape (h, w), float
        The same crop of the (lightly smoothed) canonical-polarity spread.
    support, mask_thresh, grow, min_kept : float
    levels : (float, float), optional
        ``object_levels(region)``, when the caller has it already.

    Returns
    -------
    ndarray, shape (h, w), bool
    """
    from scipy import ndimage as ndi
    from skimage.filters import apply_hysteresis_threshold

    base = prob >= mask_thresh
    if region.shape != prob.shape:
        return base
    levels = levels or object_levels(region)
    if levels is None:
        return base
    background, high = levels
    foreground = apply_hysteresis_threshold(region, background + grow * (high - background), high)
    mask = ndi.binary_fill_holes((prob >= support) & foreground)
    if mask.sum() < min_kept * base.sum():
        return base
    return mask


def _classify_shape(mask: np.ndarray, width: float, settings: InferenceSettings) -> str:
    """``"chromosome"``, ``"nucleus"`` or ``"debris"`` from size and thickness."""
    from scipy import ndimage as ndi

    area = float(mask.sum())
    if area < settings.min_area_widths2 * width * width:
        return "debris"
    thickness = 2.0 * float(ndi.distance_transform_edt(np.pad(mask, 1)).max())
    if thickness > settings.max_thickness_widths * width:
        return "nucleus"
    return "chromosome"


class Segmenter:
    """Chromosome instance segmentation of whole spreads with a Mask R-CNN.

    Parameters
    ----------
    model : torchvision MaskRCNN
    settings : InferenceSettings, optional
    device : str
    """

    def __init__(self, model, settings: InferenceSettings | None = None, device: str = "cpu", config: dict | None = None):
        self.model = model.eval().to(device)
        self.settings = settings or InferenceSettings()
        self.device = device
        self.config = dict(config or {})
        rpn_limits = getattr(getattr(self.model, "rpn", None), "_post_nms_top_n", None)
        self._own_max_proposals = rpn_limits["testing"] if rpn_limits else None
        self._apply_settings()
        record = self.config.get("outline_model")
        if record:
            from karyopipe.segmentation.outline import OutlineModel

            self.outline_model = OutlineModel.from_dict(record)
        else:
            self.outline_model = None

    def _apply_settings(self) -> None:
        # The detector keeps low scores too; the settings' own threshold is applied after refinement.
        self.model.roi_heads.score_thresh = min(self.settings.score_thresh, 0.05)
        self.model.roi_heads.detections_per_img = self.settings.max_detections
        self.model.roi_heads.nms_thresh = self.settings.box_nms_thresh
        if self.settings.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.settings.precision!r}")
        width = self.settings.chromosome_width
        if width is not None and not width > 0:
            raise ValueError(f"chromosome_width must be a positive number of pixels, got {width}")
        if self.settings.precision == "bfloat16" and has_native_bfloat16(self.device) is False:
            warnings.warn(f"precision bfloat16: this {torch.device(self.device).type} has no native bfloat16, "
                          "so segmentation will be slower than with float32", stacklevel=3)
        own, limit = self._own_max_proposals, self.settings.max_proposals
        if own is not None:  # a torchvision RPN, which keeps this limit only in a private dict
            self.model.rpn._post_nms_top_n["testing"] = own if limit is None else min(own, int(limit))

    def configure(self, **changes) -> "Segmenter":
        """Change :class:`InferenceSettings` fields in place (``score_thresh=0.3``); returns ``self``."""
        from dataclasses import replace

        self.settings = replace(self.settings, **changes)
        self._apply_settings()
        return self

    @classmethod
    def from_pretrained(cls, path=None, device: str = "cpu", **settings) -> "Segmenter":
        """Load shipped weights (default ``weights/mask_rcnn_karyotype_best.pth``).

        Keyword arguments override :class:`InferenceSettings` fields
        (``score_thresh=0.3``, ``rescale=False``...).
        """
        from karyopipe.segmentation.model import build_maskrcnn
        from karyopipe.weights import SEGMENTATION_WEIGHTS, load_weights, weights_path

        path = weights_path(path, SEGMENTATION_WEIGHTS)
        state, config, _ = load_weights(path)
        model_kwargs = dict(config.get("model", {}))
        model = build_maskrcnn(**model_kwargs)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"{path}: weights do not fit the model in their config ({str(exc).splitlines()[0]})") from None
        base = dict(config.get("inference", {}))
        # Weights saved before exact_paste existed had their outline model, count threshold and
        # scores measured with torchvision's paste; they keep it unless told otherwise.
        base.setdefault("exact_paste", False)
        base.update(settings)
        known = set(InferenceSettings.__dataclass_fields__)
        unknown = set(settings) - known
        if unknown:
            raise TypeError(f"unknown Segmenter settings: {sorted(unknown)}")
        return cls(model, InferenceSettings(**{k: v for k, v in base.items() if k in known}), device, config)

    def chromosome_width(self, gray: np.ndarray) -> float | None:
        """The spread's chromosome width: the setting when given, else :func:`estimate_chromosome_width`."""
        return self.settings.chromosome_width or estimate_chromosome_width(gray)

    def working_scale(self, gray: np.ndarray) -> float:
        """Factor that brings this spread to the training chromosome width."""
        return self._scale_for_width(self.chromosome_width(gray) if self.settings.rescale else None)

    def _scale_for_width(self, width: float | None, zoom: float = 1.0) -> float:
        """Working scale for chromosomes ``width`` px wide, times ``zoom``.

        Without ``zoom`` it is 1 when not rescaling, when the width is unknown
        or when the width is within the rescale tolerance of the training width.
        A ``zoom`` waives the tolerance: a spread already near the training
        width would otherwise be looked at unchanged.
        """
        if not self.settings.rescale or not width:
            return float(zoom)
        ratio = self.settings.reference_width * zoom / width
        if zoom == 1.0 and 1.0 / self.settings.rescale_tolerance <= ratio <= self.settings.rescale_tolerance:
            return 1.0
        lo, hi = self.settings.scale_bounds
        return float(np.clip(ratio, lo, hi))

    def smooth(self, gray: np.ndarray) -> np.ndarray:
        """The spread as outlines are drawn from it (lightly smoothed against pixel noise)."""
        return cv2.GaussianBlur(np.asarray(gray, np.float32), (0, 0), 1.0)

    def detect(self, gray: np.ndarray, zoom: float = 1.0, with_hidden: bool = False):
        """Run the network (rescaled, tiled, merged); outlines are not drawn yet.

        Parameters
        ----------
        gray : ndarray, shape (H, W), float32 in [0, 1], canonical polarity
        zoom : float
            Look at the spread this many times larger than its working scale
            (still within ``scale_bounds`` when rescaling), as the pipeline's
            zoomed look does to separate touching chromosomes. The settings
            are not changed, so one segmenter can serve both looks.
        with_hidden : bool
            Also return the detections the mask NMS dropped only for lying
            inside a kept one (:func:`mask_nms`'s ``hidden``).

        Returns
        -------
        list of Detection
            Above ``score_thresh``, after mask NMS, in full-resolution coordinates;
            with ``with_hidden``, a tuple ``(detections, hidden)`` of two such lists.
        """
        gray = np.asarray(gray, np.float32)
        if gray.ndim != 2:
            raise ValueError(f"Segmenter expects a (H, W) grey image, got shape {gray.shape}")
        h, w = gray.shape
        s = self.settings
        width = self.chromosome_width(gray) if s.rescale else None
        scale = self._scale_for_width(width, zoom)  # the width is measured once, for the scale and the detections
        if width and zoom != 1.0:
            width = width / zoom  # the width the zoomed scale corresponds to, as each detection records it
        work = gray if abs(scale - 1.0) < 0.05 else cv2.resize(
            gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        )
        scale_y, scale_x = work.shape[0] / h, work.shape[1] / w
        wh, ww = work.shape
        crops, scores = [], []
        for ty, tx in _tiles(wh, ww, s.tile_size, s.tile_overlap):
            tile = work[ty:ty + s.tile_size, tx:tx + s.tile_size]
            out = vote_detections(predict_views(self.model, tile, s.flips, self.device, s.exact_paste, s.precision),
                                  mask_thresh=s.mask_thresh)
            th, tw = tile.shape
            for box, score, crop in zip(out["boxes"], out["scores"], out["crops"]):
                if score < s.score_thresh:
                    continue
                x0, y0, x1, y1 = box
                # Objects cut by an inner tile edge are seen whole in the neighbouring tile.
                margin = 2
                if (tx > 0 and x0 < margin) or (ty > 0 and y0 < margin) or \
                        (tx + tw < ww and x1 > tw - margin) or (ty + th < wh and y1 > th - margin):
                    continue
                # A few pixels of background around the box give the outline its background level.
                cy0, cx0 = max(0, int(y0) - 4), max(0, int(x0) - 4)
                cy1, cx1 = min(th, int(np.ceil(y1)) + 4), min(tw, int(np.ceil(x1)) + 4)
                crops.append((ty + cy0, tx + cx0, crop_window(crop, cy0, cx0, cy1, cx1)))
                scores.append(float(score))
        binary = [(y, x, p >= s.mask_thresh) for y, x, p in crops]
        hidden: list[int] | None = [] if with_hidden else None
        keep = [i for i in mask_nms(binary, np.array(scores), s.nms_thresh, hidden) if binary[i][2].any()]

        def detection(i):
            wy, wx, prob = crops[i]
            if scale_x == 1.0 and scale_y == 1.0:
                y0, x0 = wy, wx
            else:
                y0, x0, prob = crop_to_full_resolution(prob, wy, wx, scale_y, scale_x, (h, w), s.exact_paste)
            prob = np.ascontiguousarray(prob[: h - y0, : w - x0], np.float32)
            category = _classify_shape(binary[i][2], s.reference_width, s)
            return Detection(int(y0), int(x0), prob, scores[i], category, scale, width)

        detections = [detection(i) for i in keep]
        if not with_hidden:
            return detections
        return detections, [detection(i) for i in hidden if binary[i][2].any()]

    def outline(self, detection: Detection, smooth: np.ndarray) -> np.ndarray:
        """A detection's bool mask over its crop (``detection.prob``'s shape)."""
        s = self.settings
        if not s.refine:
            return detection.prob >= s.mask_thresh
        h, w = detection.prob.shape
        region = smooth[detection.y0:detection.y0 + h, detection.x0:detection.x0 + w]
        if s.learned_outline and self.outline_model is not None:
            from karyopipe.segmentation.outline import outline_mask

            return outline_mask(detection.prob, region, self.outline_model, support=s.refine_support,
                                grow=s.refine_grow, mask_thresh=s.mask_thresh)
        return refine_mask(detection.prob, region, support=s.refine_support, mask_thresh=s.mask_thresh,
                           grow=s.refine_grow)

    def __call__(self, gray: np.ndarray, keep_rejected: bool = False) -> list[Instance]:
        """Segment one spread.

        Parameters
        ----------
        gray : ndarray, shape (H, W), float32 in [0, 1], canonical polarity
        keep_rejected : bool
            Also return objects rejected as ``"nucleus"`` or ``"debris"``
            (with that ``category``); by default only chromosomes.

        Returns
        -------
        list of Instance
            Full-resolution bool ``mask``, ``bbox`` (x0, y0, x1, y1), ``score``,
            ``category``; sorted by descending score. ``extra["scale"]`` is the
            working scale used, ``extra["chromosome_width"]`` the width it came from.
        """
        gray = np.asarray(gray, np.float32)
        detections = self.detect(gray)
        if not keep_rejected:
            detections = [d for d in detections if d.category == "chromosome"]
        return self.instances(gray, detections)

    def instances(self, gray: np.ndarray, detections: list[Detection]) -> list[Instance]:
        """Draw the outlines of :meth:`detect`'s ``detections`` on ``gray``: :meth:`__call__`'s result for them.

        Outlines are most of a detection's cost after the network, so a caller
        may draw some now and others only if it needs them.
        """
        gray = np.asarray(gray, np.float32)
        smooth = self.smooth(gray) if self.settings.refine else None
        h, w = gray.shape
        instances = []
        for det in detections:
            m = self.outline(det, smooth)
            if not m.any():
                continue
            full = np.zeros((h, w), bool)
            full[det.y0:det.y0 + m.shape[0], det.x0:det.x0 + m.shape[1]] = m
            ys, xs = np.nonzero(full)
            instances.append(Instance(
                mask=full,
                bbox=(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)),
                score=det.score,
                category=det.category,
                extra={"scale": det.scale, "chromosome_width": det.chromosome_width},
            ))
        instances.sort(key=lambda inst: -inst.score)
        return instances


def settings_dict(settings: InferenceSettings) -> dict:
    """JSON-ready settings, for configs and model cards."""
    d = asdict(settings)
    d["scale_bounds"] = list(d["scale_bounds"])
    return d
