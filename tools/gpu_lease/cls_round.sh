#!/usr/bin/env bash
# One call on a time-limited GPU machine for the classifier: the members of an ensemble trained side by
# side (one train-cls process each), in chunks that resume; the joined weights come back as one file.
#
#   cls_round.sh stage           only unpack the crops and make the synthetic ones (any call does this first)
#   cls_round.sh train MINUTES   train every unfinished member for at most MINUTES more (the first call
#                                starts the runs)
#   cls_round.sh finish          join the members' weights (karyopipe join-cls) and send them back
#
# Run from the repository root with the kit pack.sh packed (.gpu) carried beside the code, and on the
# first call the crops `CLS_DATA=1 pack.sh` packed (.gpu_cls): they are unpacked outside the carried
# folders, so later calls to a warm machine need not carry them again (see README.md here). Nothing is chosen on the machine: every member keeps the checkpoint its own
# val cells chose, and the joined file is judged on the development machine under a rule stated first.
set -euo pipefail

KIT=${KIT:-.gpu}
RUN=${RUN:-runs/gpu_cls}
OUT=${OUT:?cls_round.sh writes what comes back under \$OUT}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
# The packed crops (carried once) and where they are unpacked: outside every carried folder, which each
# call that carries it replaces.
CLS_KIT=${CLS_KIT:-.gpu_cls}
CLS_DATA_DIR=${CLS_DATA_DIR:-runs/gpu_cls_data}
# The crop folders under CLS_DATA_DIR, as the shipped classifier trained on them (their names are the data-set
# names its split and its held-out cells are recorded under).
FOLDERS=${FOLDERS:-bioimlab/crops gband612 synth_crops}
# The shipped model's synthetic crops (model card): made on the machine, not carried.
N_SYNTH_CROPS=${N_SYNTH_CROPS:-250}
SYNTH_SEED=${SYNTH_SEED:-7}
# One member per word: its straightening (pca or geometry), optionally :SEED. The shipped ensemble is
# "pca geometry", joined in that order.
MEMBERS=${MEMBERS:-pca geometry}
EPOCHS=${EPOCHS:-24}
WIDTH=${WIDTH:-32}
LR=${LR:-2e-3}
PATIENCE=${PATIENCE:-10}
THREADS=${THREADS:-2}
# Processes augmenting batches for each member: one process cannot keep up with a GPU's steps.
WORKERS=${WORKERS:-6}
# float32 (the shipped members) or bfloat16 (train-cls --precision: autocast steps, float32 weights).
PRECISION=${PRECISION:-float32}
# Extra train-cls options per straightening. The defaults are the shipped members' data recipe
# (model card): lab-shifted copies for the PCA member, pieces of broken chromosomes as outliers for both.
PCA_ARGS=${PCA_ARGS---shift-copies 1 --fragment-copies 1 --outlier-share 0.25}
GEOMETRY_ARGS=${GEOMETRY_ARGS---fragment-copies 1 --outlier-share 0.25}

log() { echo "[$(date -u +%H:%M:%S)] cls_round.sh: $*"; }
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

setup() {
    use_kit_python
    if [[ ! -f "$CLS_DATA_DIR/.unpacked" ]]; then
        [[ -f "$CLS_KIT/cls_data.tar.xz" ]] || {
            log "no crops on this machine and no $CLS_KIT/cls_data.tar.xz: carry $CLS_KIT (CLS_DATA=1 pack.sh) on this call"
            exit 1
        }
        mkdir -p "$CLS_DATA_DIR"
        tar -xJf "$CLS_KIT/cls_data.tar.xz" -C "$CLS_DATA_DIR"
        touch "$CLS_DATA_DIR/.unpacked"
        log "crops unpacked into $CLS_DATA_DIR; later calls to this machine need not carry $CLS_KIT"
    fi
    if [[ " $FOLDERS " == *" synth_crops "* && ! -f "$CLS_DATA_DIR/synth_crops/.made" ]] && (( N_SYNTH_CROPS > 0 )); then
        rm -rf "$CLS_DATA_DIR/synth_crops"
        "$PYTHON" -m karyopipe synth --crops --out "$CLS_DATA_DIR/synth_crops" --n "$N_SYNTH_CROPS" \
            --seed "$SYNTH_SEED" --no-progress > /dev/null
        touch "$CLS_DATA_DIR/synth_crops/.made"
    fi
    local folder
    for folder in $FOLDERS; do
        [[ -d "$CLS_DATA_DIR/$folder" ]] || { log "no $CLS_DATA_DIR/$folder in the packed crops"; exit 1; }
    done
}

