"""Calibrated synthetic classifier outputs, to test and benchmark assignment without a model.

Each class ``k`` has a fixed prototype ``mu_k`` in a small feature space, with
the members of a Denver group (X with the C group, Y with the G group) close
together, so errors fall among look-alikes as they do for real classifiers.
An object of class ``t`` is a point ``x ~ N(mu_t, noise^2 I)`` and its
log-probabilities are the exact Bayes posterior ``log softmax(-|x - mu_k|^2 /
(2 noise^2))``: calibrated by construction. ``noise`` sets the confusion.

These are *synthetic scores*, a stand-in for a classifier; numbers measured
with them say how the assignment behaves, not how well the shipped classifier
does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax

from karyopipe.classes import CHROMOSOMES, NUM_CLASSES, SEX_MORPHOLOGICAL_GROUP, Y

__all__ = ["class_prototypes", "synthetic_log_probs", "SyntheticCell", "synthetic_cell", "karyotype_labels"]


def class_prototypes(dim: int = 16, group_spread: float = 4.0, within_spread: float = 1.0,
                     seed: int = 0) -> np.ndarray:
    """Prototypes ``(24, dim)``: one random centre per Denver group, members spread around it."""
    rng = np.random.default_rng(seed)
    groups = sorted({SEX_MORPHOLOGICAL_GROUP.get(k, CHROMOSOMES[k].group) for k in CHROMOSOMES})
    centre = {g: rng.normal(size=dim) for g in groups}
    protos = np.empty((NUM_CLASSES, dim))
    for k in range(1, NUM_CLASSES + 1):
        g = SEX_MORPHOLOGICAL_GROUP.get(k, CHROMOSOMES[k].group)
        c = centre[g] / np.linalg.norm(centre[g])
        w = rng.normal(size=dim)
        protos[k - 1] = group_spread * c + within_spread * w / np.linalg.norm(w)
    return protos


def synthetic_log_probs(labels, rng: np.random.Generator, noise: float = 0.45,
                        prototypes: np.ndarray | None = None) -> np.ndarray:
    """Calibrated log-probabilities ``(n, 24)`` for objects of the given class numbers."""
    labels = np.asarray(labels, int)
    protos = class_prototypes() if prototypes is None else prototypes
    x = protos[labels - 1] + noise * rng.normal(size=(len(labels), protos.shape[1]))
    d2 = ((x[:, None, :] - protos[None, :, :]) ** 2).sum(-1)
    return log_softmax(-d2 / (2 * noise ** 2), axis=1)


def karyotype_labels(counts: dict[int, int]) -> np.ndarray:
    """Class number of every chromosome of a cell, from per-class counts."""
    return np.array([k for k in range(1, NUM_CLASSES + 1) for _ in range(int(counts.get(k, 0)))], int)


@dataclass
class SyntheticCell:
    """A cell's objects as a classifier and geometry would report them."""

    labels: np.ndarray             # (n,) true class numbers
    log_probs: np.ndarray          # (n, 24)
    lengths: np.ndarray            # (n,) px
    centromere_index: np.ndarray   # (n,)


def synthetic_cell(counts: dict[int, int], rng: np.random.Generator, *, noise: float = 0.45,
                   length_noise: float = 0.07, ci_noise: float = 0.05, outlier_rate: float = 0.1,
                   scale: float | None = None, prototypes: np.ndarray | None = None) -> SyntheticCell:
    """Objects of one cell with synthetic scores, lengths and centromere indices, in random order.

    Lengths are ``scale * relative_length * exp(e)`` and centromere indices
    ``reference + e'``, with Gaussian ``e``, ``e'`` (sd ``length_noise``,
    ``ci_noise``) and, for a fraction ``outlier_rate`` of objects, four times
    wider: the spreads geometry shows on real training cells
    (``docs/scripts/calibrate_karyogram.py``: robust sd 0.065-0.10 and 0.06,
    heavy tails). Y varies twice as much (its heterochromatin is polymorphic).
    """
    labels = karyotype_labels(counts)
    n = len(labels)
    labels = labels[rng.permutation(n)]
    scale = float(rng.uniform(6.0, 14.0)) if scale is None else scale
    rel = np.array([CHROMOSOMES[int(k)].relative_length for k in labels])
    wide = np.where(rng.random(n) < outlier_rate, 4.0, 1.0)
    sd = np.where(labels == Y, 2 * length_noise, length_noise) * wide
    lengths = scale * rel * np.exp(rng.normal(size=n) * sd)
    wide = np.where(rng.random(n) < outlier_rate, 4.0, 1.0)
    ci = np.array([CHROMOSOMES[int(k)].centromere_index for k in labels]) + ci_noise * wide * rng.normal(size=n)
    return SyntheticCell(labels, synthetic_log_probs(labels, rng, noise, prototypes), lengths, np.clip(ci, 0.02, 0.5))
