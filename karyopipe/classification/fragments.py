"""Fragments: pieces of chromosomes, as a segmenter hands them over.

A segmenter that breaks a chromosome at a pale band or a crossing passes the
classifier a short piece of it. Trained on whole chromosomes only, the
classifier reads such pieces as small chromosomes, and often as a Y: the
shipped ensemble puts Y first on 17 % of 30-60 %-long pieces of G-band
training crops, against 1 % of whole crops (BENCHMARKS.md, Classification,
twenty-second update). One such piece in a female cell makes it male.

``karyopipe train-cls --fragment-copies N`` adds pieces of the training crops
as outliers: their target is the uniform distribution over the 24 classes
(outlier exposure, Hendrycks et al., ICLR 2019), so the classifier learns to
give a piece no class, and the karyotype assignment leaves it out instead of
filling a slot with it. The pieces are cut inside their cell, so their
relative size is measured against the rest of it as in a real spread.

Examples
--------
>>> import numpy as np
>>> from karyopipe.classification.fragments import fragment_crop
>>> crop = np.zeros((60, 20), np.float32); crop[5:55, 6:14] = 0.8
>>> piece = fragment_crop(crop, 0.5)
>>> int((crop > 0.5).sum()), int((piece > 0.5).sum())
(400, 200)
"""
from __future__ import annotations

import zlib

import numpy as np

from karyopipe.classes import Y
from karyopipe.classification.shift import background_level

#: Pieces keep this share of the chromosome's length (drawn uniformly).
FRAGMENT_LENGTHS = (0.3, 0.6)
#: Share of a cell's crops cut into pieces in one fragment copy.
FRAGMENT_SHARE = 0.125


