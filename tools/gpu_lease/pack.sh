#!/usr/bin/env bash
# Pack what a time-limited GPU machine needs beside the code into the git-ignored .gpu/ folder,
# which the lease carries with the working tree (see README.md here):
#   .gpu/metaphases.tar.xz  the BioImLab labelme spreads (about 2 MB packed)
#   .gpu/wheels/            pycocotools, shapely and pyryotype for the GPU machine's Python (its image
#                           has torch, numpy, scikit-image, opencv, matplotlib and pandas)
#   .gpu/gband612_cells.tar.xz  with COMPOSITE_CELLS=N: N gband612 cells of the classifier's training
#                           split (about 50 kB a cell), for G-band composite spreads made on the machine
#   .gpu_cls/cls_data.tar.xz  with CLS_DATA=1: the BioImLab crops and all of gband612 (about 28 MB packed),
#                           for training the classifier there (cls_round.sh); every cell travels, since
#                           the split by cell is drawn over all of them. A folder of its own: one call
#                           carries it, and later calls to the warm machine leave it behind
# Nothing here is committed: the data stays outside the repository.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA_ROOT=${DATA_ROOT:-$ROOT/../shared/data}
KIT=${KIT:-$ROOT/.gpu}
CLS_KIT=${CLS_KIT:-$ROOT/.gpu_cls}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
# The GPU machine's interpreter; pip must fetch wheels built for it, not for this machine.
REMOTE_PY=${REMOTE_PY:-3.12}
COMPOSITE_CELLS=${COMPOSITE_CELLS:-0}
CLS_DATA=${CLS_DATA:-0}

meta="$DATA_ROOT/bioimlab/metaphases"
[[ -d "$meta" ]] || { echo "pack.sh: $meta not found (set DATA_ROOT=...)" >&2; exit 2; }
mkdir -p "$KIT/wheels"
tar -cJf "$KIT/metaphases.tar.xz" -C "$(dirname "$meta")" metaphases
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$REMOTE_PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$KIT/wheels" "pycocotools>=2.0.8" "shapely>=2.0" "pyryotype>=0.0.7" "tqdm>=4.60"
if [[ "$CLS_DATA" == 1 ]]; then
    for folder in bioimlab/crops gband612; do
        [[ -d "$DATA_ROOT/$folder" ]] || { echo "pack.sh: $DATA_ROOT/$folder not found" >&2; exit 2; }
    done
    mkdir -p "$CLS_KIT"
    tar -cf - -C "$DATA_ROOT" bioimlab/crops gband612 | xz -T0 -6 > "$CLS_KIT/cls_data.tar.xz"
    du -sh "$CLS_KIT"
fi
# Packed inside the kit before 2026-11-24: carried on every call there.
rm -f "$KIT/cls_data.tar.xz"
if (( COMPOSITE_CELLS > 0 )); then
    # Training cells only (the classifier's split), so no held-out crop reaches any model.
    "$PYTHON" - "$DATA_ROOT/gband612" "$COMPOSITE_CELLS" > "$KIT/gband612_cells.txt" <<'PY'
import sys
from pathlib import Path
from karyopipe.classification.dataset import split_cells
from karyopipe.data import read_dataset
root, n = Path(sys.argv[1]), int(sys.argv[2])
folders = {}
for sample in read_dataset(root).samples:
    folders.setdefault(str(sample.cell_id), set()).add(Path(sample.path).relative_to(root).parts[0])
train = split_cells([f"gband612/{c}" for c in sorted(folders)])["train"]
for cell in train[:n]:
    print("\n".join(sorted(folders[cell.split("/", 1)[1]])))
PY
    tar -cJf "$KIT/gband612_cells.tar.xz" -C "$DATA_ROOT/gband612" -T "$KIT/gband612_cells.txt"
fi
du -sh "$KIT"
# What travels is the working tree (tracked and unignored files) plus the kit: at most 64 MiB.
tree_bytes=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
kit_bytes=$(du -sb "$KIT" | cut -f1)
[[ -d "$CLS_KIT" ]] && kit_bytes=$((kit_bytes + $(du -sb "$CLS_KIT" | cut -f1)))
if (( tree_bytes + kit_bytes > 60 * 1024 * 1024 )); then
    echo "pack.sh: the working tree ($((tree_bytes >> 20)) MiB) and the kit ($((kit_bytes >> 20)) MiB) exceed what may travel;" \
        "set the weights aside for the lease: mkdir -p .cache/weights_aside && mv weights/*.pth .cache/weights_aside/" >&2
fi
echo "packed $KIT; carry it with the run (carry=[\".gpu\"])"
[[ -d "$CLS_KIT" ]] && echo "packed $CLS_KIT; carry it on the first classifier call (carry=[\".gpu\", \".gpu_cls\"])"
exit 0
