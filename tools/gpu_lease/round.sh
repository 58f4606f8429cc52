#!/usr/bin/env bash
# One call on a time-limited GPU machine: train the segmenter in chunks that resume, then bring
# the weights back in parts small enough for the lease (see README.md here).
#
#   round.sh stage           only unpack the kit and collect the parts of the weights to start from
#                            (pack_init.sh): the first call when those weights need two calls to arrive
#   round.sh train MINUTES   train for MINUTES more (the first call starts the run, from the staged
#                            weights when the kit has some, else from scratch)
#   round.sh finish          fit the outline models, split the weights (the checkpoint chosen on the
#                            selection images and the latest epoch's), return the first parts
#   round.sh fetch [N]       return the N-th group of parts (default 2: those after finish's)
#
# The run's schedule spans BUDGET minutes over all `train` calls (the learning rate anneals over
# it); the call that reaches it also chooses the count threshold on the training spreads.
# Run from the repository root with the packed kit (pack.sh) carried beside the code.
set -euo pipefail

KIT=${KIT:-.gpu}
RUN=${RUN:-runs/gpu_seg}
OUT=${OUT:?round.sh writes what comes back under \$OUT}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-$KIT/data/metaphases}
BUDGET=${BUDGET:-15}
BACKBONE=${BACKBONE:-resnet50}
FPN=${FPN:-256}
CROP=${CROP:-384}
BATCH=${BATCH:-8}
LR=${LR:-1e-3}
WARMUP=${WARMUP:-300}
STEPS=${STEPS:-250}
WORK_SCALE=${WORK_SCALE:-0.9}
VAL_IMAGES=${VAL_IMAGES:-8}
WORKERS=${WORKERS:-12}
THREADS=${THREADS:-4}
N_SYNTH=${N_SYNTH:-24}
# G-band composite spreads made from the packed gband612 cells, when pack.sh packed some.
N_COMPOSITE=${N_COMPOSITE:-40}
# Widest photometric gamma of the training crops (empty: train_segmentation.py's default, 1.65).
GAMMA_MAX=${GAMMA_MAX:-}
# Share of training crops with chromosomes of other spreads pasted against or across others (empty: off,
# as the shipped weights); the lead for merges of touching chromosomes (BENCHMARKS.md, Segmentation).
COPY_PASTE=${COPY_PASTE:-}
# Parts of at most 15 MiB, four to a call: the lease returns 16 MiB a file and 64 MiB a call.
PART_MB=${PART_MB:-15}
PARTS_PER_CALL=${PARTS_PER_CALL:-4}
# Which weights finish sends back: best.pth (chosen on the few selection images, noisily) and latest.pth
# (the end of the annealed schedule). CHECKPOINTS=best halves what the fetch calls carry.
CHECKPOINTS=${CHECKPOINTS:-best latest}
# FIT_OUTLINE=0 leaves fit-outline to the development machine (minutes on a CPU), when the lease is short.
FIT_OUTLINE=${FIT_OUTLINE:-1}
# Where the carried .gpu_init_N folders of pack_init.sh land: the repository root.
STAGE=${STAGE:-.}

log() { echo "[$(date -u +%H:%M:%S)] round.sh: $*"; }
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

setup() {
    use_kit_python
    if [[ ! -d "$DATA" ]]; then
        mkdir -p "$KIT/data"
        tar -xJf "$KIT/metaphases.tar.xz" -C "$KIT/data"
    fi
    if [[ ! -f "$KIT/synth/annotations.json" ]]; then
        # The shipped weights' synthetic spreads: G and Q banding, debris and nuclei as background.
        "$PYTHON" -m karyopipe synth --out "$KIT/synth" --n "$N_SYNTH" --seed 21 --no-progress
    fi
    if [[ -f "$KIT/gband612_cells.tar.xz" && ! -f "$KIT/composite/annotations.json" ]]; then
        mkdir -p "$KIT/gband612"
        tar -xJf "$KIT/gband612_cells.tar.xz" -C "$KIT/gband612"
        "$PYTHON" -m karyopipe synth --out "$KIT/composite" --n "$N_COMPOSITE" --seed 51 --composite "$KIT/gband612" \
            --size 1024 768 --no-progress
    fi
}

