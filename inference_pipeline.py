#!/usr/bin/env python
"""Run the full karyopipe pipeline on metaphase spreads (same as ``karyopipe infer``).

    python inference_pipeline.py SPREAD [SPREAD ...] [--out DIR] [--device cpu|cuda]
                                 [--seg-weights W] [--cls-weights W]

Per spread ``DIR/<stem>/``: overlay.png, karyogram.png, report.json, chromosomes.csv.
"""
import sys

from karyopipe.cli import run_guarded
from karyopipe.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(run_guarded("inference_pipeline.py", main, sys.argv[1:]))
