"""``karyopipe bench-karyotype``: karyotype calls on synthetic cells of known karyotype.

Two scorers give each cell's chromosomes their log-probabilities:

* ``synthetic``: calibrated synthetic scores (:mod:`karyopipe.karyogram.simulate`)
  with confusion among look-alikes set by ``--noise``. It measures the
  assignment, not a classifier; results say so.
* ``classifier``: the shipped classifier (``Classifier.from_pretrained``) on
  chromosomes rendered by :func:`karyopipe.synth.render_chromosome` (G or Q
  band) at one scale per cell, each from its ground-truth mask, with lengths
  and centromeres measured by :func:`karyopipe.geometry.analyze_chromosome`.

Metrics: ``karyotype_exact_rate`` (ISCN string equal to the truth),
``normal_called_abnormal_rate`` (46,XX / 46,XY cells given any abnormality),
``accuracy_single`` (argmax per chromosome), ``accuracy_assigned`` (after
assignment), each per karyotype as well.

Examples
--------
    karyopipe bench-karyotype --n 50 --json out/bench_karyotype.json   # shipped classifier, G and Q cells
    karyopipe bench-karyotype --n 200 --scorer synthetic --noise 0.38  # stress the assignment alone
    karyopipe bench-karyotype --real ../shared/data/bioimlab/crops   # real held-out cells
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from karyopipe.karyogram.assign import assign_karyotype
from karyopipe.karyogram.iscn import labels_karyotype, parse_karyotype
from karyopipe.karyogram.simulate import karyotype_labels, synthetic_cell

__all__ = ["DEFAULT_KARYOTYPES", "NORMAL_KARYOTYPES", "run_bench", "main"]

DEFAULT_KARYOTYPES = ("46,XX", "46,XY", "47,XX,+21", "47,XY,+21", "47,XX,+18", "47,XY,+13", "45,X",
                      "47,XXY", "47,XYY", "47,XXX", "69,XXY")
NORMAL_KARYOTYPES = ("46,XX", "46,XY")


class _ClassifierScorer:
    """Render a cell's chromosomes, measure them with geometry, score them with the shipped classifier."""

    def __init__(self, weights=None):
        try:
            from karyopipe.classification import Classifier
            from karyopipe.geometry import analyze_chromosome
            from karyopipe.synth import render_chromosome
        except ImportError as exc:
            raise RuntimeError(f"the classifier scorer needs the synth, geometry and classification stages: {exc}")
        from karyopipe.weights import CLASSIFICATION_WEIGHTS, weights_path

        path = weights_path(weights, CLASSIFICATION_WEIGHTS)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no classifier weights; train them or use --scorer synthetic")
        self.classifier = Classifier.from_pretrained(path)
        self.analyze = analyze_chromosome
        self.render = render_chromosome

    def __call__(self, counts: dict[int, int], rng: np.random.Generator, banding: str):
        from karyopipe.io import normalize_polarity
        from karyopipe.synth.ideogram import relative_lengths

        labels = karyotype_labels(counts)
        labels = labels[rng.permutation(len(labels))]
        rel = relative_lengths()
        chr1 = rng.uniform(90.0, 130.0)
        width = chr1 * rng.uniform(0.09, 0.12)
        geoms, crops = [], []
        for k in labels:
            # Homologs condense a little differently: ~6 % length spread within a cell.
            length = chr1 * rel[int(k)] * float(np.exp(rng.normal(0, 0.06)))
            syn = self.render(int(k), rng, banding=banding, length_px=length, width_px=width)
            gray, _ = normalize_polarity(syn.image, syn.polarity)
            gray = gray * syn.mask
            geoms.append(self.analyze(syn.mask, gray))
            crops.append((gray, syn.mask))
        items = geoms if self.classifier.preprocess == "geometry" else crops
        log_probs = self.classifier.predict_cell(items)
        lengths = np.array([max(g.length_px, 1.0) for g in geoms])
        ci = np.array([g.centromere_index if "degenerate" not in g.flags else np.nan for g in geoms])
        pol = np.array([g.polarity_confidence for g in geoms])
        return labels, log_probs, lengths, ci, pol


