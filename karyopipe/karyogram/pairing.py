"""Homologs look alike: banding-profile similarity as evidence for pairing.

A cytogeneticist pairs homologs by matching their bands, not only by naming
each chromosome alone. The classifier scores every chromosome against all
the cells it was trained on; two homologs of one cell also share that cell's
condensation, staining and preparation, so how alike two chromosomes of the
cell are says something the single-chromosome scores do not.

The evidence is a log-likelihood ratio per pair of objects,
``log p(similarity | homologs) / p(similarity | same-group non-homologs)``,
where the similarity is the correlation of the two banding profiles (the
better of the two relative orientations, so a p-arm put down does not hide a
match), Fisher-transformed and standardised within the cell (median and MAD
over all its pairs) so that smooth Q-band and sharp G-band profiles read on
one scale. The ratio is linear in the standardised similarity, clipped;
:data:`PAIR_LOG_ODDS` holds its coefficients, fitted on the training cells
of both real crop sets by ``docs/scripts/calibrate_pairing.py``.

:func:`refine_homologs` uses it after the karyotype-level assignment: it
swaps the classes of two objects when the pairing evidence outweighs what
the swap costs in classifier and morphology terms. A swap keeps every
class's count, so it never changes the karyotype string, only which object
sits in which pair.

It is opt-in (``assign_karyotype(pair_log_odds=...)``, ``KaryoPipeline(pairing=True)``,
``--pairing``): on clean val crops it gained 2 crops of 4048, but under the
imitated lab shifts it lost more than it mended (BENCHMARKS.md, Classification,
"Homologs look alike").

Examples
--------
>>> import numpy as np
>>> from karyopipe.karyogram.pairing import banding_profiles, homolog_log_odds
>>> rng = np.random.default_rng(0)
>>> bands = rng.random((3, 64))
>>> images = np.zeros((6, 64, 32), np.float32)
>>> for i in range(6):  # objects 2k and 2k+1 share banding pattern k
...     images[i, :, 12:20] = (bands[i // 2] + 0.05 * rng.random(64))[:, None] + 0.1
>>> odds = homolog_log_odds(banding_profiles(images))
>>> bool(odds[0, 1] > odds[0, 2]), bool(odds[4, 5] > odds[4, 3])
(True, True)
"""
from __future__ import annotations

import numpy as np

#: ``(intercept, slope, low, high)``: log-odds = intercept + slope * clip(s, low, high) for the
#: within-cell standardised similarity ``s``. Fitted by ``docs/scripts/calibrate_pairing.py`` on the
#: train cells of BioImLab and gband612 (each source and each outcome weighted equally; Denver
#: groups with X and Y apart). AUC of homologs against other same-group pairs: 0.833 (Q), 0.857 (G).
PAIR_LOG_ODDS = (-1.664, 1.461, 0.0, 3.5)


