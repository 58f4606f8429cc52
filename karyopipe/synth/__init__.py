"""Synthetic chromosomes and metaphase spreads with exact ground truth.

:func:`render_chromosome` draws one banded chromosome from the hg38 ideogram with
its true medial axis, centromere, length and banding profile.
:func:`compose_spread` lays out a whole cell of a given karyotype as a metaphase
spread with COCO-ready instances (visible and amodal masks, class, centromere,
axis). ``karyopipe synth`` (:func:`generate_dataset`) writes datasets of them.

Examples
--------
>>> import numpy as np
>>> from karyopipe.synth import compose_spread, parse_karyotype, render_chromosome
>>> parse_karyotype("47,XY,+18")[18]
3
"""
from karyopipe.synth.chromosome import BENDS, SynthChromosome, render_chromosome
from karyopipe.synth.cli import generate_dataset
from karyopipe.synth.ideogram import ChromosomeIdeogram, load_ideogram
from karyopipe.synth.karyotype import MIXED_KARYOTYPES, parse_karyotype
from karyopipe.synth.spread import SynthInstance, SynthSpread, compose_spread

__all__ = [
    "BENDS",
    "ChromosomeIdeogram",
    "MIXED_KARYOTYPES",
    "SynthChromosome",
    "SynthInstance",
    "SynthSpread",
    "compose_spread",
    "generate_dataset",
    "load_ideogram",
    "parse_karyotype",
    "render_chromosome",
]
