"""``karyopipe eval-cls``: score a classifier on labelled crops or annotated spreads.

Reports single-crop top-1 ``accuracy``, ``accuracy_assigned`` (karyotype-level
assignment within each cell), each with a 95 % interval over cells
(:mod:`karyopipe.stats`), ``n``, ``cells``, ``per_class``, ``crops_per_second``
and writes a confusion-matrix PNG beside the JSON.

Usage::

    karyopipe eval-cls /path/to/bioimlab/crops --json out/eval.json
    karyopipe eval-cls /path/to/bioimlab/crops --split test     # held-out cells of the training split
    karyopipe eval-cls /path/to/gband612 --split val --shift all  # and under imitated lab shifts
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from karyopipe.classes import CLASS_NAMES, NUM_CLASSES
from karyopipe.classification.shift import LAB_SHIFTS, parse_shifts
from karyopipe.cli import add_precision_argument
from karyopipe.stats import format_interval, rate_interval


def assign_log_probs(log_probs: np.ndarray, images: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """Karyotype-level classes of one cell and the assigner's name.

    :func:`karyopipe.karyogram.assign_karyotype`; its unassigned objects
    (label 0) count as errors. ``images`` (n, L, W), the cell's straightened
    chromosomes, add the homolog-pairing evidence of their banding profiles
    (:mod:`karyopipe.karyogram.pairing`).
    """
    from karyopipe.karyogram import assign_karyotype

    odds = None
    if images is not None:
        from karyopipe.karyogram.pairing import banding_profiles, homolog_log_odds

        odds = homolog_log_odds(banding_profiles(images))
    call = assign_karyotype(log_probs, pair_log_odds=odds)
    return np.asarray(call.labels, dtype=np.int64).reshape(-1), "karyogram.assign_karyotype"


def score_predictions(log_probs: np.ndarray, labels: np.ndarray, cells: np.ndarray, assign=True,
                      images: np.ndarray | None = None) -> dict:
    """Accuracy metrics of log-probabilities (N, 24) against class numbers (N,) grouped by cell.

    ``images`` (N, L, W), the straightened chromosomes, turn on homolog pairing
    in the assignment; ``accuracy_assigned_unpaired`` then gives the figure without it.
    """
    labels = np.asarray(labels, dtype=np.int64)
    pred = np.argmax(log_probs, axis=1) + 1
    result = {"n": int(len(labels)), "cells": int(len(set(np.asarray(cells).tolist())))}
    result["accuracy"] = float(np.mean(pred == labels)) if len(labels) else float("nan")
    result["accuracy_ci95"] = rate_interval(pred == labels, np.ones(len(labels)), cells) if len(labels) else None
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels - 1, pred - 1), 1)
    result["per_class"] = {
        CLASS_NAMES[k]: {"n": int(confusion[k].sum()),
                         "accuracy": float(confusion[k, k] / confusion[k].sum()) if confusion[k].sum() else None}
        for k in range(NUM_CLASSES)
    }
    result["confusion"] = confusion.tolist()
    if assign:
        from karyopipe.classification.assign import assign_cell

        assigned, unpaired, hungarian = np.zeros_like(pred), np.zeros_like(pred), np.zeros_like(pred)
        assigner = "hungarian"
        cells = np.asarray(cells)
        for cell in sorted(set(cells.tolist())):
            idx = np.flatnonzero(cells == cell)
            assigned[idx], assigner = assign_log_probs(log_probs[idx], None if images is None else images[idx])
            if images is not None:
                unpaired[idx] = assign_log_probs(log_probs[idx])[0]
            hungarian[idx] = assign_cell(log_probs[idx])
        result["accuracy_assigned"] = float(np.mean(assigned == labels)) if len(labels) else float("nan")
        result["accuracy_assigned_ci95"] = (rate_interval(assigned == labels, np.ones(len(labels)), cells)
                                            if len(labels) else None)
        result["assigner"] = assigner + (" + pairing" if images is not None else "")
        if images is not None:
            result["accuracy_assigned_unpaired"] = float(np.mean(unpaired == labels)) if len(labels) else float("nan")
        result["accuracy_assigned_hungarian"] = float(np.mean(hungarian == labels)) if len(labels) else float("nan")
    return result


def _figures(result: dict) -> str:
    return " ".join(f"{key}={result[key]:.4f}{format_interval(result.get(key + '_ci95'))}"
                    for key in ("accuracy", "accuracy_assigned"))


def plot_confusion(confusion, path, title="") -> None:
    """Row-normalised confusion matrix PNG (true class rows, predicted columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion, dtype=np.float64)
    norm = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(NUM_CLASSES), CLASS_NAMES, fontsize=7)
    ax.set_yticks(range(NUM_CLASSES), CLASS_NAMES, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for i, j in zip(*np.nonzero(confusion)):
        if i != j:
            ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=6, color="crimson")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_eval_arrays(root, classifier, split=None, seed=0, shift=None, shift_seed=0, unshifted=None):
    """Crops (auto-detected layouts) or annotated spreads -> CellArrays, optionally one split.

    ``shift`` names a lab shift (:data:`karyopipe.classification.shift.LAB_SHIFTS`)
    applied to every crop of the chosen cells before preprocessing. ``unshifted``,
    this function's result for the same arguments without a shift, saves
    reading and splitting the data again when several shifts are scored.
    """
    from karyopipe.classification.dataset import build_arrays, split_arrays

    arrays = unshifted
    if arrays is None:
        arrays = build_arrays(root, size=classifier.size, mode=classifier.preprocess, progress=False)
        if split not in (None, "all"):
            cfg = classifier.config
            arrays = split_arrays(arrays, seed=seed, val_fraction=float(cfg.get("val_fraction", 0.15)),
                                  test_fraction=float(cfg.get("test_fraction", 0.15)))[split]
    if shift:
        from karyopipe.classification.shift import cell_shifter

        shifted = build_arrays(root, size=classifier.size, mode=classifier.preprocess, progress=False,
                               cache_dir=None, cells=set(arrays.cells.tolist()),
                               transform=cell_shifter(shift, shift_seed))
        if not (np.array_equal(shifted.labels, arrays.labels) and np.array_equal(shifted.cells, arrays.cells)):
            raise ValueError(f"{root}: the {shift} shift changed which crops could be read")
        arrays = shifted
    return arrays


