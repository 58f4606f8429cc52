"""labelme JSON annotations: one JSON per image, polygons with labels.

The image is either embedded (base64 ``imageData``) or beside the JSON
(``imagePath``). Labels ``chr``/``chromosome`` mean an unlabelled chromosome,
class names (``7``, ``X``, ``chr7``, ``clase7``, ``C7``) go through
:func:`karyopipe.classes.parse_label`, ``nucleus``/``debris`` set the category.
BioImLab files ``original_<cell>[a-d].json`` share one cell id per number.

Examples
--------
>>> from karyopipe.data.labelme import read_labelme
>>> ds = read_labelme("bioimlab/metaphases")            # doctest: +SKIP
>>> ds.samples[0].cell_id, len(ds.samples[0].instances)  # doctest: +SKIP
('1', 46)
"""
from __future__ import annotations

import base64
import binascii
import functools
import json
from pathlib import Path

from karyopipe.classes import UnknownLabelError, bioimlab_cell_id
from karyopipe.data._common import add_problem, check_box, check_polygon, file_loader, map_label, natural_key, read_json
from karyopipe.data.model import SPREADS, Dataset, Instance, Problem, Sample
from karyopipe.io import ImageReadError, decode_image, image_size


def load_labelme_image(json_path: str | Path):
    """The image of a labelme file: decoded ``imageData``, else the ``imagePath`` file."""
    json_path = Path(json_path)
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ImageReadError(json_path, f"cannot read labelme JSON ({exc})") from None
    if doc.get("imageData"):
        return decode_image(_b64(doc["imageData"], json_path), json_path)
    image_path = _image_path(json_path, doc)
    if image_path is None:
        raise ImageReadError(json_path, "no imageData and no imagePath")
    return file_loader(image_path)()


def _b64(text: str, json_path: Path) -> bytes:
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise ImageReadError(json_path, "imageData is not valid base64") from None


def _image_path(json_path: Path, doc: dict) -> Path | None:
    name = doc.get("imagePath")
    if not name:
        return None
    # labelme stores Windows paths on Windows; only the file name is portable.
    candidates = [json_path.parent / name, json_path.parent / Path(str(name).replace("\\", "/")).name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]


def read_labelme_file(path: str | Path, problems: list[Problem] | None = None) -> Sample | None:
    """Read one labelme JSON into a :class:`Sample`, or ``None`` (with a problem) if unusable.

    Parameters
    ----------
    path : str or Path
        labelme ``.json`` file.
    problems : list of Problem, optional
        Where skipped shapes and files are recorded.
    """
    path = Path(path)
    problems = [] if problems is None else problems
    doc = read_json(path, problems)
    if doc is None:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        add_problem(problems, path, "not a labelme file (no 'shapes' list)")
        return None

    meta = {"annotation": str(path)}
    if doc.get("imageData"):
        loader = functools.partial(load_labelme_image, path)
        sample_path = path
    else:
        image_path = _image_path(path, doc)
        if image_path is None:
            add_problem(problems, path, "no imageData and no imagePath: the image is missing")
            return None
        if not image_path.is_file():
            add_problem(problems, path, f"image {image_path.name} not found beside it")
            return None
        loader, sample_path = file_loader(image_path), image_path
    width, height = doc.get("imageWidth"), doc.get("imageHeight")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        try:
            height, width = image_size(sample_path) if sample_path != path else loader().shape[:2]
        except ImageReadError as exc:
            add_problem(problems, path, f"image unreadable: {exc.reason}")
            return None
    meta.update(width=int(width), height=int(height))
    for key in ("karyotype", "polarity", "sex"):
        if key in doc:
            meta[key] = doc[key]

    instances = []
    for index, shape in enumerate(doc["shapes"]):
        where = f"{path} shape {index}"
        instance = _shape_to_instance(shape, width, height, where, problems)
        if instance is not None:
            instances.append(instance)
    return Sample(
        path=sample_path,
        cell_id=bioimlab_cell_id(path.stem),
        kind=SPREADS,
        instances=instances,
        image_id=path.stem,
        loader=loader,
        meta=meta,
    )


def _shape_to_instance(shape, width, height, where: str, problems: list[Problem]) -> Instance | None:
    if not isinstance(shape, dict):
        add_problem(problems, where, "shape is not an object")
        return None
    raw_label = shape.get("label", "")
    try:
        label, category = map_label(raw_label)
    except UnknownLabelError as exc:
        add_problem(problems, where, str(exc))
        return None
    shape_type = shape.get("shape_type") or "polygon"
    extra = {"raw_label": raw_label}
    if shape.get("group_id") is not None:
        extra["group_id"] = shape["group_id"]
    try:
        if shape_type == "polygon":
            polygon, clipped = check_polygon(shape.get("points", []), width, height)
            instance = Instance(polygon=polygon, label=label, category=category, extra=extra)
        elif shape_type == "rectangle":
            points = shape.get("points", [])
            if len(points) != 2:
                raise ValueError(f"rectangle has {len(points)} points, needs 2")
            (xa, ya), (xb, yb) = points
            bbox, clipped = check_box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb), width, height)
            instance = Instance(bbox=bbox, label=label, category=category, extra=extra)
        else:
            add_problem(problems, where, f"shape type {shape_type!r} is not supported (polygon, rectangle)")
            return None
    except (ValueError, TypeError) as exc:
        add_problem(problems, where, str(exc))
        return None
    if clipped:
        instance.extra["clipped"] = True
    return instance


def read_labelme(path: str | Path) -> Dataset:
    """Read a labelme JSON file or a folder of them.

    Parameters
    ----------
    path : str or Path
        A ``.json`` file or a folder; every ``*.json`` directly inside is read.

    Returns
    -------
    Dataset
        ``format="labelme"``, ``kind="spreads"``; images load lazily.
    """
    root = Path(path)
    problems: list[Problem] = []
    files = [root] if root.is_file() else sorted(root.glob("*.json"), key=lambda p: natural_key(p.name))
    samples = [s for s in (read_labelme_file(f, problems) for f in files) if s is not None]
    return Dataset(root=root, format="labelme", kind=SPREADS, samples=samples, problems=problems)
