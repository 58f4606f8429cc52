"""Karyogram of a REAL held-out BioImLab cell, written into the git-ignored docs/real/.

The cell's 46 single-chromosome crops (Q-banded, native scale within the cell)
are measured and straightened by :func:`karyopipe.geometry.analyze_chromosome`,
scored by the shipped classifier, assigned jointly by
:func:`karyopipe.karyogram.assign_karyotype` and drawn. The cell comes from the
classifier's *test* split (same cell split as ``karyopipe train-cls``), so the
classifier never saw it. Without classifier weights the scores are flat and the
assignment runs on length and centromere index alone (said in the title).

Nothing here is committed: the picture and the call go to docs/real/.

    .venv/bin/python docs/scripts/real_karyogram.py [--data ../shared/data] [--cell ID]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def held_out_cells(crops_root: Path, split_seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15) -> list[str]:
    """Test-split cell ids of the classifier (split by cell, per data folder)."""
    from karyopipe.classification.dataset import split_cells

    cells = sorted(p.name for p in crops_root.iterdir() if p.is_dir())
    test = split_cells([f"bioimlab/{c}" for c in cells], val_fraction, test_fraction, split_seed)["test"]
    return [c.split("/", 1)[1] for c in test]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("KARYOPIPE_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--cell", help="BioImLab cell id (default: the first held-out test cell)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "real")
    parser.add_argument("--weights", type=Path, help="classifier weights (default: the shipped ones)")
    args = parser.parse_args(argv)

    from karyopipe.classes import parse_bioimlab_name
    from karyopipe.geometry import analyze_chromosome
    from karyopipe.geometry.axis import mask_from_crop
    from karyopipe.io import normalize_polarity, read_image
    from karyopipe.karyogram import assign_karyotype, draw_karyogram
    from karyopipe.karyogram.draw import save_karyogram
    from karyopipe.weights import CLASSIFICATION_WEIGHTS, default_weights

    crops_root = args.data / "bioimlab" / "crops"
    if not crops_root.is_dir():
        print(f"{crops_root}: BioImLab crops not found (use --data)", file=sys.stderr)
        return 2
    weights = args.weights or default_weights(CLASSIFICATION_WEIGHTS)
    classifier = None
    if weights.is_file():
        from karyopipe.classification import Classifier

        classifier = Classifier.from_pretrained(weights)
    config = classifier.config if classifier else {}
    cell = args.cell or held_out_cells(crops_root, int(config.get("split_seed", 0)), float(config.get("val_fraction", 0.15)),
                                       float(config.get("test_fraction", 0.15)))[0]

    paths = sorted((crops_root / cell).glob("*.bmp"))
    if not paths:
        print(f"{crops_root / cell}: no crops", file=sys.stderr)
        return 2
    truth, geoms, crops, problems = [], [], [], []
    for path in paths:
        try:
            gray, _ = normalize_polarity(read_image(path), "fluorescence")
            mask = mask_from_crop(gray)
            geoms.append(analyze_chromosome(mask, gray * mask))
            crops.append((gray, mask))
            truth.append(parse_bioimlab_name(path.stem).number)
        except Exception as exc:  # one bad crop must not stop the cell
            problems.append(f"{path}: {exc}")
    truth = np.array(truth)
    if classifier is not None:
        items = geoms if classifier.preprocess == "geometry" else crops
        log_probs = classifier.predict_cell(items)
        source = f"classifier {weights.name}"
    else:
        log_probs = np.full((len(geoms), 24), -np.log(24.0))
        source = "NO classifier weights: length + centromere only"
    call = assign_karyotype(log_probs, np.array([max(g.length_px, 1.0) for g in geoms]),
                            np.array([g.centromere_index for g in geoms]),
                            polarity_confidence=np.array([g.polarity_confidence for g in geoms]))
    title = f"{call.karyotype or 'no call'}   (real BioImLab cell {cell}, held out; {source})"
    picture = draw_karyogram([g.straightened for g in geoms], call,
                             centromere_t=np.array([g.centromere_t for g in geoms]), banding="q", title=title)
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"karyogram_bioimlab_{cell}.png"
    save_karyogram(png, picture)
    single = float(np.mean(np.argmax(log_probs, 1) + 1 == truth))
    assigned = float(np.mean(call.labels == truth))
    record = {"cell": cell, "scores": source, "karyotype": call.karyotype, "statement": call.statement,
              "accuracy_single": single, "accuracy_assigned": assigned, "problems": problems}
    (args.out / f"karyogram_bioimlab_{cell}.json").write_text(json.dumps(record, indent=1))
    print(f"{png}: {call.karyotype} ({source}); single {single:.3f}, assigned {assigned:.3f}, "
          f"{len(problems)} problem(s)")
    for p in problems:
        print(f"  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