member_dir() { echo "$RUN/${1/:/-seed}"; }

train_member() {
    local member=$1 minutes=$2 mode=${1%%:*} seed=0 dir extra=() resume=() data=()
    [[ "$member" == *:* ]] && seed=${member#*:}
    dir=$(member_dir "$member")
    case "$mode" in
        pca) read -r -a extra <<< "$PCA_ARGS" ;;
        geometry) read -r -a extra <<< "$GEOMETRY_ARGS" ;;
        *) log "member $member: the straightening must be pca or geometry"; return 2 ;;
    esac
    local folder
    for folder in $FOLDERS; do data+=("$CLS_DATA_DIR/$folder"); done
    if [[ -f "$dir/weights.pth" ]]; then
        log "member $member: finished"
        return 0
    fi
    mkdir -p "$dir"
    if [[ -f "$dir/last.pt" ]]; then
        resume=(--resume "$dir/last.pt")
    else
        log "member $member: no checkpoint in $dir, starting a new run"
    fi
    "$PYTHON" -m karyopipe train-cls --data "${data[@]}" --preprocess "$mode" --width "$WIDTH" --epochs "$EPOCHS" \
        --lr "$LR" --schedule onecycle --patience "$PATIENCE" --seed "$seed" --threads "$THREADS" --workers "$WORKERS" \
        --device "$DEVICE" --precision "$PRECISION" --no-progress --out "$dir" --stop-after "$minutes" "${extra[@]}" \
        "${resume[@]}" \
        >> "$dir/train.log" 2>&1
}

# Every member's log, metrics and (once finished) result in one archive: a call brings back at most 8 files.
report() {
    local member dir name files=()
    for member in $MEMBERS; do
        dir=$(member_dir "$member")
        name=$(basename "$dir")
        log "member $member:"
        grep -E "^epoch|stopped after|early stop|^val|^test|calibration|Error|error" "$dir/train.log" 2>/dev/null | tail -n 4 || true
        for f in train.log metrics.jsonl result.json; do
            [[ -f "$dir/$f" ]] && files+=("$name/$f")
        done
    done
    (( ${#files[@]} == 0 )) || tar -czf "$OUT/cls_logs.tar.gz" -C "$RUN" "${files[@]}"
    return 0
}

train() {
    local minutes=$1 member pids=() failed=0
    for member in $MEMBERS; do
        train_member "$member" "$minutes" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
    report
    (( failed == 0 )) || { log "a member's run failed: see its train.log"; exit 1; }
}

finish() {
    local member dir weights=()
    for member in $MEMBERS; do
        dir=$(member_dir "$member")
        [[ -f "$dir/weights.pth" ]] || { log "member $member has not finished: train first"; exit 1; }
        weights+=("$dir/weights.pth")
    done
    if (( ${#weights[@]} > 1 )); then
        "$PYTHON" -m karyopipe join-cls "${weights[@]}" --out "$RUN/joined.pth"
    else
        cp "${weights[0]}" "$RUN/joined.pth"
    fi
    cp "$RUN/joined.pth" "$OUT/"
    (cd "$RUN" && sha256sum joined.pth) > "$OUT/SHA256SUMS"
    report
    log "sent joined.pth ($(du -h "$RUN/joined.pth" | cut -f1)), and each member's result.json in cls_logs.tar.gz"
}

setup
mkdir -p "$RUN"
case "${1:-}" in
    stage) log "crops ready in $CLS_DATA_DIR: $FOLDERS" ;;
    train) train "${2:?minutes}" ;;
    finish) finish ;;
    *) echo "usage: cls_round.sh stage | train MINUTES | finish" >&2; exit 2 ;;
esac