def banding_profiles(images: np.ndarray) -> np.ndarray:
    """Unit-norm, zero-mean banding profiles ``(n, L)`` of straightened chromosomes ``(n, L, W)``.

    Row ``i`` of each image is the mean of its chromosome pixels (non-zero;
    the background of the classifier's inputs is 0) across the width.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (n, L, W), got {images.shape}")
    inside = images > 0
    rows = (images * inside).sum(2) / np.maximum(inside.sum(2), 1)
    rows = rows - rows.mean(1, keepdims=True)
    return rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-9)


def standardized_similarity(profiles: np.ndarray) -> np.ndarray:
    """``(n, n)`` within-cell standardised similarity of banding profiles; diagonal 0.

    Correlation at the better of the two relative orientations, Fisher
    transformed, then centred on the median and scaled by the MAD of all
    off-diagonal pairs of the cell.
    """
    profiles = np.asarray(profiles, np.float64)
    n = len(profiles)
    if n < 3:
        return np.zeros((n, n))
    r = np.maximum(profiles @ profiles.T, profiles @ profiles[:, ::-1].T)
    z = np.arctanh(np.clip(r, -0.99, 0.99))
    off = z[np.triu_indices(n, 1)]
    centre = np.median(off)
    spread = 1.4826 * np.median(np.abs(off - centre))
    s = (z - centre) / max(spread, 1e-6)
    np.fill_diagonal(s, 0.0)
    return s


def homolog_log_odds(profiles: np.ndarray, coefficients=PAIR_LOG_ODDS) -> np.ndarray:
    """``(n, n)`` log-likelihood ratio that objects ``i`` and ``j`` are homologs, from their profiles.

    Parameters
    ----------
    profiles : ndarray, shape (n, L)
        :func:`banding_profiles` of one cell's objects.
    coefficients : tuple
        ``(intercept, slope, low, high)``, default :data:`PAIR_LOG_ODDS`.

    Returns
    -------
    log_odds : ndarray, shape (n, n), symmetric, diagonal 0
    """
    intercept, slope, low, high = coefficients
    odds = intercept + slope * np.clip(standardized_similarity(profiles), low, high)
    np.fill_diagonal(odds, 0.0)
    return odds


def refine_homologs(obj_cost: np.ndarray, labels: np.ndarray, log_odds: np.ndarray, *, weight: float = 1.0,
                    max_swaps: int = 46) -> tuple[np.ndarray, dict[int, float]]:
    """Swap the classes of object pairs while pairing evidence outweighs the swap's cost.

    Minimises ``sum_i obj_cost[i, label_i] - weight * sum over same-class pairs of log_odds``
    by steepest descent over two-object swaps, starting from ``labels`` (the
    best assignment without pairing). Unassigned objects (label 0) stay out.

    Parameters
    ----------
    obj_cost : ndarray, shape (n, 24)
        Cost (nats) of each object in each class.
    labels : ndarray, shape (n,), int
        Class numbers 1..24, 0 = unassigned.
    log_odds : ndarray, shape (n, n)
        :func:`homolog_log_odds`.
    weight : float
        Weight of the pairing evidence (1 = a log-likelihood ratio taken at face value).
    max_swaps : int
        Stop after this many swaps (each lowers the objective, so it ends anyway).

    Returns
    -------
    labels : ndarray, shape (n,), int
    gains : dict of int to float
        Objects that moved, with how much the objective fell (nats) at their swap.
    """
    labels = np.asarray(labels, int).copy()
    obj_cost = np.asarray(obj_cost, float)
    gains: dict[int, float] = {}
    assigned = np.flatnonzero(labels > 0)
    if weight <= 0 or len(assigned) < 4:
        return labels, gains
    odds = np.asarray(log_odds, float)[np.ix_(assigned, assigned)]
    cost = obj_cost[assigned]
    for _ in range(max_swaps):
        cls = labels[assigned] - 1
        # cost_in[a, b]: object a in b's class. Swapping a and b costs, in the per-object terms,
        own = cost[np.arange(len(assigned)), cls]
        cost_in = cost[:, cls]
        linear = cost_in + cost_in.T - own[:, None] - own[None, :]
        # and gains in pairing: a leaves its mates for b's (less b itself), and b the other way round.
        with_class = odds @ np.eye(obj_cost.shape[1])[cls]  # [a, k]: a's log-odds summed over class k
        mates_now = with_class[np.arange(len(assigned)), cls]
        mates_new = with_class[:, cls] - odds
        pairing = mates_new + mates_new.T - mates_now[:, None] - mates_now[None, :]
        gain = weight * pairing - linear
        gain[cls[:, None] == cls[None, :]] = -np.inf
        a, b = np.unravel_index(np.argmax(gain), gain.shape)
        if not gain[a, b] > 1e-9:
            break
        i, j = assigned[a], assigned[b]
        labels[i], labels[j] = labels[j], labels[i]
        gains[int(i)] = gains[int(j)] = float(gain[a, b])
    return labels, gains
