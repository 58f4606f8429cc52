"""Helpers shared by the readers: problem records, lazy loaders, labels, polygons.

Loaders are ``functools.partial`` objects over module-level functions, not
lambdas, so samples pickle into ``torch.utils.data.DataLoader`` workers.
"""
from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path

import numpy as np

from karyopipe.classes import UnknownLabelError, parse_label
from karyopipe.data.model import Problem
from karyopipe.io import is_image_path, read_image

logger = logging.getLogger("karyopipe.data")

CHROMOSOME, NUCLEUS, DEBRIS = "chromosome", "nucleus", "debris"
# Labels that name an object type rather than a class.
_CATEGORY_WORDS = {
    "chr": CHROMOSOME, "chrom": CHROMOSOME, "chromosome": CHROMOSOME, "chromosomes": CHROMOSOME,
    "nucleus": NUCLEUS, "nuclei": NUCLEUS, "interphase": NUCLEUS,
    "debris": DEBRIS, "dirt": DEBRIS, "artifact": DEBRIS, "artefact": DEBRIS,
}


def add_problem(problems: list[Problem], path, reason: str) -> None:
    """Record a skipped item and say so on the ``karyopipe.data`` logger."""
    problem = Problem(str(path), reason)
    problems.append(problem)
    logger.warning("skipped %s", problem)


def read_json(path: Path, problems: list[Problem]):
    """Parse a JSON file, or record why it cannot be parsed and return ``None``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        add_problem(problems, path, "not a text JSON file")
    except json.JSONDecodeError as exc:
        add_problem(problems, path, f"malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    except OSError as exc:
        add_problem(problems, path, f"cannot read ({exc.strerror or exc})")
    return None


def natural_key(text) -> list:
    """Sort key that orders ``"2" < "10"`` and ``"clase2" < "clase10"``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(text))]


def image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (not folders named like images), naturally sorted."""
    return sorted(
        (p for p in folder.iterdir() if is_image_path(p) and p.is_file()), key=lambda p: natural_key(p.name)
    )


def subfolders(folder: Path) -> list[Path]:
    """Sub-folders of ``folder``, hidden ones excluded, naturally sorted."""
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )


def file_loader(path: Path):
    """Picklable zero-argument loader that reads ``path`` with :func:`karyopipe.io.read_image`."""
    return functools.partial(read_image, Path(path))


def map_label(text) -> tuple[int | None, str]:
    """Map an annotation label to ``(class number or None, category)``.

    ``chr``/``chromosome`` give an unlabelled chromosome, ``nucleus`` and
    ``debris`` their category, anything else goes through
    :func:`karyopipe.classes.parse_label`.

    Raises
    ------
    UnknownLabelError
        For a label that is neither a category word nor a class.
    """
    word = str(text).strip().lower()
    if word in _CATEGORY_WORDS:
        return None, _CATEGORY_WORDS[word]
    return parse_label(text), CHROMOSOME


def check_polygon(points, width: int | None, height: int | None) -> tuple[np.ndarray, bool]:
    """Validate an annotated outline and clip it to the image.

    Parameters
    ----------
    points : array-like, shape (N, 2)
        ``(x, y)`` vertices.
    width, height : int or None
        Image size; ``None`` skips the bounds check.

    Returns
    -------
    polygon : ndarray, shape (N, 2), float32
        Vertices clipped to ``[0, width] x [0, height]``.
    clipped : bool
        True when some vertex lay outside the image.

    Raises
    ------
    ValueError
        Fewer than 3 vertices, non-finite coordinates, zero area, or an
        outline wholly outside the image.
    """
    try:
        polygon = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("polygon points are not numbers") from None
    if polygon.ndim != 2 or polygon.shape[1] != 2:
        raise ValueError(f"polygon points must be (x, y) pairs, got shape {polygon.shape}")
    if len(polygon) < 3:
        raise ValueError(f"polygon has {len(polygon)} point(s), needs at least 3")
    if not np.isfinite(polygon).all():
        raise ValueError("polygon has non-finite coordinates")
    x, y = polygon[:, 0], polygon[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    if area <= 0.0:
        raise ValueError("polygon has zero area")
    clipped = False
    if width is not None and height is not None:
        if x.max() <= 0 or y.max() <= 0 or x.min() >= width or y.min() >= height:
            raise ValueError(f"polygon lies outside the {width}x{height} image")
        inside = np.clip(polygon, 0, [width, height])
        clipped = bool(np.any(inside != polygon))
        polygon = inside
    return polygon.astype(np.float32), clipped


def check_box(x0: float, y0: float, x1: float, y1: float, width: int | None, height: int | None):
    """Validate a box ``(x0, y0, x1, y1)`` and clip it to the image; like :func:`check_polygon`."""
    box = np.array([x0, y0, x1, y1], dtype=np.float64)
    if not np.isfinite(box).all():
        raise ValueError("box has non-finite coordinates")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"empty box {tuple(round(float(v), 2) for v in box)}")
    clipped = False
    if width is not None and height is not None:
        if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
            raise ValueError(f"box lies outside the {width}x{height} image")
        inside = np.clip(box, 0, [width, height, width, height])
        clipped = bool(np.any(inside != box))
        box = inside
    return tuple(float(v) for v in box), clipped


__all__ = [
    "UnknownLabelError", "add_problem", "natural_key", "image_files", "subfolders", "file_loader",
    "map_label", "check_polygon", "check_box", "logger",
]
