"""Chromosome geometry: medial axis, centromere, straightening and features.

>>> import numpy as np
>>> from karyopipe.geometry import analyze_chromosome
>>> mask = np.zeros((60, 20), bool); mask[5:55, 6:14] = True
>>> geom = analyze_chromosome(mask, mask.astype(np.float32))
>>> round(geom.length_px), geom.straightened.shape[1]
(50, 32)
"""
from karyopipe.geometry.analyze import ChromosomeGeometry, analyze_chromosome, analyze_in_image
from karyopipe.geometry.axis import clean_mask, mask_from_crop, medial_axis
from karyopipe.geometry.centromere import find_centromere
from karyopipe.geometry.features import FEATURE_NAMES, N_FEATURES, cell_features, cell_totals, feature_vector

__all__ = [
    "FEATURE_NAMES",
    "N_FEATURES",
    "cell_features",
    "cell_totals",
    "feature_vector",
    "ChromosomeGeometry",
    "analyze_chromosome",
    "analyze_in_image",
    "clean_mask",
    "find_centromere",
    "mask_from_crop",
    "medial_axis",
]
