"""``karyopipe join-cls``: join trained classifiers into one ensemble weights file.

The members keep their own preprocessing and temperature; the file loads with
``Classifier.from_pretrained`` as a :class:`~karyopipe.classification.classifier.ClassifierEnsemble`.
They must share the data split (same data folders, split seed and fractions),
or the ensemble's held-out cells would not be held out from every member.

Example::

    karyopipe join-cls runs/cls-a/weights.pth runs/cls-b/weights.pth --out weights/karyotype_classifier_best.pth
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def join_classifiers(paths, card: dict | None = None):
    """A :class:`ClassifierEnsemble` of the single-model weights files ``paths``."""
    from karyopipe.classification.classifier import Classifier, ClassifierEnsemble, _SHARED_CONFIG

    members = [Classifier.from_pretrained(p) for p in paths]
    for path, member in zip(paths, members):
        if isinstance(member, ClassifierEnsemble):
            raise ValueError(f"{path}: already an ensemble; join its member files instead")
        for key in _SHARED_CONFIG:
            if member.config.get(key) != members[0].config.get(key):
                raise ValueError(f"{path}: its {key} differs from {paths[0]}'s; members must share one data split")
    meta = dict(card or {})
    meta.setdefault("members", {str(p): m.meta for p, m in zip(paths, members)})
    return ClassifierEnsemble(members, meta)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe join-cls", description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="+", help="single-model classifier weights (.pth)")
    p.add_argument("--out", required=True, help="ensemble weights file to write")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if len(args.weights) < 2:
        print("karyopipe join-cls: give at least two weights files", file=sys.stderr)
        return 2
    for path in args.weights:
        if not Path(path).is_file():
            print(f"karyopipe join-cls: {path}: no such file", file=sys.stderr)
            return 2
    ensemble = join_classifiers(args.weights)
    out = ensemble.save(args.out)
    print(f"wrote {out}: ensemble of {len(args.weights)} ({', '.join(m.preprocess for m in ensemble.members)})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
