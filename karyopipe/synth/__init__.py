"""Synthetic chromosomes and metaphase spreads with exact ground truth.

:func:`render_chromosome` draws one banded chromosome from the hg38 ideogram with
its true medial axis, centromere, length and banding profile.
:func:`compose_spread` lays out a whole cell of a given karyotype as a metaphase
spread with COCO-ready instances (visible and amodal masks, class, centromere,
axis). ``karyopipe synth`` writes datasets of them.
"""
from karyopipe.synth.chromosome import BENDS, SynthChromosome, render_chromosome
from karyopipe.synth.ideogram import ChromosomeIdeogram, load_ideogram

__all__ = [
    "BENDS",
    "ChromosomeIdeogram",
    "SynthChromosome",
    "load_ideogram",
    "render_chromosome",
]
