"""Spot-check label-bioimlab: each metaphase polygon beside the crop it was matched to, into docs/real/ (git-ignored).

Real data never enters the repository: pictures go to ``docs/real/label_bioimlab/``.
Run from the repository root::

    .venv/bin/python docs/scripts/real_label_bioimlab_spotcheck.py \
        --data ../shared/data/bioimlab --cells 1 9 12

Each tile: left the polygon's upright cut-out from the frame, right the matched
crop (upright), with the match NCC (bottom left) and the crop's class and homolog
letter (bottom right). Confident matches are framed white, the others grey.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from karyopipe.data import read_dataset
from karyopipe.data.label_bioimlab import _crop_descriptors, describe, match_frame
from karyopipe.io import to_gray

REPO = Path(__file__).resolve().parents[2]


def _fit(x: np.ndarray, h: int = 110, w: int = 50) -> np.ndarray:
    x = (x / max(float(x.max()), 1e-6) * 255).astype(np.uint8)[:h, :w]
    can = np.zeros((h, w), np.uint8)
    can[:x.shape[0], :x.shape[1]] = x
    return can


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "bioimlab"))
    p.add_argument("--cells", nargs="+", default=["1", "9", "12"])
    p.add_argument("--out", default=str(REPO / "docs" / "real" / "label_bioimlab"))
    args = p.parse_args()
    meta = read_dataset(Path(args.data) / "metaphases")
    crops = read_dataset(Path(args.data) / "crops")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for cell in args.cells:
        cdesc, clabels, cnames = _crop_descriptors([s for s in crops.samples if s.cell_id == cell])
        for frame in [s for s in meta.samples if s.cell_id == cell]:
            gray = to_gray(frame.loader())
            h, w = gray.shape
            pdesc = [describe(gray, inst.get_mask((h, w))) for inst in frame.instances]
            tiles = []
            for d, m in zip(pdesc, match_frame(pdesc, cdesc, clabels)):
                right = cdesc[m.crop].native if m.crop >= 0 else np.zeros((4, 4), np.float32)
                t = np.concatenate([_fit(d.native), np.full((110, 2), 128, np.uint8), _fit(right)], 1)
                name = cnames[m.crop].split()[-1].rsplit(".", 1)[0] if m.crop >= 0 else "-"
                cv2.putText(t, f"{m.ncc:.2f}", (2, 105), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255)
                cv2.putText(t, name, (56, 105), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255)
                tiles.append(np.pad(t, 2, constant_values=255 if m.confident else 90))
            tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 12)
            rows = [np.concatenate(tiles[k:k + 12], 1) for k in range(0, len(tiles), 12)]
            picture = np.concatenate(rows, 0)
            path = out / f"{frame.image_id or Path(frame.path).stem}.png"
            Image.fromarray(picture).resize((picture.shape[1] * 2, picture.shape[0] * 2)).save(path)
            print(path)


if __name__ == "__main__":
    main()
