"""Folders of single-chromosome crops, one image per chromosome.

Layouts (``format`` in brackets)::

    BioImLab        [crops-bioimlab]  root/<cell>/<cell> <k><a|b>.bmp   (X, Y of a male cell: "<cell> 23")
    clase           [crops-clase]     root/<cell>/clase<k>/clase<k>_<copy>_<cell>.tiff
    DataNew         [crops-datanew]   root/<k>/*.tiff                      k = 1..24
    generic         [crops-generic]   root/<class>/*  or  root/<cell>/<class>/*

``<class>`` is any name :func:`karyopipe.classes.parse_label` reads (``7``,
``X``, ``chr7``, ``clase7``, ``C7``).

Cell ids: the cell folder where there is one (an image suffix on the folder
name, as in gband612's ``97002023.12.tiff/``, is dropped). In the flat
DataNew / generic layouts the cell id comes from the file name when it
matches a known pattern (``clase<k>_<copy>_<cell>``, ``<cell> <k><a|b>``, or
a karyogram id such as ``97002023.12``); otherwise **each file is its own
cell** (id ``<class folder>/<stem>``), which keeps splits leak-free only if
the files really come from different cells.

Every crop is a :class:`Sample` with ``kind="crops"``, ``label`` the class
number and ``meta`` holding ``homolog`` (BioImLab letter) or ``copy``
(clase copy index). Files in folders that name no class (gband612's stray
``clase25``) and non-image files are recorded as problems.
"""
from __future__ import annotations

import re
from pathlib import Path

from karyopipe.classes import UnknownLabelError, parse_bioimlab_name, parse_label
from karyopipe.data._common import add_problem, file_loader, image_files, natural_key, subfolders
from karyopipe.data.model import CROPS, Dataset, Problem, Sample
from karyopipe.io import is_image_path

BIOIMLAB, CLASE, DATANEW, GENERIC = "crops-bioimlab", "crops-clase", "crops-datanew", "crops-generic"
CROP_FORMATS = (BIOIMLAB, CLASE, DATANEW, GENERIC)

_CLASE_FILE = re.compile(r"^clase_?(?P<cls>\d+)_(?P<copy>\d+)_(?P<cell>.+)$", re.I)
_BIOIMLAB_NAME = re.compile(r"^\s*(\S+)\s+\d{1,2}[a-z]?\s*$", re.I)
_KARYOGRAM_ID = re.compile(r"(?P<cell>\d{5,}\.\d+)")
_IGNORED = {"thumbs.db", "desktop.ini"}


def cell_from_filename(stem: str) -> str | None:
    """Cell id encoded in a crop file name, or ``None`` when the name carries none.

    >>> cell_from_filename("clase7_1_97002023.12"), cell_from_filename("12 7a"), cell_from_filename("img_0042")
    ('97002023.12', '12', None)
    """
    match = _CLASE_FILE.match(stem)
    if match:
        return _strip_image_suffix(match.group("cell"))
    try:
        return parse_bioimlab_name(stem).cell
    except UnknownLabelError:
        pass
    match = _KARYOGRAM_ID.search(stem)
    return match.group("cell") if match else None


def _strip_image_suffix(name: str) -> str:
    return Path(name).stem if is_image_path(name) else name


def _is_class_name(name: str) -> bool:
    try:
        parse_label(name)
        return True
    except UnknownLabelError:
        return False


def _looks_bioimlab(cell_dir: Path) -> bool:
    # The name pattern, not the class, decides: "12 99a.bmp" is a BioImLab
    # crop with a bad label (a problem later), not a different layout.
    files = image_files(cell_dir)[:8]
    hits = 0
    for f in files:
        match = _BIOIMLAB_NAME.match(f.stem)
        hits += bool(match and match.group(1) == cell_dir.name)
    return bool(files) and 2 * hits > len(files)


