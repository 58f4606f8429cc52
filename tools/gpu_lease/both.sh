#!/usr/bin/env bash
# One call on a time-limited GPU machine that trains the segmenter (round.sh) and the classifier
# (cls_round.sh) side by side, so that one lease serves both stages (see README.md here).
#
#   both.sh stage           round.sh stage and cls_round.sh stage: collect what this call carried (weights to
#                           start from, the packed crops) without training
#   both.sh train MINUTES   round.sh train and cls_round.sh train at once, the machine's cores shared
#   both.sh finish          the classifier's joined.pth (cls_round.sh finish), then round.sh finish
#   both.sh fetch [N]       round.sh fetch N: the segmenter's later parts
#
# The classifier's members are small: on a GPU its pace is set by the CPU work (data preparation on the
# first call, augmentation after), so it runs beside the segmenter's steps for the price of a few cores.
# Each script's settings are its own (README.md); the four names both use take a prefix here.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KIT=${KIT:-.gpu}
OUT=${OUT:?both.sh writes what comes back under \$OUT}
PYTHON=${PYTHON:-python3}
SEG_RUN=${SEG_RUN:-runs/gpu_seg}
CLS_RUN=${CLS_RUN:-runs/gpu_cls}
# 16 cores: the segmenter's crop workers and threads, and per classifier member one thread and two
# augmenting workers (one process augments about 5000 crops a second on the development CPU).
SEG_WORKERS=${SEG_WORKERS:-8}
SEG_THREADS=${SEG_THREADS:-3}
CLS_WORKERS=${CLS_WORKERS:-2}
CLS_THREADS=${CLS_THREADS:-1}
SEG_LR=${SEG_LR:-}
CLS_LR=${CLS_LR:-}
# finish returns joined.pth (about 11 MB) with the segmenter's first parts: three of 15 MiB keep the call
# under the 64 MiB a call brings back, and the fetch calls must count parts the same way.
export PARTS_PER_CALL=${PARTS_PER_CALL:-3}

log() { echo "[$(date -u +%H:%M:%S)] both.sh: $*"; }
# shellcheck source=common.sh
source "$HERE/common.sh"

# Each stage writes into its own folder on the machine; collect() brings both back within the call's
# 8 files: weights, parts and checksums as they are, the small text files in one archive.
STAGING=${STAGING:-runs/gpu_both_out}

seg() {
    mkdir -p "$STAGING/segmenter"
    env -u RUN -u LR -u WORKERS -u THREADS RUN="$SEG_RUN" OUT="$STAGING/segmenter" WORKERS="$SEG_WORKERS" \
        THREADS="$SEG_THREADS" ${SEG_LR:+LR="$SEG_LR"} bash "$HERE/round.sh" "$@" > "$STAGING/segmenter/call.log" 2>&1
}

cls() {
    mkdir -p "$STAGING/classifier"
    env -u RUN -u LR -u WORKERS -u THREADS RUN="$CLS_RUN" OUT="$STAGING/classifier" WORKERS="$CLS_WORKERS" \
        THREADS="$CLS_THREADS" ${CLS_LR:+LR="$CLS_LR"} bash "$HERE/cls_round.sh" "$@" > "$STAGING/classifier/call.log" 2>&1
}

collect() {
    local f
    for f in "$STAGING"/segmenter/*.part* "$STAGING"/classifier/joined.pth; do
        [[ -f "$f" ]] && mv "$f" "$OUT/"
    done
    # Both scripts name their checksums SHA256SUMS.
    [[ -f "$STAGING/segmenter/SHA256SUMS" ]] && mv "$STAGING/segmenter/SHA256SUMS" "$OUT/SHA256SUMS"
    [[ -f "$STAGING/classifier/SHA256SUMS" ]] && mv "$STAGING/classifier/SHA256SUMS" "$OUT/joined.SHA256SUMS"
    if [[ -f "$STAGING/classifier/cls_logs.tar.gz" ]]; then
        tar -xzf "$STAGING/classifier/cls_logs.tar.gz" -C "$STAGING/classifier" && rm "$STAGING/classifier/cls_logs.tar.gz"
    fi
    local stages=()
    for f in segmenter classifier; do
        [[ -d "$STAGING/$f" ]] && stages+=("$f")
    done
    tar -czf "$OUT/logs.tar.gz" -C "$STAGING" "${stages[@]}"
    rm -rf "$STAGING"
}

show() {
    local name=$1 status=$2
    echo "== $name: exit $status"
    tail -n 12 "$STAGING/$name/call.log" 2>/dev/null || true
}

stage() {
    local seg_status=0 cls_status=0
    rm -rf "$STAGING"
    seg stage || seg_status=$?
    show segmenter "$seg_status"
    # Not fatal: the crops may come on a later call, beside no part of the weights.
    cls stage || cls_status=$?
    show classifier "$cls_status"
    collect
    return "$seg_status"
}

train() {
    local seg_status=0 cls_status=0 seg_pid cls_pid
    # Once, before both start: two installs into one folder at once could break it.
    use_kit_python
    rm -rf "$STAGING"
    seg train "$1" &
    seg_pid=$!
    cls train "$1" &
    cls_pid=$!
    wait "$seg_pid" || seg_status=$?
    wait "$cls_pid" || cls_status=$?
    show segmenter "$seg_status"
    show classifier "$cls_status"
    collect
    (( seg_status == 0 && cls_status == 0 ))
}

finish() {
    local cls_status=0 seg_status=0
    rm -rf "$STAGING"
    cls finish || cls_status=$?
    show classifier "$cls_status"
    (( cls_status == 0 )) || log "the classifier has not finished: cls_round.sh train MINUTES alone, then cls_round.sh finish"
    seg finish || seg_status=$?
    show segmenter "$seg_status"
    collect
    (( seg_status == 0 && cls_status == 0 ))
}

fetch() {
    local status=0
    rm -rf "$STAGING"
    seg fetch "$1" || status=$?
    show segmenter "$status"
    collect
    return "$status"
}

case "${1:-}" in
    stage) stage ;;
    train) train "${2:?minutes}" ;;
    finish) finish ;;
    fetch) fetch "${2:-2}" ;;
    *) echo "usage: both.sh stage | train MINUTES | finish | fetch [N]" >&2; exit 2 ;;
esac
