"""``karyopipe join-cls``: join trained classifiers into one ensemble weights file.

The members keep their own preprocessing and temperature; the file loads with
``Classifier.from_pretrained`` as a :class:`~karyopipe.classification.classifier.ClassifierEnsemble`.
They must share the data split (same data folders, split seed and fractions),
or the ensemble's held-out cells would not be held out from every member.

A member of an existing ensemble is named ``FILE@N`` (N from 0), so one member
can be replaced without its training run at hand.

Example::

    karyopipe join-cls runs/cls-a/weights.pth runs/cls-b/weights.pth --out weights/karyotype_classifier_best.pth
    karyopipe join-cls weights/karyotype_classifier_best.pth@0 runs/cls-c/weights.pth --out swapped.pth
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def member_spec(spec) -> tuple[Path, int | None]:
    """``"FILE@N"`` -> (FILE, N); a plain path (or an existing file whose name has an ``@``) -> (path, None)."""
    path, _, index = str(spec).rpartition("@")
    if path and index.isdigit() and not Path(spec).is_file():
        return Path(path), int(index)
    return Path(spec), None


def load_member(spec):
    """The single classifier named by ``spec``: a weights file, or ``ENSEMBLE@N`` for member N of an ensemble file."""
    from karyopipe.classification.classifier import Classifier, ClassifierEnsemble

    path, index = member_spec(spec)
    model = Classifier.from_pretrained(path)
    if index is None:
        if isinstance(model, ClassifierEnsemble):
            raise ValueError(f"{path}: already an ensemble; name one of its {len(model.members)} members as "
                             f"{path}@0 .. {path}@{len(model.members) - 1}")
        return model
    if not isinstance(model, ClassifierEnsemble):
        raise ValueError(f"{spec}: {path} holds one model, not an ensemble; name it without '@{index}'")
    if index >= len(model.members):
        raise ValueError(f"{spec}: {path} has {len(model.members)} members (0 .. {len(model.members) - 1})")
    return model.members[index]


def join_classifiers(paths, card: dict | None = None):
    """A :class:`ClassifierEnsemble` of single-model weights files, or ensemble members named ``FILE@N``."""
    from karyopipe.classification.classifier import ClassifierEnsemble, _SHARED_CONFIG

    members = [load_member(p) for p in paths]
    for path, member in zip(paths, members):
        for key in _SHARED_CONFIG:
            if member.config.get(key) != members[0].config.get(key):
                raise ValueError(f"{path}: its {key} differs from {paths[0]}'s; members must share one data split")
    meta = dict(card or {})
    meta.setdefault("members", {str(p): m.meta for p, m in zip(paths, members)})
    return ClassifierEnsemble(members, meta)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe join-cls", description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="+", help="single-model classifier weights (.pth), or FILE@N for member N of an ensemble")
    p.add_argument("--out", required=True, help="ensemble weights file to write")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if len(args.weights) < 2:
        print("karyopipe join-cls: give at least two weights files", file=sys.stderr)
        return 2
    for spec in args.weights:
        path, _ = member_spec(spec)
        if not path.is_file():
            print(f"karyopipe join-cls: {path}: no such file", file=sys.stderr)
            return 2
    try:
        ensemble = join_classifiers(args.weights)
    except ValueError as err:
        print(f"karyopipe join-cls: {err}", file=sys.stderr)
        return 2
    out = ensemble.save(args.out)
    print(f"wrote {out}: ensemble of {len(args.weights)} ({', '.join(m.preprocess for m in ensemble.members)})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
