"""ISCN numerical karyotype strings: writing and reading ``47,XY,+21``-style calls.

Only numerical (whole-chromosome) changes are covered. The string is the total
count, the sex-chromosome complement, then autosomal gains and losses relative
to the ploidy, ordered by chromosome number (ISCN 2020, section 9.2).

Examples
--------
>>> from karyopipe.karyogram.iscn import karyotype_string, parse_karyotype
>>> counts = {k: 2 for k in range(1, 23)} | {23: 1, 24: 1}
>>> counts[21] = 3
>>> karyotype_string(counts)
'47,XY,+21'
>>> parse_karyotype("45,X")[23], parse_karyotype("45,X")[24]
(1, 0)
"""
from __future__ import annotations

import re

from karyopipe.classes import AUTOSOMES, X, Y

__all__ = ["karyotype_string", "labels_karyotype", "parse_karyotype", "sex_complement", "ploidy_of", "count_changes"]

_TOKEN_RE = re.compile(r"^(?P<sign>[+-])(?P<name>\d{1,2}|X|Y)$", re.I)


def sex_complement(counts: dict[int, int]) -> str:
    """Sex chromosomes as written in ISCN: ``"XX"``, ``"XY"``, ``"X"``, ``"XXY"``...

    ISCN writes X before Y. A cell with neither (a lost X in a damaged spread)
    gives ``""``, which :func:`karyotype_string` renders as ``"--"``.
    """
    return "X" * int(counts.get(X, 0)) + "Y" * int(counts.get(Y, 0))


def ploidy_of(counts: dict[int, int]) -> int:
    """The ploidy the autosome counts are closest to (2 for diploid, 3 for triploid...).

    The median autosome count, so a few gains or losses do not move it.
    """
    values = sorted(int(counts.get(k, 0)) for k in AUTOSOMES)
    return max(1, values[len(values) // 2])


def count_changes(counts: dict[int, int], ploidy: int | None = None) -> list[tuple[int, int]]:
    """Autosomal gains and losses relative to ``ploidy``, as ``(number, +1/-1)`` steps.

    Returns one entry per copy gained or lost, ordered by chromosome number
    (a double gain of 21 gives two ``(21, +1)``).
    """
    ploidy = ploidy_of(counts) if ploidy is None else int(ploidy)
    steps: list[tuple[int, int]] = []
    for k in AUTOSOMES:
        diff = int(counts.get(k, 0)) - ploidy
        steps += [(k, 1 if diff > 0 else -1)] * abs(diff)
    return steps


def karyotype_string(counts: dict[int, int], ploidy: int | None = None) -> str:
    """ISCN numerical karyotype of a cell from its per-class counts.

    Parameters
    ----------
    counts : dict of int to int
        Copies per class number 1..24 (23 = X, 24 = Y); missing keys count 0.
    ploidy : int, optional
        Baseline autosome copies; by default the median autosome count, so a
        triploid cell is written ``69,XXY`` rather than as 23 gains.

    Returns
    -------
    str
        E.g. ``"46,XX"``, ``"47,XY,+21"``, ``"45,X"``, ``"47,XXY"``, ``"69,XXY"``,
        ``"45,XX,-22"``.
    """
    bad = [k for k in counts if k not in AUTOSOMES and k not in (X, Y)]
    if bad:
        raise ValueError(f"class numbers must be 1..24, got {bad}")
    total = sum(int(v) for v in counts.values())
    parts = [str(total), sex_complement(counts) or "--"]
    parts += [("+" if sign > 0 else "-") + str(k) for k, sign in count_changes(counts, ploidy)]
    return ",".join(parts)


def labels_karyotype(labels) -> str:
    """ISCN numerical karyotype of one cell from its chromosomes' class numbers (1..24).

    >>> labels_karyotype([k for k in range(1, 23) for _ in range(2)] + [23, 23])
    '46,XX'
    """
    counts: dict[int, int] = {}
    for label in labels:
        counts[int(label)] = counts.get(int(label), 0) + 1
    return karyotype_string(counts)


def parse_karyotype(text: str) -> dict[int, int]:
    """Per-class counts of a numerical ISCN karyotype such as ``"47,XX,+21"``.

    Sex chromosomes come from the complement field (``XXY``); ``+X``/``-Y``
    tokens are also accepted. The ploidy is taken from the count field
    (69 or more means triploid) and checked against the result.

    Raises
    ------
    ValueError
        If the string is not a numerical karyotype or its count disagrees.
    """
    fields = [f.strip() for f in str(text).strip().split(",") if f.strip()]
    if len(fields) < 2 or not fields[0].isdigit():
        raise ValueError(f"not an ISCN karyotype (count,sex[,+N...]): {text!r}")
    total = int(fields[0])
    sex = fields[1].upper()
    if sex == "--":
        sex = ""
    if not re.fullmatch(r"X*Y*", sex):
        raise ValueError(f"bad sex-chromosome field {fields[1]!r} in {text!r}")
    ploidy = max(1, round((total - len(sex)) / 22)) if total >= 60 else 2
    counts = {k: ploidy for k in AUTOSOMES}
    counts[X], counts[Y] = sex.count("X"), sex.count("Y")
    for token in fields[2:]:
        match = _TOKEN_RE.match(token)
        if not match:
            raise ValueError(f"unsupported token {token!r} in {text!r}: only +N / -N are read")
        name = match.group("name").upper()
        k = X if name == "X" else Y if name == "Y" else int(name)
        if not 1 <= k <= 24:
            raise ValueError(f"no chromosome {name!r} in {text!r}")
        counts[k] += 1 if match.group("sign") == "+" else -1
        if counts[k] < 0:
            raise ValueError(f"negative count of chromosome {name} in {text!r}")
    if sum(counts.values()) != total:
        raise ValueError(f"{text!r}: the count {total} disagrees with the listed chromosomes ({sum(counts.values())})")
    return counts
