"""``karyopipe synth``: write synthetic spreads with exact ground truth as COCO.

Examples
--------
::

    karyopipe synth --out synth/ --n 200 --seed 0
    karyopipe synth --out synth_q/ --n 50 --seed 1 --karyotype 47,XX,+21 --banding q --size 768 576
    karyopipe synth --out composite/ --n 20 --seed 0 --composite ../shared/data/bioimlab/crops
    karyopipe synth --out synth_crops/ --n 100 --seed 0 --crops     # classifier training crops

Each image ``i`` draws from ``numpy.random.default_rng([seed, i])``, so the same
seed gives byte-identical files and image ``i`` does not depend on ``--n``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from karyopipe.synth.karyotype import MIXED_KARYOTYPES, parse_karyotype


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` of a run with ``seed``."""
    return np.random.default_rng([int(seed), int(index)])


def pick_karyotype(karyotype: str, rng: np.random.Generator) -> str:
    if karyotype != "mixed":
        return karyotype
    names, weights = zip(*MIXED_KARYOTYPES)
    p = np.asarray(weights) / sum(weights)
    return names[int(rng.choice(len(names), p=p))]


def generate_dataset(
    out: str | Path,
    n: int,
    seed: int = 0,
    *,
    karyotype: str = "mixed",
    banding: str = "mixed",
    size: tuple[int, int] = (1024, 1024),
    overlap: float | None = None,
    composite: str | Path | None = None,
    progress: bool = False,
    prefix: str = "synth",
    **spread_kwargs,
) -> Path:
    """Write ``n`` spreads to ``out/images/*.png`` and ``out/annotations.json``.

    Parameters
    ----------
    out : str or Path
    n, seed : int
    karyotype : str
        ISCN string, or ``"mixed"`` (draws from :data:`MIXED_KARYOTYPES`).
    banding : {"g", "q", "mixed"}
    size : (W, H)
    overlap : float, optional
        Share of chromosomes placed crossing another.
    composite : str or Path, optional
        Folder of real labelled crops: each spread places all crops of one
        real cell instead of rendered chromosomes (never commit the output).
    spread_kwargs
        Passed to :func:`compose_spread`.

    Returns
    -------
    Path
        The annotation JSON.
    """
    from tqdm import tqdm

    from karyopipe.synth.coco import image_entry, save_png, spread_annotations, write_annotations
    from karyopipe.synth.spread import compose_spread

    if karyotype != "mixed":
        parse_karyotype(karyotype)  # fail before writing anything
    if banding not in ("g", "q", "mixed"):
        raise ValueError(f"banding must be g, q or mixed, got {banding!r}")
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    out = Path(out)
    cells = None
    if composite is not None:
        from karyopipe.synth.composite import CompositeSource

        cells = CompositeSource(composite)
    images, annotations = [], []
    for index in tqdm(range(n), desc="synth", unit="spread", disable=not progress):
        rng = image_rng(seed, index)
        extra = {}
        if cells is not None:
            cell = cells.load(cells.cell_ids[int(rng.integers(len(cells.cell_ids)))])
            if cell is None:
                raise ValueError(f"{composite}: no usable crops in the cell drawn for image {index}")
            kt, band = cell.karyotype, cell.banding
            kwargs = dict(spread_kwargs, composite_cell=cell.crops)
            extra = {"source_cell": cell.cell_id, "composite": True}
        else:
            kt = pick_karyotype(karyotype, rng)
            band = banding if banding != "mixed" else ("g", "q")[int(rng.integers(2))]
            kwargs = spread_kwargs
        if overlap is not None:
            kwargs = dict(kwargs, overlap_fraction=overlap)
        spread = compose_spread(kt if cells is None else cell.counts, rng, size=size, banding=band, **kwargs)
        if cells is not None:
            spread.karyotype = kt
        file_name = f"images/{prefix}_{index:06d}.png"
        save_png(out / file_name, spread.image_u8)
        image_id = index + 1
        images.append(image_entry(spread, image_id, file_name, f"{prefix}-s{seed}-{index:06d}", extra))
        annotations += spread_annotations(spread, image_id, len(annotations) + 1)
    if cells is not None:
        import sys

        for problem in cells.problems:
            print(f"synth: skipped {problem}", file=sys.stderr)
    info = {"description": "karyopipe synth", "seed": int(seed), "n": int(n), "karyotype": karyotype,
            "banding": banding, "size": [int(size[0]), int(size[1])]}
    return write_annotations(out / "annotations.json", images, annotations, info)


