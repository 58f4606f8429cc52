"""Measure, on BioImLab frames of the cells the segmenter TRAINED on, how often the
segmenter passes an object that is not one chromosome, and what the karyotype
assignment's junk prior does to the exact-karyotype rate there.

An object is junk when it overlaps no true polygon at IoU >= 0.5 (debris, a
fragment, two touching chromosomes taken as one). The assignment weighs "this
object is junk" against "an extra copy of its class" by their priors
(:data:`karyopipe.karyogram.assign.JUNK_PRIOR`, ``GAIN_PRIOR``), so the junk
prior should be the measured junk rate, not a guess. Only training frames are
used: the val frames eval-e2e scores are never read. Prints numbers; writes
only a cache of the pipeline's outputs under ``.cache/`` (so a sweep reruns in seconds).

    .venv/bin/python docs/scripts/calibrate_junk_prior.py [--coco .cache/bioimlab_labelled/annotations.json]
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PRIORS = (1e-4, 1e-3, 3e-3, 1e-2, 2e-2, 3e-2, 5e-2, 1e-1)


def frame_outputs(coco, cls_weights, cache: Path) -> list[dict]:
    """Per training frame: the classifier log-probs, geometry and truth matching of the pipeline's objects."""
    if cache.is_file():
        return pickle.loads(cache.read_bytes())
    from tqdm import tqdm

    from karyopipe.data import read_dataset
    from karyopipe.io import normalize_polarity
    from karyopipe.pipeline import KaryoPipeline
    from karyopipe.pipeline.evaluate import match_instances, select_cells

    pipe = KaryoPipeline.from_pretrained(cls_weights=cls_weights)
    samples, note = select_cells(read_dataset(coco), "train")
    print(f"{len(samples)} frames: {note}")
    rows = []
    for sample in tqdm(samples, unit="frame"):
        gray, _ = normalize_polarity(sample.load_image())
        truth = [i.get_mask(gray.shape) for i in sample.instances if i.category == "chromosome"]
        instances = pipe.segment(gray)
        geoms = pipe.analyze(gray, instances)
        pairs, _ = match_instances([i.mask for i in instances], truth)
        rows.append({
            "frame": str(sample.path), "karyotype": sample.meta.get("karyotype", ""), "n_true": len(truth),
            "n_pred": len(instances), "matched": len(pairs),
            "log_probs": pipe.classify(geoms),
            "lengths": np.array([g.length_px if g.length_px > 0 else np.nan for g in geoms], float),
            "ci": np.array([g.centromere_index if g.length_px > 0 else np.nan for g in geoms], float),
            "pc": np.array([g.polarity_confidence for g in geoms], float),
        })
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(rows))
    return rows


def main() -> None:
    from karyopipe.karyogram import assign_karyotype, parse_karyotype

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--coco", default=str(REPO / ".cache/bioimlab_labelled/annotations.json"))
    p.add_argument("--cls-weights", default=None, help="classifier (default: the shipped one)")
    p.add_argument("--cache", default=str(REPO / ".cache/junk_prior/train_frames.pkl"))
    args = p.parse_args()
    rows = frame_outputs(args.coco, args.cls_weights, Path(args.cache))
    pred = sum(r["n_pred"] for r in rows)
    true = sum(r["n_true"] for r in rows)
    matched = sum(r["matched"] for r in rows)
    print(f"{len(rows)} training frames: {pred} objects found, {true} true polygons, {matched} matched at IoU 0.5")
    print(f"junk rate (objects matching no polygon): {(pred - matched) / max(pred, 1):.4f}; "
          f"missed polygons: {(true - matched) / max(true, 1):.4f}")
    whole = [r for r in rows if r["karyotype"] and r["n_true"] >= sum(parse_karyotype(r["karyotype"]).values())]
    print(f"exact karyotype on the {len(whole)} frames that show the whole cell, by junk prior:")
    for prior in PRIORS:
        calls = [assign_karyotype(r["log_probs"], r["lengths"], r["ci"], polarity_confidence=r["pc"],
                                  junk_prior=prior).karyotype for r in whole]
        exact = sum(c == r["karyotype"] for c, r in zip(calls, whole))
        extra = sum(c.count("+") for c in calls)
        print(f"  junk prior {prior:7.0e}: {exact:3d} / {len(whole)} exact, {extra} gains called")


if __name__ == "__main__":
    main()
