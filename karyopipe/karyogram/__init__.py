"""Karyogram assembly: global assignment of a cell's chromosomes, ISCN strings, karyogram pictures.

>>> from karyopipe.karyogram import assign_karyotype, karyotype_string, draw_karyogram  # doctest: +SKIP
"""
from karyopipe.karyogram.assign import Abnormality, KaryotypeCall, assign_karyotype
from karyopipe.karyogram.iscn import karyotype_string, parse_karyotype

__all__ = ["Abnormality", "KaryotypeCall", "assign_karyotype", "karyotype_string", "parse_karyotype",
           "draw_karyogram"]


def __getattr__(name):
    # Drawing pulls in PIL; import it only when asked for.
    if name == "draw_karyogram":
        from karyopipe.karyogram.draw import draw_karyogram

        return draw_karyogram
    raise AttributeError(f"module 'karyopipe.karyogram' has no attribute {name!r}")
