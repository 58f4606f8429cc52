"""One entry point for every layout: :func:`read_dataset` with :func:`detect_format`.

Formats: ``labelme``, ``coco``, ``voc``, ``yolo``, ``crops-bioimlab``,
``crops-clase``, ``crops-datanew``, ``crops-generic``, ``reports`` (reviewed
``karyopipe infer`` outputs, :mod:`karyopipe.data.reports`) and ``images`` (a
plain folder of unannotated spreads, or one image file).

Examples
--------
>>> from karyopipe.data import read_dataset, detect_format
>>> detect_format("data/gband612")                    # doctest: +SKIP
'crops-clase'
>>> ds = read_dataset("data/giemsa_boxes")            # doctest: +SKIP
>>> ds.format, len(ds), sum(len(s.instances) for s in ds.samples)   # doctest: +SKIP
('yolo', 8, 465)
"""
from __future__ import annotations

import json
from pathlib import Path

from karyopipe.classes import bioimlab_cell_id
from karyopipe.data._common import add_problem, file_loader, image_files, natural_key, subfolders
from karyopipe.data.boxes import VOC_ANNOTATION_DIRS, VOC_IMAGE_DIRS, read_voc, read_yolo
from karyopipe.data.coco import read_coco
from karyopipe.data.crops import CROP_FORMATS, detect_crops_layout, read_crops
from karyopipe.data.labelme import read_labelme
from karyopipe.data.model import SPREADS, Dataset, Problem, Sample
from karyopipe.data.reports import is_report, read_reports
from karyopipe.io import is_image_path

FORMATS = ("labelme", "coco", "voc", "yolo") + CROP_FORMATS + ("reports", "images")


class UnknownFormatError(ValueError):
    """A path whose dataset layout cannot be told; the message says what was looked for."""


def _json_kind(path: Path) -> str | None:
    """``"labelme"``, ``"coco"``, ``"reports"`` or ``None`` from the top-level keys of a JSON file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
    except OSError:
        return None
    # Both formats put their tell-tale key early; a full parse is only the fallback.
    if b'"shapes"' in head and (b'"imagePath"' in head or b'"imageData"' in head or b'"version"' in head):
        return "labelme"
    if b'"images"' in head and (b'"annotations"' in head or b'"categories"' in head or b'"file_name"' in head):
        return "coco"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if isinstance(doc, dict) and "shapes" in doc:
        return "labelme"
    if isinstance(doc, dict) and "images" in doc:
        return "coco"
    if is_report(doc):
        return "reports"
    return None


def detect_format(path: str | Path) -> str:
    """Tell the dataset layout of a file or folder.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    str
        One of :data:`FORMATS`.

    Raises
    ------
    FileNotFoundError
        If the path does not exist.
    UnknownFormatError
        If no layout matches; the message lists what was looked for and the
        sub-folders that do hold a dataset (for a folder of datasets).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".json":
            kind = _json_kind(path)
            if kind:
                return kind
            raise UnknownFormatError(f"{path}: JSON is neither labelme (has 'shapes'), COCO (has 'images') nor a "
                                     "karyopipe report")
        if is_image_path(path):
            return "images"
        raise UnknownFormatError(f"{path}: not a dataset file (expected a labelme/COCO .json or an image)")
    found = _detect_folder(path)
    if found:
        return found
    inner = []
    for sub in subfolders(path)[:20]:
        sub_format = _detect_folder(sub)
        if sub_format:
            inner.append(f"{sub.name}/ ({sub_format})")
    hint = f"; it holds datasets in: {', '.join(inner)} - pass one of them" if inner else ""
    raise UnknownFormatError(
        f"{path}: cannot tell the dataset format. Looked for labelme/COCO *.json, "
        f"JPEGImages|JEPG + Annotations (VOC), images + labels (YOLO), crop folders "
        f"(<cell>/<cell> <k>a.bmp, <cell>/clase<k>/, <class>/, <cell>/<class>/) and image files{hint}"
    )


def _coco_files(path: Path) -> list[Path]:
    """COCO JSONs in a folder or its ``annotations/`` sub-folder (the usual COCO layout)."""
    found = []
    for folder in (path, path / "annotations", path / "Annotations"):
        if folder.is_dir():
            found += [p for p in sorted(folder.glob("*.json"), key=lambda p: natural_key(p.name))[:20]
                      if _json_kind(p) == "coco"]
    return found


