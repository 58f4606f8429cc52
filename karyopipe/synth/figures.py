"""Figures of the synthetic generator: ``docs/synth_gband.png``, ``docs/synth_qband.png``.

Run from the repository root::

    .venv/bin/python -m karyopipe.synth.figures docs

Each figure shows one synthetic spread, the same spread with its ground truth
(visible masks coloured by class, amodal outlines of occluded chromosomes, medial
axes, centromeres, nuclei and debris in grey), and single chromosomes of every
bend with their ideogram banding profile.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from karyopipe.synth.chromosome import BENDS, render_chromosome
from karyopipe.synth.spread import compose_spread


def draw_figure(path: str | Path, banding: str = "g", seed: int = 0) -> Path:
    """Draw the overview figure for ``banding`` to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng([seed, 0 if banding == "g" else 1])
    karyotype = "46,XY" if banding == "g" else "47,XX,+21"
    spread = compose_spread(karyotype, rng, size=(768, 576), banding=banding, nuclei=1, debris=4, overlap_fraction=0.08)
    cmap = plt.get_cmap("tab20")
    overlay = np.stack([spread.image] * 3, axis=-1) * 0.6
    for inst in spread.instances:
        vis = inst.mask
        colour = np.array(cmap((inst.number - 1) % 20)[:3]) if inst.number else np.array([0.6, 0.6, 0.6])
        overlay[vis] = 0.45 * overlay[vis] + 0.55 * colour
        if inst.occluded_fraction > 0:
            overlay[find_boundaries(inst.amodal_mask, mode="inner")] = (1.0, 1.0, 1.0)

    fig = plt.figure(figsize=(12, 7.2), dpi=80)
    grid = fig.add_gridspec(2, 8, height_ratios=(2.2, 1.0))
    ax = fig.add_subplot(grid[0, :4])
    ax.imshow(spread.image, cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"synthetic {banding.upper()}-band spread, {spread.karyotype}", fontsize=10)
    ax.axis("off")
    ax = fig.add_subplot(grid[0, 4:])
    ax.imshow(overlay)
    for inst in spread.chromosomes:
        ax.plot(inst.axis[:, 0], inst.axis[:, 1], "-", color="yellow", lw=0.7)
        ax.plot(*inst.centromere_xy, "o", color="red", ms=2)
    ax.set_title("ground truth: class colour, amodal outline (white), axis, centromere", fontsize=10)
    ax.axis("off")

    for col, (number, bend) in enumerate(zip((1, 2, 9, 13, 18, 21, 23, 24), (BENDS * 2))):
        c = render_chromosome(number, np.random.default_rng([seed, number]), banding=banding, bend=bend,
                              length_px=None, chromatid_split=0.5 if col % 3 == 2 else 0.0)
        ax = fig.add_subplot(grid[1, col])
        ax.imshow(c.image, cmap="gray", vmin=0, vmax=1)
        ax.plot(c.axis[:, 0], c.axis[:, 1], "-", color="yellow", lw=0.8)
        ax.plot(*c.centromere_xy, "o", color="red", ms=3)
        name = {23: "X", 24: "Y"}.get(number, str(number))
        ax.set_title(f"{name}, {bend}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    out = Path((argv if argv is not None else sys.argv[1:] or ["docs"])[0])
    for banding in ("g", "q"):
        print(draw_figure(out / f"synth_{banding}band.png", banding))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
