"""Spread datasets for segmentation: reading, splitting by cell, training samples.

Readers come from :func:`karyopipe.data.read_dataset` when it is available.
Until then (and as a safety net) this module carries a **minimal fallback
reader** for labelme folders, COCO JSON and YOLO/VOC box folders, enough for
training and ``eval-seg``; it follows the same :class:`~karyopipe.data.Dataset`
contract.
"""
from __future__ import annotations

import base64
import hashlib
import io as _io
import json
import math
from pathlib import Path

import numpy as np

from karyopipe.classes import bioimlab_cell_id
from karyopipe.data.model import SPREADS, Dataset, Instance, Problem, Sample
from karyopipe.io import IMAGE_SUFFIXES, normalize_polarity, read_image


# --------------------------------------------------------------------------- readers
def load_spreads(path, format: str | None = None) -> Dataset:
    """Read annotated spreads from a labelme folder, a COCO JSON or a YOLO/VOC box folder.

    Uses :func:`karyopipe.data.read_dataset` when that module exists, else the
    fallback readers of this module.

    Raises
    ------
    FileNotFoundError, ValueError
        With the path and the problem in the message.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    try:
        from karyopipe.data import read_dataset  # type: ignore[attr-defined]
    except ImportError:
        read_dataset = None
    if read_dataset is not None:
        dataset = read_dataset(path, format=format)
        if dataset.kind != SPREADS:
            raise ValueError(f"{path}: holds single-chromosome crops ({dataset.format}), not spreads")
        return dataset
    return _fallback_read(path, format)


def _fallback_read(path: Path, format: str | None) -> Dataset:
    # FALLBACK until karyopipe.data.read_dataset lands: labelme, COCO, YOLO only.
    if format is None:
        format = _guess_format(path)
    readers = {"labelme": read_labelme_folder, "coco": read_coco, "yolo": read_yolo_folder}
    if format not in readers:
        raise ValueError(f"{path}: unsupported spread format {format!r} (labelme, coco, yolo)")
    return readers[format](path)


def _guess_format(path: Path) -> str:
    if path.is_file() and path.suffix.lower() == ".json":
        head = json.loads(path.read_text())
        return "coco" if isinstance(head, dict) and "annotations" in head else "labelme"
    if path.is_dir():
        if (path / "labels").is_dir() and (path / "images").is_dir():
            return "yolo"
        if any(path.glob("*.json")):
            first = next(iter(sorted(path.glob("*.json"))))
            try:
                blob = json.loads(first.read_text())
            except ValueError:
                blob = {}
            return "coco" if "annotations" in blob else "labelme"
    raise ValueError(f"{path}: cannot tell the format (expected labelme JSONs, a COCO JSON or images/+labels/)")


def decode_labelme_image(blob: dict, json_path: Path) -> np.ndarray:
    """The image of a labelme file: embedded ``imageData``, else ``imagePath`` beside it."""
    from PIL import Image

    if blob.get("imageData"):
        raw = base64.b64decode(blob["imageData"])
        with Image.open(_io.BytesIO(raw)) as im:
            return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im).copy()
    if blob.get("imagePath"):
        return read_image(json_path.parent / blob["imagePath"])
    raise ValueError(f"{json_path}: labelme file has neither imageData nor imagePath")


def read_labelme_file(path: Path) -> tuple[Sample, list[Problem]]:
    """One labelme file as a :class:`Sample` of chromosome polygons (lazy image)."""
    path = Path(path)
    problems: list[Problem] = []
    try:
        blob = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable labelme JSON ({exc})") from None
    if not isinstance(blob, dict) or "shapes" not in blob:
        raise ValueError(f"{path}: not a labelme file (no 'shapes')")
    instances = []
    for k, shape in enumerate(blob["shapes"]):
        points = np.asarray(shape.get("points", []), dtype=np.float32)
        if shape.get("shape_type", "polygon") != "polygon" or points.ndim != 2 or len(points) < 3:
            problems.append(Problem(f"{path}#shape{k}", f"not a polygon with 3+ points ({shape.get('shape_type')})"))
            continue
        label = str(shape.get("label", "chr")).lower()
        category = "nucleus" if label.startswith("nuc") else "debris" if label.startswith("deb") else "chromosome"
        instances.append(Instance(polygon=points, category=category))
    sample = Sample(
        path=path,
        cell_id=bioimlab_cell_id(path.stem),
        kind=SPREADS,
        instances=instances,
        image_id=path.stem,
        loader=lambda p=path: decode_labelme_image(json.loads(p.read_text()), p),
        meta={"width": blob.get("imageWidth"), "height": blob.get("imageHeight")},
    )
    return sample, problems


def read_labelme_folder(path) -> Dataset:
    """FALLBACK labelme reader: every ``*.json`` of a folder (or one file)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*.json"))
    dataset = Dataset(root=path, format="labelme", kind=SPREADS)
    for file in files:
        try:
            sample, problems = read_labelme_file(file)
        except ValueError as exc:
            dataset.problems.append(Problem(str(file), str(exc).split(": ", 1)[-1]))
            continue
        dataset.samples.append(sample)
        dataset.problems += problems
    if not dataset.samples:
        raise ValueError(f"{path}: no readable labelme files")
    return dataset


