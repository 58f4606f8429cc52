"""Dataset readers and the plain data model (see :mod:`karyopipe.data.model`)."""
from karyopipe.data.model import CROPS, SPREADS, Dataset, Instance, Problem, Sample

__all__ = ["CROPS", "SPREADS", "Dataset", "Instance", "Problem", "Sample"]
