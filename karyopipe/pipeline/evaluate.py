"""``karyopipe eval-e2e``: score the whole pipeline on annotated spreads with classes.

Per spread the pipeline runs as ``karyopipe infer`` would; predictions are
paired with ground-truth instances one-to-one by mask IoU
(:func:`scipy.optimize.linear_sum_assignment` on IoU, pairs kept at IoU >= 0.5).

Metrics
-------
* detection recall and precision at IoU 0.5, and the count error per spread;
* classification accuracy of matched chromosomes whose truth has a class, and
  (when the file records it, as ``karyopipe label-bioimlab`` writes) over the
  truths labelled with ``label_confidence: "high"`` only;
* ``detected_and_right``: recall times that accuracy, the share of the true
  chromosomes found and named right; ``detected_and_right_confident_truth``,
  the share of the confidently labelled truths found and named right;
* exact-karyotype rate: spreads whose ISCN call equals the truth's, listed per
  cell. The truth is the image's recorded karyotype (``karyopipe
  label-bioimlab`` records the cell's, from its crops; the generator records
  its own) when the frame shows at least that many chromosomes; frames that
  show fewer are not scored. Without a recorded karyotype it is read from the
  instances' classes, when every instance has one;
* what the reader is shown: the share of objects marked for a check
  (:attr:`~karyopipe.pipeline.ChromosomeResult.low_confidence`, the overlay's
  marks and the summary's ``to_check``), the share of the matched chromosomes
  called wrong that carry such a mark, and the wrong karyotype calls with no
  object marked, and those whose report asks for no look at all
  (:attr:`~karyopipe.pipeline.KaryotypeResult.review_prompts` empty: the
  silent mistakes); and ``marks_by_reason``: for each reason an object is
  marked (:attr:`~karyopipe.pipeline.ChromosomeResult.check_reasons`) and for
  the unmarked ones, how many objects, how many matched to a classed truth and
  how many of those are wrong, so that a reason can be judged by how often it
  sends the reader to a mistake;
* seconds per spread (pipeline total, as timed by the pipeline).

The accuracy, ``detected_and_right`` and the exact-karyotype rate come with a
95 % interval over cells (``*_ci95``, :mod:`karyopipe.stats`).

Examples
--------
    karyopipe eval-e2e .cache/bioimlab_labelled/annotations.json --split val --json runs/e2e.json
    karyopipe eval-e2e runs/synth/annotations.json --limit 5
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from karyopipe.classes import class_name
from karyopipe.cli import add_pairing_argument, add_precision_argument, add_rescue_argument
from karyopipe.stats import format_interval, product_interval, rate_interval

IOU_THRESH = 0.5


def match_instances(pred_masks, true_masks, thresh: float = IOU_THRESH) -> tuple[list[tuple[int, int, float]], np.ndarray]:
    """One-to-one pairs ``(pred, true, iou)`` with IoU >= ``thresh``, and the IoU matrix (n_pred, n_true)."""
    from scipy.optimize import linear_sum_assignment

    from karyopipe.segmentation.evaluate import mask_ious

    iou = mask_ious(pred_masks, true_masks)
    if not iou.size:
        return [], iou
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols) if iou[r, c] >= thresh], iou


def truth_karyotype(labels) -> str:
    """ISCN string of a complete set of true labels (``""`` if any is missing)."""
    from karyopipe.karyogram import labels_karyotype

    if not len(labels) or any(not v for v in labels):
        return ""
    return labels_karyotype(labels)


def spread_truth(meta: dict, labels) -> tuple[str, str]:
    """The karyotype a spread should be called and where it comes from.

    Returns ``(karyotype, source)``: source ``"cell"`` (the recorded karyotype)
    or ``"labels"`` (the instances' classes); ``("", reason)`` when the spread
    cannot be scored.
    """
    from karyopipe.karyogram import parse_karyotype

    recorded = meta.get("karyotype")
    if recorded:
        expected = sum(parse_karyotype(recorded).values())
        if len(labels) < expected:
            return "", f"the frame shows {len(labels)} of the cell's {expected} chromosomes"
        return str(recorded), "cell"
    from_labels = truth_karyotype(labels)
    return (from_labels, "labels") if from_labels else ("", "not every instance has a class")


def select_cells(dataset, split: str, seg_weights=None, cls_weights=None) -> tuple[list, str]:
    """Samples of the split.

    ``val``: the cells the segmentation weights held out (recorded in them).
    ``heldout``: those of them the classifier did not train on either (its
    ``heldout_cells``, recorded as ``<source>/<cell>``), i.e. cells no stage saw.
    """
    if split == "all":
        return list(dataset.samples), "all spreads"
    if split == "heldout":
        from karyopipe.weights import CLASSIFICATION_WEIGHTS, load_weights, weights_path

        samples, note = select_cells(dataset, "val", seg_weights)
        path = weights_path(cls_weights, CLASSIFICATION_WEIGHTS)
        held = load_weights(path)[1].get("heldout_cells") if path.is_file() else None
        if not held:
            raise ValueError(f"{path}: records no held-out cells (weights trained before they were recorded); "
                             "use --split val")
        held_ids = {str(c).rsplit("/", 1)[-1] for c in held}
        # label-bioimlab records which crop folder (the classifier's cell id) a frame shows; where it
        # found none, nothing says whether the classifier saw that cell, so the frame is left out.
        recorded = any("crop_cell" in getattr(s, "meta", {}) for s in dataset.samples)
        return ([s for s in samples
                 if str(s.meta.get("crop_cell") if recorded else s.cell_id) in held_ids],
                f"{note}, and held out by the classifier ({path})")
    from karyopipe.data import split_by_cell
    from karyopipe.weights import SEGMENTATION_WEIGHTS, load_weights, weights_path

    path = weights_path(seg_weights, SEGMENTATION_WEIGHTS)
    cells, note = None, ""
    if path.is_file():
        _, config, _ = load_weights(path)
        if config.get(f"{split}_cells"):
            cells, note = set(map(str, config[f"{split}_cells"])), f"{split} cells recorded in {path}"
    if cells is None:
        train, val = split_by_cell(sorted({s.cell_id for s in dataset.samples}), val_fraction=0.2)
        cells, note = set(val if split == "val" else train), f"{split} cells of split_by_cell(seed 0, val 0.2)"
    return [s for s in dataset.samples if str(s.cell_id) in cells], note


def evaluate(pipe, samples, confidence: dict | None = None, progress: bool = True, shift: str | None = None) -> dict:
    """Run ``pipe`` on each sample and score it (see the module docstring).

    ``confidence`` maps a COCO annotation id to its ``label_confidence``; when
    given, accuracy is also reported over the ``"high"`` truths alone.
    ``shift`` (one of :data:`karyopipe.classification.shift.SPREAD_SHIFTS`)
    imitates another lab's camera on every spread first, the same way for the
    same spread each time.
    """
    import zlib

    from tqdm import tqdm

    from karyopipe.classification.shift import shift_spread
    from karyopipe.io import to_gray

    totals = dict(n_true=0, n_pred=0, tp=0, cls_n=0, cls_correct=0, conf_n=0, conf_correct=0, conf_true=0, exact_n=0,
                  exact=0)
    per_spread, failures, seconds, marks = [], [], [], {}
    for s in tqdm(samples, desc="spreads", disable=not progress, file=sys.stderr):
        try:
            image = to_gray(s.load_image() if hasattr(s, "load_image") else s.loader())
            if shift:
                image = shift_spread(image, shift, np.random.default_rng([0, zlib.crc32(f"{shift}|{s.path}".encode())]))
            result = pipe(image)
        except Exception as exc:  # one bad spread must not end the evaluation; it is listed
            failures.append(f"{s.path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        h, w = result.image.shape
        truths = [inst for inst in s.instances if inst.category == "chromosome"]
        true_masks = [inst.get_mask((h, w)) for inst in truths]
        pairs, _ = match_instances([c.mask for c in result.chromosomes], true_masks)
        n_true, n_pred = len(truths), len(result.chromosomes)
        correct = n_cls = n_conf = conf_correct = 0
        # Which truths are confidently labelled, found or not: the denominator of detected-and-right on them.
        sure = [confidence is not None and confidence.get(t.extra.get("coco_id")) == "high" for t in truths]
        errors = []
        # Per reason an object is marked (and "unmarked"): objects, those matched to a classed truth, wrong ones.
        truth_label = {p: truths[t].label for p, t, _ in pairs}
        for p, c in enumerate(result.chromosomes):
            judged = bool(truth_label.get(p))
            for reason in c.check_reasons or ["unmarked"]:
                tally = marks.setdefault(reason, {"objects": 0, "matched": 0, "wrong": 0})
                tally["objects"] += 1
                tally["matched"] += judged
                tally["wrong"] += judged and c.label != truth_label[p]
        for p, t, _ in pairs:
            label = truths[t].label
            if not label:
                continue
            right = int(result.chromosomes[p].label == label)
            n_cls += 1
            correct += right
            if not right:
                errors.append({"id": result.chromosomes[p].id, "truth": class_name(label),
                               "called": result.chromosomes[p].class_name,
                               "marked": bool(result.chromosomes[p].low_confidence)})
            if sure[t]:
                n_conf += 1
                conf_correct += right
        n_conf_true = sum(sure)
        true_k, truth_source = spread_truth(getattr(s, "meta", {}) or {}, [inst.label for inst in truths])
        exact = bool(true_k) and result.karyotype == true_k
        totals["n_true"] += n_true
        totals["n_pred"] += n_pred
        totals["tp"] += len(pairs)
        totals["cls_n"] += n_cls
        totals["cls_correct"] += correct
        totals["conf_n"] += n_conf
        totals["conf_correct"] += conf_correct
        totals["conf_true"] += n_conf_true
        totals["exact_n"] += int(bool(true_k))
        totals["exact"] += int(exact)
        seconds.append(result.timings.get("total", float("nan")))
        per_spread.append({"file": str(s.path), "image_id": s.image_id, "cell": str(s.cell_id), "n_true": n_true,
                           "n_pred": n_pred, "tp": len(pairs), "classified": n_cls, "correct": correct,
                           "confident_truth": n_conf, "confident_correct": conf_correct,
                           "confident_truth_all": n_conf_true,
                           "true_karyotype": true_k, "truth_source": truth_source,
                           "karyotype": result.karyotype, "exact": exact,
                           "possible": [a["description"] for a in result.possible_abnormalities],
                           # Objects the second look added: weak detections rescued, parts of a split.
                           "rescued": sum("rescued" in c.flags for c in result.chromosomes),
                           "split": sum("split" in c.flags for c in result.chromosomes),
                           # Objects marked for the reader's check, as the overlay and the summary's to_check.
                           "to_check": result.n_to_check,
                           # Everything in the report that asks for a look (KaryotypeResult.review_prompts).
                           "review_prompts": result.review_prompts,
                           "seconds": result.timings.get("total"),
                           # Matched chromosomes called wrong: the report's object id, the truth and the call.
                           "errors": errors})
    div = lambda a, b: round(a / b, 4) if b else None  # noqa: E731
    column = lambda key, rows=per_spread: [float(r[key]) for r in rows]  # noqa: E731
    cell_of = [r["cell"] for r in per_spread]
    scored = [r for r in per_spread if r["true_karyotype"]]
    cells: dict[str, list] = {}
    for r in per_spread:
        if r["true_karyotype"]:
            cells.setdefault(r["cell"], []).append(r["exact"])
    return {
        "spreads": len(per_spread),
        "detection_recall@0.5": div(totals["tp"], totals["n_true"]),
        "detection_precision@0.5": div(totals["tp"], totals["n_pred"]),
        "count_mae": round(float(np.mean([abs(r["n_pred"] - r["n_true"]) for r in per_spread])), 3) if per_spread else None,
        "classification_accuracy_matched": div(totals["cls_correct"], totals["cls_n"]),
        "classification_accuracy_matched_ci95": rate_interval(column("correct"), column("classified"), cell_of),
        "classified_matched": totals["cls_n"],
        # The end-to-end figure: recall x accuracy of the matched chromosomes.
        "detected_and_right": div(totals["tp"] * totals["cls_correct"], totals["n_true"] * totals["cls_n"]),
        "detected_and_right_ci95": product_interval(column("tp"), column("n_true"), column("correct"),
                                                    column("classified"), cell_of),
        "classification_accuracy_confident_truth": div(totals["conf_correct"], totals["conf_n"]),
        "classification_accuracy_confident_truth_ci95": (
            rate_interval(column("confident_correct"), column("confident_truth"), cell_of) if totals["conf_n"] else None),
        "confident_truth_matched": totals["conf_n"],
        # The same end-to-end figure over the confidently labelled truths alone, found or not (a direct share:
        # every one of them has a class), since the other labels are the crop matcher's guesses.
        "detected_and_right_confident_truth": div(totals["conf_correct"], totals["conf_true"]),
        "detected_and_right_confident_truth_ci95": (
            rate_interval(column("confident_correct"), column("confident_truth_all"), cell_of)
            if totals["conf_true"] else None),
        "confident_truth": totals["conf_true"],
        "exact_karyotype_rate": div(totals["exact"], totals["exact_n"]),
        "exact_karyotype_ci95": rate_interval(column("exact", scored), [1.0] * len(scored), [r["cell"] for r in scored]),
        "exact_karyotype_spreads": totals["exact_n"],
        "exact_karyotype_unscored": sum(1 for r in per_spread if not r["true_karyotype"]),
        "exact_karyotype_per_cell": {c: div(sum(v), len(v)) for c, v in sorted(cells.items())},
        # Spreads whose report names a possible abnormality for a human to check.
        "spreads_with_possible_abnormality": sum(1 for r in per_spread if r["possible"]),
        # What a reviewer is asked to look at, and whether the mistakes are among it.
        "objects_marked": div(sum(r["to_check"] for r in per_spread), totals["n_pred"]),
        "errors_marked": div(sum(e["marked"] for r in per_spread for e in r["errors"]),
                             sum(len(r["errors"]) for r in per_spread)),
        # Each reason for a mark with how often the matched objects it marks are wrong; "unmarked" is the baseline.
        "marks_by_reason": {reason: {**tally, "wrong_share": div(tally["wrong"], tally["matched"])}
                            for reason, tally in sorted(marks.items())},
        "wrong_calls_unmarked": sum(1 for r in scored if not r["exact"] and not r["to_check"]),
        # The silent mistakes: wrong calls whose report asks for no look at all.
        "wrong_calls_unprompted": sum(1 for r in scored if not r["exact"] and not r["review_prompts"]),
        "seconds_per_spread": round(float(np.nanmean(seconds)), 3) if seconds else None,
        "confusions": commonest_confusions(per_spread),
        "failures": failures,
        "per_spread": per_spread,
    }


def commonest_confusions(per_spread, top: int = 15) -> list[dict]:
    """The ``top`` commonest (truth, call) pairs among the matched chromosomes called wrong, with their counts.

    ``"?"`` as the call: left unassigned. Spreads are counted too, since one
    missed chromosome can move several of a cell's calls along a chain.
    """
    counts: dict[tuple[str, str], list[int]] = {}
    for k, row in enumerate(per_spread):
        for e in row.get("errors", []):
            counts.setdefault((e["truth"], e["called"]), []).append(k)
    ranked = sorted(counts.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    return [{"truth": t, "called": c, "n": len(ks), "spreads": len(set(ks))} for (t, c), ks in ranked]


def _label_confidence(path: Path) -> dict | None:
    """COCO annotation id -> ``label_confidence``, if the file records it."""
    if path.suffix.lower() != ".json":
        return None
    doc = json.loads(path.read_text())
    conf = {a["id"]: a["label_confidence"] for a in doc.get("annotations", []) if "label_confidence" in a}
    return conf or None


def build_parser() -> argparse.ArgumentParser:
    from karyopipe.classification.shift import SPREAD_SHIFTS

    p = argparse.ArgumentParser(prog="karyopipe eval-e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="COCO JSON (or any karyopipe-readable spread set) with classes")
    p.add_argument("--json", default=None, help="write the metrics here")
    p.add_argument("--shift", default=None, choices=SPREAD_SHIFTS,
                   help="imitate another lab's camera on every spread first (karyopipe.classification.shift)")
    p.add_argument("--split", default="all", choices=("all", "train", "val", "heldout"),
                   help="only the cells held out by the segmentation weights (val), those also held out by the "
                        "classifier (heldout: no stage trained on them), the others (train), or all")
    p.add_argument("--seg-weights", default=None)
    p.add_argument("--cls-weights", default=None)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    add_precision_argument(p)
    p.add_argument("--limit", type=int, default=0, help="score only the first N spreads")
    add_rescue_argument(p)
    add_pairing_argument(p)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from karyopipe.data import read_dataset
    from karyopipe.pipeline.core import KaryoPipeline

    args = build_parser().parse_args(argv)
    data = Path(args.data)
    dataset = read_dataset(data)
    samples, note = select_cells(dataset, args.split, args.seg_weights, args.cls_weights)
    if args.limit:
        samples = samples[: args.limit]
    if not samples:
        raise ValueError(f"{data}: no spreads in the {args.split} split")
    confidence = _label_confidence(data)
    pipe = KaryoPipeline.from_pretrained(args.seg_weights, args.cls_weights, device=args.device, precision=args.precision,
                                         rescue=not args.no_rescue,
                                         zoom_look=args.zoom_look, pairing=args.pairing,
                                         hidden_look=args.hidden_look, second_segmenter=args.second_segmenter)
    for info in pipe.stages.values():
        if info.get("fallback"):
            print(f"karyopipe eval-e2e: {info['reason']}", file=sys.stderr)
    metrics = evaluate(pipe, samples, confidence, progress=not args.no_progress, shift=args.shift)
    metrics = {"data": str(data), "split": note, "shift": args.shift, "stages": pipe.stages,
               "problems": [f"{p.path}: {p.reason}" for p in dataset.problems], **metrics}
    keys = ("spreads", "detection_recall@0.5", "detection_precision@0.5", "count_mae", "classification_accuracy_matched",
            "classified_matched", "classification_accuracy_confident_truth", "confident_truth_matched",
            "detected_and_right", "detected_and_right_confident_truth", "exact_karyotype_rate",
            "exact_karyotype_spreads", "exact_karyotype_unscored",
            "spreads_with_possible_abnormality", "objects_marked", "errors_marked", "wrong_calls_unmarked",
            "wrong_calls_unprompted",
            "seconds_per_spread")
    print(f"{data} ({note})")
    for k in keys:
        interval = metrics.get(k.replace("_rate", "") + "_ci95")
        print(f"  {k:34s} {metrics[k]}{format_interval(interval)}")
    if metrics["confusions"]:
        print("  commonest errors (truth -> call, n)  "
              + ", ".join(f"{c['truth']}->{c['called']} {c['n']}" for c in metrics["confusions"][:8]))
    if metrics["marks_by_reason"]:
        print("  marks, wrong of matched (reason)    "
              + ", ".join(f"{reason} {t['wrong']}/{t['matched']}" for reason, t in metrics["marks_by_reason"].items()))
    for f in metrics["failures"]:
        print(f"  failed: {f}", file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(metrics, indent=1, default=str) + "\n")
    return 0 if metrics["spreads"] else 1


if __name__ == "__main__":
    sys.exit(main())
