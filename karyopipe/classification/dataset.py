"""Crop data sets for the classifier: discovery, per-cell cache, split, augmentation.

Crops are read with :func:`karyopipe.data.read_dataset` (BioImLab, clase, DataNew
and generic layouts; unknown labels such as ``clase25`` come back as problems).

Every cell is preprocessed once (:func:`karyopipe.classification.preprocess.prepare_cell`)
and cached as ``.cache/classification/<key>.npz`` so training epochs only read arrays.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from karyopipe.data import read_dataset
from karyopipe.io import ImageReadError

# ``$KARYOPIPE_CACHE`` moves the preprocessing cache (the tests point it at a temporary folder).
CACHE_DIR = (Path(os.environ["KARYOPIPE_CACHE"]) if os.environ.get("KARYOPIPE_CACHE")
             else Path(__file__).resolve().parents[2] / ".cache") / "classification"


@dataclass
class CropRecord:
    """One labelled single-chromosome crop file."""

    path: Path
    cell_id: str
    label: int
    source: str = ""


@dataclass
class CellArrays:
    """Preprocessed crops of a data set, grouped by cell.

    Attributes
    ----------
    images : ndarray, shape (N, L, W), float32 in [0, 1]
    features : ndarray, shape (N, F), float32
    labels : ndarray, shape (N,), int64, class numbers 1..24
    cells : ndarray, shape (N,), str, ``"<source>/<cell>"``
    paths : list of str
    problems : list of str
    frames : ndarray, shape (N,), str, optional
        For chromosomes cut from annotated spreads, the frame each came from
        (``""`` for crops). A cell photographed twice has two frames; each is
        scored and assigned on its own, but both follow their cell in the split.
    """

    images: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    cells: np.ndarray
    paths: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    frames: np.ndarray | None = None

    def subset(self, index) -> "CellArrays":
        index = np.asarray(index)
        return CellArrays(self.images[index], self.features[index], self.labels[index],
                          self.cells[index], [self.paths[i] for i in index], list(self.problems),
                          None if self.frames is None else self.frames[index])

    @property
    def unique_cells(self) -> list[str]:
        return sorted(set(self.cells.tolist()))

    @property
    def groups(self) -> np.ndarray:
        """The unit of the karyotype-level assignment per row: its frame if it has one, else its cell."""
        if self.frames is None:
            return self.cells
        return np.where(self.frames == "", self.cells, np.char.add(np.char.add(self.cells.astype(str), "#"),
                                                                     self.frames.astype(str)))

    def parts(self) -> dict[str, np.ndarray]:
        """Row indices per data set: ``"<source>"`` for crops, ``"<source>_frames"`` for spread chromosomes."""
        source = np.array([c.split("/", 1)[0] for c in self.cells.tolist()], dtype=object)
        if self.frames is not None:
            source = np.where(self.frames == "", source, source + "_frames")
        return {name: np.flatnonzero(source == name) for name in sorted(set(source.tolist()))}


def source_name(root) -> str:
    """Short data-set name of a crop folder: ``.../bioimlab/crops`` -> ``bioimlab``."""
    root = Path(root).resolve()
    return root.parent.name if root.name.lower() in ("crops", "images", "data") else root.name


def find_crops(root, dataset=None) -> tuple[list[CropRecord], list[str]]:
    """List the labelled crops under ``root`` and the problems met.

    Returns
    -------
    records : list of CropRecord
    problems : list of str
        ``"<file>: <reason>"`` for every skipped item.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: data folder not found")
    dataset = read_dataset(root) if dataset is None else dataset
    if dataset.kind != "crops":
        raise ValueError(f"{root}: holds {dataset.kind}, not single-chromosome crops")
    records = [CropRecord(Path(s.path), str(s.cell_id), int(s.label), source_name(root))
               for s in dataset.samples if s.label is not None]
    problems = [str(p) for p in dataset.problems]
    problems += [f"{s.path}: crop has no class label, skipped" for s in dataset.samples if s.label is None]
    return records, problems


