"""Intervals over cells (karyopipe.stats)."""
from __future__ import annotations

import numpy as np
import pytest

from karyopipe.stats import format_interval, per_cell_sums, product_interval, rate_interval


def test_per_cell_sums_adds_each_cells_units():
    right, total = per_cell_sums(([1, 0, 1, 1], [1, 1, 1, 1]), ["b", "a", "b", "a"])
    assert right.tolist() == [1, 2] and total.tolist() == [2, 2]  # cells in sorted order: a, b
    with pytest.raises(ValueError, match="3 values for 4"):
        per_cell_sums(([1, 0, 1],), ["a", "a", "b", "b"])


def test_errors_in_one_cell_make_a_wider_interval_than_errors_spread_over_all():
    # 10 cells of 10 chromosomes, 90 % right either way. Resampling cells is why: one bad cell says less
    # about the next cell than one error in every cell does.
    cells = np.repeat([f"c{i}" for i in range(10)], 10)
    spread = np.ones(100)
    spread[::10] = 0
    clustered = np.ones(100)
    clustered[:10] = 0
    lo_s, hi_s = rate_interval(spread, np.ones(100), cells)
    lo_c, hi_c = rate_interval(clustered, np.ones(100), cells)
    assert lo_s == hi_s == 0.9
    assert lo_c < 0.9 <= hi_c and hi_c - lo_c > 0.1
    # The same figure each time it is printed.
    assert rate_interval(clustered, np.ones(100), cells) == (lo_c, hi_c)


def test_rate_and_product_intervals_hold_their_figure():
    rng = np.random.default_rng(1)
    cells = np.repeat(np.arange(12), 46)
    right = (rng.random(len(cells)) < 0.95).astype(float)
    lo, hi = rate_interval(right, np.ones(len(cells)), cells)
    assert lo <= right.mean() <= hi < 1.0
    found = (rng.random(len(cells)) < 0.98).astype(float)
    lo, hi = product_interval(found, np.ones(len(cells)), right * found, found, cells)
    figure = found.mean() * (right * found).sum() / found.sum()
    assert lo <= figure <= hi
    # One cell: nothing to resample.
    assert rate_interval([1, 0], [1, 1], ["a", "a"]) is None
    assert format_interval(None) == "" and format_interval((0.9, 0.95)) == " [95% by cell 0.900-0.950]"
