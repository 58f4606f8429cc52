"""``karyopipe bench-pipeline``: model loading time and warm seconds per spread, by image size.

Spreads come from the project's own generator (:func:`karyopipe.synth.compose_spread`),
so the command runs anywhere, with no data. For each size it composes ``--n``
spreads (46,XY, G and Q banding alternating), runs the whole pipeline once to warm
up, then times every spread and reports the median, the worst and the median of
each stage. Two 1600x1200 variants are measured by default: the same field at
higher resolution (chromosomes scale with the image, the segmenter rescales them
down) and a wider field at the 768x576 chromosome size (more to tile).

Examples
--------
    karyopipe bench-pipeline --json out/bench_pipeline.json
    karyopipe bench-pipeline --sizes 768x576 --n 10 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from karyopipe.cli import add_precision_argument

__all__ = ["run_bench", "main"]

# Chromosome-1 length per 1000 px of sqrt(W * H), as karyopipe.synth.compose_spread defines it:
# the 768x576 spreads' default range, and the value giving a 768x576-sized chromosome in a larger frame.
_BASE_SIZE = (768, 576)
_BASE_SCALE = 127.5


def _spreads(size: tuple[int, int], n: int, seed: int, fixed_chromosome_size: bool) -> list[tuple[np.ndarray, str]]:
    from karyopipe.synth import compose_spread

    rng = np.random.default_rng(seed)
    scale = None
    if fixed_chromosome_size:
        scale = _BASE_SCALE * np.sqrt(_BASE_SIZE[0] * _BASE_SIZE[1]) / np.sqrt(size[0] * size[1])
    out = []
    for i in range(n):
        banding = "g" if i % 2 == 0 else "q"
        spread = compose_spread("46,XY", rng, size=size, banding=banding, pixel_scale=scale)
        out.append(((np.clip(spread.image, 0, 1) * 255).astype(np.uint8), spread.polarity))
    return out


def run_bench(sizes=((768, 576), (1600, 1200)), n: int = 6, seed: int = 0, wide_field: bool = True,
              seg_weights=None, cls_weights=None, progress: bool = True, precision: str = "float32") -> dict:
    """Time model loading and the warm pipeline per image size.

    Returns
    -------
    dict
        ``load_seconds``, ``machine`` and one row per size with ``median_seconds``,
        ``max_seconds``, ``stage_median_seconds`` and ``objects_median``.
    """
    import torch

    from karyopipe.pipeline.core import KaryoPipeline
    from karyopipe.segmentation.infer import has_native_bfloat16

    t = time.perf_counter()
    pipe = KaryoPipeline.from_pretrained(seg_weights, cls_weights, precision=precision)
    load_seconds = time.perf_counter() - t
    cases = [(size, False) for size in sizes]
    if wide_field:
        cases += [(size, True) for size in sizes if tuple(size) != _BASE_SIZE]
    rows = []
    for size, fixed in cases:
        spreads = _spreads(tuple(size), n, seed, fixed)
        pipe(spreads[0][0], polarity=spreads[0][1])  # warm-up: first-call allocations are not per-spread cost
        totals, stages, objects = [], {}, []
        for image, polarity in spreads:
            t = time.perf_counter()
            result = pipe(image, polarity=polarity)
            totals.append(time.perf_counter() - t)
            objects.append(len(result.chromosomes))
            for stage, seconds in result.timings.items():
                if stage != "total":
                    stages.setdefault(stage, []).append(seconds)
        label = f"{size[0]}x{size[1]}" + (" wide field (768x576 chromosome size)" if fixed else "")
        row = {"size": label, "spreads": n, "median_seconds": round(float(np.median(totals)), 3),
               "max_seconds": round(float(np.max(totals)), 3), "objects_median": float(np.median(objects)),
               "stage_median_seconds": {k: round(float(np.median(v)), 3) for k, v in stages.items()}}
        rows.append(row)
        if progress:
            print(f"  {label}: median {row['median_seconds']:.2f} s, max {row['max_seconds']:.2f} s", file=sys.stderr)
    return {
        "load_seconds": round(load_seconds, 3),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "models": {stage: info.get("weights", info.get("model")) for stage, info in pipe.stages.items()},
        "precision": precision,
        "native_bfloat16": has_native_bfloat16(pipe.device),
        "rows": rows,
    }


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 768x576, got {text!r}") from None
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe bench-pipeline", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=_size, default=[(768, 576), (1600, 1200)], metavar="WxH")
    p.add_argument("--n", type=int, default=6, help="timed spreads per size (default 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-wide-field", action="store_true", help="skip the wide-field variant of larger sizes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seg-weights", default=None)
    p.add_argument("--cls-weights", default=None)
    add_precision_argument(p)
    p.add_argument("--json", default=None, help="write the results here")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = run_bench(args.sizes, args.n, args.seed, not args.no_wide_field, args.seg_weights, args.cls_weights,
                       precision=args.precision)
    print(f"model loading: {result['load_seconds']:.2f} s ({result['machine']['torch_threads']} torch threads, "
          f"{result['machine']['cpu_count']} CPUs; segmenter in {result['precision']}, native bfloat16: "
          f"{result['native_bfloat16']})")
    for row in result["rows"]:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in row["stage_median_seconds"].items())
        print(f"{row['size']}: median {row['median_seconds']:.2f} s per spread (max {row['max_seconds']:.2f}; "
              f"{row['objects_median']:.0f} objects; {stages})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0