def _cache_key(records: list[CropRecord], size, mode) -> str:
    h = hashlib.sha1()
    # v3: cut-out masks leave a flat background level out; bump when preprocessing changes.
    h.update(json.dumps([list(size), mode, "v3"]).encode())
    for r in records:
        h.update(f"{r.path}|{r.label}|{r.path.stat().st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def build_arrays(root, size=(64, 32), mode="pca", cache_dir=CACHE_DIR, progress=True,
                 cells=None, transform=None) -> CellArrays:
    """Preprocess every crop under ``root`` cell by cell, with an npz cache.

    Parameters
    ----------
    root : path
        A crop folder (BioImLab, clase folders, generic ``<cell>/<label>/``),
        or annotated spreads whose chromosomes carry classes (read by
        :func:`build_spread_arrays`).
    size : (L, W)
    mode : {"pca", "geometry"}
    cache_dir : path or None
        ``None`` disables the cache.
    cells : collection of str, optional
        Only these cells (``"<source>/<cell>"``, as in :attr:`CellArrays.cells`).
    transform : callable, optional
        ``transform(gray, cell_id, index) -> gray`` applied to each canonical
        crop before preprocessing (:func:`karyopipe.classification.shift.cell_shifter`).
        ``cells`` and ``transform`` bypass the cache.
    """
    from karyopipe.classification.preprocess import prepare_cell
    from karyopipe.io import load_canonical

    if not Path(root).exists():
        raise FileNotFoundError(f"{root}: data folder not found")
    dataset = read_dataset(root)
    if dataset.kind == "spreads":
        if cells is not None or transform is not None:
            raise ValueError(f"{root}: cell subsets and transforms apply to crop folders, not annotated spreads")
        return build_spread_arrays(root, size, mode, cache_dir, progress, dataset=dataset)
    records, problems = find_crops(root, dataset)
    if not records:
        raise ValueError(f"{root}: no labelled chromosome crops found")
    if cells is not None:
        wanted = set(cells)
        records = [r for r in records if f"{r.source}/{r.cell_id}" in wanted]
        if not records:
            raise ValueError(f"{root}: none of the {len(wanted)} requested cells has crops here")
    cache = None
    if cache_dir is not None and cells is None and transform is None:
        cache = Path(cache_dir) / f"{Path(root).name}-{_cache_key(records, size, mode)}.npz"
        if cache.is_file():
            return load_arrays(cache)
    by_cell: dict[str, list[CropRecord]] = {}
    for r in records:
        by_cell.setdefault(r.cell_id, []).append(r)
    images, features, labels, cells, paths = [], [], [], [], []
    cell_ids = sorted(by_cell)
    if progress:
        from tqdm import tqdm

        cell_ids = tqdm(cell_ids, desc=f"preprocess {Path(root).name}", unit="cell")
    for cell in cell_ids:
        crops, kept = [], []
        for r in by_cell[cell]:
            try:
                gray, _ = load_canonical(r.path)
            except ImageReadError as exc:
                problems.append(str(exc))
                continue
            if transform is not None:
                gray = transform(gray, f"{r.source}/{r.cell_id}", len(crops))
            crops.append((gray, None))
            kept.append(r)
        if not crops:
            continue
        im, ft = prepare_cell(crops, size=size, mode=mode)
        images.append(im)
        features.append(ft)
        labels += [r.label for r in kept]
        cells += [f"{r.source}/{r.cell_id}" for r in kept]
        paths += [str(r.path) for r in kept]
    arrays = CellArrays(np.concatenate(images), np.concatenate(features), np.asarray(labels, np.int64),
                        np.asarray(cells), paths, problems)
    if cache is not None:
        save_arrays(cache, arrays)
    return arrays


def save_arrays(path, arrays: CellArrays, compress: bool = True, **extra) -> None:
    """Write ``arrays`` (and any ``extra`` named arrays) to an npz file whole or not at all.

    Training runs side by side may share a cache folder, and one must never
    read another's half-written file. :func:`load_arrays` reads it back.
    """
    path = Path(path)
    fields = dict(images=arrays.images, features=arrays.features, labels=arrays.labels, cells=arrays.cells,
                  paths=np.asarray(arrays.paths, dtype=str), problems=np.asarray(arrays.problems, dtype=str))
    if arrays.frames is not None:
        fields["frames"] = arrays.frames
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
    (np.savez_compressed if compress else np.savez)(partial, **fields, **extra)
    os.replace(partial, path)


