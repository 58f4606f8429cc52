"""Where a detection's edge lies: a small per-pixel model fitted to annotated outlines.

:func:`karyopipe.segmentation.infer.refine_mask` draws each outline with one
rule (a hysteresis threshold inside the mask head's support). The best
threshold differs from one chromosome to the next, so annotated outlines are
matched to within a pixel only about half the time. :class:`OutlineModel` is a
one-hidden-layer perceptron over a few per-pixel measures (mask-head logit,
intensity relative to the object's own Otsu level, its gradient and
Laplacian, distance to the rule's outline) that says, pixel by pixel, whether
the annotator's polygon would include it. It is fitted on the segmenter's
*training* spreads by ``karyopipe fit-outline`` and stored in the
segmentation weights' config (about 130 numbers), so the tensors stay as they
are.

Usage::

    karyopipe fit-outline ../shared/data/bioimlab/metaphases --write
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import cv2
import numpy as np

FEATURES = ("mask_head_logit", "intensity", "intensity_squared", "gradient", "signed_distance", "laplacian")


def outline_features(prob: np.ndarray, region: np.ndarray, support: float = 0.35, grow: float = 0.8,
                     mask_thresh: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel measures of one detection's crop.

    Parameters
    ----------
    prob : ndarray, shape (h, w), float
        Mask-head probability over the crop.
    region : ndarray, shape (h, w), float
        The same crop of the smoothed canonical-polarity spread.
    support, grow, mask_thresh : float
        :func:`~karyopipe.segmentation.infer.refine_mask`'s arguments; its
        outline is one of the measures.

    Returns
    -------
    features : ndarray, shape (h, w, 6), float32
        In the order of :data:`FEATURES`. Intensity is 0 at the crop's
        background level and 1 at its Otsu threshold, so the model does not
        depend on the image's contrast or banding.
    rule_mask : ndarray, shape (h, w), bool
        :func:`refine_mask`'s outline.
    """
    from scipy import ndimage as ndi

    from karyopipe.segmentation.infer import object_levels, refine_mask

    prob = np.asarray(prob, np.float32)
    region = np.asarray(region, np.float32)
    levels = object_levels(region)
    rule = refine_mask(prob, region, support=support, mask_thresh=mask_thresh, grow=grow, levels=levels)
    if levels is None:
        level = np.zeros_like(region)
    else:
        background, high = levels
        level = (region - background) / max(high - background, 1e-3)
    p = np.clip(prob, 1e-3, 1 - 1e-3)
    gradient = np.hypot(cv2.Sobel(level, cv2.CV_32F, 1, 0), cv2.Sobel(level, cv2.CV_32F, 0, 1)) / 8
    signed = ndi.distance_transform_edt(rule) - ndi.distance_transform_edt(~rule)
    features = np.stack([
        np.log(p / (1 - p)), level, np.clip(level, -1, 3) ** 2, gradient,
        np.clip(signed, -4, 4), cv2.Laplacian(level, cv2.CV_32F) / 4,
    ], -1).astype(np.float32)
    return features, rule


@dataclass
class OutlineModel:
    """Pixel classifier ``tanh((x - mean) / std @ w1.T + b1) @ w2 + b2`` (a logit).

    Attributes
    ----------
    mean, std : ndarray, shape (F,)
    w1 : ndarray, shape (H, F)
    b1 : ndarray, shape (H,)
    w2 : ndarray, shape (H,)
    b2 : float
    """

    mean: np.ndarray
    std: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: float

    def logits(self, features: np.ndarray) -> np.ndarray:
        """``(..., F)`` features -> ``(...)`` logits of "inside the annotated outline"."""
        x = (np.asarray(features, np.float32) - self.mean) / self.std
        return np.tanh(x @ self.w1.T + self.b1) @ self.w2 + self.b2

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "mean": self.mean.tolist(), "std": self.std.tolist(),
                "w1": self.w1.tolist(), "b1": self.b1.tolist(), "w2": self.w2.tolist(), "b2": float(self.b2)}

    @classmethod
    def from_dict(cls, record: dict) -> "OutlineModel":
        if list(record.get("features", FEATURES)) != list(FEATURES):
            raise ValueError(f"outline model was fitted on features {record.get('features')}, this version computes {FEATURES}")
        f32 = lambda key: np.asarray(record[key], np.float32)  # noqa: E731
        return cls(f32("mean"), f32("std"), f32("w1"), f32("b1"), f32("w2"), float(record["b2"]))