def detect_crops_layout(root: str | Path) -> str | None:
    """Which crop layout a folder holds (one of :data:`CROP_FORMATS`), or ``None``.

    Looks at the first few sub-folders only, so it is fast on big trees.
    """
    root = Path(root)
    dirs = subfolders(root)[:8]
    if not dirs:
        return None
    if sum(_looks_bioimlab(d) for d in dirs) > len(dirs) // 2:
        return BIOIMLAB
    nested = [[c.name for c in subfolders(d)] for d in dirs]
    nested_class = [names for names in nested if names and sum(map(_is_class_name, names)) > len(names) // 2]
    if len(nested_class) > len(dirs) // 2:
        if all(re.match(r"^clase_?\d+$", n, re.I) for names in nested_class for n in names):
            return CLASE
        return GENERIC
    flat = [d for d in dirs if _is_class_name(d.name) and image_files(d)]
    if len(flat) > len(dirs) // 2:
        return DATANEW if all(d.name.isdigit() for d in flat) else GENERIC
    return None


def read_crops(path: str | Path, layout: str | None = None) -> Dataset:
    """Read a folder of single-chromosome crops.

    Parameters
    ----------
    path : str or Path
        Root folder of one of the layouts above.
    layout : str, optional
        One of :data:`CROP_FORMATS`; detected when omitted.

    Returns
    -------
    Dataset
        ``kind="crops"``, one sample per crop, images loaded lazily.
    """
    root = Path(path)
    layout = layout or detect_crops_layout(root)
    if layout not in CROP_FORMATS:
        raise ValueError(
            f"{root}: not a crop folder layout I know (looked for <cell>/<cell> <k><a|b>.bmp, "
            f"<cell>/clase<k>/, <class>/ and <cell>/<class>/ folders)"
        )
    problems: list[Problem] = []
    samples: list[Sample] = []
    if layout == BIOIMLAB:
        for cell_dir in subfolders(root):
            _read_bioimlab_cell(cell_dir, samples, problems)
        _report_loose_files(root, problems, "not inside a cell folder")
    elif layout in (CLASE, GENERIC) and _nested(root):
        for cell_dir in subfolders(root):
            cell = _strip_image_suffix(cell_dir.name)
            for class_dir in subfolders(cell_dir):
                _read_class_folder(class_dir, cell, samples, problems)
            _report_loose_files(cell_dir, problems, "not inside a class folder")
        _report_loose_files(root, problems, "not inside a cell folder")
    else:
        for class_dir in subfolders(root):
            _read_class_folder(class_dir, None, samples, problems)
        _report_loose_files(root, problems, "not inside a class folder")
    return Dataset(root=root, format=layout, kind=CROPS, samples=samples, problems=problems)


def _nested(root: Path) -> bool:
    """True for ``root/<cell>/<class>/`` trees, False for ``root/<class>/``."""
    dirs = subfolders(root)[:8]
    return 2 * sum(bool(subfolders(d)) for d in dirs) > len(dirs)


def _report_loose_files(folder: Path, problems: list[Problem], why: str) -> None:
    for item in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if item.is_file() and not item.name.startswith(".") and item.name.lower() not in _IGNORED:
            add_problem(problems, item, why if is_image_path(item) else f"not an image file ({why})")


def _read_bioimlab_cell(cell_dir: Path, samples: list[Sample], problems: list[Problem]) -> None:
    for item in sorted(cell_dir.iterdir(), key=lambda p: natural_key(p.name)):
        if item.name.startswith(".") or item.name.lower() in _IGNORED:
            continue
        if item.is_dir():
            add_problem(problems, item, "unexpected folder inside a BioImLab cell folder")
            continue
        if not is_image_path(item):
            add_problem(problems, item, "not an image file")
            continue
        try:
            name = parse_bioimlab_name(item.stem)
        except UnknownLabelError as exc:
            add_problem(problems, item, str(exc))
            continue
        meta = {"homolog": name.homolog}
        if name.cell != cell_dir.name:
            meta["name_cell"] = name.cell  # file name disagrees with its folder; the folder wins
        samples.append(
            Sample(
                path=item,
                cell_id=cell_dir.name,
                kind=CROPS,
                label=name.number,
                image_id=f"{cell_dir.name}/{item.stem}",
                loader=file_loader(item),
                meta=meta,
            )
        )


def _read_class_folder(class_dir: Path, cell: str | None, samples: list[Sample], problems: list[Problem]) -> None:
    items = [
        p for p in sorted(class_dir.iterdir(), key=lambda p: natural_key(p.name))
        if not p.name.startswith(".") and p.name.lower() not in _IGNORED
    ]
    try:
        label = parse_label(class_dir.name)
    except UnknownLabelError as exc:
        for item in items:
            add_problem(problems, item, f"folder {class_dir.name!r}: {exc}")
        return
    for item in items:
        if item.is_dir():
            add_problem(problems, item, "unexpected folder inside a class folder")
            continue
        if not is_image_path(item):
            add_problem(problems, item, "not an image file")
            continue
        meta = {"class_folder": class_dir.name}
        match = _CLASE_FILE.match(item.stem)
        if match:
            meta["copy"] = int(match.group("copy"))
            if int(match.group("cls")) != label:
                meta["name_class"] = int(match.group("cls"))  # name disagrees with its folder; the folder wins
        if cell is None:
            cell_id = cell_from_filename(item.stem) or f"{class_dir.name}/{item.stem}"
        else:
            cell_id = cell
        samples.append(
            Sample(
                path=item,
                cell_id=cell_id,
                kind=CROPS,
                label=label,
                image_id=f"{cell_id}/{class_dir.name}/{item.stem}" if cell else f"{class_dir.name}/{item.stem}",
                loader=file_loader(item),
                meta=meta,
            )
        )
