#!/usr/bin/env bash
# Whole staged training of karyopipe, from scratch (no pretrained weights):
#   1. synthetic spreads (karyopipe synth)       -> $RUNS/synth
#   2. segmentation Mask R-CNN (train_segmentation.py) on BioImLab metaphases + synthetic
#   3. classification: two HybridResNets (PCA and medial-axis straightening) on BioImLab + gband612
#      + synthetic crops, joined into one ensemble (karyopipe join-cls)
#   4. evaluation: eval-seg, eval-cls, label-bioimlab + eval-e2e on the held-out cells
#
# Run it in the background with a log:
#   nohup ./run_training.sh > train.log 2>&1 &
# Override any setting from the environment, e.g.
#   DEVICE=cuda EPOCHS_SEG=40 nohup ./run_training.sh > train.log 2>&1 &
#   DEVICE=cuda TIME_SEG=60 EPOCHS_SEG=1000 ./run_training.sh   # segmentation bounded by an hour, annealed over it
#   STAGES="cls eval" ./run_training.sh          # only some stages
#   RUNS=runs/train_20261124_1400 ./run_training.sh   # after an interruption: each stage resumes from its
#                                                      # last checkpoint, finished members and synthetic data are kept
# The shipped ResNet50 segmenter's own recipe (15 minutes on one H100, batch 8, crop 384, 250 steps per epoch)
# is in its card, weights/mask_rcnn_karyotype_best.md; tools/gpu_lease/round.sh runs it in resumable chunks.
# Weights go to $WEIGHTS ($RUNS/weights by default, so a trial run never overwrites
# the shipped ones; WEIGHTS=weights updates weights/). Everything else goes under
# $RUNS (git-ignored). Nothing derived from the real data is committed.
set -euo pipefail

DATA_ROOT=${DATA_ROOT:-$(cd "$(dirname "$0")/.." && pwd)/shared/data}
RUNS=${RUNS:-runs/train_$(date -u +%Y%m%d_%H%M)}
WEIGHTS=${WEIGHTS:-$RUNS/weights}
DEVICE=${DEVICE:-cpu}
PYTHON=${PYTHON:-.venv/bin/python}
THREADS=${THREADS:-2}
N_SYNTH=${N_SYNTH:-200}
N_SYNTH_CELLS=${N_SYNTH_CELLS:-250}
EPOCHS_SEG=${EPOCHS_SEG:-30}
# The classifier's defaults are the shipped members' recipe (weights/karyotype_classifier_best.md).
EPOCHS_CLS=${EPOCHS_CLS:-24}
# The pipeline keeps detections from this score once the junk calibration is stored (calibrate-junk).
JUNK_SCORE_THRESH=${JUNK_SCORE_THRESH:-0.3}
BATCH_SEG=${BATCH_SEG:-4}
# Crop-preparing processes for segmentation training (0 = in the training process; a GPU wants several).
WORKERS_SEG=${WORKERS_SEG:-$([[ $DEVICE == cuda* ]] && echo 8 || echo 0)}
# Minutes of segmentation training (0 = no limit); the learning rate then anneals over this budget.
TIME_SEG=${TIME_SEG:-0}
BATCH_CLS=${BATCH_CLS:-64}
# Network width per member, as the shipped members (WIDTH_CLS sets both): the medial-axis member at 64 read
# more val crops than at 32 (BENCHMARKS.md, Classification, twenty-ninth update).
WIDTH_PCA_CLS=${WIDTH_PCA_CLS:-${WIDTH_CLS:-32}}
WIDTH_GEOMETRY_CLS=${WIDTH_GEOMETRY_CLS:-${WIDTH_CLS:-64}}
PATIENCE_CLS=${PATIENCE_CLS:-10}
# Extra train-cls options per member: pieces of broken chromosomes taught to claim no class for both,
# lab-shifted copies of the training cells for the PCA member (as the shipped members were trained).
PCA_ARGS_CLS=${PCA_ARGS_CLS---shift-copies 1 --fragment-copies 1 --outlier-share 0.25}
GEOMETRY_ARGS_CLS=${GEOMETRY_ARGS_CLS---fragment-copies 1 --outlier-share 0.25}
# Arithmetic of the training steps: float32, or bfloat16 (autocast, float32 weights; about 1.9x faster per
# classifier step on a CPU with native bfloat16, slower on one without; BENCHMARKS.md). As the shipped weights:
# the segmenter and the PCA member in float32, the medial-axis member in bfloat16 (PRECISION_CLS sets both members).
PRECISION_SEG=${PRECISION_SEG:-float32}
PRECISION_PCA_CLS=${PRECISION_PCA_CLS:-${PRECISION_CLS:-float32}}
PRECISION_GEOMETRY_CLS=${PRECISION_GEOMETRY_CLS:-${PRECISION_CLS:-bfloat16}}
# Extra train_segmentation.py options, e.g. "--backbone resnet18 --crop 256" for a quick trial.
SEG_ARGS=${SEG_ARGS:-}
# The lab shifts eval-cls also scores ("all", or a comma list; empty: none). BENCHMARKS.md, Classification.
SHIFT_EVAL_CLS=${SHIFT_EVAL_CLS:-}
SEED=${SEED:-0}
STAGES=${STAGES:-"synth seg cls eval"}

