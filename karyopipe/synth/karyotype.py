"""Parse ISCN karyotype strings into class counts.

Examples
--------
>>> from karyopipe.synth.karyotype import parse_karyotype
>>> counts = parse_karyotype("47,XX,+21")
>>> counts[21], counts[23], counts[24], sum(counts.values())
(3, 2, 0, 47)
>>> sum(parse_karyotype("69,XXY").values())
69
"""
from __future__ import annotations

import re

from karyopipe.classes import CLASS_NAMES, X, Y

# Karyotypes ``--karyotype mixed`` draws from, with weights: mostly normal cells,
# the common aneuploidies often enough that a model sees them.
MIXED_KARYOTYPES: tuple[tuple[str, float], ...] = (
    ("46,XX", 0.3),
    ("46,XY", 0.3),
    ("47,XX,+21", 0.06),
    ("47,XY,+21", 0.06),
    ("47,XY,+18", 0.04),
    ("47,XX,+13", 0.04),
    ("45,X", 0.05),
    ("47,XXY", 0.05),
    ("47,XYY", 0.04),
    ("69,XXY", 0.02),
    ("47,XXX", 0.04),
)

_CHANGE_RE = re.compile(r"^(?P<sign>[+-])(?P<what>\d{1,2}|X|Y)$", re.I)


def parse_karyotype(karyotype: str) -> dict[int, int]:
    """Class counts of a numerical ISCN karyotype.

    Supports the modal number, the sex chromosomes and whole-chromosome gains
    and losses (``46,XY``, ``47,XX,+21``, ``45,X``, ``47,XXY``, ``69,XXY``,
    ``45,XX,-21``). The autosome ploidy follows from the modal number
    (69 -> triploid). Structural rearrangements are refused.

    Parameters
    ----------
    karyotype : str

    Returns
    -------
    dict of int to int
        Copies of each class 1..24 (23 = X, 24 = Y), all 24 keys in order.

    Raises
    ------
    ValueError
        On anything it cannot parse, or when the counts do not add up to the
        modal number.
    """
    text = str(karyotype).replace(" ", "")
    fields = text.split(",")
    if len(fields) < 2 or not fields[0].isdigit():
        raise ValueError(f"karyotype {karyotype!r}: expected '<count>,<sex chromosomes>[,+N|-N...]', e.g. '47,XX,+21'")
    total = int(fields[0])
    sex = fields[1].upper()
    if not sex or set(sex) - {"X", "Y"}:
        raise ValueError(f"karyotype {karyotype!r}: sex chromosomes {fields[1]!r} must be letters X and Y")
    changes = {k: 0 for k in range(1, 25)}
    for field in fields[2:]:
        m = _CHANGE_RE.match(field)
        if not m:
            raise ValueError(f"karyotype {karyotype!r}: cannot read {field!r} (only +N / -N gains and losses are supported)")
        what = m["what"].upper()
        number = CLASS_NAMES.index(what) + 1 if what in ("X", "Y") else int(what)
        if not 1 <= number <= 24:
            raise ValueError(f"karyotype {karyotype!r}: no chromosome {what}")
        changes[number] += 1 if m["sign"] == "+" else -1
    counts = {k: 0 for k in range(1, 25)}
    counts[X] = sex.count("X") + changes[X]
    counts[Y] = sex.count("Y") + changes[Y]
    autosome_changes = sum(changes[k] for k in range(1, 23))
    ploidy, rest = divmod(total - counts[X] - counts[Y] - autosome_changes, 22)
    if rest or ploidy < 1:
        raise ValueError(f"karyotype {karyotype!r}: {total} does not add up with the listed sex chromosomes and changes")
    for k in range(1, 23):
        counts[k] = ploidy + changes[k]
        if counts[k] < 0:
            raise ValueError(f"karyotype {karyotype!r}: fewer than zero copies of chromosome {k}")
    if min(counts[X], counts[Y]) < 0:
        raise ValueError(f"karyotype {karyotype!r}: fewer than zero sex chromosomes")
    return counts
