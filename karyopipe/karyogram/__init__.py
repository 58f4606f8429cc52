"""Karyogram assembly: global assignment of a cell's chromosomes, ISCN strings, karyogram pictures.

Examples
--------
>>> from karyopipe.karyogram import assign_karyotype, draw_karyogram, save_karyogram  # doctest: +SKIP
>>> call = assign_karyotype(log_probs, lengths, centromere_index,                    # doctest: +SKIP
...                         polarity_confidence=polarity)
>>> call.karyotype, call.statement                                                  # doctest: +SKIP
('47,XX,+21', '47,XX,+21: gain of chromosome 21, Down syndrome (p=0.99). 47 objects, 47 assigned.')
>>> picture = draw_karyogram(straightened, call, centromere_t=centromere_t)         # doctest: +SKIP
>>> save_karyogram("karyogram.png", picture)                                        # doctest: +SKIP
"""
from karyopipe.karyogram.assign import (Abnormality, KaryotypeCall, assign_karyotype, geometry_measures,
                                       junk_prior_from_scores)
from karyopipe.karyogram.iscn import karyotype_string, labels_karyotype, parse_karyotype

__all__ = ["Abnormality", "KaryotypeCall", "assign_karyotype", "geometry_measures", "junk_prior_from_scores",
           "karyotype_string", "labels_karyotype", "parse_karyotype", "draw_karyogram", "save_karyogram"]


def __getattr__(name):
    # Drawing pulls in PIL; import it only when asked for.
    if name in ("draw_karyogram", "save_karyogram"):
        from karyopipe.karyogram import draw

        return getattr(draw, name)
    raise AttributeError(f"module 'karyopipe.karyogram' has no attribute {name!r}")