BIOIMLAB_META="$DATA_ROOT/bioimlab/metaphases"
BIOIMLAB_CROPS="$DATA_ROOT/bioimlab/crops"
GBAND_CROPS="$DATA_ROOT/gband612"
SEG_WEIGHTS="$WEIGHTS/mask_rcnn_karyotype_best.pth"
CLS_WEIGHTS="$WEIGHTS/karyotype_classifier_best.pth"

cd "$(dirname "$0")"
mkdir -p "$RUNS"
has() { [[ " $STAGES " == *" $1 "* ]]; }
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
log "karyopipe training: DATA_ROOT=$DATA_ROOT RUNS=$RUNS DEVICE=$DEVICE STAGES='$STAGES'"
[[ -d "$DATA_ROOT" ]] || { echo "DATA_ROOT $DATA_ROOT not found (set DATA_ROOT=...)" >&2; exit 2; }

if has synth; then
    log "1/4 synthetic spreads -> $RUNS/synth"
    # Generation is deterministic in its seed, so a finished set from an interrupted run is kept.
    if [[ ! -f "$RUNS/synth/annotations.json" ]]; then
        "$PYTHON" -m karyopipe synth --out "$RUNS/synth" --n "$N_SYNTH" --seed "$SEED" --banding mixed --no-progress
    fi
    # Whole synthetic cells as crops: the classifier learns rendered chromosomes too (see BENCHMARKS.md).
    if [[ ! -f "$RUNS/synth_crops/.complete" ]]; then
        "$PYTHON" -m karyopipe synth --crops --out "$RUNS/synth_crops" --n "$N_SYNTH_CELLS" --seed "$((SEED + 7))" \
            --banding mixed --no-progress
        touch "$RUNS/synth_crops/.complete"
    fi
fi

if has seg; then
    log "2/4 segmentation -> $SEG_WEIGHTS"
    synth_args=()
    [[ -f "$RUNS/synth/annotations.json" ]] && synth_args=(--synthetic "$RUNS/synth/annotations.json")
    seg_time=()
    [[ "$TIME_SEG" != 0 ]] && seg_time=(--time-budget "$TIME_SEG" --anneal-by-time)
    seg_resume=()
    [[ -f "$RUNS/seg/last.pt" ]] && seg_resume=(--resume) && log "segmentation: resuming from $RUNS/seg/last.pt"
    # shellcheck disable=SC2086  # SEG_ARGS is a list of options
    "$PYTHON" train_segmentation.py "$BIOIMLAB_META" "${synth_args[@]}" --out "$RUNS/seg" \
        --weights-out "$SEG_WEIGHTS" --epochs "$EPOCHS_SEG" --batch "$BATCH_SEG" --seed "$SEED" \
        --device "$DEVICE" --threads "$THREADS" --workers "$WORKERS_SEG" --precision "$PRECISION_SEG" \
        "${seg_time[@]}" "${seg_resume[@]}" $SEG_ARGS
    # Where each outline's edge lies, learned from the annotated polygons of the training spreads. A trial
    # segmenter may find too little to learn from; its weights then work with the rule's outlines.
    "$PYTHON" -m karyopipe fit-outline "$BIOIMLAB_META" --weights "$SEG_WEIGHTS" --device "$DEVICE" --write \
        --no-progress || log "segmentation: no outline model fitted (above); the weights use the rule's outlines"
fi