def classifier_members(classifier) -> list:
    """The models of an ensemble, or ``[classifier]`` for a single one."""
    from karyopipe.classification.classifier import ClassifierEnsemble

    return classifier.members if isinstance(classifier, ClassifierEnsemble) else [classifier]


def predict_eval_arrays(root, classifier, split=None, seed=0, shift=None, unshifted=None):
    """``(arrays, log_probs, seconds)`` of a classifier or ensemble on ``root``.

    An ensemble's members each preprocess the data their own way; their rows
    must line up (same crops, labels and cells) to be averaged. ``unshifted``
    holds each member's unshifted arrays (see :func:`load_eval_arrays`).
    """
    from karyopipe.classification.classifier import ClassifierEnsemble

    members = classifier_members(classifier)
    unshifted = unshifted or [None] * len(members)
    parts = [load_eval_arrays(root, member, split, seed, shift, unshifted=base) for member, base in zip(members, unshifted)]
    for other in parts[1:]:
        if not (np.array_equal(other.labels, parts[0].labels) and np.array_equal(other.cells, parts[0].cells)):
            raise ValueError(f"{root}: the ensemble's members preprocess different crops; score them one by one")
    start = time.perf_counter()
    log_probs = [m.predict_arrays(a.images, a.features) for m, a in zip(members, parts)]
    log_probs = classifier.combine(log_probs) if isinstance(classifier, ClassifierEnsemble) else log_probs[0]
    # The medial-axis member's images, where there is one, are what homolog pairing was fitted on.
    shown = next((a for m, a in zip(members, parts) if m.preprocess == "geometry"), parts[0])
    return shown, log_probs, time.perf_counter() - start


def evaluate(classifier, arrays, log_probs=None, seconds=None, pairing=False) -> dict:
    """Score a :class:`~karyopipe.classification.Classifier` on preprocessed :class:`CellArrays`.

    Pass ``log_probs`` (and the ``seconds`` they took) when they are already
    computed, as :func:`predict_eval_arrays` does for ensembles. ``pairing``
    adds homolog pairing from the arrays' images to the assignment.
    """
    if log_probs is None:
        start = time.perf_counter()
        log_probs = classifier.predict_arrays(arrays.images, arrays.features)
        seconds = time.perf_counter() - start
    elapsed = seconds or 0.0
    result = score_predictions(log_probs, arrays.labels, arrays.groups, images=arrays.images if pairing else None)
    result["crops_per_second"] = float(len(arrays.labels) / max(elapsed, 1e-9))
    result["problems"] = list(arrays.problems)
    result["log_probs"] = log_probs
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe eval-cls", description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="+", help="crop folder(s) (BioImLab, clase, generic) or annotated spreads")
    p.add_argument("--weights", default=None, help="weights file (default: weights/karyotype_classifier_best.pth)")
    p.add_argument("--json", default=None, help="write the metrics here (confusion PNG goes beside it)")
    p.add_argument("--split", choices=["all", "train", "val", "test"], default="all",
                   help="score only this part of the deterministic split by cell used in training")
    p.add_argument("--seed", type=int, default=None, help="split seed (default: the one in the weights)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--shift", default=None, metavar="NAMES",
                   help="also score under lab shifts, 'all' or a comma list of: "
                        + ", ".join(LAB_SHIFTS) + " (karyopipe.classification.shift)")
    p.add_argument("--pairing", action="store_true",
                   help="also assign with the homolog-pairing evidence of banding profiles (karyopipe.karyogram.pairing); "
                        "accuracy_assigned_unpaired then gives the figure without it")
    add_precision_argument(p, help="classifier arithmetic (default float32); bfloat16 is faster for the wider member on "
                                   "CPUs with native bfloat16 (AVX512-BF16, AMX)")
    return p