def load_arrays(path) -> CellArrays:
    """The :class:`CellArrays` that :func:`save_arrays` wrote to ``path``."""
    with np.load(path, allow_pickle=False) as blob:
        return CellArrays(blob["images"], blob["features"], blob["labels"], blob["cells"], blob["paths"].tolist(),
                          blob["problems"].tolist(), blob["frames"] if "frames" in blob.files else None)


def spread_source(root) -> str:
    """Data-set name of annotated spreads: the COCO ``info["source"]`` when recorded, else the folder's.

    Chromosomes cut from a source's spreads must be split with that source's
    crops (the same cell must not be trained on as a frame and tested on as
    crops), so the writers of such files record the crops' source name.
    """
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".json":
        try:
            info = json.loads(root.read_text()).get("info") or {}
        except (OSError, ValueError):
            info = {}
        if isinstance(info, dict) and info.get("source"):
            return str(info["source"])
        return source_name(root.parent)
    return source_name(root)


def build_spread_arrays(root, size=(64, 32), mode="pca", cache_dir=CACHE_DIR, progress=True,
                        dataset=None) -> CellArrays:
    """Classifier inputs of the labelled chromosomes of annotated spreads, cut out as the pipeline does.

    Every chromosome instance of a frame is analysed on the frame
    (:func:`karyopipe.geometry.analyze_in_image`) and prepared together
    (:func:`karyopipe.classification.preprocess.prepare_from_geometries`), so
    the cell-relative features see the whole frame, exactly as at inference;
    rows are kept for the instances that carry a class.

    Parameters
    ----------
    root : path
        COCO JSON or labelme folder of spreads with classes (``karyopipe
        label-bioimlab`` writes one for BioImLab).
    size : (L, W)
    mode : {"pca", "geometry"}
    cache_dir : path or None

    Returns
    -------
    CellArrays
        ``cells`` are ``"<source>/<cell>"`` (:func:`spread_source`), ``frames``
        the image each row came from.
    """
    from karyopipe.classification.preprocess import prepare_from_geometries
    from karyopipe.geometry import analyze_in_image
    from karyopipe.io import normalize_polarity

    dataset = read_dataset(root) if dataset is None else dataset
    if dataset.kind != "spreads":
        raise ValueError(f"{root}: holds {dataset.kind}, not annotated spreads")
    source = spread_source(root)
    cache = None
    if cache_dir is not None:
        h = hashlib.sha1(json.dumps([list(size), mode, "spreads-v1", source]).encode())
        for path in sorted({str(s.path) for s in dataset.samples}) + ([str(root)] if Path(root).is_file() else []):
            h.update(f"{path}|{Path(path).stat().st_mtime_ns if Path(path).exists() else 0}\n".encode())
        cache = Path(cache_dir) / f"{Path(root).stem}-spreads-{h.hexdigest()[:16]}.npz"
        if cache.is_file():
            return load_arrays(cache)
    problems = [str(p) for p in dataset.problems]
    images, features, labels, cells, paths, frames = [], [], [], [], [], []
    samples = dataset.samples
    if progress:
        from tqdm import tqdm

        samples = tqdm(samples, desc=f"preprocess {Path(root).stem}", unit="spread")
    for sample in samples:
        try:
            gray, _ = normalize_polarity(sample.load_image())
        except (ImageReadError, ValueError) as exc:
            problems.append(str(exc))
            continue
        instances = []
        for inst in sample.instances:
            if inst.category != "chromosome":
                continue
            mask = inst.get_mask(gray.shape)
            if mask.any():
                instances.append((inst, mask))
            elif inst.label is not None:
                problems.append(f"{sample.path}: empty mask of a class-{inst.label} instance, skipped")
        keep = [k for k, (inst, _) in enumerate(instances) if inst.label is not None]
        if not keep:
            problems.append(f"{sample.path}: no instance carries a chromosome class, skipped")
            continue
        im, ft = prepare_from_geometries(analyze_in_image(gray, [m for _, m in instances]), tuple(size), mode)
        frame = str(sample.image_id or Path(sample.path).stem)
        images.append(im[keep])
        features.append(ft[keep])
        for k in keep:
            inst = instances[k][0]
            labels.append(int(inst.label))
            # The crops' cell id when label-bioimlab found the frame's crop folder: the split follows the cell.
            cells.append(f"{source}/{sample.meta.get('crop_cell') or sample.cell_id}")
            frames.append(frame)
            paths.append(f"{sample.path}#{inst.extra.get('coco_id', k)}")
    if not images:
        raise ValueError(f"{root}: no labelled chromosomes found in the spreads")
    arrays = CellArrays(np.concatenate(images), np.concatenate(features), np.asarray(labels, np.int64),
                        np.asarray(cells), paths, problems, np.asarray(frames))
    if cache is not None:
        save_arrays(cache, arrays)
    return arrays


