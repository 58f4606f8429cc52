"""Train the chromosome Mask R-CNN: a thin wrapper of ``karyopipe train-seg``.

    python train_segmentation.py /path/to/bioimlab/metaphases --out runs/seg --time-budget 75
"""
import sys

from karyopipe.cli import run_guarded
from karyopipe.segmentation.train import main

if __name__ == "__main__":
    sys.exit(run_guarded("train_segmentation.py", main, sys.argv[1:]))
