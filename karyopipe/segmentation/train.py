"""``karyopipe train-seg``: train the chromosome Mask R-CNN from scratch.

Trains on random rotated/scaled crops of annotated spreads (labelme folders
such as BioImLab metaphases, optionally plus synthetic COCO spreads), holds
out whole cells for validation, scores validation mask AP with pycocotools
after every epoch, keeps the best model (``save_weights``: fp16 + model card)
and the latest epoch's beside it, and stops early when AP stops improving. ``--resume`` continues from the last
checkpoint in ``--out``.

Usage::

    karyopipe train-seg /work/shared/data/bioimlab/metaphases --out runs/seg \\
        --backbone resnet18 --fpn-channels 128 --crop 320 --time-budget 75
    karyopipe train-seg DATA --out runs/seg --resume
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from karyopipe.cli import add_precision_argument

DEFAULT_DATA = "../shared/data/bioimlab/metaphases"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe train-seg", description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="?", default=DEFAULT_DATA, help="labelme folder or COCO JSON of annotated spreads")
    p.add_argument("--synthetic", action="append", default=[], help="extra COCO spreads for training only (repeatable)")
    p.add_argument("--out", default="runs/seg", help="run folder: checkpoints, log, metrics JSON")
    p.add_argument("--weights-out", default=None, help="where the best model is saved (default OUT/best.pth)")
    p.add_argument("--latest-out", default=None,
                   help="where the latest epoch's model is saved every epoch, whatever its val score (default "
                        "OUT/latest.pth): a few selection images choose the best checkpoint noisily, and the end "
                        "of an annealed schedule is the other candidate")
    p.add_argument("--backbone", default="resnet50", help="resnet18 | resnet34 | resnet50 | mobilenet_v3")
    p.add_argument("--fpn-channels", type=int, default=256)
    p.add_argument("--norm", default="group", choices=["group", "batch"])
    p.add_argument("--crop", type=int, default=384, help="square training crop size (px)")
    p.add_argument("--work-scale", type=float, default=None,
                   help="train at this fraction of the training set's median chromosome width (default 1.0, or with "
                        "--init the starting weights' own scale; 0.7 = faster)")
    p.add_argument("--scale-min", type=float, default=0.8, help="scale jitter around the working scale")
    p.add_argument("--scale-max", type=float, default=1.25)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--patience", type=int, default=5, help="epochs without val mask AP gain before stopping")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="random seed of the crops, augmentation and initialisation")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the by-cell train/val split (karyopipe.data.split_by_cell); with --init, the val "
                        "cells the weights record are kept instead")
    p.add_argument("--max-val-images", type=int, default=0, help="score at most this many val images per epoch (0 = all)")
    p.add_argument("--time-budget", type=float, default=0.0, help="stop after this many minutes (0 = no limit)")
    p.add_argument("--stop-after", type=float, default=0.0,
                   help="end this invocation after this many minutes, keeping the run's clock and schedule: "
                        "--resume goes on (time-limited jobs; 0 = no limit)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_precision_argument(p, help="arithmetic of the network's convolution and linear stacks in training steps "
                                   "(bfloat16: autocast, with float32 weights, optimizer, losses and box decoding; "
                                   "about 1.7x faster per step on CPUs with native bfloat16). Validation always runs "
                                   "in float32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--anneal-by-time", action="store_true",
                   help="the cosine schedule also follows --time-budget, ending at its low learning rate when time runs out")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes preparing crops (0 = in the training process; a GPU wants several)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init", default=None,
                   help="start from these segmentation weights (their model, and their working scale unless "
                        "--work-scale is given; fine-tuning)")
    p.add_argument("--copy-paste", type=float, default=0.0,
                   help="share of crops that get chromosomes of other spreads pasted in, mostly against or across another (0 = off)")
    p.add_argument("--gamma-max", type=float, default=None,
                   help="photometric gamma drawn in 1/G..G (default exp(0.5) = 1.65); wider for G-band spreads "
                        "from cameras of other gammas")
    p.add_argument("--limit-train", type=int, default=0, help="use only this many training images (tests, debugging)")
    return p


def _median_width(samples) -> float:
    """Median chromosome width (px) of the training spreads, as the segmenter estimates it."""
    from karyopipe.segmentation.dataset import load_gray
    from karyopipe.segmentation.infer import DEFAULT_REFERENCE_WIDTH, estimate_chromosome_width

    widths = [w for w in (estimate_chromosome_width(load_gray(s)) for s in samples) if w]
    return float(np.median(widths)) if widths else DEFAULT_REFERENCE_WIDTH


def _lr_factor(step: int, warmup: int, total: int, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine to 5 % over the steps, or over the time budget if that ends first."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_progress))
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


def evaluate_model(model, samples, device="cpu", reference_width=None) -> dict:
    """Validation metrics of a model on annotated spreads at their native scale."""
    from karyopipe.segmentation.dataset import load_gray
    from karyopipe.segmentation.evaluate import coco_scores, count_errors
    from karyopipe.segmentation.infer import InferenceSettings, Segmenter

    settings = InferenceSettings(score_thresh=0.05, rescale=bool(reference_width))
    if reference_width:
        settings.reference_width = float(reference_width)
    was_training = model.training
    seg = Segmenter(model, settings, device)
    gts, preds, shapes = [], [], []
    start = time.time()
    for sample in samples:
        gray = load_gray(sample)
        preds.append(seg(gray))
        gts.append(sample.instances)
        shapes.append(gray.shape)
    seconds = (time.time() - start) / max(1, len(samples))
    model.train(was_training)
    metrics = coco_scores(gts, preds, shapes, with_masks=True)
    metrics |= count_errors(gts, preds, 0.5)
    metrics["images"] = len(samples)
    metrics["seconds_per_image"] = seconds
    return metrics


# From 0.3: the ResNet50 trained on a GPU chose 0.5, the lowest of the former 0.5-0.8, and 0.4 when asked.
COUNT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def choose_count_threshold(weights, samples, thresholds=COUNT_THRESHOLDS, device="cpu") -> tuple[float, dict]:
    """The score threshold that counts most of ``samples`` within +-1 of the truth.

    That share is what the segmentation stage is judged by; ties go to the
    smaller mean count error, then to the lower threshold. Run on the
    *training* spreads after training, so the threshold the weights ship
    with is never fitted to validation cells.

    Returns
    -------
    (float, dict)
        The threshold, and ``{threshold: count_errors(...)}`` for the model card.
    """
    from karyopipe.segmentation.dataset import load_gray
    from karyopipe.segmentation.evaluate import count_errors
    from karyopipe.segmentation.infer import Segmenter

    # Detect down to the lowest candidate once; count_errors applies each threshold to the scores.
    segmenter = Segmenter.from_pretrained(weights, device=device, score_thresh=min(thresholds))
    gts = [sample.instances for sample in samples]
    preds = [segmenter(load_gray(sample)) for sample in samples]
    table = {t: count_errors(gts, preds, t) for t in thresholds}
    best = min(thresholds, key=lambda t: (-table[t]["count_within_1"], table[t]["count_mae"], t))
    return float(best), table


def _set_count_threshold(path, samples, device) -> str:
    """Choose the count threshold of the weights at ``path`` on ``samples`` and record it there."""
    from karyopipe.weights import load_weights, save_weights

    thresh, table = choose_count_threshold(path, samples, device=device)
    state, config, card = load_weights(path)
    config["inference"]["score_thresh"] = thresh
    card["inference"] = (f"score_thresh {thresh}: most of the {len(samples)} training spreads counted within "
                         f"+-1, then the smallest count error ("
                         + "; ".join(f"{t}: within +-1 {v['count_within_1']:.0%}, MAE {v['count_mae']:.2f}, "
                                     f"bias {v['count_bias']:+.2f}" for t, v in table.items())
                         + ")")
    save_weights(path, state, config, card)
    return card["inference"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    from karyopipe.segmentation.dataset import (SpreadTrainSet, collate, dataset_statistics, has_masks, seed_worker,
                                                load_spreads, split_cells)
    from karyopipe.segmentation.infer import DEFAULT_REFERENCE_WIDTH, InferenceSettings, network_precision, settings_dict
    from karyopipe.segmentation.model import build_maskrcnn, count_parameters, model_config
    from karyopipe.weights import atomic_save, save_weights

    torch.set_num_threads(max(1, args.threads))
    if str(args.device).startswith("cuda"):
        # TF32 matmuls and convolutions: several times faster on Ampere/Hopper, ample precision for training.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights_out = Path(args.weights_out) if args.weights_out else out / "best.pth"
    latest_out = Path(args.latest_out) if args.latest_out else out / "latest.pth"
    log = open(out / "train.log", "a")

    def say(msg: str) -> None:
        tqdm.write(msg)
        log.write(msg + "\n")
        log.flush()

    dataset = load_spreads(args.data)
    for problem in dataset.problems:
        say(f"skipped {problem}")
    init_state = init_config = None
    if args.init:
        from karyopipe.weights import load_weights

        init_state, init_config, _ = load_weights(args.init)
    if init_config and init_config.get("val_cells"):
        # A fine-tune must never train on the cells its starting weights were selected and scored on.
        held = {str(c) for c in init_config["val_cells"]}
        cells = sorted({str(c) for c in dataset.cells})
        train_cells, val_cells = [c for c in cells if c not in held], [c for c in cells if c in held]
        split_note = f"the val cells recorded in the --init weights ({args.init})"
    else:
        train_cells, val_cells = split_cells(dataset.cells, args.val_fraction, args.split_seed)
        split_note = f"by cell (karyopipe.data.split_by_cell), seed {args.split_seed}, val fraction {args.val_fraction}"
    train_samples = [s for s in dataset.samples if s.cell_id in set(train_cells) and has_masks(s)]
    val_samples = [s for s in dataset.samples if s.cell_id in set(val_cells) and has_masks(s)]
    if args.limit_train:
        train_samples = train_samples[: args.limit_train]
    extra = []
    for coco in args.synthetic:
        extra += [s for s in load_spreads(coco).samples if has_masks(s)]
    if not train_samples and not extra:
        raise ValueError(f"{args.data}: no training spreads with masks")
    if args.max_val_images:
        val_samples = val_samples[: args.max_val_images]
    say(f"train: {len(train_samples)} images of {len(train_cells)} cells (+{len(extra)} synthetic); "
        f"val: {len(val_samples)} images of {len(val_cells)} cells {val_cells}")

    if args.init:
        # The starting model fixes the architecture and the scale it sees spreads at.
        model_kwargs = dict(init_config["model"])
        reference_width = float(init_config.get("inference", {}).get("reference_width", DEFAULT_REFERENCE_WIDTH))
        if args.work_scale is not None:
            # A fine-tune at another scale: the convolutions are scale-agnostic, only the anchors' fit changes.
            reference_width = args.work_scale * _median_width(train_samples)
        args.backbone, args.fpn_channels = model_kwargs.get("backbone", args.backbone), model_kwargs.get("fpn_channels", args.fpn_channels)
    else:
        reference_width = (1.0 if args.work_scale is None else args.work_scale) * _median_width(train_samples)
        model_kwargs = {
            "backbone": args.backbone, "num_classes": 2, "norm": args.norm, "fpn_channels": args.fpn_channels,
            "rpn_pre_nms_top_n_train": 1000, "rpn_post_nms_top_n_train": 600, "box_batch_size_per_image": 256,
            "rpn_pre_nms_top_n_test": 1000, "rpn_post_nms_top_n_test": 600, "box_detections_per_img": 150,
        }
    model = build_maskrcnn(**model_kwargs).to(args.device)
    if init_state is not None:
        model.load_state_dict(init_state)
        say(f"initialised from {args.init}")
    say(f"model: Mask R-CNN {args.backbone}-FPN{args.fpn_channels}, {count_parameters(model) / 1e6:.1f} M parameters, "
        f"reference chromosome width {reference_width:.2f} px")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    total_steps = args.epochs * args.steps_per_epoch
    # With --anneal-by-time the cosine follows the time budget as well, so a run cut by its budget
    # (a GPU lease, a session) still ends at a low learning rate instead of mid-schedule.
    clock = {"start": None, "before": 0.0}

    def run_seconds() -> float:
        """Training time of the whole run, earlier invocations included."""
        return clock["before"] + time.time() - clock["start"]

    def budget_spent() -> bool:
        return bool(args.time_budget) and run_seconds() / 60 >= args.time_budget

    def invocation_spent() -> bool:
        return bool(args.stop_after) and (time.time() - clock["start"]) / 60 >= args.stop_after

    def time_progress() -> float:
        if not (args.anneal_by_time and args.time_budget) or clock["start"] is None:
            return 0.0
        return run_seconds() / (60.0 * args.time_budget)

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, args.warmup, total_steps, time_progress()))
    # -inf, not -1: without val spreads the score is -loss, which starts below -1.
    start_epoch, best_ap, history, bad_epochs, elapsed_before = 0, -math.inf, [], 0, 0.0
    last = out / "last.pt"
    if args.resume:
        if not last.is_file():
            raise FileNotFoundError(f"{last}: no checkpoint to resume from")
        ckpt = torch.load(last, map_location=args.device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best_ap, history = ckpt["epoch"] + 1, ckpt["best_ap"], ckpt["history"]
        bad_epochs, elapsed_before = ckpt.get("bad_epochs", 0), ckpt.get("elapsed", 0.0)
        say(f"resumed from {last} at epoch {start_epoch}, best val mask AP {best_ap:.4f}")

    train_set = SpreadTrainSet(train_samples + extra, crop_size=args.crop, scale_range=(args.scale_min, args.scale_max),
                               length=args.steps_per_epoch * args.batch, seed=args.seed + start_epoch,
                               reference_width=reference_width, copy_paste=args.copy_paste,
                               gamma_max=args.gamma_max)
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch, shuffle=True, collate_fn=collate,
                                         num_workers=args.workers, worker_init_fn=seed_worker,
                                         persistent_workers=args.workers > 0,
                                         generator=torch.Generator().manual_seed(args.seed + start_epoch))
    clock.update(start=time.time(), before=elapsed_before)
    inference = settings_dict(InferenceSettings(reference_width=reference_width))
    for epoch in range(start_epoch, args.epochs):
        model.train()
        sums: dict[str, float] = {}
        steps = 0
        bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, mininterval=30)
        for images, targets in bar:
            images = [im.to(args.device) for im in images]
            targets = [{k: v.to(args.device) for k, v in t.items()} for t in targets]
            with network_precision(model, args.precision, args.device):
                losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch}: { {k: float(v) for k, v in losses.items()} }")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            scheduler.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            steps += 1
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            if budget_spent() or invocation_spent():
                break  # score and save what we have rather than overrun the budget
        steps = max(1, steps)
        record = {"epoch": epoch, "lr": scheduler.get_last_lr()[0], **{k: v / steps for k, v in sums.items()}}
        if val_samples:
            record["val"] = evaluate_model(model, val_samples, args.device, reference_width)
        elapsed = run_seconds()
        record["elapsed_min"] = elapsed / 60
        history.append(record)
        val_ap = record.get("val", {}).get("segm_AP", -record["loss"])
        improved = val_ap > best_ap
        card = {
            "model": f"Mask R-CNN {args.backbone}-FPN ({args.fpn_channels} ch), GroupNorm, from scratch, 1 grey channel; "
                     f"labels 0 = background (incl. nuclei, debris), 1 = chromosome",
            "data": f"{args.data} ({dataset.format}): {dataset_statistics(train_samples)}"
                    + (f" + {len(extra)} synthetic spreads" if extra else ""),
            "split": f"{split_note}: "
                     f"{len(val_cells)} val cells {val_cells}",
            "training": f"epoch {epoch + 1}/{args.epochs} x {args.steps_per_epoch} steps, batch {args.batch}, "
                        f"crops {args.crop}px at working width {reference_width:.2f}px (x{args.scale_min}-{args.scale_max}), AdamW lr {args.lr}, "
                        f"{elapsed / 60:.0f} min on {args.device} ({args.threads} thread(s))"
                        + (f", cosine annealed over a {args.time_budget:g}-min budget" if args.anneal_by_time and args.time_budget else "")
                        + (f", initialised from {args.init}" if args.init else "")
                        + (f", {args.precision} autocast" if args.precision != "float32" else "")
                        + (f", copy-paste of touching and crossing chromosomes into {args.copy_paste:.0%} of crops" if args.copy_paste else "")
                        + (f", photometric gamma 1/{args.gamma_max:g}-{args.gamma_max:g}" if args.gamma_max else ""),
            "metrics": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.get("val", {}).items()},
            "limitations": ("trained on CPU in a short budget; a GPU run is pending. " if str(args.device) == "cpu" else "")
                           + "Q-banded BioImLab only: brightfield G-band spreads rely on polarity normalisation "
                             "and rescaling.",
        }
        config = {"model": model_config(model_kwargs), "inference": inference, "val_cells": val_cells,
                  "train_cells": train_cells, "data": str(args.data), "epoch": epoch}
        save_weights(latest_out, model.state_dict(), config, {**card, "checkpoint": f"the latest epoch ({epoch})"})
        if improved:
            best_ap, bad_epochs = val_ap, 0
            save_weights(weights_out, model.state_dict(), config,
                         {**card, "checkpoint": f"the best val mask AP so far (epoch {epoch})"})
        else:
            bad_epochs += 1
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "epoch": epoch, "best_ap": best_ap, "history": history, "bad_epochs": bad_epochs,
                    "elapsed": elapsed, "args": vars(args)}, last)
        (out / "metrics.json").write_text(json.dumps(history, indent=1))
        val = record.get("val", {})
        say(f"epoch {epoch}: loss {record['loss']:.3f} "
            + (f"val segm_AP {val['segm_AP']:.3f} AP50 {val['segm_AP50']:.3f} count_mae {val['count_mae']:.2f} " if val else "")
            + f"{'*best* ' if improved else ''}{elapsed / 60:.1f} min")
        if bad_epochs >= args.patience:
            say(f"early stop: no val mask AP gain for {args.patience} epochs")
            break
        if args.time_budget and elapsed / 60 >= args.time_budget:
            say(f"time budget of {args.time_budget} min reached")
            break
        if invocation_spent():
            # The run is not over: the count threshold is chosen when it is.
            say(f"stopped after {args.stop_after:g} min of this invocation; continue with --resume")
            log.close()
            return 0
    say(f"best val mask AP {best_ap:.4f}; weights {weights_out}, latest epoch's {latest_out}")
    for path in (weights_out, latest_out):
        if path.is_file() and train_samples:
            say(f"{path.name}: {_set_count_threshold(path, train_samples, args.device)}")
    log.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
