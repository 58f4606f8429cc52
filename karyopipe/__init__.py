"""karyopipe: automated human karyotyping from metaphase spreads.

Stages, each usable on its own: :mod:`karyopipe.segmentation` (Mask R-CNN),
:mod:`karyopipe.geometry` (axis, centromere, straightening, features),
:mod:`karyopipe.classification` (hybrid ResNet), :mod:`karyopipe.karyogram`
(assignment, ISCN, karyogram picture), joined by :mod:`karyopipe.pipeline`.
"""
__version__ = "0.1.0"


def __getattr__(name):
    # The pipeline pulls in torch; import it only when asked for.
    if name in ("KaryoPipeline", "KaryotypeResult"):
        from karyopipe import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'karyopipe' has no attribute {name!r}")
