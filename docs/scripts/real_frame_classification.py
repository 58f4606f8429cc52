"""How the classifier does on the *true* polygons of the BioImLab frames, and why it is lower than on crops.

Prints numbers only (nothing is drawn, nothing is written into the repository).
Run from the repository root after ``karyopipe label-bioimlab ... --out
.cache/bioimlab_labelled5/annotations.json``::

    .venv/bin/python docs/scripts/real_frame_classification.py

Only polygons whose label is confident (``label_confidence == "high"``) are
scored, split into cells the classifier trained on (their crops) and cells it
held out. Each row is one way of cutting the chromosome out of the frame:

``pipeline``
    what ``KaryoPipeline`` does: geometry of the polygon on the frame, outside
    the mask zeroed, all members fed the straightened chromosome;
``pca_member_cutout``
    the PCA member alone on the masked cut-out (its training path) instead;
``geometry_member_rim``
    the geometry member alone, its geometry computed on a cut-out that keeps a
    2 px rim of its surroundings, as the crops do;
``remask_rim``
    both members on that rimmed cut-out, the mask found by thresholding as
    for a crop instead of the polygon;
``remask_tight``
    the same on the masked cut-out without the rim.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from karyopipe.classification import Classifier
from karyopipe.classification.classifier import ClassifierEnsemble
from karyopipe.data import read_dataset
from karyopipe.geometry import analyze_chromosome
from karyopipe.io import normalize_polarity
from karyopipe.pipeline.core import KaryoPipeline
from karyopipe.weights import CLASSIFICATION_WEIGHTS, load_weights, weights_path

REPO = Path(__file__).resolve().parents[2]
PAD = 6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--coco", default=str(REPO / ".cache/bioimlab_labelled5/annotations.json"))
    p.add_argument("--weights", default=None, help="classifier ensemble (default: the shipped one)")
    p.add_argument("--limit", type=int, default=0, help="only the first N frames (a quick check)")
    args = p.parse_args()

    path = weights_path(args.weights, CLASSIFICATION_WEIGHTS)
    ensemble = Classifier.from_pretrained(path)
    if not isinstance(ensemble, ClassifierEnsemble):
        raise SystemExit(f"{path}: this script compares the members of an ensemble")
    _, config, _ = load_weights(path)
    held = {c.split("/", 1)[1] for c in config.get("heldout_cells", []) if c.startswith("bioimlab/")}
    pca_member = next(m for m in ensemble.members if m.preprocess == "pca")
    confident = {a["id"]: a.get("label_confidence") == "high" for a in json.loads(Path(args.coco).read_text())["annotations"]}
    geometry_member = next(m for m in ensemble.members if m.preprocess == "geometry")
    rows = ("pipeline", "pca_member_cutout", "geometry_member_rim", "remask_rim", "remask_tight")
    scores = {part: {r: [0, 0] for r in rows} for part in ("trained on", "held out")}
    samples = read_dataset(args.coco).samples
    for sample in samples[: args.limit or None]:
        gray, _ = normalize_polarity(sample.load_image())
        h, w = gray.shape
        instances = [i for i in sample.instances if i.category == "chromosome"]
        for inst in instances:
            inst.mask = inst.get_mask((h, w))
        instances = [i for i in instances if i.mask.any()]
        if not any(confident.get(i.extra.get("coco_id")) for i in instances):
            continue
        cutouts, rimmed = [], []
        for inst in instances:
            ys, xs = np.nonzero(inst.mask)
            y0, y1 = max(0, ys.min() - PAD), min(h, ys.max() + 1 + PAD)
            x0, x1 = max(0, xs.min() - PAD), min(w, xs.max() + 1 + PAD)
            mask, region = inst.mask[y0:y1, x0:x1], gray[y0:y1, x0:x1].astype(np.float32)
            rim = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            cutouts.append((np.where(mask, region, 0).astype(np.float32), mask))
            rimmed.append((np.where(rim, region, 0).astype(np.float32), mask))
        geoms = KaryoPipeline.analyze(gray, instances)
        log_probs = {
            "pipeline": ensemble.predict_cell(geoms),
            "pca_member_cutout": pca_member.predict_cell(cutouts),
            "geometry_member_rim": geometry_member.predict_cell([analyze_chromosome(m, g) for g, m in rimmed]),
            "remask_rim": ensemble.predict_cell([(g, None) for g, _ in rimmed]),
            "remask_tight": ensemble.predict_cell([(g, None) for g, _ in cutouts]),
        }
        part = "held out" if str(sample.meta.get("crop_cell") or sample.cell_id) in held else "trained on"
        for k, inst in enumerate(instances):
            if confident.get(inst.extra.get("coco_id")) and inst.label:
                for r in rows:
                    scores[part][r][0] += 1
                    scores[part][r][1] += int(log_probs[r][k].argmax() + 1 == inst.label)
    print(f"{'cut-out':20s} " + " ".join(f"{part + ' cells':>22s}" for part in scores))
    for r in rows:
        print(f"{r:20s} " + " ".join(f"{scores[part][r][1] / max(scores[part][r][0], 1):14.4f} (n={scores[part][r][0]:3d})"
                                     for part in scores))


if __name__ == "__main__":
    main()
