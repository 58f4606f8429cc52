"""The ideogram the synthetic generator draws from: hg38 cytobands via pyryotype.

Every class gets its length in base pairs, its centromere (the boundary between
the two ``acen`` bands) and its bands with their Giemsa stain. The table ships with
the ``pyryotype`` package (``static/cytobands_hg38.bed``); it is read, never copied.

That hg38 table holds chromosomes 1..22 only, so X and Y come from the CHM13 (T2T)
table that ships beside it (``cytobands_chm13.bed``); lengths and band patterns of
the two assemblies agree to within a few percent at this resolution.

Examples
--------
>>> from karyopipe.synth.ideogram import load_ideogram
>>> ideo = load_ideogram()
>>> ideo[1].length_bp > ideo[21].length_bp, round(ideo[1].centromere_index, 2)
(True, 0.5)
>>> [b.stain for b in ideo[13].bands[:3]]
['gvar', 'stalk', 'gvar']
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from karyopipe.classes import CLASS_NAMES, X, Y

# Darkness of each stain in a G-banded chromosome, 0 = pale, 1 = darkest. The same
# number is the brightness of the band under Q-banding (Q-bright = G-dark).
# gvar is the variable heterochromatin (1q12, 9q12, 16q11.2, acrocentric short
# arms, Yq12): mostly dark. Stalks are pale and thin; the centromere is mid grey.
STAIN_DARKNESS: dict[str, float] = {
    "gneg": 0.0,
    "gpos25": 0.25,
    "gpos50": 0.5,
    "gpos75": 0.75,
    "gpos100": 1.0,
    "gvar": 0.8,
    "stalk": 0.1,
    "acen": 0.35,
}


@dataclass(frozen=True)
class Band:
    """One cytoband: ``start``/``end`` in bp from the p-tip, ISCN ``name`` and ``stain``."""

    start: int
    end: int
    name: str
    stain: str

    @property
    def darkness(self) -> float:
        """G-band darkness (= Q-band brightness) of the stain, in [0, 1]."""
        return STAIN_DARKNESS[self.stain]


@dataclass(frozen=True)
class ChromosomeIdeogram:
    """The ideogram of one class.

    Attributes
    ----------
    number : int
        Class 1..24.
    length_bp : int
    centromere_bp : int
        Boundary between the p11.1 and q11.1 ``acen`` bands.
    bands : tuple of Band
        From the p-tip to the q-tip.
    assembly : str
        ``"hg38"`` or ``"chm13"``.
    """

    number: int
    length_bp: int
    centromere_bp: int
    bands: tuple[Band, ...]
    assembly: str

    @property
    def name(self) -> str:
        return CLASS_NAMES[self.number - 1]

    @property
    def centromere_index(self) -> float:
        """p / (p + q) in base pairs."""
        return self.centromere_bp / self.length_bp

    def profile(self, t: np.ndarray) -> np.ndarray:
        """Stain darkness at fractions ``t`` (0 = p-tip, 1 = q-tip) of the length.

        Parameters
        ----------
        t : ndarray, shape (N,)

        Returns
        -------
        ndarray, shape (N,), float32 in [0, 1]
        """
        ends = np.array([b.end for b in self.bands], dtype=np.float64) / self.length_bp
        values = np.array([b.darkness for b in self.bands], dtype=np.float32)
        index = np.searchsorted(ends, np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0), side="right")
        return values[np.minimum(index, len(values) - 1)]


def _read_bed(filename: str) -> dict[str, list[Band]]:
    from importlib.resources import files

    text = (files("pyryotype") / "static" / filename).read_text()
    table: dict[str, list[Band]] = {}
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 5 or fields[4] not in STAIN_DARKNESS:
            raise ValueError(f"pyryotype/static/{filename}:{line_no}: not a cytoband line: {line!r}")
        table.setdefault(fields[0], []).append(Band(int(fields[1]), int(fields[2]), fields[3], fields[4]))
    return table


@functools.lru_cache(maxsize=1)
def load_ideogram() -> dict[int, ChromosomeIdeogram]:
    """Ideograms of the 24 classes, keyed by class number 1..24 (cached).

    Returns
    -------
    dict of int to ChromosomeIdeogram
    """
    sources = {"hg38": _read_bed("cytobands_hg38.bed")}
    ideograms = {}
    for number, name in enumerate(CLASS_NAMES, 1):
        chrom = f"chr{name}"
        assembly = "hg38" if chrom in sources["hg38"] else "chm13"
        if assembly not in sources:
            sources[assembly] = _read_bed("cytobands_chm13.bed")
        bands = sorted(sources[assembly].get(chrom, []), key=lambda b: b.start)
        if not bands:
            raise ValueError(f"pyryotype cytoband tables hold no {chrom}")
        acen = [b for b in bands if b.stain == "acen"]
        p_acen = [b for b in acen if b.name.startswith("p")]
        centromere = p_acen[-1].end if p_acen else (acen[0].start + acen[-1].end) // 2
        ideograms[number] = ChromosomeIdeogram(number, bands[-1].end, centromere, tuple(bands), assembly)
    assert set(ideograms) == set(range(1, 25)) and X in ideograms and Y in ideograms
    return ideograms


def relative_lengths() -> dict[int, float]:
    """Length of each class relative to chromosome 1 (bp / bp of chr1)."""
    ideo = load_ideogram()
    return {k: v.length_bp / ideo[1].length_bp for k, v in ideo.items()}
