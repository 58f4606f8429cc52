"""Box-only layouts: Pascal VOC XML and YOLO txt.

Pascal VOC (the public "24_chromosomes_object" set)::

    root/JPEGImages/*.jpg   (or the misspelt JEPG/)
    root/Annotations/*.xml  (or annotations/)

object names are Denver letter + number (``A1``, ``B4``, ``C6``) or ``X``/``Y``,
read by :func:`karyopipe.classes.parse_label`. VOC boxes are 1-based and
inclusive; they are stored 0-based with exclusive upper bounds.

YOLO::

    root/images/**/<name>.<ext>
    root/labels/**/<name>.txt     one "cls xc yc w h" line per box, normalised
    root/data.yaml                optional, its ``names`` list names the classes

A class name that is a chromosome class gives the label; any other name
(the giemsa set's cohesion phenotypes ``a``/``b``/``c``) is an unlabelled
chromosome, the name kept in ``instance.extra["yolo_class"]``.

With ``with_pseudo_masks=True`` each box gets a mask thresholded inside it
(Otsu on the canonical-polarity image, largest blob, holes filled), stored
as its outline in ``Instance.polygon`` and flagged ``Instance.pseudo_mask``:
such outlines are not ground truth and must not be scored as it.
"""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from karyopipe.classes import UnknownLabelError, bioimlab_cell_id
from karyopipe.data._common import (
    CHROMOSOME,
    add_problem,
    check_box,
    file_loader,
    map_label,
    natural_key,
)
from karyopipe.data.model import SPREADS, Dataset, Instance, Problem, Sample
from karyopipe.io import ImageReadError, image_size, is_image_path

VOC_IMAGE_DIRS = ("JPEGImages", "JEPG", "images", "Images")
VOC_ANNOTATION_DIRS = ("Annotations", "annotations")


def _first_dir(root: Path, names) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def read_voc(path: str | Path, *, with_pseudo_masks: bool = False) -> Dataset:
    """Read a Pascal VOC folder of box annotations.

    Parameters
    ----------
    path : str or Path
        Folder holding ``JPEGImages/`` (or ``JEPG/``) and ``Annotations/``.
    with_pseudo_masks : bool
        Derive a mask inside each box (loads every image once).

    Returns
    -------
    Dataset
        ``format="voc"``, ``kind="spreads"``, instances with ``bbox`` only
        (plus pseudo-mask outlines in ``polygon`` when asked).
    """
    root = Path(path)
    problems: list[Problem] = []
    dataset = Dataset(root=root, format="voc", kind=SPREADS, problems=problems)
    image_dir = _first_dir(root, VOC_IMAGE_DIRS)
    ann_dir = _first_dir(root, VOC_ANNOTATION_DIRS)
    if ann_dir is None:
        raise FileNotFoundError(f"{root}: no Annotations/ or annotations/ folder, not a Pascal VOC layout")
    if image_dir is None:
        raise FileNotFoundError(f"{root}: no JPEGImages/ or JEPG/ folder, not a Pascal VOC layout")
    images_by_stem = {p.stem: p for p in image_dir.iterdir() if is_image_path(p) and p.is_file()}
    used = set()
    for xml_path in sorted(ann_dir.glob("*.xml"), key=lambda p: natural_key(p.name)):
        sample = _read_voc_xml(xml_path, image_dir, images_by_stem, problems)
        if sample is not None:
            used.add(sample.path.stem)
            dataset.samples.append(sample)
    for stem, image_path in sorted(images_by_stem.items(), key=lambda kv: natural_key(kv[0])):
        if stem not in used and not (ann_dir / f"{stem}.xml").exists():
            add_problem(problems, image_path, "no annotation XML for this image")
    if with_pseudo_masks:
        from karyopipe.data.pseudo import add_pseudo_masks

        add_pseudo_masks(dataset, problems)
    return dataset


