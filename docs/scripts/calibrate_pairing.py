"""Fit the homolog-pairing evidence (:data:`karyopipe.karyogram.pairing.PAIR_LOG_ODDS`) on REAL
labelled crops of training cells.

For every pair of chromosomes of one cell that share a Denver group, the
within-cell standardised banding similarity ``s``
(:func:`karyopipe.karyogram.pairing.standardized_similarity`) and whether the two are homologs.
A logistic fit of homolog-or-not on ``clip(s, low, high)``, each source and each
outcome weighted equally, is then directly the log-likelihood ratio. Prints the
coefficients, the AUC per source and a binned empirical ratio to check the line
against. Only the classifier's *train* cells are used (split by cell).

    .venv/bin/python docs/scripts/calibrate_pairing.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def within_group_pairs(arrays) -> tuple[np.ndarray, np.ndarray]:
    """Standardised similarity and homolog flag of every same-group pair of every cell."""
    from karyopipe.classes import denver_group
    from karyopipe.karyogram.pairing import banding_profiles, standardized_similarity

    sims, same = [], []
    for cell in arrays.unique_cells:
        idx = np.flatnonzero(arrays.cells == cell)
        s = standardized_similarity(banding_profiles(arrays.images[idx]))
        labels = arrays.labels[idx]
        groups = np.array([denver_group(int(k)) for k in labels])
        upper = np.triu_indices(len(idx), 1)
        keep = (groups[:, None] == groups[None, :])[upper]
        sims.append(s[upper][keep])
        same.append((labels[:, None] == labels[None, :])[upper][keep])
    return np.concatenate(sims), np.concatenate(same)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("KARYOPIPE_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--clip", type=float, nargs=2, default=(0.0, 3.5), metavar=("LOW", "HIGH"))
    args = parser.parse_args(argv)

    from scipy.optimize import minimize
    from scipy.stats import mannwhitneyu

    from karyopipe.classification.dataset import build_arrays, split_arrays

    xs, ys, ws = [], [], []
    for root in (args.data / "bioimlab" / "crops", args.data / "gband612"):
        train = split_arrays(build_arrays(root, size=(64, 32), mode="geometry", progress=False))["train"]
        s, same = within_group_pairs(train)
        auc = mannwhitneyu(s[same], s[~same]).statistic / (same.sum() * (~same).sum())
        print(f"{root}: {len(train.unique_cells)} train cells, {same.sum()} homolog / {(~same).sum()} other "
              f"same-group pairs, AUC {auc:.3f}")
        edges = np.arange(-1.0, 4.01, 0.5)
        hs, _ = np.histogram(s[same], edges)
        hd, _ = np.histogram(s[~same], edges)
        ratio = np.log((hs + 1) / (hs.sum() + len(hs))) - np.log((hd + 1) / (hd.sum() + len(hd)))
        print("  s from:  " + " ".join(f"{e:+5.1f}" for e in edges[:-1]))
        print("  log LR:  " + " ".join(f"{v:+5.2f}" for v in ratio))
        xs.append(s)
        ys.append(same.astype(float))
        ws.append(np.where(same, 0.5 / same.sum(), 0.5 / (~same).sum()))
    x, y, w = (np.concatenate(v) for v in (xs, ys, ws))
    x = np.clip(x, *args.clip)

    def loss(p):
        t = p[0] + p[1] * x
        return float(np.sum(w * (np.logaddexp(0.0, t) - y * t)))

    intercept, slope = minimize(loss, [0.0, 1.0]).x
    print(f"PAIR_LOG_ODDS = ({intercept:.3f}, {slope:.3f}, {args.clip[0]}, {args.clip[1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
