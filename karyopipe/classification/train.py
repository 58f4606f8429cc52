"""``karyopipe train-cls``: train the HybridResNet chromosome classifier from scratch.

Data are split by cell (train / val / test, deterministic per data folder), the
val split drives early stopping, and the test split is only scored once, with
the best checkpoint, at the end. Everything goes into the run folder:
``metrics.jsonl`` (one line per epoch), ``last.pt`` / ``best.pt`` (resumable),
``curves.png``, ``confusion_test.png``, ``result.json`` and the fp16 weights
with their model card.

Usage::

    karyopipe train-cls --data /path/bioimlab/crops --epochs 40 --width 32 --out runs/cls-bioimlab
    karyopipe train-cls --data A B --resume runs/cls-bioimlab/last.pt
    karyopipe train-cls --data A B --shift-copies 1        # plus each training cell as if from another lab
    karyopipe train-cls --data A B --fragment-copies 1 --outlier-share 0.25   # plus pieces, taught to claim no class
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from karyopipe.cli import add_precision_argument

ABLATIONS = {"hybrid": (True, True), "cnn": (True, False), "features": (False, True)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe train-cls", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="crop folder(s): BioImLab crops, gband612 clase folders, ...")
    p.add_argument("--out", default=None, help="run folder (default runs/cls-<time>)")
    p.add_argument("--save-weights", default=None, help="also write the best weights here (e.g. weights/karyotype_classifier_best.pth)")
    p.add_argument("--mode", choices=sorted(ABLATIONS), default="hybrid", help="hybrid, CNN only or features only")
    p.add_argument("--preprocess", choices=["pca", "geometry"], default="pca",
                   help="straightening: PCA upright (fallback) or karyopipe.geometry medial axis")
    p.add_argument("--size", nargs=2, type=int, default=[64, 32], metavar=("L", "W"))
    p.add_argument("--arch", choices=["resnet18", "resnet34", "resnet50"], default="resnet18")
    p.add_argument("--width", type=int, default=64, help="first-stage channels (64 = torchvision ResNet)")
    p.add_argument("--stem", choices=["small", "imagenet"], default="small")
    p.add_argument("--norm", choices=["batch", "group"], default="batch")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", choices=["adam", "sgd", "rmsprop"], default="adam")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--schedule", choices=["cosine", "onecycle", "none"], default="onecycle")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                   help="mixup (Zhang et al. 2018): train on each batch blended with a shuffled copy of itself, "
                        "images, features and targets alike, by a weight drawn from Beta(ALPHA, ALPHA); 0 (default): off")
    p.add_argument("--sam", type=float, default=0.0, metavar="RHO",
                   help="sharpness-aware minimisation (Foret et al. 2021): each step takes the gradient at the "
                        "worst weights within RHO of the current ones (two passes a step); 0 (default): off")
    p.add_argument("--ema-half-life", type=float, default=0.0, metavar="EPOCHS",
                   help="score, keep and ship an exponential moving average of the weights (buffers included) "
                        "whose memory halves every EPOCHS epochs of steps; 0 (default): the weights as trained")
    p.add_argument("--patience", type=int, default=10, help="early stopping: epochs without val improvement")
    p.add_argument("--no-balance", action="store_true", help="plain shuffling instead of class-balanced sampling")
    p.add_argument("--blur-max", type=float, default=5.0, help="largest Gaussian-blur sigma of the augmentation")
    p.add_argument("--stretch-max", type=float, default=1.0, metavar="S",
                   help="augmentation: change each crop's length-to-width ratio by a factor in 1/S..S "
                        "(cells differ in condensation; 1 = off)")
    p.add_argument("--hflip", type=float, default=0.0, metavar="P",
                   help="augmentation: mirror a crop left to right with probability P (p-arm stays up; 0 = off)")
    p.add_argument("--erase", type=float, default=0.0, metavar="P",
                   help="augmentation: random erasing (Zhong et al. 2020), with probability P one rectangle of 2-20 %% "
                        "of the canvas set to background, as if hidden by another chromosome (0 = off)")
    p.add_argument("--gamma-max", type=float, default=None,
                   help="augmentation gamma is drawn log-uniform in 1/G..G, another camera's response curve "
                        "(default e^0.3 = 1.35)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--shift-copies", type=int, default=0,
                   help="add this many copies of the training crops, each cell under its own random lab shift "
                        "(karyopipe.classification.shift.draw_lab_shift): resolution, blur, JPEG, contrast, ...")
    p.add_argument("--fragment-copies", type=int, default=0,
                   help="add pieces of about 1 in 8 training crops (30-60 %% of the length, cut inside their cell) "
                        "this many times, as outliers with a uniform target (karyopipe.classification.fragments)")
    p.add_argument("--outlier-weight", type=float, default=0.5,
                   help="weight of the pieces' loss (outlier exposure's lambda)")
    p.add_argument("--outlier-share", type=float, default=None,
                   help="share of the class-balanced draws that are pieces (default: as one class among 25)")
    p.add_argument("--source-share", action="append", type=_source_share, metavar="SOURCE=FRACTION",
                   help="give one data set's chromosomes this fraction of the training draws (repeatable; e.g. "
                        "bioimlab=0.3, the Q-band source, 10 %% of the crops); the others share the rest")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train-cells", type=int, default=None, help="use at most this many training cells per data folder")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=0,
                   help="processes preparing augmented batches (0: in the training process); for a GPU, whose "
                        "steps are faster than one process's augmentation")
    p.add_argument("--device", default="cpu")
    add_precision_argument(p, help="bfloat16: the training steps under autocast, in channels-last layout (about 1.9x "
                                   "faster on a CPU with native bfloat16, AVX512-BF16 or AMX; slower on others); val "
                                   "scoring, calibration and the saved weights stay float32")
    p.add_argument("--resume", default=None, help="checkpoint (last.pt) to continue from")
    p.add_argument("--stop-after", type=float, default=None, metavar="MINUTES",
                   help="end this call before an epoch that would finish past MINUTES of wall time (data preparation "
                        "included), with last.pt saved for --resume: for machines lent in time-limited calls")
    p.add_argument("--init", default=None,
                   help="fine-tune: start from these weights (.pth) with a fresh optimizer, schedule and early stopping")
    p.add_argument("--no-progress", action="store_true")
    return p


def _seed_worker(_worker_id: int) -> None:
    """Give each loader process its own augmentation stream, drawn from the loader's seeded generator
    (a forked copy of the dataset's generator would repeat the same draws in every process)."""
    import torch
    from torch.utils.data import get_worker_info

    get_worker_info().dataset.rng = np.random.default_rng(torch.initial_seed() % 2**32)


def _source_share(text: str) -> tuple[str, float]:
    source, _, fraction = text.partition("=")
    try:
        value = float(fraction)
    except ValueError:
        value = -1.0
    if not source or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SOURCE=FRACTION with 0 < FRACTION < 1, e.g. bioimlab=0.3")
    return source, value


def _model_config(args, num_features, feature_mean, feature_std) -> dict:
    use_image, use_features = ABLATIONS[args.mode]
    return {
        "num_features": num_features if use_features else 0, "arch": args.arch, "width": args.width,
        "stem": args.stem, "norm": args.norm, "use_image": use_image, "dropout": args.dropout,
        "feature_mean": [float(v) for v in feature_mean], "feature_std": [float(v) for v in feature_std],
        "size": list(args.size), "preprocess": args.preprocess, "split_seed": args.split_seed,
        "val_fraction": args.val_fraction, "test_fraction": args.test_fraction,
    }


def _limit_cells(arrays, max_cells, seed):
    if not max_cells:
        return arrays
    keep = []
    rng = np.random.default_rng(seed)
    for source in sorted({c.split("/", 1)[0] for c in arrays.unique_cells}):
        cells = [c for c in arrays.unique_cells if c.split("/", 1)[0] == source]
        if len(cells) > max_cells:
            cells = sorted(rng.choice(cells, max_cells, replace=False).tolist())
        keep += cells
    return arrays.subset(np.flatnonzero(np.isin(arrays.cells, keep)))


def _rebuilt_training_cells(train_arrays, args, copies: int, make_transform, what: str, keep=None, progress=True):
    """The training arrays plus their crop folders' training cells preprocessed again ``copies`` times,
    each time through ``make_transform(copy)`` (a :func:`build_arrays` transform); ``keep(arrays, transform)``
    picks and relabels the rows to add (default all)."""
    from karyopipe.classification.dataset import build_arrays, concat_arrays, read_dataset, source_name

    cells = set(train_arrays.cells.tolist())
    extra = []
    for root in args.data:
        if read_dataset(root).kind != "crops":
            print(f"{root}: annotated spreads get no {what} (crop folders only)")
            continue
        mine = {c for c in cells if c.split("/", 1)[0] == source_name(root)}
        for copy in range(copies):
            transform = make_transform(copy)
            arrays = build_arrays(root, tuple(args.size), args.preprocess, cache_dir=None, progress=progress,
                                  cells=mine, transform=transform)
            extra.append(arrays if keep is None else keep(arrays, transform))
    if not extra:
        return train_arrays
    extra = concat_arrays(extra)
    extra.problems = []  # the plain build reported them
    return concat_arrays([train_arrays, extra])


def _add_shifted_copies(train_arrays, args, progress=True):
    """The training arrays plus ``args.shift_copies`` lab-shifted copies of their crop folders' cells."""
    from karyopipe.classification.shift import random_cell_shifter

    return _rebuilt_training_cells(train_arrays, args, args.shift_copies,
                                   lambda copy: random_cell_shifter(args.seed * 1000 + copy), "lab-shifted copies",
                                   progress=progress)


def _add_fragment_copies(train_arrays, args, progress=True):
    """The training arrays plus pieces of their crops (label 0, an outlier), ``args.fragment_copies`` draws."""
    from karyopipe.classification.fragments import CellFragmenter, rows_cut

    def pieces_only(arrays, fragmenter):
        part = arrays.subset(rows_cut(arrays.cells, fragmenter.cut))
        part.labels[:] = 0
        return part

    return _rebuilt_training_cells(train_arrays, args, args.fragment_copies,
                                   lambda copy: CellFragmenter(seed=args.seed * 1000 + 500 + copy), "pieces",
                                   keep=pieces_only, progress=progress)


PREPARED_TRAINING_SET = "train_arrays.npz"


def _prepared_training_set(train_arrays, args, out: Path):
    """The training split as this run trains on it: limited, plus lab-shifted copies and pieces.

    Copies and pieces are preprocessed again from the crops, minutes of work
    (no shared cache holds them). A run that makes them keeps the result in
    its folder, and a resumed call (``--resume``: time-limited machines resume
    every few minutes) reads it back when the recipe is unchanged.
    """
    from karyopipe.classification.dataset import load_arrays, save_arrays

    recipe = json.dumps({"data": [str(Path(d).resolve()) for d in args.data], "size": list(args.size),
                         "preprocess": args.preprocess, "split": [args.split_seed, args.val_fraction, args.test_fraction],
                         "max_train_cells": args.max_train_cells, "seed": args.seed,
                         "shift_copies": args.shift_copies, "fragment_copies": args.fragment_copies}, sort_keys=True)
    kept = out / PREPARED_TRAINING_SET
    if args.resume and kept.is_file():
        with np.load(kept, allow_pickle=False) as blob:
            same = "recipe" in blob.files and str(blob["recipe"]) == recipe
        if same:
            print(f"training set: {kept} (prepared by this run's first call)", flush=True)
            return load_arrays(kept)
        print(f"training set: {kept} was prepared under other settings; preparing it again", flush=True)
    train_arrays = _limit_cells(train_arrays, args.max_train_cells, args.seed)
    if args.shift_copies:
        train_arrays = _add_shifted_copies(train_arrays, args, progress=not args.no_progress)
    if args.fragment_copies:
        train_arrays = _add_fragment_copies(train_arrays, args, progress=not args.no_progress)
    if args.shift_copies or args.fragment_copies:
        # Uncompressed: written once per run and read on every resume, where seconds count.
        save_arrays(kept, train_arrays, compress=False, recipe=np.asarray(recipe))
    return train_arrays


def sampling_weights(labels: np.ndarray, outlier_share: float | None = None, sources=None,
                     source_shares: dict | None = None) -> np.ndarray:
    """Per-row draw weights for the training sampler.

    Class-balanced; with ``source_shares`` (``{source: fraction}``, ``sources``
    giving each row's data-set name), the chromosomes of each named source get
    that fraction of the draws of chromosomes, the other sources share the rest
    as before; with ``outlier_share``, the pieces (label 0) get that share of
    all draws.
    """
    from karyopipe.classification.dataset import class_balanced_weights

    weights = class_balanced_weights(labels)
    pieces = np.asarray(labels) == 0
    if source_shares:
        sources = np.asarray(sources)
        missing = sorted(set(source_shares) - set(sources[~pieces].tolist()))
        if missing:
            raise ValueError(f"--source-share names {', '.join(missing)}: no training chromosomes from "
                             f"{'it' if len(missing) == 1 else 'them'} (sources: {', '.join(sorted(set(sources.tolist())))})")
        named = np.isin(sources, list(source_shares)) & ~pieces
        rest = ~named & ~pieces
        total = weights[~pieces].sum()
        left = 1.0 - sum(source_shares.values())
        if rest.any() and left <= 0:
            raise ValueError("--source-share: the shares leave nothing for the other sources")
        for source, share in source_shares.items():
            rows = (sources == source) & ~pieces
            weights[rows] *= share * total / weights[rows].sum()
        if rest.any():
            weights[rest] *= left * total / weights[rest].sum()
    if outlier_share is not None and pieces.any() and (~pieces).any():
        weights = weights / weights.sum()
        weights[pieces] *= outlier_share / weights[pieces].sum()
        weights[~pieces] *= (1.0 - outlier_share) / weights[~pieces].sum()
    return weights


def _weight_average(model, half_life_epochs: float, steps_per_epoch: int):
    """An exponential moving average of ``model``'s weights and buffers, or None when ``half_life_epochs`` is 0.

    The decay per step is set so that a step's weight in the average halves every
    ``half_life_epochs`` epochs, which keeps the average's memory the same whatever
    the size of the training set.
    """
    if half_life_epochs <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    decay = 0.5 ** (1.0 / (half_life_epochs * max(1, steps_per_epoch)))
    # Buffers too: the BatchNorm statistics must match the averaged weights they normalise for.
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def mixup_batch(images, features, alpha: float, rng: np.random.Generator):
    """Blend a batch with a shuffled copy of itself (mixup, Zhang et al. 2018).

    Parameters
    ----------
    images : Tensor, shape (B, 1, L, W)
    features : Tensor, shape (B, F)
    alpha : float
        The blend weight ``lam`` is drawn from Beta(alpha, alpha), one per batch.
    rng : numpy Generator

    Returns
    -------
    images, features : Tensor
        ``lam * x + (1 - lam) * x[order]``, the same shapes.
    order : Tensor, shape (B,), int64
        Which row each row was blended with: the loss is
        ``lam * loss(target) + (1 - lam) * loss(target[order])``.
    lam : float
    """
    import torch

    lam = float(rng.beta(alpha, alpha))
    order = torch.from_numpy(rng.permutation(len(images))).to(images.device)
    return lam * images + (1 - lam) * images[order], lam * features + (1 - lam) * features[order], order, lam


def sharpness_ascent(params, rho: float) -> list:
    """Move the weights to the worst point within ``rho`` of them, to first order (SAM's first step).

    SAM (Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
    Generalization", ICLR 2021) steps with the gradient taken at ``w + rho * g / ||g||``,
    which favours flat minima; with small data trained from scratch those generalise better.

    Parameters
    ----------
    params : iterable of Tensor
        The weights, their ``.grad`` filled by a backward pass at the current weights.
    rho : float
        Radius of the neighbourhood (L2 norm over all the weights together).

    Returns
    -------
    list of (Tensor, Tensor)
        Each moved weight with the offset added to it, for :func:`sharpness_descent`.
    """
    import torch

    moved = [p for p in params if p.grad is not None]
    if not moved:
        return []
    grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in moved]))
    scale = rho / (float(grad_norm) + 1e-12)
    offsets = []
    with torch.no_grad():
        for p in moved:
            offset = p.grad * scale
            p.add_(offset)
            offsets.append((p, offset))
    return offsets