def score_shifts(classifier, roots, split, seed, names, unshifted=None, pairing=False) -> dict:
    """Accuracy per lab shift and data folder: ``{shift: {root: {n, accuracy, accuracy_assigned}}}``.

    ``unshifted`` maps ``str(root)`` to each member's unshifted arrays
    (:func:`load_eval_arrays`) where the caller has them already.
    """
    import logging

    # The unshifted run has listed the skipped files already; each shift would list them again.
    data_log = logging.getLogger("karyopipe.data")
    level, table = data_log.level, {}
    data_log.setLevel(logging.ERROR)
    try:
        # Each member's unshifted split of each folder is read once, not once per shift.
        unshifted = dict(unshifted or {})
        for root in roots:
            if str(root) not in unshifted:
                unshifted[str(root)] = [load_eval_arrays(root, member, split, seed) for member in classifier_members(classifier)]
        for name in names:
            table[name] = _score_one_shift(classifier, roots, split, seed, name, unshifted, pairing)
    finally:
        data_log.setLevel(level)
    return table


def _score_one_shift(classifier, roots, split, seed, name, unshifted, pairing=False) -> dict:
    rows = {}
    for root in roots:
        arrays, log_probs, _ = predict_eval_arrays(root, classifier, split, seed, shift=name, unshifted=unshifted[str(root)])
        res = score_predictions(log_probs, arrays.labels, arrays.groups, images=arrays.images if pairing else None)
        rows[str(root)] = {k: res[k] for k in ("n", "accuracy", "accuracy_assigned", "accuracy_assigned_unpaired")
                           if k in res}
        unpaired = f" (unpaired {res['accuracy_assigned_unpaired']:.4f})" if "accuracy_assigned_unpaired" in res else ""
        print(f"shift {name:12s} {root}: accuracy={res['accuracy']:.4f} "
              f"accuracy_assigned={res['accuracy_assigned']:.4f}{unpaired}", flush=True)
    return rows


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        shifts = parse_shifts(args.shift)
    except ValueError as exc:
        parser.error(str(exc))
    import torch

    from karyopipe.classification.classifier import Classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    classifier = Classifier.from_pretrained(args.weights, precision=args.precision)
    seed = args.seed if args.seed is not None else int(classifier.config.get("split_seed", 0))
    report = {"weights": str(args.weights or "default"), "split": args.split, "precision": args.precision, "data": {}}
    all_lp, all_labels, all_cells, all_images, problems, elapsed, n_total = [], [], [], [], [], 0.0, 0
    unshifted = {}  # kept only when shifts are scored, which start from the same arrays
    for root in args.data:
        member_arrays = [load_eval_arrays(root, member, args.split, seed) for member in classifier_members(classifier)]
        if shifts:
            unshifted[str(root)] = member_arrays
        arrays, log_probs, seconds = predict_eval_arrays(root, classifier, args.split, seed, unshifted=member_arrays)
        res = evaluate(classifier, arrays, log_probs, seconds, pairing=args.pairing)
        elapsed += res["n"] / max(res["crops_per_second"], 1e-9)
        n_total += res["n"]
        all_lp.append(res.pop("log_probs"))
        all_labels.append(arrays.labels)
        all_images.append(arrays.images)
        all_cells.append(np.char.add(f"{root}::", arrays.groups.astype(str)))
        problems += res.pop("problems")
        unpaired = f", unpaired {res['accuracy_assigned_unpaired']:.4f}" if "accuracy_assigned_unpaired" in res else ""
        print(f"{root}: n={res['n']} cells={res['cells']} {_figures(res)} "
              f"(hungarian {res['accuracy_assigned_hungarian']:.4f}{unpaired}) ({res['crops_per_second']:.0f} crops/s)")
        res.pop("confusion")
        report["data"][str(root)] = res
    total = score_predictions(np.concatenate(all_lp), np.concatenate(all_labels), np.concatenate(all_cells),
                              images=np.concatenate(all_images) if args.pairing else None)
    total["crops_per_second"] = float(n_total / max(elapsed, 1e-9))
    confusion = total.pop("confusion")
    report.update(total)
    report["problems"] = problems
    if len(args.data) > 1:
        print(f"all: n={total['n']} cells={total['cells']} {_figures(total)}")
    if problems:
        print(f"{len(problems)} problem(s):")
        for line in problems:
            print(f"  {line}")
    if shifts:
        report["shifts"] = score_shifts(classifier, args.data, args.split, seed, shifts, unshifted,
                                        pairing=args.pairing)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        report["confusion"] = confusion
        out.write_text(json.dumps(report, indent=2))
        plot_confusion(confusion, out.with_name(out.stem + "_confusion.png"),
                       f"eval-cls {args.split}: top-1 {total['accuracy']:.3f}, assigned {total['accuracy_assigned']:.3f}")
        print(f"wrote {out}")
    return 0
