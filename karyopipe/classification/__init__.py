"""Chromosome classification: HybridResNet (CNN on straightened crops + per-cell features).

Public API
----------
HybridResNet, build_hybrid_resnet : the model (:mod:`.model`)
Classifier : inference wrapper with ``from_pretrained`` and ``predict_cell`` (:mod:`.classifier`)
assign_cell : karyotype-level assignment of one cell's log-probabilities (:mod:`.assign`)
"""
from __future__ import annotations

__all__ = ["HybridResNet", "build_hybrid_resnet", "Classifier", "assign_cell"]


def __getattr__(name):
    # Lazy: `karyopipe eval-cls --help` should not pay for importing torch twice over.
    if name in ("HybridResNet", "build_hybrid_resnet"):
        from karyopipe.classification import model

        return getattr(model, name)
    if name == "Classifier":
        from karyopipe.classification.classifier import Classifier

        return Classifier
    if name == "assign_cell":
        from karyopipe.classification.assign import assign_cell

        return assign_cell
    raise AttributeError(name)