def concat_arrays(parts: list[CellArrays]) -> CellArrays:
    frames = None
    if any(p.frames is not None for p in parts):
        frames = np.concatenate([np.full(len(p.labels), "", dtype=object) if p.frames is None
                                 else p.frames.astype(object) for p in parts]).astype(str)
    return CellArrays(np.concatenate([p.images for p in parts]), np.concatenate([p.features for p in parts]),
                      np.concatenate([p.labels for p in parts]), np.concatenate([p.cells for p in parts]),
                      sum((p.paths for p in parts), []), sum((p.problems for p in parts), []), frames)


def split_cells(cells, val_fraction=0.15, test_fraction=0.15, seed=0) -> dict[str, list[str]]:
    """Deterministic split of cell ids into train / val / test.

    Cells are sorted, then shuffled with a fixed seed, so the split depends only
    on the cell ids. This is not :func:`karyopipe.data.split_by_cell`: the shipped
    weights record this split, and ``eval-cls --split test`` reproduces it.

    Returns
    -------
    dict with keys ``"train"``, ``"val"``, ``"test"`` -> sorted cell ids
    """
    cells = sorted(set(cells))
    rng = random.Random(seed)
    order = cells[:]
    rng.shuffle(order)
    n_test = max(1, round(len(order) * test_fraction)) if len(order) >= 3 else 0
    n_val = max(1, round(len(order) * val_fraction)) if len(order) >= 3 else 0
    return {
        "test": sorted(order[:n_test]),
        "val": sorted(order[n_test: n_test + n_val]),
        "train": sorted(order[n_test + n_val:]),
    }


def split_arrays(arrays: CellArrays, seed=0, val_fraction=0.15, test_fraction=0.15) -> dict[str, CellArrays]:
    """Split by cell, per source folder, so each data set is split on its own."""
    out = {"train": [], "val": [], "test": []}
    sources = sorted({c.split("/", 1)[0] for c in arrays.cells.tolist()})
    for source in sources:
        cells = [c for c in arrays.unique_cells if c.split("/", 1)[0] == source]
        split = split_cells(cells, val_fraction, test_fraction, seed)
        for name, ids in split.items():
            out[name] += ids
    result = {}
    for name, ids in out.items():
        index = np.flatnonzero(np.isin(arrays.cells, ids))
        result[name] = arrays.subset(index)
    return result


