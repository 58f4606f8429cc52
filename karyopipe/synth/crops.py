"""Synthetic single-chromosome crops, whole cells at a time, for classifier training.

Real crop sets (BioImLab, gband612) teach the classifier real banding; rendered
chromosomes close the gap to the synthetic spreads used by the benchmarks and
the bundled examples. Each cell is one karyotype rendered at one condensation,
so relative lengths within a cell stay true, as in the real crop sets.

Layout written (the generic crop layout of :func:`karyopipe.data.read_dataset`)::

    OUT/<cell>/<class name>/<cell>_<class name>_<copy>.png

Each PNG is the chromosome in canonical polarity (bright on black), masked, as a
cut-out crop of the real sets looks after :func:`karyopipe.io.normalize_polarity`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from karyopipe.classes import class_name
from karyopipe.synth.chromosome import BENDS

CELL_KARYOTYPES = ("46,XX", "46,XY")


def render_crop_cell(karyotype: str, rng: np.random.Generator, banding: str = "g") -> list[tuple[int, np.ndarray]]:
    """Render every chromosome of one cell as a masked canonical crop.

    Returns
    -------
    list of (class number, (H, W) uint8 image)
    """
    from karyopipe.io import normalize_polarity
    from karyopipe.synth.chromosome import render_chromosome
    from karyopipe.synth.ideogram import relative_lengths
    from karyopipe.synth.karyotype import parse_karyotype

    counts = parse_karyotype(karyotype)
    rel = relative_lengths()
    chr1 = rng.uniform(80.0, 140.0)
    width = chr1 * rng.uniform(0.08, 0.13)
    crops = []
    for number in sorted(counts):
        for _ in range(counts[number]):
            length = chr1 * rel[number] * float(np.exp(rng.normal(0.0, 0.07)))
            syn = render_chromosome(
                number, rng, banding=banding, length_px=max(length, 6.0),
                width_px=width * rng.uniform(0.92, 1.08), bend=str(rng.choice(BENDS)),
                chromatid_split=float(rng.uniform(0.3, 0.8)) if rng.uniform() < 0.2 else 0.0,
            )
            gray, _ = normalize_polarity(syn.image, syn.polarity)
            crops.append((number, (np.clip(gray * syn.mask, 0, 1) * 255 + 0.5).astype(np.uint8)))
    return crops


def generate_crop_cells(out: str | Path, n_cells: int, seed: int = 0, *, banding: str = "mixed",
                        progress: bool = False) -> Path:
    """Write ``n_cells`` synthetic normal cells (46,XX or 46,XY) as a crop folder.

    Cell ``i`` draws from ``default_rng([seed, i])``: deterministic, and cell ``i``
    does not depend on ``n_cells``. ``banding`` is ``"g"``, ``"q"`` or ``"mixed"``.
    """
    from PIL import Image

    if banding not in ("g", "q", "mixed"):
        raise ValueError(f"banding must be 'g', 'q' or 'mixed', got {banding!r}")
    out = Path(out)
    cells = range(n_cells)
    if progress:
        from tqdm import tqdm

        cells = tqdm(cells, desc="synthetic crop cells", unit="cell")
    for index in cells:
        rng = np.random.default_rng([int(seed), int(index)])
        band = banding if banding != "mixed" else ("g" if rng.uniform() < 0.5 else "q")
        karyotype = CELL_KARYOTYPES[int(rng.integers(len(CELL_KARYOTYPES)))]
        cell = f"synth{index:05d}{band}"
        copies: dict[int, int] = {}
        for number, image in render_crop_cell(karyotype, rng, band):
            copy = copies.get(number, 0)
            copies[number] = copy + 1
            name = class_name(number)
            path = out / cell / name / f"{cell}_{name}_{copy}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
    return out
