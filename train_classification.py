"""Train the chromosome classifier: thin wrapper around ``karyopipe train-cls``."""
from karyopipe.classification.train import main
import sys
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