class CropDataset:
    """Torch-style dataset over :class:`CellArrays` with optional augmentation.

    ``__getitem__`` returns ``(image (1, L, W) float32, features (F,) float32, target int 0..23)``.
    Augmentation: small rotation, translation, scale, gamma (log-uniform in
    1/``gamma_max``..``gamma_max``)/contrast, Gaussian blur (sigma 0.1..``blur_max``),
    and light feature jitter (measurement noise). Off by default: a left-right
    mirror with probability ``flip_p`` (a chromosome seen from the slide's other
    side: the p-arm stays up, bands and features are unchanged), and with
    probability ``erase_p`` a rectangle set to background (:meth:`_erase`).
    """

    def __init__(self, arrays: CellArrays, augment=False, blur_max=5.0, blur_p=0.25, seed=None,
                 gamma_max=float(np.exp(0.3)), stretch_max=1.0, flip_p=0.0, erase_p=0.0):
        self.arrays = arrays
        self.augment = augment
        self.blur_max = blur_max
        self.stretch_max = stretch_max
        self.flip_p = flip_p
        self.erase_p = erase_p
        self.blur_p = blur_p
        self.gamma_max = gamma_max
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.arrays.labels)

    def __getitem__(self, i):
        import torch

        image = torch.from_numpy(np.ascontiguousarray(self.arrays.images[i]))[None]
        feats = torch.from_numpy(np.ascontiguousarray(self.arrays.features[i]))
        if self.augment:
            image, feats = self._augment(image, feats)
        return image, feats, int(self.arrays.labels[i]) - 1

    def _augment(self, image, feats):
        import torch
        import torchvision.transforms.v2.functional as TF

        rng = self.rng
        h, w = image.shape[-2:]
        image = TF.affine(
            image, angle=float(rng.uniform(-10, 10)),
            translate=[float(rng.uniform(-0.08, 0.08) * w), float(rng.uniform(-0.06, 0.06) * h)],
            scale=float(rng.uniform(0.9, 1.1)), shear=[0.0, 0.0],
            interpolation=TF.InterpolationMode.BILINEAR,
        )
        if self.stretch_max > 1.0:
            image = self._stretch(image, float(np.exp(rng.uniform(-np.log(self.stretch_max), np.log(self.stretch_max)))))
        # Off options draw nothing, so a run without them replays the same augmentation stream as before they existed.
        if self.flip_p and rng.random() < self.flip_p:
            image = TF.horizontal_flip(image)
        if self.erase_p and rng.random() < self.erase_p:
            image = self._erase(image, rng)
        if rng.random() < self.blur_p:
            # log-uniform: most blurs are mild, a few are as strong as a badly focused slide
            sigma = float(np.exp(rng.uniform(np.log(0.1), np.log(self.blur_max))))
            k = int(2 * round(3 * sigma) + 1)
            k = min(k, 2 * (min(h, w) // 2) - 1)
            image = TF.gaussian_blur(image, [k, k], [sigma, sigma])
        fg = image > 1e-3
        gamma = float(np.exp(rng.uniform(-np.log(self.gamma_max), np.log(self.gamma_max))))
        contrast = float(rng.uniform(0.8, 1.2))
        bright = float(rng.uniform(-0.1, 0.1))
        image = torch.where(fg, (image.clamp(min=0) ** gamma) * contrast + bright, torch.zeros_like(image))
        image = image.clamp(0, 1.5)
        feats = feats * torch.from_numpy(rng.normal(1.0, 0.02, size=feats.shape).astype(np.float32))
        return image, feats

    @staticmethod
    def _erase(image, rng):
        """Set one random rectangle of ``image (1, L, W)`` to background (random erasing, Zhong et al. 2020).

        The rectangle covers 2-20 % of the canvas with a height-to-width ratio
        in 0.3..3.3 (log-uniform), the paper's ranges. It stands for the part of
        a chromosome hidden under another, or lost to a poor cut.
        """
        import torchvision.transforms.v2.functional as TF

        # The sampling of torchvision's RandomErasing, drawn here from the dataset's seeded ``rng``: the
        # transform draws from torch's global generator, apart from every other augmentation's stream.
        h, w = image.shape[-2:]
        for _ in range(10):
            area = rng.uniform(0.02, 0.2) * h * w
            ratio = float(np.exp(rng.uniform(np.log(0.3), np.log(3.3))))
            eh, ew = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
            if 0 < eh < h and 0 < ew < w:
                top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
                return TF.erase(image, top, left, eh, ew, image.new_zeros(()))
        return image

    @staticmethod
    def _stretch(image, factor: float):
        """Change the chromosome's length-to-width ratio by ``factor`` without leaving the canvas.

        Cells differ in how condensed their chromosomes are: the same chromosome
        is shorter and wider in an early-condensed cell, so its bands sit closer.
        A factor above 1 narrows the width (longer for its width), below 1 it
        shortens the length; the canvas ``(1, L, W)`` is kept and padded with 0.
        """
        import torchvision.transforms.v2.functional as TF

        h, w = image.shape[-2:]
        new_h, new_w = (h, max(1, round(w / factor))) if factor >= 1 else (max(1, round(h * factor)), w)
        squeezed = TF.resize(image, [new_h, new_w], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        return TF.center_crop(squeezed, [h, w])


def class_balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights ``1 / count(class)`` for a WeightedRandomSampler."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=25).astype(np.float64)
    return 1.0 / np.maximum(counts[labels], 1.0)
