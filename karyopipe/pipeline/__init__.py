"""The full pipeline: spread -> segmentation -> geometry -> classification -> karyogram.

>>> from karyopipe import KaryoPipeline                       # doctest: +SKIP
>>> pipe = KaryoPipeline.from_pretrained()                    # doctest: +SKIP
>>> result = pipe("spread.png")                               # doctest: +SKIP
>>> result.karyotype, len(result.chromosomes)                 # doctest: +SKIP
>>> result.save("out/spread")                                 # doctest: +SKIP

Command line: ``karyopipe infer SPREAD [SPREAD ...] --out DIR`` (:mod:`karyopipe.pipeline.cli`),
``karyopipe eval-e2e DATA`` (:mod:`karyopipe.pipeline.evaluate`), ``karyopipe review REPORT --set ID=CLASS``
(:mod:`karyopipe.pipeline.review`: a reviewer's corrections, the karyogram redrawn), ``karyopipe case DIR``
(:mod:`karyopipe.pipeline.case`: the case from its cells' reports, reviewed ones first).
"""
from karyopipe.pipeline.core import ChromosomeResult, KaryoPipeline, KaryotypeResult
from karyopipe.pipeline.overlay import draw_overlay

__all__ = ["ChromosomeResult", "KaryoPipeline", "KaryotypeResult", "draw_overlay"]
