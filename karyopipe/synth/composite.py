"""Composite spreads from real labelled single-chromosome crops.

Each composite spread places all crops of ONE real cell (so relative sizes stay
true) at random rotations, using :func:`compose_spread`'s layout and microscope
model. Masks come from thresholding each crop
(:func:`karyopipe.geometry.axis.mask_from_crop` when the geometry stage is
installed, Otsu otherwise). Composite instances carry mask and class but no
axis or centromere: there is no exact truth for those in a real crop.

The output shows real data: never commit it.

Examples
--------
>>> from karyopipe.synth.composite import load_composite_cells
>>> cells = load_composite_cells("../shared/data/bioimlab/crops", max_cells=2)   # doctest: +SKIP
>>> cells[0].karyotype, cells[0].banding, len(cells[0].crops)       # doctest: +SKIP
('46,XX', 'q', 46)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from karyopipe.classes import X, Y


@dataclass
class CompositeCell:
    """All crops of one real cell.

    Attributes
    ----------
    cell_id : str
    banding : str
        ``"q"`` (fluorescence crops) or ``"g"`` (brightfield crops).
    counts : dict of int to int
        Crops per class 1..24.
    karyotype : str
        ISCN string written from ``counts`` (the labels as given; they can be noisy).
    crops : list of (number, density, mask)
        ``density`` (h, w) float32 in [0, 1], stain density (0 = background),
        ``mask`` (h, w) bool.
    """

    cell_id: str
    banding: str
    counts: dict[int, int]
    karyotype: str
    crops: list


def counts_to_karyotype(counts: dict[int, int]) -> str:
    """``{class: copies}`` -> ISCN numerical karyotype (``47,XX,+21``)."""
    total = sum(counts.values())
    sex = "X" * counts.get(X, 0) + "Y" * counts.get(Y, 0) or "--"
    autosomes = [counts.get(k, 0) for k in range(1, 23)]
    ploidy = int(np.median(autosomes)) if autosomes else 2
    changes = []
    for k in range(1, 23):
        d = counts.get(k, 0) - ploidy
        changes += [f"+{k}"] * max(d, 0) + [f"-{k}"] * max(-d, 0)
    return ",".join([str(total), sex] + changes)


def _rotate(density: np.ndarray, mask: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the centre, canvas grown to hold the whole crop."""
    import cv2

    h, w = mask.shape
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, 1.0)
    c, s = abs(rot[0, 0]), abs(rot[0, 1])
    nw, nh = int(np.ceil(h * s + w * c)) + 2, int(np.ceil(h * c + w * s)) + 2
    rot[0, 2] += nw / 2 - w / 2
    rot[1, 2] += nh / 2 - h / 2
    d = cv2.warpAffine(density.astype(np.float32), rot, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0)
    m = cv2.warpAffine(mask.astype(np.uint8), rot, (nw, nh), flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)
    return np.where(m, d, 0).astype(np.float32), m


class CompositeSource:
    """A labelled crop folder, read lazily one cell at a time.

    Parameters
    ----------
    crops_dir : str or Path
        Any crop layout :func:`karyopipe.data.read_dataset` reads (BioImLab
        ``crops/``, ``gband612/``...).

    Attributes
    ----------
    cell_ids : list of str
        Sorted cell ids with at least one labelled crop.
    problems : list of str
        Crops left out (unreadable, unlabelled, nothing to threshold).
    """

    def __init__(self, crops_dir: str | Path):
        from karyopipe.data import read_dataset

        self.root = Path(crops_dir)
        dataset = read_dataset(self.root)
        self.problems = [str(p) for p in dataset.problems]
        self._samples: dict[str, list] = {}
        for sample in dataset.samples:
            if sample.label is None:
                self.problems.append(f"{sample.path}: no class label")
                continue
            self._samples.setdefault(str(sample.cell_id), []).append(sample)
        self.cell_ids = sorted(self._samples)
        if not self.cell_ids:
            raise ValueError(f"{self.root}: no labelled crops to composite")
        self._cache: dict[str, CompositeCell | None] = {}

    def load(self, cell_id: str) -> CompositeCell | None:
        """The cell's crops as densities and masks (None if none could be used)."""
        if cell_id not in self._cache:
            self._cache[cell_id] = self._load(cell_id)
        return self._cache[cell_id]

    def _load(self, cell_id: str) -> CompositeCell | None:
        from karyopipe.geometry.axis import mask_from_crop
        from karyopipe.io import BRIGHTFIELD, detect_polarity, to_gray

        grays = []
        for sample in self._samples[cell_id]:
            try:
                grays.append((sample, to_gray(sample.load_image())))
            except Exception as exc:  # noqa: BLE001 - an unreadable crop is reported, the cell goes on
                self.problems.append(f"{sample.path}: {exc}")
        if not grays:
            return None
        votes = [detect_polarity(g)[0] for _, g in grays[:8]]
        brightfield = votes.count(BRIGHTFIELD) > len(votes) / 2
        crops, counts = [], {k: 0 for k in range(1, 25)}
        for sample, gray in grays:
            canonical = 1.0 - gray if brightfield else gray
            mask = mask_from_crop(canonical)
            if mask.sum() < 10:
                self.problems.append(f"{sample.path}: no chromosome found by thresholding")
                continue
            bg = float(np.median(canonical[~mask])) if (~mask).any() else 0.0
            top = float(np.percentile(canonical[mask], 99)) - bg
            density = np.clip((canonical - bg) / max(top, 1e-3), 0, 1).astype(np.float32)
            crops.append((int(sample.label), np.where(mask, density, 0).astype(np.float32), mask))
            counts[int(sample.label)] += 1
        if not crops:
            return None
        return CompositeCell(cell_id, "g" if brightfield else "q", counts, counts_to_karyotype(counts), crops)


def load_composite_cells(crops_dir: str | Path, *, max_cells: int | None = None) -> list[CompositeCell]:
    """Read a labelled crop folder into cells ready for ``compose_spread(composite_cell=...)``.

    Parameters
    ----------
    crops_dir : str or Path
    max_cells : int, optional
        Only the first cells (sorted by id).

    Returns
    -------
    list of CompositeCell
        Crops that cannot be read or thresholded are listed on stderr and left
        out of their cell (the cell's karyotype then counts what is left).
    """
    source = CompositeSource(crops_dir)
    cells = [source.load(c) for c in source.cell_ids[:max_cells]]
    for problem in source.problems:
        print(f"composite: skipped {problem}", file=sys.stderr)
    return [c for c in cells if c is not None]
