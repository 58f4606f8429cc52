"""Plain data model shared by every reader and stage.

A dataset is a list of :class:`Sample`; a sample is one image (a metaphase
spread or a single-chromosome crop) with its :class:`Instance` list. Readers
never raise on a single bad item: they record a :class:`Problem` and go on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

SPREADS, CROPS = "spreads", "crops"


@dataclass
class Instance:
    """One object in an image: a chromosome, nucleus or piece of debris.

    Attributes
    ----------
    polygon : ndarray, shape (N, 2), float32, optional
        Outline as ``(x, y)`` image coordinates.
    mask : ndarray, shape (H, W), bool, optional
        Full-image mask. Use :meth:`get_mask` to rasterise the polygon or box.
    bbox : tuple of float, optional
        ``(x0, y0, x1, y1)`` in pixels, exclusive upper bounds.
    label : int, optional
        Class number 1..24 (23 = X, 24 = Y), ``None`` when unlabelled.
    pseudo_mask : bool
        True when the mask was derived (e.g. thresholded inside a box), not
        annotated; such masks must not be scored as ground truth.
    score : float, optional
        Detector confidence for predicted instances.
    category : str
        ``"chromosome"``, ``"nucleus"`` or ``"debris"``.
    extra : dict
        Reader- or generator-specific fields (centromere point, axis, ...).
        ``extra["rle"]`` may hold the mask as COCO RLE (COCO masks, pseudo
        masks) instead of a full-image array; :meth:`get_mask` decodes it.
    """

    polygon: np.ndarray | None = None
    mask: np.ndarray | None = None
    bbox: tuple[float, float, float, float] | None = None
    label: int | None = None
    pseudo_mask: bool = False
    score: float | None = None
    category: str = "chromosome"
    extra: dict = field(default_factory=dict)

    def get_bbox(self) -> tuple[float, float, float, float]:
        """Box ``(x0, y0, x1, y1)`` from the stored box, polygon or mask."""
        if self.bbox is not None:
            return tuple(float(v) for v in self.bbox)
        if self.polygon is not None and len(self.polygon):
            x0, y0 = np.min(self.polygon, axis=0)
            x1, y1 = np.max(self.polygon, axis=0)
            return float(x0), float(y0), float(x1), float(y1)
        if self.mask is not None and self.mask.any():
            ys, xs = np.nonzero(self.mask)
            return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
        if "rle" in self.extra:
            from pycocotools import mask as mask_utils

            x, y, w, h = mask_utils.toBbox(_rle_for_pycocotools(self.extra["rle"]))
            return float(x), float(y), float(x + w), float(y + h)
        raise ValueError("instance has no box, polygon or mask")

    def get_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Full-image boolean mask of shape ``(H, W)``, rasterising the polygon if needed."""
        if self.mask is not None:
            return self.mask.astype(bool)
        if "rle" in self.extra:
            from pycocotools import mask as mask_utils

            import warnings

            with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation, harmless
                warnings.simplefilter("ignore", DeprecationWarning)
                mask = mask_utils.decode(_rle_for_pycocotools(self.extra["rle"])).astype(bool)
            if mask.shape != tuple(shape):
                raise ValueError(f"RLE mask is {mask.shape}, image is {tuple(shape)}")
            return mask
        if self.polygon is not None:
            from skimage.draw import polygon as fill_polygon

            mask = np.zeros(shape, dtype=bool)
            # Pixel centres sit at integer coordinates; labelme/COCO polygons run
            # along pixel edges, hence the half-pixel shift.
            rr, cc = fill_polygon(self.polygon[:, 1] - 0.5, self.polygon[:, 0] - 0.5, shape)
            mask[rr, cc] = True
            return mask
        raise ValueError("instance has no mask or polygon (box-only annotation)")


def _rle_for_pycocotools(rle: dict) -> dict:
    # JSON keeps RLE counts as str; pycocotools wants bytes.
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        from pycocotools import mask as mask_utils

        return mask_utils.frPyObjects(rle, *rle["size"])
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


@dataclass
class Sample:
    """One image with its instances.

    Attributes
    ----------
    path : Path
        Image file, or the annotation file that embeds the image.
    cell_id : str
        Cell identity for splitting; all images and crops of one cell share it.
    kind : str
        ``"spreads"`` (a metaphase with instances) or ``"crops"`` (one chromosome).
    instances : list of Instance
        Annotated objects; empty for crops and for unannotated spreads.
    label : int, optional
        Class number of a single-chromosome crop.
    image_id : str
        Unique id within the dataset (file stem for most layouts).
    loader : callable, optional
        Returns the image array; set by readers so images load lazily.
    meta : dict
        Extra per-image fields (karyotype string, width, height, homolog letter...).
    """

    path: Path
    cell_id: str
    kind: str = SPREADS
    instances: list[Instance] = field(default_factory=list)
    label: int | None = None
    image_id: str = ""
    loader: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    meta: dict = field(default_factory=dict)

    def load_image(self) -> np.ndarray:
        """The image as stored (see :func:`karyopipe.io.read_image`)."""
        if self.loader is not None:
            return self.loader()
        from karyopipe.io import read_image

        return read_image(self.path)


@dataclass
class Problem:
    """An item a reader skipped, with the reason. Nothing is dropped silently."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Dataset:
    """What every reader returns.

    Attributes
    ----------
    root : Path
        The folder or file that was read.
    format : str
        ``labelme``, ``coco``, ``voc``, ``yolo``, ``crops-bioimlab``,
        ``crops-clase``, ``crops-datanew``, ``crops-generic`` or ``images``
        (unannotated spreads).
    kind : str
        ``"spreads"`` or ``"crops"``.
    samples : list of Sample
    problems : list of Problem
        Skipped files and annotations, each with its reason.
    """

    root: Path
    format: str
    kind: str
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def cells(self) -> list[str]:
        """Sorted unique cell ids."""
        return sorted({s.cell_id for s in self.samples}, key=_natural_key)

    def __len__(self) -> int:
        return len(self.samples)


def _natural_key(text: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]