# Move the parts of the weights to start from out of the carried folders (a later call may replace
# them), and join them once all have arrived.
collect_init() {
    [[ -f "$KIT/init.sha256" && ! -f "$RUN/init.pth" ]] || return 0
    mkdir -p "$RUN/init_parts"
    local part
    for part in "$STAGE"/.gpu_init_*/init.pth.part*; do
        [[ -f "$part" ]] && mv "$part" "$RUN/init_parts/"
    done
    local have want
    have=$(find "$RUN/init_parts" -name 'init.pth.part*' | wc -l)
    want=$(cat "$KIT/init.parts")
    if (( have < want )); then
        log "weights to start from: $have of $want parts here; carry the next .gpu_init_N folder"
        return 0
    fi
    cat "$RUN"/init_parts/init.pth.part* > "$RUN/init.pth.joining"
    if [[ "$(sha256sum < "$RUN/init.pth.joining" | cut -d' ' -f1)" != "$(cut -d' ' -f1 "$KIT/init.sha256")" ]]; then
        rm -f "$RUN/init.pth.joining"
        log "the joined weights to start from do not match $KIT/init.sha256: pack them again (pack_init.sh)"
        exit 1
    fi
    mv "$RUN/init.pth.joining" "$RUN/init.pth" && rm -rf "$RUN/init_parts"
    log "weights to start from: all $want parts joined and checked ($RUN/init.pth)"
}

report() {
    cp "$RUN/train.log" "$OUT/" 2>/dev/null || true
    cp "$RUN/metrics.json" "$OUT/" 2>/dev/null || true
    tail -n 5 "$RUN/train.log" 2>/dev/null || true
}

train() {
    local minutes=$1 resume=() init=() extra=(--synthetic "$KIT/synth/annotations.json")
    [[ -f "$KIT/composite/annotations.json" ]] && extra+=(--synthetic "$KIT/composite/annotations.json")
    [[ -n "$GAMMA_MAX" ]] && extra+=(--gamma-max "$GAMMA_MAX")
    [[ -n "$COPY_PASTE" ]] && extra+=(--copy-paste "$COPY_PASTE")
    if [[ -f "$KIT/init.sha256" ]]; then
        [[ -f "$RUN/init.pth" ]] || { log "the weights to start from have not all arrived: carry the remaining .gpu_init_N folders"; exit 1; }
        init=(--init "$RUN/init.pth")
    fi
    if [[ -f "$RUN/last.pt" ]]; then
        resume=(--resume)
    else
        log "no checkpoint in $RUN: starting a new run"
    fi
    "$PYTHON" train_segmentation.py "$DATA" "${extra[@]}" --out "$RUN" \
        --weights-out "$RUN/best.pth" --backbone "$BACKBONE" --fpn-channels "$FPN" --crop "$CROP" --batch "$BATCH" \
        --epochs 100000 --steps-per-epoch "$STEPS" --warmup "$WARMUP" --lr "$LR" --patience 100000 \
        --work-scale "$WORK_SCALE" --max-val-images "$VAL_IMAGES" --time-budget "$BUDGET" --anneal-by-time \
        --stop-after "$minutes" --device "$DEVICE" --workers "$WORKERS" --threads "$THREADS" "${init[@]}" "${resume[@]}"
    report
}

send_parts() {
    local first=$1 parts=()
    compgen -G "$RUN/parts/*.pth.part*" > /dev/null && parts=("$RUN"/parts/*.pth.part*)
    (( first < ${#parts[@]} )) || { log "no parts after the first $first (of ${#parts[@]}) to send"; return 0; }
    local chosen=("${parts[@]:$first:$PARTS_PER_CALL}")
    cp "${chosen[@]}" "$OUT/"
    log "sent parts $((first + 1))-$((first + ${#chosen[@]})) of ${#parts[@]}"
}

finish() {
    [[ -f "$RUN/best.pth" ]] || { log "no $RUN/best.pth: train first"; exit 1; }
    grep -q "smallest count error" "$RUN/train.log" || log "warning: the run has not reached its budget; its count threshold is the default"
    rm -rf "$RUN/parts" && mkdir -p "$RUN/parts"
    local name sent=()
    for name in $CHECKPOINTS; do
        [[ -f "$RUN/$name.pth" ]] || { log "no $RUN/$name.pth to send"; continue; }
        # Where each outline's edge lies, learned on the training spreads the weights record.
        # Not fatal: the weights matter more, and fit-outline runs on a CPU as well.
        if [[ "$FIT_OUTLINE" == 1 ]]; then
            "$PYTHON" -m karyopipe fit-outline "$DATA" --weights "$RUN/$name.pth" --device "$DEVICE" --write --no-progress \
                || log "warning: fit-outline failed for $name.pth; run it where the weights land"
        fi
        split -b "${PART_MB}M" -d -a 2 "$RUN/$name.pth" "$RUN/parts/$name.pth.part"
        sent+=("$name.pth")
    done
    (cd "$RUN" && sha256sum "${sent[@]}" > parts/SHA256SUMS)
    cp "$RUN/parts/SHA256SUMS" "$OUT/"
    report
    send_parts 0
}

setup
mkdir -p "$RUN"
collect_init
case "${1:-}" in
    stage) ;;
    train) train "${2:?minutes}" ;;
    finish) finish ;;
    fetch) send_parts $(( (${2:-2} - 1) * PARTS_PER_CALL )) ;;
    *) echo "usage: round.sh stage | train MINUTES | finish | fetch [N]" >&2; exit 2 ;;
esac
