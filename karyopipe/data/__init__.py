"""Dataset readers, splits and the plain data model.

>>> from karyopipe.data import read_dataset, split_by_cell
>>> ds = read_dataset("data/bioimlab/crops")           # doctest: +SKIP
>>> train, val = split_by_cell(ds, val_fraction=0.2)   # doctest: +SKIP

See :mod:`karyopipe.data.readers` for the formats and :mod:`karyopipe.data.model`
for :class:`Dataset`, :class:`Sample`, :class:`Instance` and :class:`Problem`.
"""
from karyopipe.data.boxes import read_voc, read_yolo
from karyopipe.data.coco import read_coco, write_coco
from karyopipe.data.crops import read_crops
from karyopipe.data.labelme import read_labelme
from karyopipe.data.model import CROPS, SPREADS, Dataset, Instance, Problem, Sample
from karyopipe.data.readers import FORMATS, UnknownFormatError, detect_format, read_dataset, read_images
from karyopipe.data.reports import read_reports
from karyopipe.data.split import split_by_cell

__all__ = [
    "CROPS", "SPREADS", "Dataset", "Instance", "Problem", "Sample",
    "FORMATS", "UnknownFormatError", "detect_format", "read_dataset",
    "read_labelme", "read_coco", "write_coco", "read_voc", "read_yolo", "read_crops", "read_images", "read_reports",
    "split_by_cell",
]