def read_coco(path) -> Dataset:
    """FALLBACK COCO reader: polygons / RLE masks / boxes of one annotation JSON."""
    from pycocotools import mask as mask_utils

    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.json")) + sorted(path.glob("annotations/*.json"))
        if not candidates:
            raise ValueError(f"{path}: no COCO JSON inside")
        path = candidates[0]
    blob = json.loads(path.read_text())
    dataset = Dataset(root=path, format="coco", kind=SPREADS)
    cats = {c["id"]: c.get("name", "chromosome") for c in blob.get("categories", [])}
    by_image: dict[int, list] = {}
    for ann in blob.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    for img in blob.get("images", []):
        file = path.parent / img["file_name"]
        if not file.exists() and (path.parent.parent / img["file_name"]).exists():
            file = path.parent.parent / img["file_name"]
        h, w = int(img["height"]), int(img["width"])
        instances = []
        for ann in by_image.get(img["id"], []):
            name = str(cats.get(ann.get("category_id"), "chromosome")).lower()
            category = "nucleus" if name.startswith("nuc") else "debris" if name.startswith("deb") else "chromosome"
            x, y, bw, bh = ann.get("bbox", (0, 0, 0, 0))
            seg = ann.get("segmentation")
            inst = Instance(bbox=(x, y, x + bw, y + bh), category=category)
            if isinstance(seg, list) and seg and len(seg[0]) >= 6:
                if len(seg) == 1:
                    inst.polygon = np.asarray(seg[0], np.float32).reshape(-1, 2)
                else:
                    rles = mask_utils.frPyObjects(seg, h, w)
                    inst.mask = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
            elif isinstance(seg, dict):
                rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else seg
                inst.mask = mask_utils.decode(rle).astype(bool)
            instances.append(inst)
        dataset.samples.append(
            Sample(path=file, cell_id=str(img.get("cell_id", Path(img["file_name"]).stem)), instances=instances,
                   image_id=str(img["id"]), meta={"width": w, "height": h})
        )
    return dataset


def read_yolo_folder(path) -> Dataset:
    """FALLBACK YOLO reader: ``images/`` + ``labels/*.txt`` (``cls xc yc w h`` normalised), boxes only."""
    path = Path(path)
    dataset = Dataset(root=path, format="yolo", kind=SPREADS)
    for image in sorted(p for p in (path / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        label_file = path / "labels" / (image.stem + ".txt")
        if not label_file.exists():
            dataset.problems.append(Problem(str(image), "no label file"))
            continue
        try:
            arr = read_image(image)
        except Exception as exc:
            dataset.problems.append(Problem(str(image), str(exc)))
            continue
        h, w = arr.shape[:2]
        instances = []
        for line_no, line in enumerate(label_file.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            try:
                _, xc, yc, bw, bh = (float(v) for v in parts[:5])
            except ValueError:
                dataset.problems.append(Problem(f"{label_file}:{line_no}", "not 'cls xc yc w h'"))
                continue
            instances.append(Instance(bbox=((xc - bw / 2) * w, (yc - bh / 2) * h, (xc + bw / 2) * w, (yc + bh / 2) * h)))
        dataset.samples.append(Sample(path=image, cell_id=image.stem, instances=instances, image_id=image.stem,
                                      meta={"width": w, "height": h}))
    return dataset


def load_gray(sample: Sample) -> np.ndarray:
    """Canonical-polarity float32 grey image of a sample."""
    gray, _ = normalize_polarity(sample.load_image())
    return gray


# --------------------------------------------------------------------------- split
def split_cells(cells, val_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic split of cell ids into (train, val), independent of listing order.

    The project-wide :func:`karyopipe.data.split_by_cell` (hash of cell id and
    seed), so segmentation holds out the same cells as the classifier; a
    FALLBACK MD5 ranking is used only if that module is missing.
    """
    cells = sorted({str(c) for c in cells})
    try:
        from karyopipe.data.split import split_by_cell
    except ImportError:
        ranked = sorted(cells, key=lambda c: hashlib.md5(f"{seed}:{c}".encode()).hexdigest())
        n_val = max(1, int(round(val_fraction * len(cells)))) if len(cells) > 1 else 0
        val = set(ranked[:n_val])
        return [c for c in cells if c not in val], [c for c in cells if c in val]
    train, val = split_by_cell(cells, val_fraction=val_fraction, seed=seed)
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

    Each item is ``(image (1, S, S) float32, target)`` with target ``boxes (N, 4)``,
    ``labels (N,)`` int64 (1 = chromosome) and ``masks (N, S, S)`` uint8.
    """

    def __init__(self, samples, crop_size: int = 384, scale_range=(0.8, 1.25), length: int | None = None,
                 seed: int = 0, augment: bool = True, reference_width: float | None = None):
        from karyopipe.segmentation.infer import estimate_chromosome_width
        from karyopipe.segmentation.transforms import prepare_polygons

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
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.length = length or len(self.items)
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        from karyopipe.segmentation.transforms import augment_sample, to_target

        gray, polys, base = self.items[index % len(self.items)]
        scale_range = (base * self.scale_range[0], base * self.scale_range[1])
        image, out_polys = augment_sample(gray, polys, self.rng, self.crop_size, scale_range, self.augment)
        return to_target(image, out_polys)


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