def _read_voc_xml(xml_path: Path, image_dir: Path, images_by_stem: dict, problems) -> Sample | None:
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as exc:
        add_problem(problems, xml_path, f"malformed XML ({exc})")
        return None
    except OSError as exc:
        add_problem(problems, xml_path, f"cannot read ({exc.strerror or exc})")
        return None
    node = tree.getroot()
    file_name = (node.findtext("filename") or "").strip()
    image_path = image_dir / file_name if file_name else None
    if image_path is None or not image_path.is_file():
        image_path = images_by_stem.get(xml_path.stem)
    if image_path is None:
        add_problem(problems, xml_path, f"image {file_name or xml_path.stem + '.*'} not found in {image_dir.name}/")
        return None
    try:
        width = int(float(node.findtext("size/width") or 0)) or None
        height = int(float(node.findtext("size/height") or 0)) or None
    except ValueError:
        width = height = None
    if width is None or height is None:
        try:
            height, width = image_size(image_path)
        except ImageReadError as exc:
            add_problem(problems, image_path, exc.reason)
            return None
    instances = []
    for index, obj in enumerate(node.findall("object")):
        where = f"{xml_path} object {index}"
        name = (obj.findtext("name") or "").strip()
        try:
            label, category = map_label(name)
        except UnknownLabelError as exc:
            add_problem(problems, where, str(exc))
            continue
        try:
            x0, y0, x1, y1 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            add_problem(problems, where, "bndbox lacks numeric xmin, ymin, xmax, ymax")
            continue
        try:
            bbox, clipped = check_box(x0 - 1.0, y0 - 1.0, x1, y1, width, height)
        except ValueError as exc:
            add_problem(problems, where, str(exc))
            continue
        extra = {"raw_label": name}
        if clipped:
            extra["clipped"] = True
        if obj.findtext("difficult") == "1":
            extra["difficult"] = True
        instances.append(Instance(bbox=bbox, label=label, category=category, extra=extra))
    return _spread_sample(image_path, instances, {"width": width, "height": height, "annotation": str(xml_path)})


