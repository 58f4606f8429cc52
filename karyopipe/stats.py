"""How sure an evaluation figure is: intervals from resampling whole cells.

The chromosomes of one cell share its staining, its spread and its
segmentation, and the frames of one cell share its chromosomes, so neither
are independent draws: a figure generalises over cells. The evaluation
commands (``eval-seg``, ``eval-cls``, ``eval-e2e``) therefore report a 95 %
percentile-bootstrap interval over cells beside each headline rate
(:func:`scipy.stats.bootstrap`, 2000 resamples, fixed seed). With a dozen
cells these intervals are wide; that is the point of printing them.

Examples
--------
>>> import numpy as np
>>> correct = np.array([1, 1, 0, 1, 1, 1, 1, 0])
>>> cells = np.array(["a", "a", "b", "b", "c", "c", "d", "d"])
>>> lo, hi = rate_interval(correct, np.ones(8), cells)
>>> bool(lo <= correct.mean() <= hi)
True
"""
from __future__ import annotations

import numpy as np

#: Resamples and seed of every interval, so that a figure prints the same each time.
N_RESAMPLES = 2000
SEED = 0


def per_cell_sums(columns, cells) -> tuple[np.ndarray, ...]:
    """Sum each per-unit column within each cell.

    Parameters
    ----------
    columns : sequence of array_like, each shape (N,)
    cells : array_like, shape (N,)
        The cell each unit (chromosome, frame) belongs to.

    Returns
    -------
    tuple of ndarray, each shape (C,), cells in sorted order
    """
    cells = np.asarray(cells).astype(str)
    names, index = np.unique(cells, return_inverse=True)
    sums = []
    for column in columns:
        column = np.asarray(column, dtype=float).reshape(-1)
        if column.shape != cells.shape:
            raise ValueError(f"a column of {column.shape[0]} values for {cells.shape[0]} cells' units")
        sums.append(np.bincount(index, weights=column, minlength=len(names)))
    return tuple(sums)


def cell_interval(statistic, columns, cells, confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of ``statistic`` with whole cells resampled.

    Parameters
    ----------
    statistic : callable
        ``statistic(*sums, axis=-1)`` of per-cell sums (:func:`per_cell_sums`),
        vectorised over ``axis`` as :func:`scipy.stats.bootstrap` expects.
    columns : sequence of array_like, each shape (N,)
    cells : array_like, shape (N,)
    confidence : float

    Returns
    -------
    (low, high), or None with fewer than two cells (nothing to resample).
    """
    from scipy.stats import bootstrap

    sums = per_cell_sums(columns, cells)
    if len(sums[0]) < 2:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        result = bootstrap(sums, statistic, paired=True, vectorized=True, method="percentile",
                           confidence_level=confidence, n_resamples=N_RESAMPLES, random_state=SEED)
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return round(float(low), 4), round(float(high), 4)


def _ratio(successes, totals, axis=-1):
    return np.sum(successes, axis=axis) / np.sum(totals, axis=axis)


def rate_interval(successes, totals, cells, confidence: float = 0.95) -> tuple[float, float] | None:
    """Interval of ``sum(successes) / sum(totals)`` with whole cells resampled.

    ``successes`` and ``totals`` are per unit: for a per-chromosome accuracy,
    1/0 and 1; for a per-frame rate, the frame's counts.
    """
    return cell_interval(_ratio, (successes, totals), cells, confidence)


def _product_of_ratios(a, b, c, d, axis=-1):
    return _ratio(a, b, axis) * _ratio(c, d, axis)


def product_interval(numerator_1, denominator_1, numerator_2, denominator_2, cells,
                     confidence: float = 0.95) -> tuple[float, float] | None:
    """Interval of ``(sum(n1) / sum(d1)) * (sum(n2) / sum(d2))`` with whole cells resampled.

    For a figure that is the product of two rates of the same cells, such as
    detection recall times the accuracy of the detected chromosomes.
    """
    return cell_interval(_product_of_ratios, (numerator_1, denominator_1, numerator_2, denominator_2), cells,
                         confidence)


def format_interval(interval) -> str:
    """`` [95% by cell lo-hi]`` to follow a printed figure, or ``""`` without an interval."""
    return f" [95% by cell {interval[0]:.3f}-{interval[1]:.3f}]" if interval else ""