if has cls; then
    log "3/4 classification -> $CLS_WEIGHTS"
    synth_crops=()
    [[ -d "$RUNS/synth_crops" ]] && synth_crops=("$RUNS/synth_crops")
    # Two members that straighten differently (PCA upright, medial axis), joined into one ensemble file:
    # they err on different chromosomes, so their average beats either (BENCHMARKS.md, Classification).
    for prep in pca geometry; do
        member="$RUNS/cls_$prep"
        if [[ -f "$member/weights.pth" ]]; then
            log "classification: $prep member already trained ($member/weights.pth)"
            continue
        fi
        cls_resume=()
        [[ -f "$member/last.pt" ]] && cls_resume=(--resume "$member/last.pt") && log "classification: resuming $prep member"
        extra=$PCA_ARGS_CLS width=$WIDTH_PCA_CLS precision=$PRECISION_PCA_CLS
        [[ $prep == geometry ]] && extra=$GEOMETRY_ARGS_CLS width=$WIDTH_GEOMETRY_CLS precision=$PRECISION_GEOMETRY_CLS
        # shellcheck disable=SC2086  # the member's extra options are a list
        "$PYTHON" train_classification.py --data "$BIOIMLAB_CROPS" "$GBAND_CROPS" "${synth_crops[@]}" --out "$member" \
            --mode hybrid --preprocess "$prep" --width "$width" --epochs "$EPOCHS_CLS" --lr 2e-3 --schedule onecycle \
            --batch-size "$BATCH_CLS" --patience "$PATIENCE_CLS" --seed "$SEED" --device "$DEVICE" --threads "$THREADS" \
            --precision "$precision" --no-progress "${cls_resume[@]}" $extra
    done
    "$PYTHON" -m karyopipe join-cls "$RUNS/cls_pca/weights.pth" "$RUNS/cls_geometry/weights.pth" --out "$CLS_WEIGHTS"
fi

if has eval; then
    log "4/4 evaluation -> $RUNS/eval"
    mkdir -p "$RUNS/eval"
    "$PYTHON" -m karyopipe eval-seg "$BIOIMLAB_META" --split val --weights "$SEG_WEIGHTS" \
        --device "$DEVICE" --json "$RUNS/eval/seg.json"
    "$PYTHON" -m karyopipe eval-seg "$BIOIMLAB_META" --split val --baseline --json "$RUNS/eval/seg_watershed.json"
    cls_shift=()
    [[ -n "$SHIFT_EVAL_CLS" ]] && cls_shift=(--shift "$SHIFT_EVAL_CLS")
    "$PYTHON" -m karyopipe eval-cls "$BIOIMLAB_CROPS" "$GBAND_CROPS" --split test --weights "$CLS_WEIGHTS" \
        --threads "$THREADS" "${cls_shift[@]}" --json "$RUNS/eval/cls.json"
    # Classes for the metaphase polygons (matched to the crops), then the whole pipeline on them.
    "$PYTHON" -m karyopipe label-bioimlab "$BIOIMLAB_META" "$BIOIMLAB_CROPS" --out "$RUNS/eval/bioimlab_labelled.json"
    # How often the new segmenter's objects are debris, by detection score (its training frames only).
    "$PYTHON" -m karyopipe calibrate-junk "$RUNS/eval/bioimlab_labelled.json" --seg-weights "$SEG_WEIGHTS" \
        --cls-weights "$CLS_WEIGHTS" --score-thresh "$JUNK_SCORE_THRESH" --device "$DEVICE" --write --no-progress
    # heldout: spreads of cells neither model trained on (both record their held-out cells in the weights).
    "$PYTHON" -m karyopipe eval-e2e "$RUNS/eval/bioimlab_labelled.json" --split heldout --seg-weights "$SEG_WEIGHTS" \
        --cls-weights "$CLS_WEIGHTS" --device "$DEVICE" --json "$RUNS/eval/e2e.json"
    "$PYTHON" -m karyopipe bench-karyotype --n 50 --weights "$CLS_WEIGHTS" --quiet --json "$RUNS/eval/karyotype.json"
    "$PYTHON" -m karyopipe bench-karyotype --real "$BIOIMLAB_CROPS" --weights "$CLS_WEIGHTS" --quiet \
        --json "$RUNS/eval/karyotype_real.json"
    "$PYTHON" -m karyopipe bench-pipeline --seg-weights "$SEG_WEIGHTS" --cls-weights "$CLS_WEIGHTS" \
        --threads "$THREADS" --json "$RUNS/eval/speed.json"
fi
log "done: weights in $WEIGHTS/, runs and metrics in $RUNS/"