def run_bench(karyotypes=DEFAULT_KARYOTYPES, n: int = 100, seed: int = 0, scorer: str = "synthetic",
              noise: float = 0.38, weights=None, progress: bool = True, banding: str = "both",
              **assign_kw) -> dict:
    """Call ``n`` synthetic cells of each karyotype and score the calls.

    Returns
    -------
    dict
        ``scorer``, settings, overall metrics and ``per_karyotype`` rows.
    """
    rng = np.random.default_rng(seed)
    score_fn = _ClassifierScorer(weights) if scorer == "classifier" else None
    rows = {}
    all_single, all_assigned, exact, normals, normal_abn, exact_argmax = [], [], 0, 0, 0, 0
    flag_counts = [0, 0, 0, 0]  # errors, errors flagged, flagged, objects
    conf_all, right_all = [], []
    review = [[0, 0], [0, 0]]  # [cells, with an abnormality below 0.9 confidence] for right, wrong calls
    start = time.time()
    for kt in karyotypes:
        counts = parse_karyotype(kt)
        row = {"n": 0, "exact": 0, "single": [], "assigned": [], "calls": Counter(), "called_abnormal": 0,
               "errors": 0, "errors_flagged": 0, "flagged": 0, "objects": 0, "exact_argmax": 0,
               "missed_but_possible": 0}
        for c in range(n):
            band = banding if banding in ("g", "q") else ("g" if c % 2 == 0 else "q")
            if score_fn is None:
                cell = synthetic_cell(counts, rng, noise=noise)
                labels, lp, lengths, ci, pol = cell.labels, cell.log_probs, cell.lengths, cell.centromere_index, None
            else:
                labels, lp, lengths, ci, pol = score_fn(counts, rng, band)
            call = assign_karyotype(lp, lengths, ci, polarity_confidence=pol, **assign_kw)
            hit = call.karyotype == kt
            top = np.argmax(lp, 1) + 1
            row["exact_argmax"] += labels_karyotype(top) == kt
            row["n"] += 1
            row["exact"] += hit
            # A gain the call left out, but named as a possible gain for a human to check.
            row["missed_but_possible"] += (not hit) and any(
                kt.split(",")[1] == a.description if a.kind == "possible_sex" else f"+{a.number}" in kt.split(",")
                for a in call.possible)
            row["single"].append(float(np.mean(np.argmax(lp, 1) + 1 == labels)))
            row["assigned"].append(float(np.mean(call.labels == labels)))
            row["calls"][call.karyotype or "(no call)"] += 1
            row["called_abnormal"] += bool(call.abnormalities) or not call.callable
            low = min((a.confidence for a in call.abnormalities), default=1.0) < 0.9
            review[0 if hit else 1][0] += 1
            review[0 if hit else 1][1] += low
            flagged = np.array([("uncertain" in f) or ("unassigned" in f) for f in call.flags])
            wrong = call.labels != labels
            row["errors"] += int(wrong.sum())
            row["errors_flagged"] += int((wrong & flagged).sum())
            row["flagged"] += int(flagged.sum())
            row["objects"] += len(labels)
            conf_all.append(call.confidence)
            right_all.append(~wrong)
        if progress:
            print(f"  {kt:<12} exact {row['exact'] / row['n']:.3f}  ({time.time() - start:.0f} s)", file=sys.stderr)
        exact += row["exact"]
        exact_argmax += row["exact_argmax"]
        all_single += row["single"]
        all_assigned += row["assigned"]
        flag_counts[0] += row["errors"]
        flag_counts[1] += row["errors_flagged"]
        flag_counts[2] += row["flagged"]
        flag_counts[3] += row["objects"]
        if kt in NORMAL_KARYOTYPES:
            normals += row["n"]
            normal_abn += row["called_abnormal"]
        rows[kt] = {
            "n": row["n"],
            "karyotype_exact_rate": row["exact"] / row["n"],
            "karyotype_exact_rate_argmax": row["exact_argmax"] / row["n"],
            "accuracy_single": float(np.mean(row["single"])),
            "accuracy_assigned": float(np.mean(row["assigned"])),
            "called_abnormal_rate": row["called_abnormal"] / row["n"],
            "missed_but_named_possible": row["missed_but_possible"] / row["n"],
            "calls": dict(row["calls"].most_common(5)),
        }
    total = sum(r["n"] for r in rows.values())
    conf_all, right_all = np.concatenate(conf_all), np.concatenate(right_all)
    reliability = []
    for lo, hi in ((0.0, 0.5), (0.5, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 0.99), (0.99, 1.01)):
        m = (conf_all >= lo) & (conf_all < hi)
        if m.any():
            reliability.append({"confidence": [lo, min(hi, 1.0)], "n": int(m.sum()),
                                "mean_confidence": float(conf_all[m].mean()), "accuracy": float(right_all[m].mean())})
    return {
        "scorer": scorer,
        "scorer_note": ("calibrated SYNTHETIC log-probabilities (no classifier): measures the assignment only"
                        if scorer == "synthetic" else
                        "shipped classifier on rendered synthetic chromosomes (ground-truth masks) + geometry"),
        "noise": noise if scorer == "synthetic" else None,
        "banding": banding if scorer == "classifier" else None,
        "seed": seed,
        "cells": total,
        "karyotype_exact_rate": exact / total,
        "karyotype_exact_rate_argmax": exact_argmax / total,
        "assign_options": {k: v for k, v in assign_kw.items()},
        "normal_called_abnormal_rate": (normal_abn / normals) if normals else None,
        "accuracy_single": float(np.mean(all_single)),
        "accuracy_assigned": float(np.mean(all_assigned)),
        "errors_flagged_rate": flag_counts[1] / max(flag_counts[0], 1),
        "flagged_rate": flag_counts[2] / max(flag_counts[3], 1),
        "reliability": reliability,
        "right_calls_low_confidence_rate": review[0][1] / max(review[0][0], 1),
        "wrong_calls_low_confidence_rate": review[1][1] / max(review[1][0], 1),
        "seconds": round(time.time() - start, 1),
        "per_karyotype": rows,
    }