def benchmark(n: int = 20, seed: int = 0, *, karyotype: str = "46,XY", banding: str = "g",
              size: tuple[int, int] = (1024, 1024)) -> dict:
    """Time :func:`compose_spread` and the COCO encoding on this process's core.

    Returns medians over ``n`` spreads of wall and CPU seconds (CPU time is the
    fairer figure on a shared machine).
    """
    import time

    from karyopipe.synth.coco import spread_annotations
    from karyopipe.synth.spread import compose_spread

    compose_spread(karyotype, image_rng(seed, 2**31 - 1), size=size, banding=banding)  # warm caches
    wall, cpu, coco_cpu = [], [], []
    for index in range(n):
        rng = image_rng(seed, index)
        w0, c0 = time.perf_counter(), time.process_time()
        spread = compose_spread(karyotype, rng, size=size, banding=banding)
        w1, c1 = time.perf_counter(), time.process_time()
        spread_annotations(spread, 1, 1)
        wall.append(w1 - w0)
        cpu.append(c1 - c0)
        coco_cpu.append(time.process_time() - c1)
    return {"n": n, "karyotype": karyotype, "banding": banding, "size": list(size),
            "compose_wall_median_s": float(np.median(wall)), "compose_cpu_median_s": float(np.median(cpu)),
            "compose_cpu_max_s": float(np.max(cpu)), "coco_cpu_median_s": float(np.median(coco_cpu))}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="karyopipe synth",
        description="Generate synthetic metaphase spreads with exact ground truth: DIR/images/*.png + DIR/annotations.json (COCO).",
    )
    p.add_argument("--out", help="output folder (required unless --bench)")
    p.add_argument("--n", type=int, default=20, help="number of spreads (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, identical files (default 0)")
    p.add_argument("--karyotype", default="mixed", help="ISCN karyotype, e.g. 47,XX,+21, or 'mixed' (default)")
    p.add_argument("--banding", default="mixed", choices=("g", "q", "mixed"), help="G-band, Q-band or mixed (default)")
    p.add_argument("--composite", metavar="CROPS_DIR", help="place real labelled crops of one cell per spread (do not commit the output)")
    p.add_argument("--overlap", type=float, help="share of chromosomes crossing another (default 0..0.1 per spread)")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=(1024, 1024), help="image size (default 1024 1024)")
    p.add_argument("--nuclei", type=int, help="interphase nuclei per spread (default 0..2)")
    p.add_argument("--debris", type=int, help="debris particles per spread (default 0..10)")
    p.add_argument("--jpeg-quality", type=int, help="add JPEG artefacts at this quality")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--bench", action="store_true",
                   help="time --n spreads of --karyotype (default 46,XY) on one thread instead of writing files")
    p.add_argument("--crops", action="store_true",
                   help="write --n normal cells as single-chromosome crops (OUT/<cell>/<class>/*.png) for classifier training")
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bench:
        import os

        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        import cv2

        cv2.setNumThreads(1)
        kt = "46,XY" if args.karyotype == "mixed" else args.karyotype
        band = "g" if args.banding == "mixed" else args.banding
        r = benchmark(args.n, args.seed, karyotype=kt, banding=band, size=tuple(args.size))
        print(f"synth --bench: {r['n']} spreads {kt} {band}-band {args.size[0]}x{args.size[1]}: compose median "
              f"{r['compose_cpu_median_s']:.3f} s CPU ({r['compose_wall_median_s']:.3f} s wall), max "
              f"{r['compose_cpu_max_s']:.3f} s CPU; COCO encoding median {r['coco_cpu_median_s']:.3f} s CPU")
        return 0
    if not args.out:
        parser.error("--out is required")
    if args.crops:
        from karyopipe.synth.crops import generate_crop_cells

        generate_crop_cells(args.out, args.n, args.seed, banding=args.banding, progress=not args.no_progress)
        print(f"synth: wrote {args.n} cells of single-chromosome crops to {args.out}")
        return 0
    kwargs = {}
    for key in ("nuclei", "debris", "jpeg_quality"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    path = generate_dataset(args.out, args.n, args.seed, karyotype=args.karyotype, banding=args.banding,
                            size=tuple(args.size), overlap=args.overlap, composite=args.composite,
                            progress=not args.no_progress, **kwargs)
    print(f"synth: wrote {args.n} spreads to {Path(args.out) / 'images'} and {path}")
    return 0
