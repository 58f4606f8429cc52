"""Draw segmentation overlays on the REAL G-banded spreads into docs/real/ (git-ignored).

Real data never enters the repository: this script writes its pictures under
``docs/real/segmentation/``, which .gitignore excludes. Run it from the
repository root::

    .venv/bin/python docs/scripts/real_segmentation_overlays.py \
        --data ../shared/data/gband_spreads [--baseline] [--weights W] [--chromosome-width PX]

Each picture shows the spread (original polarity) with one coloured outline
per detected chromosome, rejected nuclei/debris in grey, and the count.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]


def draw(rgb: np.ndarray, instances, title: str) -> np.ndarray:
    canvas = rgb.copy()
    rng = np.random.default_rng(0)
    for inst in instances:
        contours, _ = cv2.findContours(inst.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if inst.category == "chromosome":
            colour = tuple(int(c) for c in rng.integers(60, 255, 3))
            thick = 2
        else:
            colour, thick = (128, 128, 128), 1
        cv2.drawContours(canvas, contours, -1, colour, thick)
    cv2.rectangle(canvas, (0, 0), (min(canvas.shape[1], 12 * len(title) + 20), 34), (0, 0, 0), -1)
    cv2.putText(canvas, title, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
    return canvas


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "gband_spreads"))
    p.add_argument("--out", default=str(REPO / "docs" / "real" / "segmentation"))
    p.add_argument("--weights", default=None)
    p.add_argument("--baseline", action="store_true", help="watershed baseline instead of Mask R-CNN")
    p.add_argument("--chromosome-width", type=float, default=None, metavar="PX",
                   help="chromosome width instead of measuring it per spread (InferenceSettings.chromosome_width)")
    args = p.parse_args(argv)
    import torch

    from karyopipe.io import is_image_path, load_canonical, read_image, to_gray
    from karyopipe.segmentation import Segmenter, segment_watershed

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    method = segment_watershed if args.baseline else Segmenter.from_pretrained(args.weights, chromosome_width=args.chromosome_width)
    tag = "watershed" if args.baseline else "maskrcnn"
    failures = []
    for path in sorted(f for f in Path(args.data).iterdir() if is_image_path(f)):
        try:
            gray, polarity = load_canonical(path)
            raw = to_gray(read_image(path))
        except Exception as exc:
            failures.append(f"{path}: {exc}")
            continue
        start = time.perf_counter()
        instances = method(gray, keep_rejected=True)
        seconds = time.perf_counter() - start
        n = sum(i.category == "chromosome" for i in instances)
        rgb = cv2.cvtColor((raw * 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)
        picture = draw(rgb, instances, f"{tag}: {n} chromosomes ({polarity}, {seconds:.1f}s)")
        target = out / f"{path.stem}_{tag}.png"
        cv2.imwrite(str(target), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        print(f"{path.name}: {n} chromosomes, {len(instances) - n} rejected, {seconds:.1f} s -> {target}")
    for failure in failures:
        print(f"skipped {failure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
