"""Regenerate the bundled synthetic example spreads and their ground truth.

Run from the repository root::

    .venv/bin/python examples/make_examples.py

Writes ``examples/<name>.png`` and ``examples/<name>.json`` (COCO, one image,
``file_name`` relative to the JSON). Deterministic: same code, same bytes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from karyopipe.synth import compose_spread
from karyopipe.synth.coco import image_entry, save_png, spread_annotations, write_annotations

# name, karyotype, banding, seed
EXAMPLES = (
    ("spread_46XY", "46,XY", "g", 46),
    ("spread_47XX+21_qband", "47,XX,+21", "q", 21),
    ("spread_45X", "45,X", "g", 45),
)


def main() -> None:
    here = Path(__file__).resolve().parent
    for name, karyotype, banding, seed in EXAMPLES:
        rng = np.random.default_rng([seed, 0])
        spread = compose_spread(karyotype, rng, size=(768, 576), banding=banding, nuclei=1, debris=4,
                                noise=0.015, overlap_fraction=0.04, touching=0.12)
        save_png(here / f"{name}.png", spread.image_u8)
        entry = image_entry(spread, 1, f"{name}.png", f"example-{name}")
        info = {"description": f"karyopipe synthetic example {name}", "seed": seed, "generator": "examples/make_examples.py"}
        write_annotations(here / f"{name}.json", [entry], spread_annotations(spread, 1, 1), info)
        print(f"{name}: {karyotype}, {banding}-band, {len(spread.instances)} instances")


if __name__ == "__main__":
    main()
