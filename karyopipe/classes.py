"""Chromosome vocabulary: the 24 human classes, Denver groups and label conventions.

Class numbers are 1..24 everywhere in karyopipe, with 23 = X and 24 = Y. Model
outputs use the 0-based index ``class_number - 1``.

Examples
--------
>>> from karyopipe.classes import parse_label, class_name
>>> parse_label("C7"), parse_label("clase23"), parse_label("X"), parse_label("24")
(7, 23, 23, 24)
>>> class_name(23), denver_group(21)
('X', 'G')
"""
from __future__ import annotations

import re
from dataclasses import dataclass

NUM_CLASSES = 24
X, Y = 23, 24
CLASS_NUMBERS: tuple[int, ...] = tuple(range(1, NUM_CLASSES + 1))
CLASS_NAMES: tuple[str, ...] = tuple([str(k) for k in range(1, 23)] + ["X", "Y"])
AUTOSOMES: tuple[int, ...] = tuple(range(1, 23))
SEX_CHROMOSOMES: tuple[int, ...] = (X, Y)

# Denver groups (ISCN). X is morphologically a C-group and Y a G-group chromosome,
# but labs file them apart, so they carry their own letters.
DENVER_GROUPS: dict[str, tuple[int, ...]] = {
    "A": (1, 2, 3),
    "B": (4, 5),
    "C": (6, 7, 8, 9, 10, 11, 12),
    "D": (13, 14, 15),
    "E": (16, 17, 18),
    "F": (19, 20),
    "G": (21, 22),
    "X": (X,),
    "Y": (Y,),
}
# The morphological group a sex chromosome falls into when unbanded.
SEX_MORPHOLOGICAL_GROUP = {X: "C", Y: "G"}

METACENTRIC, SUBMETACENTRIC, ACROCENTRIC = "metacentric", "submetacentric", "acrocentric"


@dataclass(frozen=True)
class ChromosomeInfo:
    """Reference morphology of one chromosome class.

    Attributes
    ----------
    number : int
        Class number 1..24 (23 = X, 24 = Y).
    name : str
        ``"1"``..``"22"``, ``"X"`` or ``"Y"``.
    group : str
        Denver group letter.
    relative_length : float
        Expected length as a percentage of the haploid autosomal set (sum of
        1..22 = 100). Approximate metaphase values after the ISCN morphometric
        tables (Lubs & Ruddle style measurements); they vary with condensation.
    centromere_index : float
        Expected p / (p + q) of a metaphase chromosome, approximate, from the
        same morphometric tradition. Acrocentrics carry their small p-arm
        including satellites and stalks.
    centromere_type : str
        ``"metacentric"``, ``"submetacentric"`` or ``"acrocentric"``.
    """

    number: int
    name: str
    group: str
    relative_length: float
    centromere_index: float
    centromere_type: str


# Approximate morphometric reference values (relative length %, centromere index).
# They are priors for features and plausibility checks, never ground truth; the
# synthetic generator derives its exact values from the hg38 cytoband table instead.
_MORPHOLOGY = {
    1: (8.44, 0.48, METACENTRIC),
    2: (8.02, 0.39, SUBMETACENTRIC),
    3: (6.83, 0.47, METACENTRIC),
    4: (6.30, 0.29, SUBMETACENTRIC),
    5: (6.08, 0.29, SUBMETACENTRIC),
    6: (5.90, 0.39, SUBMETACENTRIC),
    7: (5.36, 0.39, SUBMETACENTRIC),
    8: (4.93, 0.34, SUBMETACENTRIC),
    9: (4.80, 0.35, SUBMETACENTRIC),
    10: (4.59, 0.33, SUBMETACENTRIC),
    11: (4.61, 0.40, SUBMETACENTRIC),
    12: (4.66, 0.30, SUBMETACENTRIC),
    13: (3.74, 0.17, ACROCENTRIC),
    14: (3.56, 0.19, ACROCENTRIC),
    15: (3.46, 0.20, ACROCENTRIC),
    16: (3.36, 0.41, METACENTRIC),
    17: (3.25, 0.34, SUBMETACENTRIC),
    18: (2.93, 0.31, SUBMETACENTRIC),
    19: (2.67, 0.47, METACENTRIC),
    20: (2.56, 0.45, METACENTRIC),
    21: (1.90, 0.30, ACROCENTRIC),
    22: (2.04, 0.30, ACROCENTRIC),
    X: (5.12, 0.40, SUBMETACENTRIC),
    Y: (2.15, 0.27, ACROCENTRIC),
}


def class_name(number: int) -> str:
    """Name of a class number: ``1 -> "1"``, ``23 -> "X"``, ``24 -> "Y"``."""
    if number not in _MORPHOLOGY:
        raise ValueError(f"class number must be 1..24, got {number!r}")
    return CLASS_NAMES[number - 1]


