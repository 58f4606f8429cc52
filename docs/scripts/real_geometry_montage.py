"""Montage of REAL crops through karyopipe.geometry: original | axis + centromere | straightened.

Writes ``docs/real/geometry_montage_<set>.png`` (git-ignored: real data is never committed).

    .venv/bin/python docs/scripts/real_geometry_montage.py [--data ../shared/data] [--n 24] [--seed 0]
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from karyopipe.geometry import analyze_chromosome, mask_from_crop
from karyopipe.io import load_canonical

REPO = Path(__file__).resolve().parents[2]


def crop_paths(root: Path, which: str) -> list[Path]:
    if which == "bioimlab":
        return sorted((root / "bioimlab" / "crops").glob("*/*.bmp"))
    return sorted((root / "gband612").glob("*/clase*/*.tif*"))


def montage(paths: list[Path], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(paths)
    cols = 4
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols * 3, figsize=(cols * 3 * 1.1, rows * 2.2))
    axes = np.atleast_2d(axes)
    for ax in axes.ravel():
        ax.axis("off")
    for k, path in enumerate(paths):
        gray, _ = load_canonical(path)
        geom = analyze_chromosome(mask_from_crop(gray), gray)
        r, c = divmod(k, cols)
        a0, a1, a2 = axes[r, 3 * c:3 * c + 3]
        a0.imshow(gray, cmap="gray", vmin=0, vmax=1)
        a0.set_title(path.stem[-18:], fontsize=5)
        a1.imshow(gray, cmap="gray", vmin=0, vmax=1)
        a1.plot(geom.axis[:, 0], geom.axis[:, 1], "c-", lw=0.8)
        a1.plot(*geom.axis[0], "go", ms=2.5)  # p-tip
        a1.plot(*geom.centromere_xy, "r+", ms=6, mew=1.2)
        a1.set_title(f"CI {geom.centromere_index:.2f} pc {geom.polarity_confidence:.1f}"
                     + (f"\n{','.join(geom.flags)}" if geom.flags else ""), fontsize=5)
        a2.imshow(geom.straightened, cmap="gray", vmin=0, vmax=1)
        a2.axhline(geom.p_length, color="r", lw=0.6)
        a2.set_title(f"L {geom.length_px:.0f}px", fontsize=5)
    fig.suptitle(f"{title}: original | axis (green = p-tip, red + = centromere) | straightened", fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=160)
    plt.close(fig)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for which in ("bioimlab", "gband612"):
        paths = crop_paths(args.data, which)
        if not paths:
            print(f"no {which} crops under {args.data}")
            continue
        sample = random.Random(args.seed).sample(paths, min(args.n, len(paths)))
        montage(sample, REPO / "docs" / "real" / f"geometry_montage_{which}.png", which)


if __name__ == "__main__":
    main()
