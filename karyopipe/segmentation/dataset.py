"""Spread datasets for segmentation: reading, splitting by cell, training samples.

Reading goes through :func:`karyopipe.data.read_dataset` (labelme folders, COCO
JSON, YOLO/VOC box folders); this module adds the segmentation view of it.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from karyopipe.data import read_dataset
from karyopipe.data.model import SPREADS, Dataset, Sample
from karyopipe.data.split import split_by_cell
from karyopipe.io import normalize_polarity, standardize_background


# --------------------------------------------------------------------------- readers
def load_spreads(path, format: str | None = None) -> Dataset:
    """Read annotated spreads from a labelme folder, a COCO JSON or a YOLO/VOC box folder.

    Raises
    ------
    FileNotFoundError, ValueError
        With the path and the problem in the message.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    dataset = read_dataset(path, format=format)
    if dataset.kind != SPREADS:
        raise ValueError(f"{path}: holds single-chromosome crops ({dataset.format}), not spreads")
    return dataset


def load_gray(sample: Sample) -> np.ndarray:
    """Canonical-polarity float32 grey image of a sample, its background standardized as the pipeline's."""
    gray, _ = normalize_polarity(sample.load_image())
    return standardize_background(gray)


# --------------------------------------------------------------------------- split
def split_cells(cells, val_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic split of cell ids into (train, val), independent of listing order.

    The project-wide :func:`karyopipe.data.split_by_cell` (hash of cell id and
    seed), shared with the end-to-end evaluation. The shipped classifier keeps
    its own per-folder split (see docs/architecture.md).
    """
    train, val = split_by_cell(sorted({str(c) for c in cells}), val_fraction=val_fraction, seed=seed)
    return list(train), list(val)


def has_masks(sample: Sample) -> bool:
    """True if every instance has a polygon or mask (not box-only, not pseudo)."""
    return bool(sample.instances) and all(
        (i.polygon is not None or i.mask is not None) and not i.pseudo_mask for i in sample.instances
    )


# --------------------------------------------------------------------------- torch dataset
class SpreadTrainSet:
    """Random augmented crops of annotated spreads as Mask R-CNN training pairs.

    With ``reference_width``, each spread is first scaled so its estimated
    chromosome width matches it (then ``scale_range`` jitters around that).
    Images are decoded once and kept as float32 grey; polygons are transformed
    with the image and rasterised after augmentation, so masks stay sharp at
    any rotation or scale and memory stays small.

    ``gamma_max`` widens or narrows the photometric gamma (default
    :data:`~karyopipe.segmentation.transforms.GAMMA_MAX`).

    With ``copy_paste`` > 0, that share of crops gets 1 to ``max_paste``
    chromosomes cut from the training spreads pasted in, most of them
    against or across another (:func:`~karyopipe.segmentation.transforms.paste_instances`).

    Each item is ``(image (1, S, S) float32, target)`` with target ``boxes (N, 4)``,
    ``labels (N,)`` int64 (1 = chromosome) and ``masks (N, S, S)`` uint8.
    """

    def __init__(self, samples, crop_size: int = 384, scale_range=(0.8, 1.25), length: int | None = None,
                 seed: int = 0, augment: bool = True, reference_width: float | None = None,
                 copy_paste: float = 0.0, max_paste: int = 6, gamma_max: float | None = None):
        from karyopipe.segmentation.infer import estimate_chromosome_width
        from karyopipe.segmentation.transforms import GAMMA_MAX, prepare_polygons

        self.items = []
        for sample in samples:
            if not has_masks(sample):
                continue
            gray = load_gray(sample)
            base = 1.0
            if reference_width:
                # Bring every spread to the reference chromosome width, as Segmenter does.
                width = estimate_chromosome_width(gray)
                base = float(np.clip(reference_width / width, 0.25, 4.0)) if width else 1.0
            self.items.append((gray, prepare_polygons(sample.instances, gray.shape), base))
        if not self.items:
            raise ValueError("no spreads with chromosome masks to train on")
        self.copy_paste = copy_paste
        self.max_paste = max_paste
        self.donors = []
        if copy_paste > 0:
            from karyopipe.segmentation.transforms import cut_instances

            # Cut at each spread's training scale, so pasted chromosomes have the size of the crop's own.
            for gray, polys, base in self.items:
                self.donors += cut_instances(gray, polys, base * float(np.sqrt(scale_range[0] * scale_range[1])))
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.gamma_max = GAMMA_MAX if gamma_max is None else float(gamma_max)
        self.length = length or len(self.items)
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        from karyopipe.segmentation.transforms import augment_sample, to_target

        gray, polys, base = self.items[index % len(self.items)]
        scale_range = (base * self.scale_range[0], base * self.scale_range[1])
        paste = 0
        if self.augment and self.donors and self.rng.random() < self.copy_paste:
            paste = int(self.rng.integers(1, self.max_paste + 1))
        image, masks = augment_sample(gray, polys, self.rng, self.crop_size, scale_range, self.augment,
                                      donors=self.donors, paste=paste, gamma_max=self.gamma_max)
        return to_target(image, masks)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker's copy of a :class:`SpreadTrainSet` its own stream.

    Forked workers would otherwise share the parent's generator state and
    produce the same crops. torch derives each worker's seed from the loader's
    generator, so a run stays reproducible.
    """
    import torch

    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "rng"):
        info.dataset.rng = np.random.default_rng(info.seed)


def collate(batch):
    """Detection collate: lists of images and targets."""
    return tuple(zip(*batch))


def dataset_statistics(samples) -> dict:
    """Instances per image and box-size percentiles, for model cards."""
    counts = [len(s.instances) for s in samples]
    sizes = [math.sqrt(max(1e-6, (b[2] - b[0]) * (b[3] - b[1]))) for s in samples for b in (i.get_bbox() for i in s.instances)]
    return {
        "images": len(samples),
        "instances": int(sum(counts)),
        "instances_per_image": float(np.mean(counts)) if counts else 0.0,
        "box_sqrt_area_p50": float(np.median(sizes)) if sizes else 0.0,
    }
