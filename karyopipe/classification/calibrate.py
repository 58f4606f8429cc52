"""Temperature scaling: make the classifier's probabilities mean what they say.

The karyogram assignment weighs classifier log-probabilities against priors
in nats (a trisomy 18 against an XXY complement, a lost chromosome against
a junk object). Training with label smoothing caps the top probability near
``1 - smoothing``, so the raw scores understate the evidence and the priors
win too often. One scalar temperature ``T``, fitted by minimising the
negative log-likelihood on held-out *validation* cells (Guo et al., "On
Calibration of Modern Neural Networks", ICML 2017), fixes the scale without
changing any argmax. :class:`~karyopipe.classification.Classifier` divides
its logits by ``config["temperature"]``.

``karyopipe calibrate-cls DATA [DATA ...] --weights W [--out W2]`` fits it on
the validation split stored with the weights and writes it into the file.

Examples
--------
>>> import numpy as np
>>> from karyopipe.classification.calibrate import fit_temperature
>>> rng = np.random.default_rng(0)
>>> labels = rng.integers(0, 24, 2000)
>>> logits = rng.normal(0, 1, (2000, 24))
>>> logits[np.arange(2000), labels] += 3.0
>>> t = fit_temperature(logits, labels)
>>> t_quarter = fit_temperature(logits / 4.0, labels)   # the same logits, four times less confident
>>> bool(abs(4.0 * t_quarter - t) < 0.01)
True
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

__all__ = ["fit_temperature", "nll", "expected_calibration_error", "calibrate_classifier", "calibrate_weights", "main"]


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` (n,) under ``softmax(logits / T)`` for logits (n, C)."""
    lp = log_softmax(np.asarray(logits, np.float64) / temperature, axis=1)
    return float(-lp[np.arange(len(labels)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature ``T`` minimising the NLL of ``softmax(logits / T)``.

    Parameters
    ----------
    logits : ndarray, shape (n, C)
        Logits or log-probabilities (a row constant does not change the softmax).
    labels : ndarray, shape (n,)
        Class index per row, 0-based.
    bounds : (float, float)
        Search interval for ``T``.

    Returns
    -------
    float
        ``T < 1`` sharpens an under-confident model, ``T > 1`` softens an over-confident one.
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("no samples to calibrate on")
    res = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))),
                          bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded")
    return float(np.exp(res.x))


def expected_calibration_error(log_probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-1 confidence: the mean |accuracy - confidence| over equal-width bins, weighted by count."""
    probs = np.exp(np.asarray(log_probs, np.float64))
    conf, pred = probs.max(1), probs.argmax(1)
    right = pred == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(right[m].mean() - conf[m].mean())
    return float(ece)


def calibration_report(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """NLL and ECE before (``T = 1``) and after scaling, for a model card."""
    logits = np.asarray(logits, np.float64)
    after = log_softmax(logits / temperature, axis=1)
    return {"temperature": round(float(temperature), 4), "n": int(len(labels)),
            "nll_before": round(nll(logits, labels), 4), "nll_after": round(nll(logits, labels, temperature), 4),
            "ece_before": round(expected_calibration_error(log_softmax(logits, axis=1), labels), 4),
            "ece_after": round(expected_calibration_error(after, labels), 4)}


def calibrate_classifier(classifier, images: np.ndarray, features: np.ndarray, labels: np.ndarray) -> dict:
    """Fit ``classifier``'s temperature on preprocessed arrays and set it in its config.

    Parameters
    ----------
    classifier : Classifier
    images : ndarray, shape (n, L, W)
    features : ndarray, shape (n, F)
    labels : ndarray, shape (n,)
        Class numbers 1..24.

    Returns
    -------
    dict
        :func:`calibration_report` (the fit starts from the raw logits, not a previous temperature).
    """
    classifier.config["temperature"] = 1.0
    raw = classifier.predict_arrays(images, features)
    temperature = fit_temperature(raw, np.asarray(labels) - 1)
    classifier.config["temperature"] = temperature
    return calibration_report(raw, np.asarray(labels) - 1, temperature)


def calibrate_weights(weights, data, out=None, split: str = "val") -> dict:
    """Fit the temperature of a weights file on one split of crop folders and store it in the file.

    Parameters
    ----------
    weights : str or Path
        Classifier weights; its stored split seed and fractions pick the cells.
    data : list of str or Path
        Crop folders (or annotated spreads) the model was trained with.
    out : str or Path, optional
        Where to write the calibrated weights (default: overwrite ``weights``).
    split : str
        ``"val"``: cells held out from training but not the test cells.

    Returns
    -------
    dict
        :func:`calibration_report` plus the data and split used.
    """
    from karyopipe.classification.classifier import Classifier, ClassifierEnsemble
    from karyopipe.classification.dataset import concat_arrays
    from karyopipe.classification.evaluate import load_eval_arrays

    clf = Classifier.from_pretrained(weights)
    if isinstance(clf, ClassifierEnsemble):
        raise ValueError(f"{weights}: an ensemble; calibrate each member's weights before joining them")
    seed = int(clf.config.get("split_seed", 0))
    arrays = concat_arrays([load_eval_arrays(root, clf, split, seed) for root in data])
    report = calibrate_classifier(clf, arrays.images, arrays.features, arrays.labels)
    report.update(split=split, data=[str(d) for d in data])
    card = dict(clf.meta)
    card["calibration"] = (f"temperature {report['temperature']:.3f} fitted by NLL on the {split} cells of "
                           f"{', '.join(str(d) for d in data)} ({report['n']} crops): NLL {report['nll_before']} -> "
                           f"{report['nll_after']}, ECE {report['ece_before']} -> {report['ece_after']}")
    clf.save(out or weights, card)
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe calibrate-cls", description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="+", help="crop folder(s) the model was trained with")
    p.add_argument("--weights", required=True, help="classifier weights to calibrate")
    p.add_argument("--out", default=None, help="write here instead of overwriting --weights")
    p.add_argument("--split", choices=["val", "train", "all"], default="val",
                   help="cells to fit on (default val; never the test cells)")
    p.add_argument("--json", default=None, help="also write the report here")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    for root in args.data:
        if not Path(root).exists():
            print(f"karyopipe calibrate-cls: {root}: no such file or folder", file=sys.stderr)
            return 2
    report = calibrate_weights(args.weights, args.data, args.out, args.split)
    print(f"temperature {report['temperature']:.3f} on {report['n']} {args.split} crops: "
          f"NLL {report['nll_before']:.4f} -> {report['nll_after']:.4f}, "
          f"ECE {report['ece_before']:.4f} -> {report['ece_after']:.4f}; wrote {args.out or args.weights}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
