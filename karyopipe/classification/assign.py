"""Karyotype-level assignment of one cell: each chromosome gets a slot of the diploid set.

A plain Hungarian assignment (:func:`scipy.optimize.linear_sum_assignment`) on
``-log p``: two slots per autosome, two X slots and one Y slot (so both XX and
XY cells fit). Cells with more chromosomes than slots (extra copies, debris)
get extra slots of every class at a penalty, so nothing is left unassigned.
This is the classifier's own evaluation helper; the full karyogram assigner
lives in :mod:`karyopipe.karyogram` and is preferred where it exists.
"""
from __future__ import annotations

import numpy as np

from karyopipe.classes import AUTOSOMES, NUM_CLASSES, X, Y


def karyotype_slots(n: int, extra_penalty: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Slot classes (1..24) and the extra cost of each slot for a cell of ``n`` chromosomes."""
    slots = [k for k in AUTOSOMES for _ in range(2)] + [X, X, Y]
    cost = [0.0] * len(slots)
    rounds = 0
    while len(slots) < n:
        rounds += 1
        slots += list(range(1, NUM_CLASSES + 1))
        cost += [extra_penalty * rounds] * NUM_CLASSES
    return np.asarray(slots, dtype=np.int64), np.asarray(cost, dtype=np.float64)


def assign_cell(log_probs: np.ndarray, extra_penalty: float = 5.0) -> np.ndarray:
    """Assign every chromosome of one cell to a class, respecting copy numbers.

    Parameters
    ----------
    log_probs : ndarray, shape (n, 24)
        Log-probabilities of the cell's chromosomes (index = class number - 1).
    extra_penalty : float
        Cost (in nats) of a third copy of a class; grows with each further copy.

    Returns
    -------
    classes : ndarray, shape (n,), int64
        Class numbers 1..24.
    """
    from scipy.optimize import linear_sum_assignment

    log_probs = np.asarray(log_probs, dtype=np.float64)
    if log_probs.ndim != 2 or log_probs.shape[1] != NUM_CLASSES:
        raise ValueError(f"log_probs must have shape (n, {NUM_CLASSES}), got {log_probs.shape}")
    n = log_probs.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    slots, slot_cost = karyotype_slots(n, extra_penalty)
    cost = -log_probs[:, slots - 1] + slot_cost[None, :]
    rows, cols = linear_sum_assignment(cost)
    out = np.zeros(n, dtype=np.int64)
    out[rows] = slots[cols]
    return out
