"""Centromere (primary constriction) from the width and density profiles.

The centromere is where the chromosome is narrowest relative to its arms:

1. the width is divided by the width a rod with half-disc caps would have at
   that point, so the natural taper of the tips is no constriction;
2. a little of the (normalised) density profile is added, since centromeric
   chromatin is often paler;
3. the deepest valley of that score wins, its depth measured below the lower
   of the highest points on its two sides, with the trusted ends of the
   profile standing in for arm-wide tips (an acrocentric's short arm is often
   no wider than its constriction: a shoulder rather than a valley).

Polarity follows: the p-arm is the shorter one, with a confidence that is 0 for
a centromere at mid-length.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

# Weight of the (normalised) density profile against the width profile. The
# centromere is a constriction first; banding valleys must not win on their own.
DENSITY_WEIGHT = 0.1
# Valley depth (in units of median width) that counts as a sure constriction.
SURE_DEPTH = 0.25
# The centromere search skips the tips where a capped rod is narrower than this
# fraction of its arm width: measured widths there are too noisy to divide by.
TRUSTED_TAPER = 0.8
# Treat the trusted ends as arm-wide, so a short arm no wider than its
# constriction (a "shoulder", common in acrocentrics) still scores as a valley.
SHOULDERS = True
# Centromere index band around 0.5 inside which p and q are too alike to orient.
POLARITY_MARGIN = 0.08


@dataclass
class Centromere:
    """Centromere position on an axis that runs from one tip (index 0) to the other.

    Attributes
    ----------
    index : float
        Sub-sample position along the profile (0 .. N-1).
    t : float
        ``index / (N - 1)``: fraction of the length from the first tip.
    confidence : float
        0..1, from the depth of the constriction.
    score : ndarray, shape (N,)
        Combined profile whose deepest valley is the centromere (lower = narrower).
    """

    index: float
    t: float
    confidence: float
    score: np.ndarray


def cap_taper(n: int, arm_width: float) -> np.ndarray:
    """Expected width ``(N,)`` of a rod with semicircular caps, relative to its arms.

    A chromosome tip is roughly a half-disc of the arm's width, so within half a
    width of either tip the width falls as ``sqrt(1 - (1 - u)^2)``.
    """
    s = np.arange(n, dtype=np.float64)
    cap = max(min(0.5 * arm_width, 0.5 * (n - 1)), 1e-6)
    u = np.clip(np.minimum(s, (n - 1) - s) / cap, 0.0, 1.0)
    return np.sqrt(np.clip(1.0 - (1.0 - u) ** 2, 0.0, 1.0))


def _smoothed_width_and_taper(width: np.ndarray, sigma: float) -> tuple[np.ndarray, float, np.ndarray]:
    """Smoothed width, arm width (75th percentile of the central 60%) and cap model, smoothed alike."""
    n = len(width)
    w = ndi.gaussian_filter1d(np.asarray(width, np.float64), sigma, mode="nearest")
    k = n // 5
    core = w[k:n - k] if n - 2 * k >= 3 else w
    arm = max(float(np.percentile(core, 75)) if core.size else 1.0, 1e-6)
    # The model is smoothed like the measurement, or the blur of the caps would
    # itself read as a constriction.
    taper = ndi.gaussian_filter1d(cap_taper(n, arm), sigma, mode="constant")
    return w, arm, taper


def constriction_score(width: np.ndarray, density: np.ndarray,
                       density_weight: float | None = None, *, _taper: tuple | None = None) -> np.ndarray:
    """Combined profile ``(N,)``: tip-compensated relative width plus weighted relative density.

    The width is divided by the width a capped rod of the chromosome's arm
    width would have there, so the natural taper of the tips is no valley and
    a constriction just inside a tip (acrocentrics) stands out. Where the cap
    model predicts under ``TRUSTED_TAPER`` of the arm width the ratio is
    unreliable; :func:`find_centromere` does not search there.
    """
    n = len(width)
    sigma = max(1.0, 0.015 * n)
    w, arm, taper = _taper if _taper is not None else _smoothed_width_and_taper(width, sigma)
    ratio = np.minimum(w / (arm * np.maximum(taper, TRUSTED_TAPER)), 1.0)
    d = ndi.gaussian_filter1d(np.asarray(density, np.float64), sigma, mode="nearest")
    d_ref = float(np.median(d[d > 0])) if (d > 0).any() else 1.0
    if density_weight is None:
        density_weight = DENSITY_WEIGHT
    return ratio + density_weight * d / max(d_ref, 1e-6)


def valley_depth(score: np.ndarray) -> np.ndarray:
    """Depth ``(N,)`` of each sample below the lower of the highest points on its two sides."""
    left = np.maximum.accumulate(score)
    right = np.maximum.accumulate(score[::-1])[::-1]
    return np.minimum(left, right) - score


def find_centromere(width: np.ndarray, density: np.ndarray,
                    density_weight: float | None = None) -> Centromere:
    """Locate the primary constriction on width and density profiles.

    Parameters
    ----------
    width, density : ndarray, shape (N,)
        Profiles sampled at unit arc-length steps from one tip to the other.

    Returns
    -------
    Centromere
        ``t = 0.5`` with confidence 0 when the profile has no valley at all.
    """
    n = len(width)
    if n < 5:
        return Centromere(max(n - 1, 0) / 2.0, 0.5, 0.0, np.zeros(n))
    if density_weight is None:
        density_weight = DENSITY_WEIGHT
    smoothed = _smoothed_width_and_taper(width, max(1.0, 0.015 * n))
    score = constriction_score(width, density, density_weight, _taper=smoothed)
    taper = smoothed[2]
    trusted = np.nonzero(taper >= TRUSTED_TAPER)[0]
    lo, hi = (int(trusted[0]), int(trusted[-1]) + 1) if len(trusted) >= 3 else (0, n)
    depth = np.zeros(n)
    if SHOULDERS:
        # The trusted ends stand in for arm-wide tips: an acrocentric's short arm
        # is often no wider than its centromere, a shoulder rather than a valley.
        level = float(np.percentile(score[lo:hi], 75))
        depth[lo:hi] = valley_depth(np.concatenate([[level], score[lo:hi], [level]]))[1:-1]
    else:
        depth[lo:hi] = valley_depth(score[lo:hi])
    # Within a valley, prefer its deepest point; among valleys, the deepest one.
    # A mild pull towards the middle breaks ties between equal valleys without
    # biasing a clear acrocentric constriction.
    pos = np.arange(n) / (n - 1)
    objective = depth - 0.02 * np.abs(pos - 0.5)
    i = int(np.argmax(objective))
    if depth[i] <= 1e-6:
        return Centromere((n - 1) / 2.0, 0.5, 0.0, score)
    # The centre of the constriction: depth-weighted mean position over the
    # valley floor (depth above half its maximum). For a symmetric pinch this is
    # its deepest point; for a shoulder it moves in from the taper towards the
    # point where the width climbs back to the arms.
    floor = depth >= 0.5 * depth[i]
    a = i
    while a - 1 >= lo and floor[a - 1]:
        a -= 1
    b = i
    while b + 1 < hi and floor[b + 1]:
        b += 1
    weights = depth[a:b + 1]
    index = float((weights * np.arange(a, b + 1)).sum() / weights.sum())
    confidence = float(np.clip(depth[i] / SURE_DEPTH, 0.0, 1.0))
    return Centromere(index, index / (n - 1), confidence, score)


def polarity_confidence(t: float, centromere_confidence: float) -> float:
    """How sure the p-arm is the shorter one: 0 at CI = 0.5, rising to 1 by ``POLARITY_MARGIN``."""
    return float(np.clip(abs(t - 0.5) / POLARITY_MARGIN, 0.0, 1.0) * centromere_confidence)
