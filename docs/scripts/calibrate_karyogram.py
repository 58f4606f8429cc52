"""Measure, on REAL labelled crops of training cells, how far chromosome lengths and
centromere indices stray from the reference table: the spreads the assignment uses.

For each cell: geometry length and centromere index of every crop, the cell scale
(median of length / relative length), then the residuals
``log(length / (scale * relative_length))`` and ``ci - reference ci`` per class,
and the log-length difference between the two homologs of a pair.
Only the classifier's *train* cells are used (split by cell), never test cells.
Prints numbers; writes nothing.

    .venv/bin/python docs/scripts/calibrate_karyogram.py [--data ../shared/data] [--cells 30]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("KARYOPIPE_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--cells", type=int, default=30, help="train cells per data set")
    args = parser.parse_args(argv)

    from karyopipe.classes import CHROMOSOMES, Y
    from karyopipe.classification.dataset import find_crops, source_name, split_cells
    from karyopipe.geometry import analyze_chromosome
    from karyopipe.geometry.axis import mask_from_crop
    from karyopipe.io import normalize_polarity, read_image

    for root in (args.data / "bioimlab" / "crops", args.data / "gband612"):
        records, _ = find_crops(root)
        by_cell: dict[str, list] = {}
        for r in records:
            by_cell.setdefault(str(r.cell_id), []).append(r)
        source = source_name(root)
        train = split_cells([f"{source}/{c}" for c in by_cell], 0.15, 0.15, 0)["train"]
        cells = [c.split("/", 1)[1] for c in train][: args.cells]
        log_res, ci_res, homolog = [], [], []
        for cell in cells:
            lengths, cis, labels = [], [], []
            for r in by_cell[cell]:
                try:
                    gray, _ = normalize_polarity(read_image(r.path))
                    mask = mask_from_crop(gray)
                    g = analyze_chromosome(mask, gray * mask)
                except Exception:
                    continue
                if g.length_px <= 0:
                    continue
                lengths.append(g.length_px)
                cis.append(g.centromere_index)
                labels.append(int(r.label))
            lengths, cis, labels = np.array(lengths), np.array(cis), np.array(labels)
            rel = np.array([CHROMOSOMES[k].relative_length for k in labels])
            scale = np.median(lengths / rel)
            res = np.log(lengths / (scale * rel))
            log_res += res[labels != Y].tolist()
            ci_res += (cis - np.array([CHROMOSOMES[k].centromere_index for k in labels])).tolist()
            for k in range(1, 23):
                idx = np.flatnonzero(labels == k)
                if len(idx) == 2:
                    homolog.append(abs(res[idx[0]] - res[idx[1]]))
        mad = lambda x: 1.4826 * np.median(np.abs(np.asarray(x) - np.median(x)))  # noqa: E731
        print(f"{source}: {len(cells)} train cells, {len(log_res)} autosome/X crops")
        print(f"  log relative length residual: sd {np.std(log_res):.3f}, robust sd {mad(log_res):.3f}")
        print(f"  centromere index residual:    sd {np.std(ci_res):.3f}, robust sd {mad(ci_res):.3f}, "
              f"mean {np.mean(ci_res):+.3f}")
        print(f"  |homolog log-length difference|: median {np.median(homolog):.3f}, "
              f"implied per-object sd {np.median(homolog) / 0.954:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