def denver_group(number: int) -> str:
    """Denver group letter of a class number (``"X"``/``"Y"`` for the sex chromosomes)."""
    for letter, members in DENVER_GROUPS.items():
        if number in members:
            return letter
    raise ValueError(f"class number must be 1..24, got {number!r}")


CHROMOSOMES: dict[int, ChromosomeInfo] = {
    k: ChromosomeInfo(k, class_name(k), denver_group(k), rl, ci, ct)
    for k, (rl, ci, ct) in _MORPHOLOGY.items()
}


class UnknownLabelError(ValueError):
    """A label string that maps to no chromosome class."""


# Pascal VOC names of the public "24_chromosomes_object" set: Denver letter + number.
VOC_NAMES: dict[str, int] = {
    f"{denver_group(k)}{k}": k for k in AUTOSOMES
} | {"X": X, "Y": Y}

_BIOIMLAB_RE = re.compile(r"^\s*(?P<cell>\S+)\s+(?P<cls>\d{1,2})(?P<homolog>[a-z]?)\s*$", re.I)
_CLASE_RE = re.compile(r"^clase_?(?P<cls>\d{1,2})$", re.I)
_VOC_RE = re.compile(r"^(?P<group>[A-G])(?P<cls>\d{1,2})$", re.I)
_PREFIXED_RE = re.compile(r"^(?:chr|chromosome|class|cls)[ _-]?(?P<rest>\w+)$", re.I)


def parse_label(label: str | int) -> int:
    """Map any supported label convention to a class number 1..24.

    Accepted forms: integers and digit strings ``1..24`` (DataNew folders and
    generic layouts), ``"X"``/``"Y"``, ``claseK`` folder names, Pascal VOC names
    (``A1``..``G22``), and ``chr``/``chromosome`` prefixes (``chr7``, ``chrX``).

    Raises
    ------
    UnknownLabelError
        If the label maps to no class (``clase25``, ``"0"``, ``"B7"``...).
    """
    text = str(label).strip()
    prefixed = _PREFIXED_RE.match(text)
    if prefixed:
        text = prefixed.group("rest")
    upper = text.upper()
    if upper in ("X", "Y"):
        return X if upper == "X" else Y
    if text.isdigit():
        number = int(text)
        if 1 <= number <= NUM_CLASSES:
            return number
        raise UnknownLabelError(f"unknown chromosome label {label!r}: class numbers are 1..24")
    clase = _CLASE_RE.match(text)
    if clase:
        number = int(clase.group("cls"))
        if 1 <= number <= NUM_CLASSES:
            return number
        raise UnknownLabelError(f"unknown chromosome label {label!r}: clase folders are clase1..clase24")
    voc = _VOC_RE.match(text)
    if voc and upper in VOC_NAMES:
        return VOC_NAMES[upper]
    if voc:
        raise UnknownLabelError(
            f"unknown chromosome label {label!r}: Denver letter does not match the number"
        )
    raise UnknownLabelError(f"unknown chromosome label {label!r}")


@dataclass(frozen=True)
class BioImLabName:
    """Parsed BioImLab crop file name ``<cell> <class><a|b>.bmp``."""

    cell: str
    number: int
    homolog: str  # "a", "b" or "" for the single X / Y of a male cell


def parse_bioimlab_name(stem: str) -> BioImLabName:
    """Parse a BioImLab crop stem such as ``"10 7a"`` or ``"10 23"``.

    >>> parse_bioimlab_name("10 23")
    BioImLabName(cell='10', number=23, homolog='')
    """
    match = _BIOIMLAB_RE.match(stem)
    if not match:
        raise UnknownLabelError(f"not a BioImLab crop name '<cell> <class><a|b>': {stem!r}")
    number = parse_label(match.group("cls"))
    return BioImLabName(match.group("cell"), number, match.group("homolog").lower())


def bioimlab_cell_id(stem: str) -> str:
    """Cell id of a BioImLab metaphase stem: ``original_112c`` and ``112`` give ``"112"``.

    The trailing letters a/b/c/d mark several images of one cell, so they are
    dropped: splits must keep them together.
    """
    text = stem.strip()
    if text.lower().startswith("original_"):
        text = text[len("original_"):]
    match = re.match(r"^(\d+)[a-z]?$", text, re.I)
    return match.group(1) if match else text


def expected_copies(karyotype_sex: str = "XX") -> dict[int, int]:
    """Copies of each class in a normal diploid cell of the given sex complement."""
    copies = {k: 2 for k in AUTOSOMES}
    copies[X] = karyotype_sex.upper().count("X")
    copies[Y] = karyotype_sex.upper().count("Y")
    return copies