def outline_mask(prob: np.ndarray, region: np.ndarray, model: OutlineModel, support: float = 0.35,
                 grow: float = 0.8, mask_thresh: float = 0.5, min_kept: float = 0.5) -> np.ndarray:
    """One detection's outline from :class:`OutlineModel`, inside the mask head's support.

    Falls back to :func:`refine_mask`'s outline when the model keeps less than
    ``min_kept`` of the mask head's own mask (the image disagrees with the
    network, e.g. no contrast).

    Returns
    -------
    ndarray, shape (h, w), bool
    """
    from scipy import ndimage as ndi

    features, rule = outline_features(prob, region, support, grow, mask_thresh)
    mask = ndi.binary_fill_holes((model.logits(features) > 0) & (np.asarray(prob) >= support))
    if mask.sum() < min_kept * (np.asarray(prob) >= mask_thresh).sum():
        return rule
    return mask


def training_pixels(detections, smooth: np.ndarray, truths: list, support: float = 0.35, grow: float = 0.8,
                    min_iou: float = 0.5, band: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the pixels around each detection matched to an annotated outline.

    Parameters
    ----------
    detections : list of :class:`karyopipe.segmentation.infer.Detection`
        Chromosome detections of one spread.
    smooth : ndarray, shape (H, W)
        The spread as :class:`Segmenter` smooths it for outlining.
    truths : list of ndarray, shape (H, W), bool
        Annotated masks of the spread.
    min_iou : float
        A detection is used when :func:`refine_mask`'s outline overlaps a truth this much.
    band : int
        Pixels within this distance of that outline (and in the head's
        p >= 0.05) are the examples: the model only decides the edge.

    Returns
    -------
    features : ndarray, shape (N, 6), float32
    labels : ndarray, shape (N,), float32
    """
    from scipy import ndimage as ndi

    from karyopipe.segmentation.evaluate import mask_ious

    drawn = []  # (detection, its features, the rule's outline, that outline placed in the spread)
    for det in detections:
        h, w = det.prob.shape
        region = smooth[det.y0:det.y0 + h, det.x0:det.x0 + w]
        if region.shape != det.prob.shape:
            continue
        features, rule = outline_features(det.prob, region, support, grow)
        placed = np.zeros(smooth.shape, bool)
        placed[det.y0:det.y0 + h, det.x0:det.x0 + w] = rule
        drawn.append((det, features, rule, placed))
    ious = mask_ious([placed for *_, placed in drawn], truths)
    xs, ys = [], []
    for (det, features, rule, _), row in zip(drawn, ious):
        best = int(np.argmax(row)) if row.size else -1
        if best < 0 or row[best] < min_iou:
            continue
        h, w = det.prob.shape
        label = truths[best][det.y0:det.y0 + h, det.x0:det.x0 + w]
        zone = ndi.binary_dilation(rule, iterations=band) & (det.prob >= 0.05)
        xs.append(features[zone])
        ys.append(label[zone])
    if not xs:
        return np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, np.float32)
    return np.concatenate(xs), np.concatenate(ys).astype(np.float32)


def fit_outline_model(features: np.ndarray, labels: np.ndarray, hidden: int = 16, iterations: int = 300,
                      seed: int = 0) -> tuple[OutlineModel, float]:
    """Fit :class:`OutlineModel` by full-batch L-BFGS on binary cross-entropy.

    Parameters
    ----------
    features : ndarray, shape (N, F)
    labels : ndarray, shape (N,), 0 or 1

    Returns
    -------
    model : OutlineModel
    loss : float
        Final mean cross-entropy on the fitting pixels.
    """
    import torch

    if len(labels) < 10 or labels.min() == labels.max():
        raise ValueError("fit_outline_model needs pixels on both sides of some outline")
    torch.manual_seed(seed)
    x = torch.from_numpy(np.asarray(features, np.float32))
    y = torch.from_numpy(np.asarray(labels, np.float32))
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.LBFGS(net.parameters(), max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x)[:, 0], y)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(net(x)[:, 0], y))
    first, last = net[0], net[2]
    model = OutlineModel(mean.numpy(), std.numpy(), first.weight.detach().numpy().copy(),
                         first.bias.detach().numpy().copy(), last.weight.detach().numpy()[0].copy(),
                         float(last.bias.detach()[0]))
    return model, loss


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe fit-outline", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="annotated spreads (labelme folder or COCO JSON) including the weights' training cells")
    p.add_argument("--weights", default=None, help="segmentation weights (default: the shipped ones)")
    p.add_argument("--hidden", type=int, default=16, help="hidden units (default 16)")
    p.add_argument("--write", action="store_true", help="store the fitted model in the segmentation weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from karyopipe.segmentation.dataset import load_gray, load_spreads
    from karyopipe.segmentation.evaluate import cells_of_split
    from karyopipe.segmentation.infer import Segmenter
    from karyopipe.weights import SEGMENTATION_WEIGHTS, update_weights, weights_path

    args = build_parser().parse_args(argv)
    path = weights_path(args.weights, SEGMENTATION_WEIGHTS)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: segmentation weights not found (the outline model belongs to them)")
    # The outline model is fitted on the rule's outlines, never on its own.
    segmenter = Segmenter.from_pretrained(path, device=args.device, learned_outline=False)
    dataset = load_spreads(args.data)
    cells, note = cells_of_split(dataset, "train", path, segmenter.config)
    samples = [s for s in dataset.samples if s.cell_id in cells and s.instances]
    if not samples:
        raise ValueError(f"{args.data}: no annotated spreads of the cells {path} trained on")
    from tqdm import tqdm

    xs, ys = [], []
    for sample in tqdm(samples, desc="fit-outline", disable=args.no_progress, mininterval=10):
        gray = load_gray(sample)
        detections = [d for d in segmenter.detect(gray) if d.category == "chromosome"]
        truths = [inst.get_mask(gray.shape) for inst in sample.instances if inst.category == "chromosome"]
        x, y = training_pixels(detections, segmenter.smooth(gray), truths, segmenter.settings.refine_support,
                               segmenter.settings.refine_grow)
        xs.append(x)
        ys.append(y)
    features, labels = np.concatenate(xs), np.concatenate(ys)
    try:
        model, loss = fit_outline_model(features, labels, hidden=args.hidden)
    except ValueError as exc:
        # An untrained or trial segmenter finds no chromosome near an annotated one: nothing to learn from.
        raise ValueError(f"{path}: its detections overlap no annotated outline of the {len(samples)} training "
                         f"spreads, so there are no edge pixels to fit an outline model on (is it trained?)") from exc
    print(f"{len(samples)} spreads ({note}): {len(labels)} edge pixels, {labels.mean():.3f} inside; "
          f"cross-entropy {loss:.4f}")
    if args.write:
        record = model.to_dict()
        record["data"] = f"{args.data}, {len(samples)} spreads of the training cells, {len(labels)} pixels"
        update_weights(path, {"outline_model": record}, {
            "outline_model": f"{args.hidden}-unit perceptron over {', '.join(FEATURES)}, fitted by karyopipe "
                             f"fit-outline on {len(labels)} edge pixels of {len(samples)} training spreads "
                             f"(cross-entropy {loss:.4f})"})
        print(f"wrote the outline model into {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
