"""Chromosome instance segmentation: Mask R-CNN from scratch and a watershed baseline."""
from karyopipe.segmentation.model import BACKBONES, build_backbone, build_maskrcnn

__all__ = ["BACKBONES", "build_backbone", "build_maskrcnn", "Segmenter", "segment_watershed"]


def __getattr__(name):
    # Lazy so that importing the builders does not pull in scikit-image, and so the
    # package stays importable while later modules are being written.
    if name == "Segmenter":
        from karyopipe.segmentation.infer import Segmenter

        return Segmenter
    if name == "segment_watershed":
        from karyopipe.segmentation.baseline import segment_watershed

        return segment_watershed
    raise AttributeError(name)
