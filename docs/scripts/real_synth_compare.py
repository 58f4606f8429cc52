"""Put real spreads beside synthetic ones of the same banding, to judge the generator.

Writes ``docs/real/synth_compare_gband.png`` (real ``gband_spreads`` vs synthetic
G-band) and ``docs/real/synth_compare_qband.png`` (real BioImLab metaphases vs
synthetic Q-band), each with the grey-level histograms of both. ``docs/real/`` is
git-ignored: these pictures show real data and are never committed.

    .venv/bin/python docs/scripts/real_synth_compare.py [--data ../shared/data] [--n 3]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _real_gband(data: Path, n: int) -> list[tuple[str, np.ndarray]]:
    from karyopipe.io import read_image, to_gray

    files = sorted((data / "gband_spreads").glob("*.JPG")) + sorted((data / "gband_spreads").glob("*.tif"))
    return [(f.name, to_gray(read_image(f))) for f in files[:n]]


def _real_qband(data: Path, n: int) -> list[tuple[str, np.ndarray]]:
    from karyopipe.data import read_dataset
    from karyopipe.io import to_gray

    ds = read_dataset(data / "bioimlab" / "metaphases")
    for problem in ds.problems:
        print(f"skipped {problem}", file=sys.stderr)
    picked, seen = [], set()
    for sample in ds.samples:  # one image per cell
        if sample.cell_id in seen:
            continue
        seen.add(sample.cell_id)
        picked.append((Path(sample.path).name, to_gray(sample.load_image())))
        if len(picked) == n:
            break
    return picked


def _figure(real, synth, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(real), len(synth))
    fig, axes = plt.subplots(3, n, figsize=(4.2 * n, 10), dpi=80, gridspec_kw={"height_ratios": (1, 1, 0.6)})
    axes = np.atleast_2d(axes)
    for row, items, kind in ((0, real, "real"), (1, synth, "synthetic")):
        for col in range(n):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(items):
                name, img = items[col]
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{kind}: {name}", fontsize=8)
    for col in range(n):
        ax = axes[2, col]
        for items, colour, kind in ((real, "tab:blue", "real"), (synth, "tab:orange", "synthetic")):
            if col < len(items):
                ax.hist(items[col][1].ravel(), bins=64, range=(0, 1), density=True, histtype="step",
                        color=colour, label=kind, log=True)
        ax.legend(fontsize=7)
        ax.set_xlabel("grey", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    print(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("KARYOPIPE_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--n", type=int, default=3, help="spreads of each kind per figure")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "real")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"{args.data}: real data folder not found (set --data or KARYOPIPE_DATA)", file=sys.stderr)
        return 2

    from karyopipe.synth import compose_spread

    for banding, reader, size, name in (("g", _real_gband, (1280, 1024), "gband_spreads"),
                                        ("q", _real_qband, (768, 576), "bioimlab/metaphases")):
        real = reader(args.data, args.n)
        synth = []
        for i in range(args.n):
            s = compose_spread("46,XY" if i % 2 else "46,XX", np.random.default_rng([7, i]), size=size, banding=banding)
            synth.append((f"{s.karyotype} seed [7, {i}]", s.image))
        _figure(real, synth, f"real {name} (top) vs karyopipe.synth {banding.upper()}-band (middle)",
                args.out / f"synth_compare_{banding}band.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