def sharpness_descent(offsets: list) -> None:
    """Undo :func:`sharpness_ascent`, so the optimizer steps from the original weights."""
    import torch

    with torch.no_grad():
        for p, offset in offsets:
            p.sub_(offset)


@contextmanager
def frozen_batchnorm_statistics(model):
    """Within this context, BatchNorm layers normalise by the batch but leave their running statistics alone.

    SAM's second pass sees the same batch at perturbed weights; letting it update the
    running statistics would count the batch twice, once at weights never kept.
    """
    import torch

    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum


def plot_curves(history: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["val_loss"] for h in history], label="val")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    b.plot(ep, [h["train_accuracy"] for h in history], label="train top-1")
    b.plot(ep, [h["val_accuracy"] for h in history], label="val top-1")
    b.plot(ep, [h["val_accuracy_assigned"] for h in history], label="val assigned")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy"), b.set_ylim(0, 1), b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _make_optimizer(name, params, lr, wd):
    import torch

    if name == "adam":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=wd, momentum=0.9)


def train(args, splits: dict | None = None) -> dict:
    """Train per ``args`` (the parsed CLI namespace); returns the final result dict.

    ``splits`` (``{"train","val","test"} -> CellArrays``) may be passed directly
    (tests); otherwise ``args.data`` is read, cached and split by cell.
    """
    import torch
    from torch.utils.data import DataLoader, WeightedRandomSampler

    from karyopipe.classification.classifier import Classifier
    from karyopipe.classification.dataset import (
        CropDataset, build_arrays, concat_arrays, split_arrays,
    )
    from karyopipe.classification.evaluate import plot_confusion, score_predictions
    from karyopipe.classification.fragments import outlier_exposure_loss
    from karyopipe.classification.model import build_hybrid_resnet
    from karyopipe.weights import atomic_save

    started = time.time()
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    out = Path(args.out or f"runs/cls-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    problems = []
    if splits is None:
        parts = [build_arrays(root, tuple(args.size), args.preprocess, progress=not args.no_progress) for root in args.data]
        arrays = concat_arrays(parts)
        problems = arrays.problems
        splits = split_arrays(arrays, args.split_seed, args.val_fraction, args.test_fraction)
        splits["train"] = _prepared_training_set(splits["train"], args, out)
    train_a, val_a, test_a = splits["train"], splits["val"], splits["test"]
    (out / "split.json").write_text(json.dumps({k: v.unique_cells for k, v in splits.items()}, indent=1))
    labelled = train_a.labels > 0  # pieces (label 0) are outliers, not the population features are scaled by
    fmean = train_a.features[labelled].mean(axis=0)
    fstd = train_a.features[labelled].std(axis=0) + 1e-6
    config = _model_config(args, train_a.features.shape[1], fmean, fstd)
    # Recorded so end-to-end evaluation can keep to cells no stage trained on.
    config["heldout_cells"] = sorted(set(val_a.unique_cells) | set(test_a.unique_cells))
    model = build_hybrid_resnet(**config).to(args.device)
    low_precision = args.precision == "bfloat16"
    if low_precision:
        model = model.to(memory_format=torch.channels_last)
    if args.init and not args.resume:
        from karyopipe.weights import load_weights

        state, init_config, _ = load_weights(args.init)
        leaked = sorted(set(train_a.unique_cells) & set(init_config.get("heldout_cells", [])))
        if leaked:
            # Fine-tuning on them would void every held-out number of the weights and of this run.
            raise ValueError(f"{args.init}: held out {len(leaked)} of this run's training cells ({', '.join(leaked[:3])}"
                             f"{', ...' if len(leaked) > 3 else ''}); use the split the weights were trained with "
                             f"(--split-seed {init_config.get('split_seed', 0)} --val-fraction "
                             f"{init_config.get('val_fraction', 0.15)} --test-fraction {init_config.get('test_fraction', 0.15)})")
        if "members" in init_config:
            # An ensemble file: fine-tune the member that straightens the way this run does.
            modes = [m.get("preprocess", "pca") for m in init_config["members"]]
            if args.preprocess not in modes:
                raise ValueError(f"{args.init}: an ensemble with no {args.preprocess!r} member (it has {modes})")
            from karyopipe.classification.classifier import member_state

            state = member_state(state, modes.index(args.preprocess))
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"{args.init}: does not match --arch/--width/--mode ({str(exc).splitlines()[0]})") from None
        # The feature normalisation travels with the weights it was learnt with.
        config["feature_mean"] = model.feature_mean.tolist()
        config["feature_std"] = model.feature_std.tolist()

    gamma = {} if args.gamma_max is None else {"gamma_max": args.gamma_max}
    dataset = CropDataset(train_a, augment=not args.no_augment, blur_max=args.blur_max, seed=args.seed,
                          stretch_max=args.stretch_max, flip_p=args.hflip, erase_p=args.erase, **gamma)
    generator = torch.Generator().manual_seed(args.seed)
    # Augmentation runs in the loader; on a GPU it, not the network, sets the pace unless workers share it.
    parallel = dict(num_workers=args.workers, worker_init_fn=_seed_worker) if args.workers else {}
    if args.no_balance:
        loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, generator=generator,
                            drop_last=len(dataset) > args.batch_size, **parallel)
    else:
        shares = dict(args.source_share or [])
        row_sources = np.array([c.split("/", 1)[0] for c in train_a.cells.tolist()]) if shares else None
        sampler = WeightedRandomSampler(sampling_weights(train_a.labels, args.outlier_share, row_sources, shares),
                                        num_samples=len(dataset),
                                        replacement=True, generator=generator)
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=len(dataset) > args.batch_size,
                            **parallel)
    optimizer = _make_optimizer(args.optimizer, model.parameters(), args.lr, args.weight_decay)
    steps = max(1, len(loader)) * args.epochs
    if args.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    elif args.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    averaged = _weight_average(model, args.ema_half_life, len(loader))
    # What val scores, best.pt keeps and the weights file ships: the average when there is one.
    scored = averaged.module if averaged is not None else model

    start_epoch, best, stale, history, train_time = 0, -1.0, 0, [], 0.0
    if args.resume:
        ckpt = torch.load(args.resume, map_location=args.device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        # Keep the new run's schedule settings (lr, max_lr, ...) over the checkpoint's.
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        optimizer.load_state_dict(ckpt["optimizer"])
        for group, settings in zip(optimizer.param_groups, fresh):
            group.update(settings)
        start_epoch, best, stale = ckpt["epoch"] + 1, ckpt["best"], ckpt["stale"]
        if averaged is not None:
            if "average" not in ckpt:
                raise ValueError(f"{args.resume}: saved without --ema-half-life; resume it without that option")
            averaged.load_state_dict(ckpt["average"])
        history, train_time = ckpt["history"], ckpt.get("train_time", 0.0)
        dataset.rng = np.random.default_rng(args.seed + start_epoch)
        generator.manual_seed(args.seed + start_epoch)
        # Replay the schedule instead of loading its state, so --epochs may change on resume.
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(min(start_epoch * max(1, len(loader)), steps)):
                scheduler.step()

    clf = Classifier(scored, config, device=args.device)
    progress = not args.no_progress
    # Seeded by the epoch it starts at, so a resumed run draws its own blends reproducibly.
    mix_rng = np.random.default_rng([args.seed, start_epoch, 17])
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        model.train()
        rows, total, correct, loss_sum = 0, 0, 0, 0.0
        batches = loader
        if progress:
            from tqdm import tqdm

            batches = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False)
        for images, feats, target in batches:
            images, feats, target = images.to(args.device), feats.to(args.device), target.to(args.device)
            if args.mixup > 0:
                images, feats, order, lam = mixup_batch(images, feats, args.mixup, mix_rng)
            if low_precision:
                images = images.contiguous(memory_format=torch.channels_last)

            def batch_loss():
                with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=low_precision):
                    logits = model(images, feats).float()
                loss = outlier_exposure_loss(logits, target, criterion, args.outlier_weight)
                if args.mixup > 0:
                    loss = lam * loss + (1 - lam) * outlier_exposure_loss(logits, target[order], criterion,
                                                                           args.outlier_weight)
                return logits, loss

            logits, loss = batch_loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.sam > 0:
                offsets = sharpness_ascent(model.parameters(), args.sam)
                with frozen_batchnorm_statistics(model):
                    _, perturbed_loss = batch_loss()
                optimizer.zero_grad(set_to_none=True)
                perturbed_loss.backward()
                sharpness_descent(offsets)
            optimizer.step()
            if averaged is not None:
                averaged.update_parameters(model)
            if scheduler.last_epoch < steps:
                scheduler.step()
            loss_sum += float(loss.detach()) * len(target)
            rows += len(target)
            known = target >= 0
            correct += int((logits.argmax(1)[known] == target[known]).sum())
            total += int(known.sum())
        train_time += time.time() - t0
        scored.eval()
        val_lp = clf.predict_arrays(val_a.images, val_a.features)
        val = score_predictions(val_lp, val_a.labels, val_a.groups)
        val_parts = {name: round(float((val_lp[idx].argmax(1) + 1 == val_a.labels[idx]).mean()), 4)
                     for name, idx in val_a.parts().items()}
        val_loss = float(criterion(torch.from_numpy(val_lp), torch.from_numpy(val_a.labels - 1)))
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(rows, 1), "train_accuracy": correct / max(total, 1),
                  "val_loss": val_loss, "val_accuracy": val["accuracy"], "val_accuracy_assigned": val["accuracy_assigned"],
                  "val_accuracy_per_source": val_parts, "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - t0}
        history.append(record)
        with open(out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"epoch {epoch + 1}: loss {record['train_loss']:.3f} train {record['train_accuracy']:.3f} "
              f"val {val['accuracy']:.4f} assigned {val['accuracy_assigned']:.4f} ({record['seconds']:.0f}s)"
              + (" " + " ".join(f"{k} {v:.4f}" for k, v in val_parts.items()) if len(val_parts) > 1 else ""), flush=True)
        # Early stopping on val top-1 with assigned accuracy as tie-break.
        score = val["accuracy"] + 1e-3 * val["accuracy_assigned"]
        if score > best:
            best, stale = score, 0
            atomic_save({"model": scored.state_dict(), "config": config, "epoch": epoch}, out / "best.pt")
        else:
            stale += 1
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "epoch": epoch, "best": best, "stale": stale, "history": history, "config": config,
                    "train_time": train_time}
                    | ({"average": averaged.state_dict()} if averaged is not None else {}), out / "last.pt")
        plot_curves(history, out / "curves.png")
        if stale >= args.patience:
            print(f"early stop: val has not improved for {args.patience} epochs")
            break
        if (args.stop_after is not None and epoch + 1 < args.epochs
                and time.time() - started + record["seconds"] > 60 * args.stop_after):
            # The next epoch would end past the call's limit; the caller resumes from last.pt.
            print(f"stopped after epoch {epoch + 1} of {args.epochs} (--stop-after {args.stop_after:g} min); "
                  f"go on with --resume {out / 'last.pt'}", flush=True)
            return {"stopped_after_epoch": epoch + 1, "epochs": args.epochs, "out": str(out)}

    if (out / "best.pt").is_file():
        scored.load_state_dict(torch.load(out / "best.pt", map_location=args.device, weights_only=False)["model"])
    scored.eval()
    result = {"config": config, "epochs_run": len(history), "train_seconds": round(train_time, 1),
              "best_epoch": int(np.argmax([h["val_accuracy"] + 1e-3 * h["val_accuracy_assigned"] for h in history]) + 1) if history else 0,
              "data": [str(d) for d in args.data],
              "cells": {k: len(v.unique_cells) for k, v in splits.items()},
              "crops": {k: int(len(v.labels)) for k, v in splits.items()}, "problems": problems}
    if len(val_a.labels):
        # Label smoothing leaves the model under-confident; the karyogram weighs its
        # log-probabilities against priors in nats, so fit the scale on val cells.
        from karyopipe.classification.calibrate import calibrate_classifier

        result["calibration"] = calibrate_classifier(clf, val_a.images, val_a.features, val_a.labels)
        config["temperature"] = clf.config["temperature"]
        print(f"calibration on val: temperature {config['temperature']:.3f}, NLL "
              f"{result['calibration']['nll_before']:.4f} -> {result['calibration']['nll_after']:.4f}")
    for name, part in (("val", val_a), ("test", test_a)):
        if len(part.labels) == 0:
            continue
        t0 = time.perf_counter()
        lp = clf.predict_arrays(part.images, part.features)
        speed = len(part.labels) / max(time.perf_counter() - t0, 1e-9)
        res = score_predictions(lp, part.labels, part.groups)
        res["crops_per_second"] = speed
        per_source = {}
        for source, idx in part.parts().items():
            r = score_predictions(lp[idx], part.labels[idx], part.groups[idx])
            per_source[source] = {k: r[k] for k in ("n", "cells", "accuracy", "accuracy_assigned")}
        res["per_source"] = per_source
        plot_confusion(res.pop("confusion"), out / f"confusion_{name}.png",
                       f"{name}: top-1 {res['accuracy']:.3f}, assigned {res['accuracy_assigned']:.3f}")
        result[name] = res
        print(f"{name}: " + ", ".join(f"{s} n={r['n']} top-1 {r['accuracy']:.4f} assigned {r['accuracy_assigned']:.4f}"
                                      for s, r in per_source.items()))
    (out / "result.json").write_text(json.dumps(result, indent=2, default=float))
    card = {
        "model": f"HybridResNet ({args.mode}) {args.arch} width {args.width}, {args.stem} stem, {args.norm} norm, "
                 f"input {args.size[0]}x{args.size[1]} ({args.preprocess} straightening), trained from scratch",
        "data": ", ".join(str(d) for d in args.data),
        "split": f"by cell per data folder, seed {args.split_seed}, val {args.val_fraction}, test {args.test_fraction}; "
                 f"cells {result['cells']}",
        "training": f"{len(history)} epochs ({result['train_seconds']:.0f} s, {platform.processor() or platform.machine()}, "
                    f"{args.threads} thread(s)), {args.optimizer} lr {args.lr} {args.schedule}, wd {args.weight_decay}, "
                    f"label smoothing {args.label_smoothing}, batch {args.batch_size}, "
                    f"{'class-balanced sampling' if not args.no_balance else 'shuffled'}, best epoch {result['best_epoch']}"
                    + (", bfloat16 autocast steps" if args.precision == "bfloat16" else "")
                    + (f", weights averaged (EMA, half-life {args.ema_half_life:g} epochs)" if averaged is not None else "")
                    + (f", mixup Beta({args.mixup:g}, {args.mixup:g})" if args.mixup > 0 else "")
                    + (f", sharpness-aware steps (SAM, rho {args.sam:g})" if args.sam > 0 else "")
                    + (f", plus {args.shift_copies} lab-shifted copies of the training crops" if args.shift_copies else "")
                    + (f", plus {int((train_a.labels == 0).sum())} pieces of training crops as outliers (outlier "
                       f"exposure, weight {args.outlier_weight}, "
                       f"{'share of draws ' + str(args.outlier_share) if args.outlier_share else 'drawn as one class'})"
                       if args.fragment_copies else "")
                    + (f", gamma augmentation up to {args.gamma_max}" if args.gamma_max else "")
                    + (f", length-to-width stretch up to {args.stretch_max:g}" if args.stretch_max > 1 else "")
                    + (f", left-right mirror p {args.hflip:g}" if args.hflip else "")
                    + (f", random erasing p {args.erase:g}" if args.erase else "")
                    + (", draws per source " + ", ".join(f"{k} {v:g}" for k, v in args.source_share)
                       if args.source_share else ""),
        "initialised_from": (f"{args.init} (fine-tuned; no external pretraining)" if args.init and not args.resume
                             else "random (from scratch)"),
        "calibration": result.get("calibration", "none (no val cells)"),
        "metrics": {f"{split} {src} {k}": (round(v[k], 4) if isinstance(v[k], float) else v[k])
                    for split in ("val", "test") if split in result
                    for src, v in result[split]["per_source"].items() for k in ("n", "accuracy", "accuracy_assigned")},
    }
    clf.save(out / "weights.pth", card)
    if args.save_weights:
        clf.save(args.save_weights, card)
        print(f"wrote {args.save_weights}")
    return result


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.gamma_max is not None and args.gamma_max < 1.0:
        parser.error(f"--gamma-max {args.gamma_max}: must be at least 1 (gamma is drawn in 1/G..G)")
    if args.stretch_max < 1.0:
        parser.error(f"--stretch-max {args.stretch_max}: must be at least 1 (the factor is drawn in 1/S..S)")
    for option in ("shift_copies", "fragment_copies", "outlier_weight", "mixup", "sam", "ema_half_life", "workers"):
        if getattr(args, option) < 0:
            parser.error(f"--{option.replace('_', '-')} {getattr(args, option)}: must be 0 or more")
    for option in ("hflip", "erase"):
        if not 0 <= getattr(args, option) <= 1:
            parser.error(f"--{option} {getattr(args, option)}: a probability, from 0 to 1")
    if args.outlier_share is not None and not 0 < args.outlier_share < 1:
        parser.error(f"--outlier-share {args.outlier_share}: must be between 0 and 1")
    if args.stop_after is not None and args.stop_after <= 0:
        parser.error(f"--stop-after {args.stop_after}: must be more than 0 minutes")
    train(args)
    return 0
