import sys

from karyopipe.cli import main

sys.exit(main())
