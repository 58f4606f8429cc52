"""COCO instance annotations, read and written with pycocotools.

Category names go through :func:`karyopipe.classes.parse_label`
(``"7"``, ``"X"``, ``"chr7"``...); ``chromosome``, ``nucleus`` and ``debris``
name their category, and any other name is read as an unlabelled chromosome
with the name kept in ``instance.extra["coco_category"]``.

A single-part polygon becomes ``Instance.polygon``; multi-part polygons and
RLE are decoded into the full-image ``Instance.mask`` (the contract every
stage reads; about one byte per pixel per instance).

Examples
--------
>>> from karyopipe.data.coco import read_coco, write_coco
>>> ds = read_coco("synth/annotations.json")           # doctest: +SKIP
>>> write_coco(ds.samples[:10], "subset.json")         # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np

from karyopipe.classes import CLASS_NAMES, UnknownLabelError, bioimlab_cell_id
from karyopipe.data._common import (
    CHROMOSOME,
    DEBRIS,
    NUCLEUS,
    add_problem,
    check_box,
    check_polygon,
    file_loader,
    map_label,
    natural_key,
    read_json,
)
from karyopipe.data.model import CROPS, SPREADS, Dataset, Instance, Problem, Sample

# Category ids written by write_coco: classes keep their number, the rest follow.
CHROMOSOME_ID, NUCLEUS_ID, DEBRIS_ID = 25, 26, 27


def _category(name: str) -> tuple[int | None, str, bool]:
    """``(label, category, known)`` for a COCO category name."""
    try:
        label, category = map_label(name)
        return label, category, True
    except UnknownLabelError:
        return None, CHROMOSOME, False


def _find_image(json_path: Path, file_name: str, image_root: Path | None) -> Path:
    bases = [image_root] if image_root is not None else []
    bases += [json_path.parent, json_path.parent / "images", json_path.parent.parent, json_path.parent.parent / "images"]
    name = str(file_name).replace("\\", "/")
    for base in bases:
        candidate = base / name
        if candidate.is_file():
            return candidate
    return bases[0] / name


def read_coco(path: str | Path, image_root: str | Path | None = None) -> Dataset:
    """Read a COCO instance-annotation JSON.

    Parameters
    ----------
    path : str or Path
        The annotation JSON.
    image_root : str or Path, optional
        Folder the ``file_name`` entries are relative to. By default the
        JSON's folder, ``images/`` beside it, its parent, then ``../images``
        (the ``annotations/*.json`` + ``images/`` layout).

    Returns
    -------
    Dataset
        ``format="coco"``, ``kind="spreads"``. ``sample.image_id`` is the COCO
        image id as a string; ``sample.meta["coco_id"]`` the integer.
    """
    from pycocotools.coco import COCO

    path = Path(path)
    root = Path(image_root) if image_root is not None else None
    problems: list[Problem] = []
    dataset = Dataset(root=path, format="coco", kind=SPREADS, problems=problems)
    doc = read_json(path, problems)
    if doc is None:
        return dataset
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        add_problem(problems, path, "not a COCO file (no 'images' list)")
        return dataset
    doc.setdefault("annotations", [])
    doc.setdefault("categories", [])
    coco = COCO()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.dataset = doc
        try:
            coco.createIndex()
        except (KeyError, TypeError) as exc:
            add_problem(problems, path, f"malformed COCO structure (missing {exc})")
            return dataset

    categories = {}
    for cat in coco.cats.values():
        label, category, known = _category(cat.get("name", ""))
        categories[cat["id"]] = (label, category, known, cat.get("name", ""))
    for image_id in sorted(coco.imgs, key=natural_key):
        info = coco.imgs[image_id]
        file_name = info.get("file_name")
        if not file_name:
            add_problem(problems, f"{path} image {image_id}", "no file_name")
            continue
        image_path = _find_image(path, file_name, root)
        if not image_path.is_file():
            add_problem(problems, image_path, f"image listed in {path.name} not found")
            continue
        width, height = info.get("width"), info.get("height")
        meta = {"coco_id": image_id, "width": width, "height": height}
        for key in ("karyotype", "cell_id", "polarity", "sex", "crop_cell", "crop_cell_ncc"):
            if key in info:
                meta[key] = info[key]
        instances = []
        for ann in coco.imgToAnns.get(image_id, []):
            instance = _annotation_to_instance(ann, categories, width, height, f"{path} annotation {ann.get('id')}", problems)
            if instance is not None:
                instances.append(instance)
        dataset.samples.append(
            Sample(
                path=image_path,
                cell_id=str(info.get("cell_id", bioimlab_cell_id(Path(file_name).stem))),
                kind=SPREADS,
                instances=instances,
                image_id=str(image_id),
                loader=file_loader(image_path),
                meta=meta,
            )
        )
    return dataset


def _annotation_to_instance(ann, categories, width, height, where, problems) -> Instance | None:
    from pycocotools import mask as mask_utils

    cat_id = ann.get("category_id")
    if cat_id not in categories:
        add_problem(problems, where, f"category_id {cat_id!r} is not in 'categories'")
        return None
    label, category, known, name = categories[cat_id]
    extra = {"coco_id": ann.get("id")}
    if not known:
        extra["coco_category"] = name
    if ann.get("iscrowd"):
        extra["iscrowd"] = 1
    for key in ("centromere", "axis", "karyotype_index", "homolog"):
        if key in ann:
            extra[key] = ann[key]
    instance = Instance(label=label, category=category, extra=extra, pseudo_mask=bool(ann.get("pseudo_mask")))
    try:
        if ann.get("bbox"):
            x, y, w, h = (float(v) for v in ann["bbox"])
            instance.bbox, _ = check_box(x, y, x + w, y + h, width, height)
        seg = ann.get("segmentation")
        if isinstance(seg, list) and seg:
            parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in seg if len(p) >= 6]
            if not parts:
                raise ValueError("segmentation polygon has fewer than 3 points")
            if len(parts) == 1:
                instance.polygon, clipped = check_polygon(parts[0], width, height)
                if clipped:
                    instance.extra["clipped"] = True
            else:
                if not (width and height):
                    raise ValueError("multi-part polygon needs the image width and height")
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
                instance.mask = _decode(rle)
        elif isinstance(seg, dict) and "counts" in seg:
            if isinstance(seg["counts"], list):
                seg = mask_utils.frPyObjects(seg, *seg["size"])
            elif isinstance(seg["counts"], str):
                seg = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
            if width and height and tuple(seg["size"]) != (height, width):
                raise ValueError(f"RLE size {tuple(seg['size'])} differs from the image ({height}, {width})")
            instance.mask = _decode(seg)
        elif instance.bbox is None:
            raise ValueError("annotation has neither segmentation nor bbox")
    except (ValueError, TypeError) as exc:
        add_problem(problems, where, str(exc))
        return None
    return instance


def _decode(rle: dict) -> np.ndarray:
    import warnings

    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation, harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _rle_to_json(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def write_coco(data, path: str | Path, *, image_dir: str | Path | None = None) -> Path:
    """Write spreads and their instances as a COCO instance-annotation JSON.

    Parameters
    ----------
    data : Dataset or list of Sample
        Spreads (``kind="spreads"``); crops carry no instances and are refused.
    path : str or Path
        Output JSON. ``file_name`` entries are written relative to its folder.
    image_dir : str or Path, optional
        Where to save images that have no file of their own (labelme files
        with embedded ``imageData``), as PNG. Without it such samples raise.

    Returns
    -------
    Path
        The JSON written.

    Notes
    -----
    Category ids: 1..24 are the classes (names ``"1"``..``"22"``, ``"X"``,
    ``"Y"``), 25 ``chromosome`` (unlabelled), 26 ``nucleus``, 27 ``debris``.
    Polygons are written as polygons, masks and RLE as compressed RLE;
    box-only instances get an empty segmentation. Pseudo masks keep
    ``"pseudo_mask": true`` on their annotation.
    """
    from pycocotools import mask as mask_utils

    from karyopipe.io import is_image_path, save_image

    samples = list(data.samples if hasattr(data, "samples") else data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    categories = [{"id": k, "name": CLASS_NAMES[k - 1], "supercategory": CHROMOSOME} for k in range(1, 25)]
    categories += [
        {"id": CHROMOSOME_ID, "name": CHROMOSOME, "supercategory": CHROMOSOME},
        {"id": NUCLEUS_ID, "name": NUCLEUS, "supercategory": "other"},
        {"id": DEBRIS_ID, "name": DEBRIS, "supercategory": "other"},
    ]
    images, annotations = [], []
    for image_id, sample in enumerate(samples, start=1):
        if sample.kind == CROPS:
            raise ValueError(f"{sample.path}: crops have no instances to write as COCO")
        image_path = Path(sample.path)
        height, width = sample.meta.get("height"), sample.meta.get("width")
        image = None
        if not is_image_path(image_path):
            if image_dir is None:
                raise ValueError(f"{image_path}: image is embedded, pass image_dir= to save it as a file")
            image = sample.load_image()
            image_path = Path(image_dir) / f"{sample.image_id or image_path.stem}.png"
            save_image(image_path, image)
        if not (height and width):
            image = sample.load_image() if image is None else image
            height, width = image.shape[:2]
        entry = {
            "id": image_id,
            "file_name": Path(os.path.relpath(image_path.resolve(), path.parent.resolve())).as_posix(),
            "width": int(width),
            "height": int(height),
            "cell_id": str(sample.cell_id),
        }
        for key in ("karyotype", "polarity", "sex", "crop_cell", "crop_cell_ncc"):
            if key in sample.meta:
                entry[key] = sample.meta[key]
        images.append(entry)
        for inst in sample.instances:
            annotations.append(_instance_to_annotation(inst, len(annotations) + 1, image_id, (int(height), int(width)), mask_utils))
    doc = {
        "info": {"description": "written by karyopipe.data.write_coco"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _instance_to_annotation(inst: Instance, ann_id: int, image_id: int, shape, mask_utils) -> dict:
    if inst.category == NUCLEUS:
        category_id = NUCLEUS_ID
    elif inst.category == DEBRIS:
        category_id = DEBRIS_ID
    else:
        category_id = inst.label if inst.label else CHROMOSOME_ID
    ann = {"id": ann_id, "image_id": image_id, "category_id": int(category_id), "iscrowd": 0}
    if inst.polygon is not None and inst.mask is None:
        poly = np.asarray(inst.polygon, dtype=np.float64)
        ann["segmentation"] = [[round(float(v), 2) for v in poly.reshape(-1)]]
        x, y = poly[:, 0], poly[:, 1]
        ann["area"] = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    elif inst.mask is not None or "rle" in inst.extra:
        if inst.mask is not None:
            rle = mask_utils.encode(np.asfortranarray(inst.mask.astype(np.uint8)))
        else:
            from karyopipe.data.model import _rle_for_pycocotools

            rle = _rle_for_pycocotools(inst.extra["rle"])
        ann["segmentation"] = _rle_to_json(rle)
        ann["area"] = float(mask_utils.area(rle))
    else:
        ann["segmentation"] = []
    x0, y0, x1, y1 = inst.get_bbox()
    ann["bbox"] = [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]
    ann.setdefault("area", float((x1 - x0) * (y1 - y0)))
    if inst.pseudo_mask:
        ann["pseudo_mask"] = True
    if inst.score is not None:
        ann["score"] = float(inst.score)
    for key in ("centromere", "axis", "homolog"):
        if key in inst.extra:
            ann[key] = _jsonable(inst.extra[key])
    return ann


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
