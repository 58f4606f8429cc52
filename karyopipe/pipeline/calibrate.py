"""``karyopipe calibrate-junk``: how often the segmenter's objects are not chromosomes, by detection score.

The karyotype assignment must decide, for an object beyond the expected
count, between "an extra copy" (a trisomy) and "junk" (debris, a fragment,
two touching chromosomes taken as one). One flat junk prior cannot do both:
the shipped segmenter passes about 4.5 % such objects on its own training
frames, yet at that flat rate a real third 21 is thrown away as junk. The
detection score separates them (on the training frames, 45 % of objects
scored 0.7-0.8 match no true chromosome, 0.7 % of those scored 0.98 or more).

This command runs the segmenter on annotated frames of the cells it trained on
(never the val cells ``eval-e2e`` scores), marks each object that matches no
true polygon at mask IoU 0.5, fits ``P(junk) = sigmoid(a + b * logit(score))``
(:func:`karyopipe.karyogram.junk_prior_from_scores`) and, with ``--write``,
stores ``a, b`` in the segmentation weights' config, where
:class:`karyopipe.pipeline.KaryoPipeline` reads them. It also reports the
exact-karyotype rate on those frames with the flat and the calibrated priors.

Examples
--------
    karyopipe calibrate-junk .cache/bioimlab_labelled/annotations.json --write
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

SCORE_BINS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.01)


def fit_junk_calibration(scores, junk) -> tuple[float, float]:
    """Logistic fit of ``junk`` (bool per object) on ``logit(score)``; returns ``(intercept, slope)``.

    Parameters
    ----------
    scores : array_like, shape (n,)
        Detection scores in (0, 1).
    junk : array_like, shape (n,), bool
        Whether each object matches no true chromosome.
    """
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    s = np.clip(np.asarray(scores, float), 1e-6, 1 - 1e-6)
    x = np.log(s / (1 - s))
    y = np.asarray(junk, bool)
    if y.all() or not y.any():
        raise ValueError("need both junk and chromosome objects to fit a calibration")

    def nll(theta):
        z = theta[0] + theta[1] * x
        # A whisper of L2 keeps the fit finite when the classes separate perfectly.
        return -(log_expit(z)[y].sum() + log_expit(-z)[~y].sum()) + 1e-3 * float(theta @ theta)

    def grad(theta):
        r = expit(theta[0] + theta[1] * x) - y
        return np.array([r.sum(), (r * x).sum()]) + 2e-3 * theta

    result = minimize(nll, np.zeros(2), jac=grad, method="BFGS")
    return float(result.x[0]), float(result.x[1])


def frame_objects(pipe, samples, progress: bool = True) -> list[dict]:
    """Per frame: each object's detection score, whether it matches a true polygon, and what assignment needs."""
    from karyopipe.karyogram import geometry_measures
    from karyopipe.pipeline.core import detection_scores
    from karyopipe.pipeline.evaluate import match_instances
    from karyopipe.segmentation.dataset import load_gray

    if progress:
        from tqdm import tqdm

        samples = tqdm(samples, unit="frame", desc="segment")
    rows = []
    for sample in samples:
        gray = load_gray(sample)
        truth = [i.get_mask(gray.shape) for i in sample.instances if i.category == "chromosome"]
        instances = pipe.segment(gray)
        geoms = pipe.analyze(gray, instances)
        pairs, _ = match_instances([i.mask for i in instances], truth)
        matched = np.zeros(len(instances), bool)
        matched[[p for p, _, _ in pairs]] = True
        lengths, ci, pc = geometry_measures(geoms)
        scores = detection_scores(instances)
        rows.append({
            "frame": str(sample.path), "karyotype": sample.meta.get("karyotype", ""), "n_true": len(truth),
            "scores": scores, "matched": matched, "log_probs": pipe.classify(geoms, scores),
            "lengths": lengths, "ci": ci, "pc": pc,
        })
    return rows