def run_real(root, weights=None, split: str = "test", limit: int | None = None, progress: bool = True,
             **assign_kw) -> dict:
    """Karyotype calls on REAL labelled single-chromosome crops, one call per cell.

    Every crop of a cell is measured by geometry and scored by the shipped
    classifier; the cell's true karyotype is the ISCN string of its crop
    labels. ``split`` picks the classifier's cell split (``"test"``: cells it
    never saw; ``"all"``: every cell).
    """
    from karyopipe.classification import Classifier
    from karyopipe.classification.dataset import find_crops, source_name, split_cells
    from karyopipe.geometry import analyze_chromosome
    from karyopipe.geometry.axis import mask_from_crop
    from karyopipe.io import normalize_polarity, read_image
    from karyopipe.weights import CLASSIFICATION_WEIGHTS, weights_path

    path = weights_path(weights, CLASSIFICATION_WEIGHTS)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no classifier weights; the real-data bench needs them")
    clf = Classifier.from_pretrained(path)
    records, problems = find_crops(root)
    if not records:
        raise ValueError(f"{root}: no labelled single-chromosome crops found")
    by_cell: dict[str, list] = {}
    for r in records:
        by_cell.setdefault(str(r.cell_id), []).append(r)
    source = source_name(root)
    cells = sorted(by_cell)
    if split != "all":
        cfg = clf.config
        parts = split_cells([f"{source}/{c}" for c in cells], float(cfg.get("val_fraction", 0.15)),
                            float(cfg.get("test_fraction", 0.15)), int(cfg.get("split_seed", 0)))
        cells = [c.split("/", 1)[1] for c in parts[split]]
    cells = cells[:limit] if limit else cells
    rows, start = [], time.time()
    for n_done, cell in enumerate(cells, 1):
        geoms, crops, truth = [], [], []
        for r in by_cell[cell]:
            try:
                gray, _ = normalize_polarity(read_image(r.path))
                mask = mask_from_crop(gray)
                geoms.append(analyze_chromosome(mask, gray * mask))
                crops.append((gray, mask))
                truth.append(int(r.label))
            except Exception as exc:  # a bad crop is listed, the cell goes on
                problems.append(f"{r.path}: {exc}")
        if not geoms:
            continue
        truth = np.array(truth)
        lp = clf.predict_cell(geoms if clf.preprocess == "geometry" else crops)
        call = assign_karyotype(lp, np.array([max(g.length_px, 1.0) for g in geoms]),
                                np.array([g.centromere_index for g in geoms]),
                                polarity_confidence=np.array([g.polarity_confidence for g in geoms]), **assign_kw)
        true_kt = labels_karyotype(truth)
        rows.append({"cell": cell, "truth": true_kt, "call": call.karyotype,
                     "single": float(np.mean(np.argmax(lp, 1) + 1 == truth)),
                     "assigned": float(np.mean(call.labels == truth)),
                     "called_abnormal": bool(call.abnormalities) or not call.callable})
        if progress and (n_done % 10 == 0 or n_done == len(cells)):
            print(f"  {n_done}/{len(cells)} cells ({time.time() - start:.0f} s)", file=sys.stderr)
    if not rows:
        raise ValueError(f"{root}: no cell could be scored")
    normal = [r for r in rows if r["truth"] in NORMAL_KARYOTYPES]
    return {
        "scorer": "classifier-real",
        "scorer_note": f"classifier {path} on REAL crops of {source}, {split} cells",
        "cells": len(rows),
        "karyotype_exact_rate": float(np.mean([r["call"] == r["truth"] for r in rows])),
        "normal_called_abnormal_rate": float(np.mean([r["called_abnormal"] for r in normal])) if normal else None,
        "accuracy_single": float(np.mean([r["single"] for r in rows])),
        "accuracy_assigned": float(np.mean([r["assigned"] for r in rows])),
        "truth_karyotypes": dict(Counter(r["truth"] for r in rows)),
        "seconds": round(time.time() - start, 1),
        "per_cell": rows,
        "problems": problems,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="karyopipe bench-karyotype", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="cells per karyotype (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scorer", choices=("auto", "synthetic", "classifier"), default="auto",
                        help="where log-probabilities come from: the classifier on rendered G/Q chromosomes, or "
                             "calibrated synthetic scores (default auto: the classifier when weights are present)")
    parser.add_argument("--noise", type=float, default=0.38,
                        help="synthetic scorer confusion; 0.30 / 0.38 / 0.45 give ~97 / 91 / 85 %% argmax accuracy")
    parser.add_argument("--weights", help="classifier weights (default: the shipped ones)")
    parser.add_argument("--banding", choices=("g", "q", "both"), default="both",
                        help="classifier scorer: render G-, Q-banded or alternating cells (default both)")
    parser.add_argument("--no-morphology", action="store_true",
                        help="ablation: assign on classifier scores alone (no length / centromere terms)")
    parser.add_argument("--karyotypes", nargs="+", default=list(DEFAULT_KARYOTYPES), metavar="ISCN",
                        help="karyotypes to simulate (default: %(default)s)")
    parser.add_argument("--real", metavar="CROPS", help="score REAL labelled crops (one cell per folder) with the "
                        "shipped classifier instead of synthetic cells")
    parser.add_argument("--split", default="test", choices=("test", "val", "train", "all"),
                        help="with --real: the classifier's cell split to use (default test: unseen cells)")
    parser.add_argument("--limit", type=int, help="with --real: at most this many cells")
    parser.add_argument("--junk-prior", type=float, default=None,
                        help="junk prior of every object (default: the assignment's, for ground-truth masks); "
                             "e.g. 0.012, what calibrate-junk gives an object the segmenter scores 0.99")
    parser.add_argument("--y-weight", type=float, default=None,
                        help="weight of the classifier's Y evidence in the assignment (default: the assignment's, "
                             "karyopipe.karyogram.assign.Y_EVIDENCE_WEIGHT; 1 treats Y like any class)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    if args.real:
        result = run_real(args.real, args.weights, args.split, args.limit, progress=not args.quiet)
        print(f"scorer: {result['scorer_note']}")
        print(f"truth karyotypes: {result['truth_karyotypes']}")
        for r in result["per_cell"]:
            if r["call"] != r["truth"]:
                print(f"  cell {r['cell']}: truth {r['truth']}, called {r['call'] or '(no call)'}")
        print(f"overall: exact {result['karyotype_exact_rate']:.3f}, normal called abnormal "
              f"{result['normal_called_abnormal_rate']}, single {result['accuracy_single']:.3f}, "
              f"assigned {result['accuracy_assigned']:.3f} ({result['cells']} cells, {result['seconds']} s, "
              f"{len(result['problems'])} problem(s))")
        _write_json(args.json, result)
        return 0
    for kt in args.karyotypes:
        parse_karyotype(kt)  # fail early on a bad karyotype string
    assign_kw = {"length_weight": 0.0, "ci_weight": 0.0} if args.no_morphology else {}
    if args.junk_prior is not None:
        assign_kw["junk_prior"] = args.junk_prior
    if args.y_weight is not None:
        assign_kw["y_weight"] = args.y_weight
    if args.scorer == "auto":
        from karyopipe.weights import CLASSIFICATION_WEIGHTS, weights_path

        have = weights_path(args.weights, CLASSIFICATION_WEIGHTS).is_file()
        args.scorer = "classifier" if have else "synthetic"
        if not have:
            print("no classifier weights found: using the calibrated SYNTHETIC scorer (measures the assignment only)",
                  file=sys.stderr)
    result = run_bench(args.karyotypes, args.n, args.seed, args.scorer, args.noise, args.weights,
                       progress=not args.quiet, banding=args.banding, **assign_kw)
    print(f"scorer: {result['scorer']} ({result['scorer_note']})")
    print(f"{'karyotype':<12} {'n':>5} {'exact':>7} {'single':>7} {'assigned':>8} {'abn':>6} {'poss':>6}  "
          "most frequent calls")
    for kt, r in result["per_karyotype"].items():
        calls = ", ".join(f"{k} x{v}" for k, v in r["calls"].items())
        print(f"{kt:<12} {r['n']:>5} {r['karyotype_exact_rate']:>7.3f} {r['accuracy_single']:>7.3f} "
              f"{r['accuracy_assigned']:>8.3f} {r['called_abnormal_rate']:>6.3f} {r['missed_but_named_possible']:>6.3f}"
              f"  {calls}")
    normal_rate = result["normal_called_abnormal_rate"]
    print(f"overall: exact {result['karyotype_exact_rate']:.3f}, normal called abnormal "
          f"{'n/a (no normal cells)' if normal_rate is None else f'{normal_rate:.3f}'}, "
          f"single {result['accuracy_single']:.3f}, "
          f"assigned {result['accuracy_assigned']:.3f} ({result['cells']} cells, {result['seconds']} s)")
    print(f"baseline: counting argmax labels gives the exact karyotype in "
          f"{result['karyotype_exact_rate_argmax']:.3f} of cells")
    print(f"flags: {result['flagged_rate']:.3f} of chromosomes flagged uncertain/unassigned, holding "
          f"{result['errors_flagged_rate']:.3f} of the wrong labels")
    print(f"abnormality confidence < 0.9 in {result['wrong_calls_low_confidence_rate']:.3f} of wrong calls, "
          f"{result['right_calls_low_confidence_rate']:.3f} of right calls")
    print("confidence reliability: " + "; ".join(
        f"[{r['confidence'][0]:.2f},{r['confidence'][1]:.2f}) n={r['n']} conf {r['mean_confidence']:.3f} "
        f"acc {r['accuracy']:.3f}" for r in result["reliability"]))
    _write_json(args.json, result)
    return 0


def _write_json(path, result: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
