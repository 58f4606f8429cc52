"""Splits by cell, never by image.

Every image and crop of one cell goes to the same side: homologs and repeated
views of a metaphase would otherwise leak between train and test. A cell's
side depends only on its id and the seed (a hash), so

* adding or removing cells never moves the others,
* the same cell lands on the same side in every dataset that shares its ids
  (BioImLab ``crops/12`` and ``metaphases/original_12a.json`` are both cell ``12``).

The price is that split sizes follow the fractions only on average (binomially):
80 cells at 0.2 give about 16 +- 4 validation cells.

Examples
--------
>>> from karyopipe.data.split import split_by_cell
>>> train, val = split_by_cell([str(k) for k in range(100)], val_fraction=0.2)
>>> len(train) + len(val), set(train) & set(val)
(100, set())
"""
from __future__ import annotations

import hashlib
from typing import Sequence

from karyopipe.data.model import Dataset, Sample


def cell_unit(cell_id: str, seed: int = 0) -> float:
    """Deterministic number in ``[0, 1)`` for a cell id and seed (SHA-1 based)."""
    digest = hashlib.sha1(f"{seed}:{cell_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_cells(cell_ids, fractions: Sequence[float] = (0.8, 0.2), seed: int = 0) -> dict[str, int]:
    """Map each cell id to a split index ``0..len(fractions)-1``."""
    fractions = [float(f) for f in fractions]
    if not fractions or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be non-negative and sum above 0, got {fractions}")
    total = sum(fractions)
    edges, acc = [], 0.0
    for f in fractions[:-1]:
        acc += f / total
        edges.append(acc)
    out = {}
    for cell in cell_ids:
        u = cell_unit(str(cell), seed)
        out[str(cell)] = next((i for i, edge in enumerate(edges) if u < edge), len(fractions) - 1)
    return out


def split_by_cell(data, fractions: Sequence[float] | None = None, seed: int = 0, *, val_fraction: float | None = None):
    """Split a dataset, samples or cell ids into parts that share no cell.

    Parameters
    ----------
    data : Dataset, list of Sample, or list of str
        What to split. Samples are grouped by ``sample.cell_id``.
    fractions : sequence of float, optional
        Relative sizes of the parts, e.g. ``(0.8, 0.2)`` or ``(0.7, 0.15, 0.15)``.
        Default ``(0.8, 0.2)``.
    seed : int
        Changes the assignment; the same seed always gives the same split.
    val_fraction : float, optional
        Shorthand for ``fractions=(1 - val_fraction, val_fraction)``.

    Returns
    -------
    tuple
        One part per fraction, of the input's type: :class:`Dataset`
        (same root/format/kind; ``problems`` stay with the first part),
        list of :class:`Sample`, or sorted list of cell ids.
    """
    if val_fraction is not None:
        if fractions is not None:
            raise ValueError("give fractions or val_fraction, not both")
        if not 0.0 <= val_fraction <= 1.0:
            raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
        fractions = (1.0 - val_fraction, val_fraction)
    fractions = tuple(fractions or (0.8, 0.2))
    if isinstance(data, Dataset):
        parts = _split_samples(data.samples, fractions, seed)
        return tuple(
            Dataset(root=data.root, format=data.format, kind=data.kind, samples=part,
                    problems=list(data.problems) if i == 0 else [])
            for i, part in enumerate(parts)
        )
    items = list(data)
    if items and all(isinstance(s, Sample) for s in items):
        return tuple(_split_samples(items, fractions, seed))
    cells = sorted({str(c) for c in items})
    side = assign_cells(cells, fractions, seed)
    return tuple([c for c in cells if side[c] == i] for i in range(len(fractions)))


def _split_samples(samples: list[Sample], fractions, seed: int) -> list[list[Sample]]:
    side = assign_cells({s.cell_id for s in samples}, fractions, seed)
    parts: list[list[Sample]] = [[] for _ in fractions]
    for sample in samples:
        parts[side[str(sample.cell_id)]].append(sample)
    return parts