def read_yolo_names(yaml_path: str | Path) -> list[str] | None:
    """The ``names`` of a YOLO ``data.yaml``: flow list, block list or ``{id: name}`` map.

    A small parser for that one key, so PyYAML is not a dependency.
    """
    text = Path(yaml_path).read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^names\s*:\s*(.*?)\s*(#.*)?$", line)
        if not match:
            continue
        value = match.group(1)
        if value:
            try:
                parsed = ast.literal_eval(value)
            except (ValueError, SyntaxError):  # unquoted YAML scalars: [a, b] or {0: a, 1: b}
                items = [v.strip() for v in value.strip("[]{}").split(",") if v.strip()]
                if value.startswith("{"):
                    pairs = [item.split(":", 1) for item in items]
                    parsed = {int(k): v.strip().strip("'\"") for k, v in pairs}
                else:
                    parsed = [v.strip("'\"") for v in items]
            if isinstance(parsed, dict):
                return [str(parsed[k]) for k in sorted(parsed)]
            return [str(v) for v in parsed]
        names, mapping = [], {}
        for follow in lines[i + 1:]:
            item = re.match(r"^\s+-\s*(.+?)\s*$", follow)
            keyed = re.match(r"^\s+(\d+)\s*:\s*(.+?)\s*$", follow)
            if item:
                names.append(item.group(1).strip("'\""))
            elif keyed:
                mapping[int(keyed.group(1))] = keyed.group(2).strip("'\"")
            elif follow.strip() and not follow.startswith((" ", "\t")):
                break
        return names or [mapping[k] for k in sorted(mapping)]
    return None


def read_yolo(path: str | Path, *, with_pseudo_masks: bool = False) -> Dataset:
    """Read a YOLO box dataset: ``images/`` + ``labels/`` (+ optional ``data.yaml``).

    Images without a label file are kept as spreads with no instances and
    ``meta["annotated"] = False``; label files without an image are problems.

    Parameters
    ----------
    path : str or Path
        Dataset folder.
    with_pseudo_masks : bool
        Derive a mask inside each box (loads every image once).
    """
    root = Path(path)
    problems: list[Problem] = []
    dataset = Dataset(root=root, format="yolo", kind=SPREADS, problems=problems)
    image_dir, label_dir = root / "images", root / "labels"
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise FileNotFoundError(f"{root}: a YOLO dataset needs images/ and labels/ folders")
    names = None
    for yaml_name in ("data.yaml", "dataset.yaml", "data.yml"):
        if (root / yaml_name).is_file():
            try:
                names = read_yolo_names(root / yaml_name)
            except (OSError, ValueError) as exc:
                add_problem(problems, root / yaml_name, f"cannot read its names, classes read as 'chromosome' ({exc})")
            break
    classes = []
    for name in names or []:
        try:
            label, category = map_label(name)
            classes.append((label, category, name, True))
        except UnknownLabelError:
            classes.append((None, CHROMOSOME, name, False))
    images = sorted(
        (p for p in image_dir.rglob("*") if is_image_path(p) and p.is_file()),
        key=lambda p: natural_key(p.relative_to(image_dir).as_posix()),
    )
    matched = set()
    for image_path in images:
        label_path = label_dir / image_path.relative_to(image_dir).with_suffix(".txt")
        matched.add(label_path)
        sample = _read_yolo_image(image_path, label_path, classes, names is not None, problems)
        if sample is not None:
            dataset.samples.append(sample)
    for label_path in sorted(label_dir.rglob("*.txt"), key=lambda p: natural_key(p.as_posix())):
        if label_path not in matched:
            add_problem(problems, label_path, "label file has no image")
    if with_pseudo_masks:
        from karyopipe.data.pseudo import add_pseudo_masks

        add_pseudo_masks(dataset, problems)
    return dataset


def _read_yolo_image(image_path, label_path, classes, have_names, problems) -> Sample | None:
    try:
        height, width = image_size(image_path)
    except ImageReadError as exc:
        add_problem(problems, image_path, exc.reason)
        return None
    meta = {"width": width, "height": height, "annotated": label_path.is_file()}
    instances = []
    if label_path.is_file():
        try:
            lines = label_path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            add_problem(problems, label_path, f"cannot read ({exc})")
            lines = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            instance = _yolo_line(line, width, height, classes, have_names, f"{label_path} line {number}", problems)
            if instance is not None:
                instances.append(instance)
        meta["annotation"] = str(label_path)
    return _spread_sample(image_path, instances, meta)


def _yolo_line(line, width, height, classes, have_names, where, problems) -> Instance | None:
    fields = line.split()
    if len(fields) < 5:
        add_problem(problems, where, f"expected 'cls xc yc w h', got {line.strip()!r}")
        return None
    if len(fields) > 5:
        add_problem(problems, where, "segment or keypoint lines are not supported (boxes only)")
        return None
    try:
        cls = int(float(fields[0]))
        xc, yc, w, h = (float(v) for v in fields[1:5])
    except ValueError:
        add_problem(problems, where, f"non-numeric field in {line.strip()!r}")
        return None
    if have_names and not 0 <= cls < len(classes):
        add_problem(problems, where, f"class {cls} is not in data.yaml names (0..{len(classes) - 1})")
        return None
    label, category, name, known = classes[cls] if have_names else (None, CHROMOSOME, str(cls), False)
    try:
        bbox, clipped = check_box(
            (xc - w / 2) * width, (yc - h / 2) * height, (xc + w / 2) * width, (yc + h / 2) * height, width, height
        )
    except ValueError as exc:
        add_problem(problems, where, str(exc))
        return None
    extra = {"yolo_class": cls} if known else {"yolo_class": cls, "yolo_name": name}
    if clipped:
        extra["clipped"] = True
    return Instance(bbox=bbox, label=label, category=category, extra=extra)


def _spread_sample(image_path: Path, instances: list[Instance], meta: dict) -> Sample:
    """A box-annotated spread; its stem names the cell (BioImLab letters a..d folded)."""
    return Sample(
        path=image_path,
        cell_id=bioimlab_cell_id(image_path.stem),
        kind=SPREADS,
        instances=instances,
        image_id=image_path.stem,
        loader=file_loader(image_path),
        meta=meta,
    )
