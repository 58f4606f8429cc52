#!/usr/bin/env bash
# Stage weights to continue from on a time-limited GPU machine (see README.md here).
#
#   pack_init.sh WEIGHTS [PARTS]
#
# The ResNet50 segmenter's weights (84 MiB in fp16) are larger than what one call may carry, but
# ignored folders carried by earlier calls stay on a warm machine. So the file is split into PARTS
# (default 2) git-ignored folders .gpu_init_1 ... .gpu_init_N, one to carry per call, with their
# checksum in the kit (.gpu/init.sha256, which travels with every call). round.sh collects the parts
# as they arrive and trains from the joined file (train_segmentation.py --init) once all are there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KIT=${KIT:-$ROOT/.gpu}
WEIGHTS=${1:?usage: pack_init.sh WEIGHTS [PARTS]}
PARTS=${2:-2}
[[ -f "$WEIGHTS" ]] || { echo "pack_init.sh: $WEIGHTS not found" >&2; exit 2; }
STAGE=${STAGE:-$ROOT}
rm -rf "$STAGE"/.gpu_init_* && mkdir -p "$KIT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
split -n "$PARTS" -d -a 2 "$WEIGHTS" "$tmp/init.pth.part"
k=0
for part in "$tmp"/init.pth.part*; do
    k=$((k + 1))
    mkdir -p "$STAGE/.gpu_init_$k"
    mv "$part" "$STAGE/.gpu_init_$k/"
done
echo "$(sha256sum < "$WEIGHTS" | cut -d' ' -f1)  init.pth" > "$KIT/init.sha256"
echo "$PARTS" > "$KIT/init.parts"
du -sh "$STAGE"/.gpu_init_*
echo "staged $WEIGHTS in $PARTS parts: carry [\".gpu\", \".gpu_init_1\"] on the first call, [\".gpu\", \".gpu_init_2\"] on the next..."