def fragment_crop(gray: np.ndarray, fraction: float, keep_start: bool = True, mask: np.ndarray | None = None) -> np.ndarray:
    """A piece of a single-chromosome crop: the rest of the chromosome painted as background.

    The cut is perpendicular to the chromosome's principal axis, so a bent
    chromosome's piece is approximate, as a segmenter's would be.

    Parameters
    ----------
    gray : ndarray, shape (H, W), float in [0, 1], canonical polarity (chromosome bright)
    fraction : float in (0, 1)
        Share of the chromosome's pixels, counted along its axis, the piece keeps.
    keep_start : bool
        Keep the top end (the left end of a lying chromosome) or the other one.
    mask : ndarray, shape (H, W), bool, optional
        The chromosome's pixels; by default :func:`karyopipe.classification.preprocess.mask_from_crop`.

    Returns
    -------
    ndarray, shape (H, W), same dtype as ``gray``
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if mask is None:
        from karyopipe.classification.preprocess import mask_from_crop

        mask = mask_from_crop(gray)
    ys, xs = np.nonzero(mask)
    if len(ys) < 2:
        return gray.copy()
    points = np.stack([xs, ys], 1).astype(np.float64)
    centre = points.mean(0)
    axis = np.linalg.svd(points - centre, full_matrices=False)[2][0]
    axis = axis if axis[np.argmax(np.abs(axis))] > 0 else -axis  # SVD's sign is arbitrary; "start" should not be
    along = (points - centre) @ axis
    cut = np.quantile(along, fraction if keep_start else 1.0 - fraction)
    drop = along > cut if keep_start else along < cut
    piece = gray.copy()
    piece[ys[drop], xs[drop]] = background_level(gray)
    return piece


class CellFragmenter:
    """A ``transform(gray, cell_id, index)`` for :func:`~karyopipe.classification.dataset.build_arrays`
    that cuts about ``share`` of each cell's crops into pieces and records which.

    The draws depend on ``seed``, the cell and the index only, so a rebuild
    cuts the same pieces.

    Attributes
    ----------
    cut : set of (str, int)
        ``(cell_id, index)`` of every crop the transform has cut.
    """

    def __init__(self, seed: int = 0, share: float = FRAGMENT_SHARE, lengths: tuple = FRAGMENT_LENGTHS):
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.seed, self.share, self.lengths = seed, share, tuple(lengths)
        self.cut: set[tuple[str, int]] = set()

    def __call__(self, gray: np.ndarray, cell_id: str, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(cell_id.encode()), index])
        if rng.random() >= self.share:
            return gray
        self.cut.add((cell_id, index))
        return fragment_crop(gray, float(rng.uniform(*self.lengths)), keep_start=bool(rng.random() < 0.5))


def rows_cut(cells: np.ndarray, cut: set) -> np.ndarray:
    """Row indices of :class:`CellArrays` rows whose ``(cell, index within the cell)`` is in ``cut``.

    ``cells`` are the arrays' ``"<source>/<cell>"`` ids, each cell's rows
    together and in crop order, as :func:`build_arrays` writes them.
    """
    seen: dict[str, int] = {}
    rows = []
    for row, cell in enumerate(np.asarray(cells).tolist()):
        index = seen.get(cell, 0)
        seen[cell] = index + 1
        if (cell, index) in cut:
            rows.append(row)
    return np.asarray(rows, dtype=np.int64)


def outlier_exposure_loss(logits, target, criterion, weight: float = 0.5):
    """Cross-entropy on labelled rows plus ``weight`` x cross-entropy to the uniform distribution on outliers.

    Parameters
    ----------
    logits : Tensor, shape (B, 24)
    target : Tensor, shape (B,), int64: 0..23, or -1 for an outlier (a fragment)
    criterion : callable
        The labelled rows' loss (mean over them), e.g. ``CrossEntropyLoss(label_smoothing=0.1)``.
    weight : float
        Outlier exposure's lambda; Hendrycks et al. use 0.5.

    Returns
    -------
    Tensor, scalar: the mean over the batch's rows, each part weighted by its share of rows.
    """
    import torch

    known = target >= 0
    n = max(int(target.numel()), 1)
    loss = logits.new_zeros(())
    if known.any():
        loss = loss + criterion(logits[known], target[known]) * (int(known.sum()) / n)
    if (~known).any():
        uniform = -torch.log_softmax(logits[~known], dim=1).mean(dim=1)
        loss = loss + weight * uniform.sum() / n
    return loss


def score_fragments(classifier, root, split: str = "train", max_cells: int | None = None, seed: int = 0,
                    progress: bool = False) -> dict:
    """How a classifier reads pieces of the labelled crops of one crop folder, cut inside their cells.

    About one crop in eight of each cell is cut (:class:`CellFragmenter`) and
    the cell is classified whole, pieces and all, as the pipeline would see it.

    Parameters
    ----------
    classifier : Classifier or ClassifierEnsemble
    root : path
        A crop folder.
    split : {"train", "val", "test", "all"}
        Cells of the classifier's own split (its config's seed and fractions).
    max_cells : int, optional
        The first this many cells of the split (sorted), for a quick look.

    Returns
    -------
    dict
        ``pieces``, ``whole`` (counts), ``cells``; ``pieces_top_y``: share of
        pieces whose first class is Y; ``pieces_y_over_0.3``; ``pieces_mean_p_y``;
        ``pieces_mean_max_p``: how much the classifier claims a piece;
        ``whole_accuracy``, ``whole_mean_max_p`` and ``whole_non_y_top_y``
        (non-Y whole crops read as Y), for comparison; ``problems``: the
        files skipped, each with its reason.
    """
    from karyopipe.classification.classifier import ClassifierEnsemble
    from karyopipe.classification.dataset import build_arrays, find_crops, split_cells
    from karyopipe.classification.evaluate import classifier_members

    records, _ = find_crops(root)
    if not records:
        raise ValueError(f"{root}: no labelled chromosome crops found")
    cells = sorted({f"{r.source}/{r.cell_id}" for r in records})
    if split != "all":
        config = classifier.config
        cells = split_cells(cells, config.get("val_fraction", 0.15), config.get("test_fraction", 0.15),
                            config.get("split_seed", 0))[split]
    cells = cells[:max_cells] if max_cells else cells
    # Each member preprocesses the cells its own way; the cuts depend on the seed, cell and crop only, so all
    # members see the same pieces.
    log_probs = []
    for member in classifier_members(classifier):
        fragmenter = CellFragmenter(seed=seed)
        arrays = build_arrays(root, member.size, member.preprocess, cache_dir=None, progress=progress,
                              cells=set(cells), transform=fragmenter)
        log_probs.append(member.predict_arrays(arrays.images, arrays.features))
    probs = np.exp(classifier.combine(log_probs) if isinstance(classifier, ClassifierEnsemble) else log_probs[0])
    labels = arrays.labels
    piece = np.zeros(len(labels), bool)
    piece[rows_cut(arrays.cells, fragmenter.cut)] = True
    y = Y - 1
    top = probs.argmax(1)
    whole = ~piece
    non_y = whole & (labels != Y)
    return {
        "data": str(root), "split": split, "cells": len(cells), "pieces": int(piece.sum()), "whole": int(whole.sum()),
        "pieces_top_y": float((top[piece] == y).mean()) if piece.any() else float("nan"),
        "pieces_y_over_0.3": float((probs[piece, y] > 0.3).mean()) if piece.any() else float("nan"),
        "pieces_mean_p_y": float(probs[piece, y].mean()) if piece.any() else float("nan"),
        "pieces_mean_max_p": float(probs[piece].max(1).mean()) if piece.any() else float("nan"),
        "whole_accuracy": float((top[whole] + 1 == labels[whole]).mean()),
        "whole_mean_max_p": float(probs[whole].max(1).mean()),
        "whole_non_y_top_y": float((top[non_y] == y).mean()) if non_y.any() else float("nan"),
        "problems": list(arrays.problems),
    }


def build_parser():
    import argparse

    from karyopipe.cli import add_precision_argument

    p = argparse.ArgumentParser(prog="karyopipe eval-fragments",
                                description="How a classifier reads pieces of chromosomes (30-60 % of the length), "
                                            "cut from labelled crops inside their cells: how often it calls them Y.")
    p.add_argument("data", nargs="+", help="crop folder(s)")
    p.add_argument("--weights", default=None, help="classifier weights (default: the shipped ones)")
    p.add_argument("--split", default="train", choices=("train", "val", "test", "all"))
    p.add_argument("--max-cells", type=int, default=None, help="only the first N cells of the split per folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the figures here")
    add_precision_argument(p, help="classifier arithmetic (default float32; see eval-cls --precision)")
    return p


def main(argv: list[str]) -> int:
    import json
    from pathlib import Path

    import torch

    from karyopipe.classification.classifier import Classifier

    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    classifier = Classifier.from_pretrained(args.weights, precision=args.precision)
    results = []
    for root in args.data:
        r = score_fragments(classifier, root, args.split, args.max_cells, args.seed, progress=True)
        results.append(r)
        print(f"{root} ({args.split}, {r['cells']} cells): {r['pieces']} pieces: Y first {r['pieces_top_y']:.3f}, "
              f"P(Y) > 0.3 {r['pieces_y_over_0.3']:.3f}, mean P(Y) {r['pieces_mean_p_y']:.3f}, mean top "
              f"probability {r['pieces_mean_max_p']:.3f}; {r['whole']} whole crops: top-1 {r['whole_accuracy']:.4f}, "
              f"mean top probability {r['whole_mean_max_p']:.3f}, non-Y read as Y {r['whole_non_y_top_y']:.4f}")
        for problem in r["problems"]:
            print(f"  skipped {problem}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"weights": args.weights or "shipped", "precision": args.precision,
                                                  "results": results}, indent=1))
    return 0
