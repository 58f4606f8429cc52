#!/usr/bin/env bash
# Pack what a time-limited GPU machine needs beside the code into the git-ignored .gpu/ folder,
# which the lease carries with the working tree (see README.md here):
#   .gpu/metaphases.tar.xz  the BioImLab labelme spreads (about 2 MB packed)
#   .gpu/wheels/            pycocotools for the GPU machine's Python (its image has the rest)
# Nothing here is committed: the data stays outside the repository.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA_ROOT=${DATA_ROOT:-$ROOT/../shared/data}
KIT=${KIT:-$ROOT/.gpu}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
# The GPU machine's interpreter; pip must fetch wheels built for it, not for this machine.
REMOTE_PY=${REMOTE_PY:-3.12}

meta="$DATA_ROOT/bioimlab/metaphases"
[[ -d "$meta" ]] || { echo "pack.sh: $meta not found (set DATA_ROOT=...)" >&2; exit 2; }
mkdir -p "$KIT/wheels"
tar -cJf "$KIT/metaphases.tar.xz" -C "$(dirname "$meta")" metaphases
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$REMOTE_PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$KIT/wheels" "pycocotools>=2.0.8"
du -sh "$KIT"
echo "packed $KIT; carry it with the run (carry=[\".gpu\"])"
