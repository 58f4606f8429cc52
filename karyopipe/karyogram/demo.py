"""Synthetic example karyograms for the documentation (``docs/karyogram_*.png``).

Every chromosome is rendered by :func:`karyopipe.synth.render_chromosome`,
measured and straightened by :func:`karyopipe.geometry.analyze_chromosome`
(as the pipeline does), scored by the *synthetic* scorer of
:mod:`karyopipe.karyogram.simulate`, assigned and drawn. No real data.

    python -m karyopipe.karyogram.demo docs/
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from karyopipe.karyogram.assign import KaryotypeCall, assign_karyotype
from karyopipe.karyogram.draw import draw_karyogram, save_karyogram
from karyopipe.karyogram.iscn import parse_karyotype
from karyopipe.karyogram.simulate import karyotype_labels, synthetic_log_probs

__all__ = ["synthetic_karyogram", "main"]

EXAMPLES = (("46,XY", "g", 0), ("47,XX,+21", "g", 1), ("45,X", "q", 2), ("69,XXY", "g", 3))


def synthetic_karyogram(karyotype: str, seed: int = 0, banding: str = "g", noise: float = 0.35
                        ) -> tuple[np.ndarray, KaryotypeCall, np.ndarray]:
    """Render, straighten, score, assign and draw one synthetic cell.

    Returns
    -------
    picture : ndarray, shape (H, W, 3), uint8
    call : KaryotypeCall
    truth : ndarray, shape (n,), int
        True class number of each object.
    """
    from karyopipe.geometry import analyze_chromosome
    from karyopipe.io import normalize_polarity
    from karyopipe.synth import render_chromosome
    from karyopipe.synth.ideogram import relative_lengths

    rng = np.random.default_rng(seed)
    labels = karyotype_labels(parse_karyotype(karyotype))
    labels = labels[rng.permutation(len(labels))]
    rel = relative_lengths()
    chr1 = rng.uniform(100.0, 130.0)
    width = chr1 * 0.1
    geoms = []
    for k in labels:
        syn = render_chromosome(int(k), rng, banding=banding, length_px=chr1 * rel[int(k)] * np.exp(rng.normal(0, 0.05)),
                                width_px=width, bend="gentle")
        gray, _ = normalize_polarity(syn.image, syn.polarity)
        geoms.append(analyze_chromosome(syn.mask, gray * syn.mask))
    call = assign_karyotype(
        synthetic_log_probs(labels, rng, noise),
        np.array([max(g.length_px, 1.0) for g in geoms]),
        np.array([g.centromere_index for g in geoms]),
        polarity_confidence=np.array([g.polarity_confidence for g in geoms]),
    )
    title = f"{call.karyotype}   (synthetic cell, {banding.upper()}-band; synthetic classifier scores)"
    picture = draw_karyogram([g.straightened for g in geoms], call,
                             centromere_t=np.array([g.centromere_t for g in geoms]), banding=banding, title=title)
    return picture, call, labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m karyopipe.karyogram.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for karyogram_<karyotype>.png")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for karyotype, banding, seed in EXAMPLES:
        picture, call, truth = synthetic_karyogram(karyotype, seed, banding)
        name = karyotype.replace(",", "_").replace("+", "plus")
        path = args.out / f"karyogram_{name}.png"
        save_karyogram(path, picture)
        print(f"{path}: truth {karyotype}, called {call.karyotype}, "
              f"{np.mean(call.labels == truth):.3f} of chromosomes right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