def _detect_folder(path: Path) -> str | None:
    names = {p.name for p in path.iterdir()}
    if "images" in names and "labels" in names and (path / "labels").is_dir():
        return "yolo"
    ann_dirs = [path / n for n in VOC_ANNOTATION_DIRS if n in names and (path / n).is_dir()]
    if ann_dirs and names & set(VOC_IMAGE_DIRS) and any(next(d.glob("*.xml"), None) for d in ann_dirs):
        return "voc"
    if _coco_files(path):
        return "coco"
    jsons = sorted(path.glob("*.json"), key=lambda p: natural_key(p.name))
    if any(_json_kind(p) == "labelme" for p in jsons[:3]):
        return "labelme"
    # karyopipe infer's output folder: <stem>/report.json (its overlays would pass for crop folders)
    reports = [path / "report.json"] + [sub / "report.json" for sub in subfolders(path)[:50]]
    if any(p.is_file() and _json_kind(p) == "reports" for p in reports):
        return "reports"
    crops = detect_crops_layout(path)
    if crops:
        return crops
    if image_files(path):
        return "images"
    return None


def read_images(path: str | Path) -> Dataset:
    """A folder of unannotated spreads (or one image file) as a :class:`Dataset`.

    Cell ids are the file stems (BioImLab-style ``12a``/``12b`` share cell ``12``).
    """
    root = Path(path)
    problems: list[Problem] = []
    files = [root] if root.is_file() else image_files(root)
    samples = [
        Sample(path=f, cell_id=bioimlab_cell_id(f.stem), kind=SPREADS, image_id=f.stem, loader=file_loader(f))
        for f in files
    ]
    if root.is_dir():
        for item in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
            if item.is_file() and not is_image_path(item) and not item.name.startswith("."):
                add_problem(problems, item, "not an image file")
    return Dataset(root=root, format="images", kind=SPREADS, samples=samples, problems=problems)


def read_dataset(path: str | Path, format: str | None = None, *, with_pseudo_masks: bool = False) -> Dataset:
    """Read any supported dataset into a :class:`~karyopipe.data.model.Dataset`.

    Parameters
    ----------
    path : str or Path
        Dataset file or folder.
    format : str, optional
        One of :data:`FORMATS`; detected by :func:`detect_format` when omitted.
        ``"crops"`` picks the crop layout automatically.
    with_pseudo_masks : bool
        For box-only formats (VOC, YOLO): derive a thresholded mask inside
        each box, flagged ``Instance.pseudo_mask=True``.

    Returns
    -------
    Dataset
        Images load lazily (``sample.load_image()``); skipped items are in
        ``dataset.problems``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    fmt = format or detect_format(path)
    dataset = _read(path, fmt, with_pseudo_masks)
    if not dataset.samples and not dataset.problems:
        try:
            hint = f"; it looks like {detect_format(path)}" if format else ""
        except (UnknownFormatError, OSError):
            hint = ""
        add_problem(dataset.problems, path, f"no {fmt} data found here{hint}")
    return dataset


def _read(path: Path, fmt: str, with_pseudo_masks: bool) -> Dataset:
    if fmt == "labelme":
        return read_labelme(path)
    if fmt == "coco":
        if path.is_dir():
            candidates = _coco_files(path)
            if len(candidates) != 1:
                raise UnknownFormatError(
                    f"{path}: {len(candidates)} COCO JSON files here, pass the one to read"
                    + (f" ({', '.join(p.name for p in candidates)})" if candidates else "")
                )
            path = candidates[0]
        return read_coco(path)
    if fmt == "voc":
        return read_voc(path, with_pseudo_masks=with_pseudo_masks)
    if fmt == "yolo":
        return read_yolo(path, with_pseudo_masks=with_pseudo_masks)
    if fmt == "crops" or fmt in CROP_FORMATS:
        return read_crops(path, None if fmt == "crops" else fmt)
    if fmt == "reports":
        return read_reports(path)
    if fmt == "images":
        return read_images(path)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
