"""``karyopipe relabel-frames``: classes for every chromosome of a frame, from its cell's known karyotype.

``karyopipe label-bioimlab`` matches each BioImLab frame polygon to one of
its cell's labelled crops, but only about a third of those matches are
confident, and a fifth of the others disagree with the same chromosome's
match in another frame of the cell. The crops do fix what the cell is
(``46,XX`` or ``46,XY``, recorded per frame as ``karyotype``), and that is a
strong constraint: two of each autosome, and no Y in a female cell.

Here every chromosome polygon of a frame is labelled jointly:

1. the classifier scores the polygons as the pipeline would (geometry of
   each polygon on the frame, :func:`karyopipe.geometry.analyze_in_image`);
2. the class of the polygon's crop match gets a bonus of ``high_bonus`` nats
   when the match is confident, ``low_bonus`` otherwise;
3. :func:`karyopipe.karyogram.assign_karyotype` assigns the polygons with
   the cell's karyotype as the only hypothesis: no extra copies, and no lost
   ones when the frame shows at least the whole cell (a partial frame may
   miss any chromosome). Objects beyond the karyotype are left unassigned.

A polygon keeps the assigned class when it agrees with its crop match or
with the classifier's top class, or when that top class is impossible in
the cell (a Y in a female cell); otherwise it is written unlabelled.

These are training labels, partly from a classifier: never score anything
on them. Only frames of the cells the segmentation weights trained on are
written by default (``--split train``), so the frames ``eval-e2e`` scores
stay unseen.

Examples
--------
    karyopipe relabel-frames .cache/bioimlab_labelled/annotations.json --out .cache/bioimlab_frames/annotations.json
    karyopipe train-cls --data $D/bioimlab/crops $D/gband612 .cache/bioimlab_frames/annotations.json ...
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HIGH_BONUS = 3.0
LOW_BONUS = 0.5
# Cost of an extra copy when the karyotype is known: effectively forbidden.
_FORBIDDEN = 1e-12
# A partial frame (fewer polygons than the karyotype) may miss any chromosome.
PARTIAL_LOSS_PRIOR = 0.3


def karyotype_hypothesis(karyotype: str):
    """The :class:`karyopipe.karyogram.Hypothesis` of a karyotype without autosomal changes.

    Raises
    ------
    ValueError
        The karyotype gains or loses an autosome (a hypothesis holds only the
        ploidy and the sex chromosomes).
    """
    from karyopipe.classes import AUTOSOMES, X, Y
    from karyopipe.karyogram.assign import Hypothesis
    from karyopipe.karyogram.iscn import parse_karyotype

    counts = parse_karyotype(karyotype)
    ploidy = counts[AUTOSOMES[0]]
    if any(counts[k] != ploidy for k in AUTOSOMES):
        raise ValueError(f"karyotype {karyotype!r} changes an autosome: only ploidy and sex chromosomes can be fixed")
    sex = "X" * counts[X] + "Y" * counts[Y]
    return Hypothesis(sex if ploidy == 2 else f"3n,{sex}", ploidy, counts[X], counts[Y], 1.0)


def relabel_frame(log_probs, lengths, centromere_index, karyotype: str, match_labels, match_confident,
                  high_bonus: float = HIGH_BONUS, low_bonus: float = LOW_BONUS) -> tuple[np.ndarray, dict]:
    """Classes for the chromosomes of one frame of a cell whose karyotype is known.

    Parameters
    ----------
    log_probs : ndarray, shape (n, 24)
        Classifier log-probabilities of the frame's objects.
    lengths, centromere_index : ndarray, shape (n,)
        Geometry of the objects (NaN where unknown).
    karyotype : str
        The cell's karyotype, e.g. ``"46,XY"``.
    match_labels : ndarray, shape (n,), int
        Class of each object's crop match, 0 where it has none.
    match_confident : ndarray, shape (n,), bool
    high_bonus, low_bonus : float
        Nats added to the matched class for a confident / other match.

    Returns
    -------
    labels : ndarray, shape (n,), int
        Class number per object, 0 where no label is trusted.
    stats : dict
        ``assigned``, ``kept``, ``changed_from_top`` (kept labels that differ
        from the classifier's top class) and ``whole`` (no losses allowed).
    """
    from scipy.special import log_softmax

    from karyopipe.karyogram import assign_karyotype
    from karyopipe.karyogram.iscn import parse_karyotype

    log_probs = np.asarray(log_probs, float)
    match_labels = np.asarray(match_labels, int)
    hypothesis = karyotype_hypothesis(karyotype)
    bonus = np.zeros_like(log_probs)
    rows = np.flatnonzero(match_labels > 0)
    bonus[rows, match_labels[rows] - 1] = np.where(np.asarray(match_confident, bool)[rows], high_bonus, low_bonus)
    counts = parse_karyotype(karyotype)
    whole = len(log_probs) >= sum(counts.values())
    call = assign_karyotype(log_softmax(log_probs + bonus, axis=1), lengths, centromere_index,
                            hypotheses=(hypothesis,), gain_prior=_FORBIDDEN,
                            loss_prior=_FORBIDDEN if whole else PARTIAL_LOSS_PRIOR)
    assigned = np.asarray(call.labels, int)
    top = log_probs.argmax(axis=1) + 1
    # A top class the cell cannot have (a Y in a female cell) is wrong for sure: then the
    # assignment's choice stands on its own, so the model learns what that object is not.
    impossible = np.array([counts.get(int(k), 0) == 0 for k in top])
    keep = (assigned > 0) & ((assigned == match_labels) | (assigned == top) | impossible)
    labels = np.where(keep, assigned, 0)
    stats = {"objects": int(len(labels)), "assigned": int((assigned > 0).sum()), "kept": int(keep.sum()),
             "changed_from_top": int((keep & (labels != top)).sum()), "whole": bool(whole)}
    return labels, stats


def relabel_coco(coco_path, classifier, samples, progress: bool = True) -> tuple[dict, dict]:
    """Relabel the frames ``samples`` of the COCO file ``coco_path``; returns the new COCO and a report."""
    from karyopipe.classes import CLASS_NAMES
    from karyopipe.classification.dataset import spread_source
    from karyopipe.geometry import analyze_in_image
    from karyopipe.io import ImageReadError, normalize_polarity
    from karyopipe.karyogram import geometry_measures

    doc = json.loads(Path(coco_path).read_text())
    ann_by_id = {a["id"]: a for a in doc["annotations"]}
    category_of_class = {}
    for c in doc["categories"]:
        if c["name"] in CLASS_NAMES:
            category_of_class[CLASS_NAMES.index(c["name"]) + 1] = c["id"]
    unlabelled = next((c["id"] for c in doc["categories"] if c["name"] == "chromosome"), None)
    if unlabelled is None:
        unlabelled = max(c["id"] for c in doc["categories"]) + 1
        doc["categories"].append({"id": unlabelled, "name": "chromosome", "supercategory": "chromosome"})
    report = {"frames": 0, "objects": 0, "kept": 0, "changed_from_top": 0, "skipped": [],
              "agree_with_confident_match": [0, 0]}
    keep_images, keep_annotations = set(), []
    if progress:
        from tqdm import tqdm

        samples = tqdm(samples, desc="relabel frames", unit="frame")
    for sample in samples:
        karyotype = sample.meta.get("karyotype")
        if not karyotype:
            report["skipped"].append(f"{sample.path}: no karyotype recorded for its cell")
            continue
        try:
            gray, _ = normalize_polarity(sample.load_image())
        except (ImageReadError, ValueError) as exc:
            report["skipped"].append(str(exc))
            continue
        objects = []
        for inst in sample.instances:
            if inst.category == "chromosome":
                mask = inst.get_mask(gray.shape)
                if mask.any():
                    objects.append((ann_by_id[inst.extra["coco_id"]], inst.label or 0, mask))
        if not objects:
            report["skipped"].append(f"{sample.path}: no chromosome polygons")
            continue
        geoms = analyze_in_image(gray, [m for _, _, m in objects])
        log_probs = classifier.predict_cell(geoms)
        lengths, ci, _ = geometry_measures(geoms)
        matched = np.array([label for _, label, _ in objects], int)
        confident = np.array([a.get("label_confidence") == "high" for a, _, _ in objects], bool)
        try:
            labels, stats = relabel_frame(log_probs, lengths, ci, karyotype, matched, confident)
        except ValueError as exc:
            report["skipped"].append(f"{sample.path}: {exc}")
            continue
        report["frames"] += 1
        for key in ("objects", "kept", "changed_from_top"):
            report[key] += stats[key]
        both = confident & (labels > 0)
        report["agree_with_confident_match"][0] += int((labels[both] == matched[both]).sum())
        report["agree_with_confident_match"][1] += int(both.sum())
        keep_images.add(objects[0][0]["image_id"])
        for (ann, _, _), label in zip(objects, labels):
            ann = dict(ann, category_id=category_of_class[label] if label else unlabelled,
                       label_source="karyotype_assignment" if label else "untrusted")
            keep_annotations.append(ann)
    doc["images"] = [im for im in doc["images"] if im["id"] in keep_images]
    doc["annotations"] = keep_annotations
    info = dict(doc.get("info") or {})
    # The frames must be split with their cells' crops (karyopipe.classification.dataset.spread_source).
    info["source"] = spread_source(coco_path)
    info["description"] = (f"chromosome classes from the cell karyotype and a classifier (karyopipe relabel-frames "
                           f"of {coco_path}): training labels only, never score on them")
    doc["info"] = info
    agree, total = report["agree_with_confident_match"]
    report["agree_with_confident_match"] = round(agree / total, 4) if total else None
    return doc, report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe relabel-frames", description=__doc__.split("\n\n")[0])
    p.add_argument("coco", help="COCO with classes and per-frame karyotypes (karyopipe label-bioimlab)")
    p.add_argument("--out", required=True, help="COCO JSON to write (an ignored path: .cache/ or runs/)")
    p.add_argument("--weights", default=None, help="classifier weights (default: the shipped ones)")
    p.add_argument("--seg-weights", default=None, help="segmentation weights whose recorded cells --split reads")
    p.add_argument("--split", default="train", choices=("train", "all"),
                   help="frames of the cells the segmenter trained on (default), so eval-e2e's stay unseen; or all")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from karyopipe.classification import Classifier
    from karyopipe.data import read_dataset
    from karyopipe.pipeline.evaluate import select_cells

    args = build_parser().parse_args(argv)
    dataset = read_dataset(args.coco)
    if dataset.kind != "spreads":
        raise ValueError(f"{args.coco}: holds {dataset.kind}, not annotated spreads")
    samples, note = select_cells(dataset, args.split, seg_weights=args.seg_weights)
    classifier = Classifier.from_pretrained(args.weights, device=args.device)
    doc, report = relabel_coco(args.coco, classifier, samples, progress=not args.no_progress)
    if not doc["images"]:
        raise ValueError(f"{args.coco}: no frame could be relabelled ({len(report['skipped'])} skipped)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Image paths stay valid: file names are made absolute against the input's folder.
    root = Path(args.coco).resolve().parent
    for im in doc["images"]:
        im["file_name"] = str((root / im["file_name"]).resolve())
    out.write_text(json.dumps(doc))
    report["split"] = note
    out.with_suffix(".report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{report['frames']} frames ({note}), {report['objects']} chromosomes: {report['kept']} labelled, "
          f"{report['changed_from_top']} of them against the classifier's top class; labels agree with the "
          f"confident crop matches {report['agree_with_confident_match']}")
    for line in report["skipped"]:
        print(f"  skipped {line}", file=sys.stderr)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