def exact_rates(rows, calibration: tuple[float, float], flat: float) -> dict:
    """Exact karyotypes on the frames showing a whole cell, with the default, a flat and the calibrated prior."""
    from karyopipe.karyogram import assign_karyotype, junk_prior_from_scores, parse_karyotype
    from karyopipe.karyogram.assign import JUNK_PRIOR

    whole = [r for r in rows if r["karyotype"] and r["log_probs"] is not None
             and r["n_true"] >= sum(parse_karyotype(r["karyotype"]).values())]
    out = {"frames": len(whole)}
    for name, prior in (("default", lambda r: JUNK_PRIOR), ("flat_measured", lambda r: flat),
                        ("calibrated", lambda r: junk_prior_from_scores(r["scores"], *calibration))):
        calls = [assign_karyotype(r["log_probs"], r["lengths"], r["ci"], polarity_confidence=r["pc"],
                                  junk_prior=prior(r)).karyotype for r in whole]
        out[name] = {"exact": sum(c == r["karyotype"] for c, r in zip(calls, whole)),
                     "gains_called": sum(c.count("+") for c in calls)}
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe calibrate-junk", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="annotated frames with classes (karyopipe label-bioimlab)")
    p.add_argument("--seg-weights", default=None, help="segmentation weights (default: the shipped ones)")
    p.add_argument("--cls-weights", default=None, help="classifier for the exact-karyotype report (default: shipped)")
    p.add_argument("--score-thresh", type=float, default=None,
                   help="keep detections from this score (default: the weights' own inference threshold); "
                        "stored with the calibration, the pipeline then keeps them too")
    p.add_argument("--write", action="store_true", help="store the calibration in the segmentation weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    return p


def calibration_pipeline(seg_weights, cls_weights=None, device: str = "cpu", score_thresh: float | None = None):
    """``(pipeline, score_thresh)``: the pipeline whose segment() gives every detection from ``score_thresh``.

    ``score_thresh`` defaults to the weights' own inference threshold. A floor set by an
    earlier calibration of the same weights does not apply, and nor does the second look
    before a loss, which comes after the calibration.
    """
    from karyopipe.pipeline import KaryoPipeline

    pipe = KaryoPipeline.from_pretrained(seg_weights=seg_weights, cls_weights=cls_weights, device=device, rescue=False)
    if score_thresh is None:
        score_thresh = float(pipe.segmenter.config.get("inference", {}).get("score_thresh",
                                                                           pipe.segmenter.settings.score_thresh))
    pipe.segmenter.configure(score_thresh=score_thresh)
    pipe.rescue_below = None
    return pipe, score_thresh


def main(argv: list[str] | None = None) -> int:
    from karyopipe.data import read_dataset
    from karyopipe.pipeline.evaluate import select_cells
    from karyopipe.weights import SEGMENTATION_WEIGHTS, update_weights, weights_path

    args = build_parser().parse_args(argv)
    seg_path = weights_path(args.seg_weights, SEGMENTATION_WEIGHTS)
    if not seg_path.is_file():
        raise FileNotFoundError(f"{seg_path}: segmentation weights not found (the junk calibration belongs to them)")
    samples, note = select_cells(read_dataset(args.data), "train", seg_weights=seg_path)
    if not samples:
        raise ValueError(f"{args.data}: no frames of the cells {seg_path} trained on")
    pipe, score_thresh = calibration_pipeline(seg_path, args.cls_weights, args.device, args.score_thresh)
    rows = frame_objects(pipe, samples, progress=not args.no_progress)
    scores = np.concatenate([r["scores"] for r in rows])
    junk = ~np.concatenate([r["matched"] for r in rows])
    ok = np.isfinite(scores)
    calibration = fit_junk_calibration(scores[ok], junk[ok])
    flat = float(junk.mean())
    print(f"{len(rows)} frames ({note}), detections from score {score_thresh}: {len(scores)} objects, "
          f"{int(junk.sum())} match no true polygon at IoU 0.5 (junk rate {flat:.4f})")
    for lo, hi in zip(SCORE_BINS[:-1], SCORE_BINS[1:]):
        b = ok & (scores >= lo) & (scores < hi)
        if b.any():
            print(f"  score [{lo:.2f}, {min(hi, 1):.2f}): {int(b.sum()):5d} objects, junk {junk[b].mean():.3f}")
    print(f"fit: P(junk) = sigmoid({calibration[0]:.3f} + {calibration[1]:.3f} * logit(score))")
    rates = exact_rates(rows, calibration, flat)
    print(f"exact karyotype on the {rates['frames']} whole training frames: "
          + ", ".join(f"{k} prior {v['exact']} ({v['gains_called']} gains called)"
                      for k, v in rates.items() if k != "frames"))
    if args.write:
        record = {"intercept": round(calibration[0], 4), "slope": round(calibration[1], 4), "score_thresh": score_thresh,
                  "objects": int(len(scores)), "junk_rate": round(flat, 4),
                  "data": f"{args.data}, {len(rows)} frames of the training cells"}
        update_weights(seg_path, {"junk_calibration": record}, {
            "junk_calibration": f"P(junk) = sigmoid({record['intercept']} + {record['slope']} * logit(score)) "
                                f"for detections from score {score_thresh} (the pipeline keeps those), "
                                f"fitted by karyopipe calibrate-junk on {record['objects']} objects of "
                                f"{len(rows)} training frames (junk rate {record['junk_rate']})"})
        print(f"wrote the calibration into {seg_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
