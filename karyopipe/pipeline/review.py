"""``karyopipe review``: a cytogeneticist's corrections to a call, and the karyogram redrawn from them.

karyopipe's karyotype is a draft to check. The reviewer reads ``overlay.png``
(every chromosome numbered) and ``karyogram.png``, and corrects what is wrong:
a chromosome in the wrong class, an object that is debris. This command
applies those corrections to the ``report.json`` of an ``infer`` run, counts
the karyotype again from the corrected classes (ISCN), and writes the four
outputs anew, with the corrections recorded in the report (``stages.review``)
and each corrected chromosome flagged ``"set_by_reviewer"`` or
``"dropped_by_reviewer"``. Nothing is segmented or classified again: the
chromosomes are the report's polygons, straightened again for the picture.

Usage::

    karyopipe review out/spread/report.json --set 12=7 --set 30=X --drop 45
    karyopipe review out/spread/report.json --set 3=21 --image /data/spread.png --out out/spread_checked
    karyopipe review out/spread/report.json --csv out/spread/chromosomes_edited.csv

Examples
--------
>>> from karyopipe.pipeline.review import parse_corrections
>>> parse_corrections(["12=7", "30=X"], ["45"])
{12: 7, 30: 23, 45: 0}
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

import numpy as np

from karyopipe.classes import CLASS_NAMES, NUM_CLASSES, X, Y
# A cell's reviewed outputs go to its folder's name plus REVIEWED_SUFFIX (karyopipe case and the reports
# reader find them there).
from karyopipe.data.reports import REVIEWED_SUFFIX
from karyopipe.pipeline.core import DROP_FLAG, SET_FLAG


class ReviewError(ValueError):
    """A correction or a report that cannot be used; the message names the file and the problem."""


def parse_class(text: str) -> int:
    """Class number 1..24 of ``"7"``, ``"X"``, ``"y"``..., or :class:`ReviewError`."""
    name = str(text).strip().upper()
    if name in CLASS_NAMES:
        return CLASS_NAMES.index(name) + 1
    raise ReviewError(f"unknown chromosome class {text!r}: use 1..22, X or Y")


def parse_corrections(sets=(), drops=()) -> dict[int, int]:
    """``{object id: new class number, 0 = not a chromosome}`` from ``ID=CLASS`` and ``ID`` strings."""
    changes: dict[int, int] = {}
    for item in sets:
        ident, sep, cls = str(item).partition("=")
        if not sep:
            raise ReviewError(f"--set {item!r}: write it as ID=CLASS, for example 12=7 or 30=X")
        changes[_object_id(ident)] = parse_class(cls)
    for item in drops:
        changes[_object_id(item)] = 0
    return changes


#: What a ``class`` cell of an edited chromosomes.csv may hold for an object that is not a chromosome.
NOT_A_CHROMOSOME = ("", "?", "-", "0", "DROP", "NONE")


def corrections_from_csv(path) -> dict[int, int]:
    """``{object id: class number, 0 = not a chromosome}`` from a ``chromosomes.csv`` whose ``class`` column was edited.

    Every row counts, so the result holds the whole cell as the reviewer left
    it; :func:`review` records only the rows that differ from the report.
    ``?``, ``-``, ``0``, ``drop`` or an empty cell mean "not a chromosome".
    """
    import csv

    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReviewError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if not rows or "id" not in rows[0] or "class" not in rows[0]:
        raise ReviewError(f"{path}: needs the columns id and class, as karyopipe's chromosomes.csv has")
    changes = {}
    for line, row in enumerate(rows, start=2):
        text = (row["class"] or "").strip()
        try:
            changes[_object_id(row["id"])] = 0 if text.upper() in NOT_A_CHROMOSOME else parse_class(text)
        except ReviewError as exc:
            raise ReviewError(f"{path}, line {line}: {exc}") from None
    return changes


def _object_id(text) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ReviewError(f"object id {text!r} is not a number (the ids are in overlay.png and report.json)") from None


def read_report(path) -> dict:
    """The ``report.json`` of an ``infer`` run, checked for what a review needs."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReviewError(f"{path}: no such report") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReviewError(f"{path}: not a readable report.json ({str(exc).splitlines()[0]})") from None
    missing = [k for k in ("source", "polarity", "chromosomes", "image_shape") if k not in report] \
        if isinstance(report, dict) else []
    if not isinstance(report, dict) or missing:
        raise ReviewError(f"{path}: not a karyopipe report (missing {', '.join(missing) or 'everything'})")
    for k, row in enumerate(report["chromosomes"]):
        lacking = [key for key in ("id", "polygon", "bbox") if not isinstance(row, dict) or key not in row]
        if lacking:
            raise ReviewError(f"{path}: chromosome entry {k} has no {', '.join(lacking)}")
    return report


def _source_image(report: dict, report_path: Path, image) -> Path:
    if image is not None:
        if not Path(image).is_file():
            raise ReviewError(f"{image}: no such image")
        return Path(image)
    source = Path(report["source"])
    for candidate in (source, report_path.parent / source, report_path.parent / source.name):
        if candidate.is_file():
            return candidate
    raise ReviewError(f"{report_path}: its spread {report['source']} is not found from here; pass --image PATH")


def counted_call(labels, confidence, flags, lengths, statement_prefix: str = "Reviewed"):
    """A :class:`~karyopipe.karyogram.KaryotypeCall` counted from final class numbers (0 = not a chromosome).

    Abnormalities are the count's departures from the normal complement,
    each with confidence 1: a person decided them.
    """
    from karyopipe.karyogram import Abnormality, KaryotypeCall
    from karyopipe.karyogram.assign import homolog_pairs
    from karyopipe.karyogram.iscn import count_changes, karyotype_string, ploidy_of

    labels = np.asarray(labels, int)
    counts = {k: int(np.sum(labels == k)) for k in range(1, NUM_CLASSES + 1)}
    ploidy = ploidy_of(counts)
    karyotype = karyotype_string(counts, ploidy=ploidy)
    sex = "X" * counts[X] + "Y" * counts[Y]
    abnormalities = []
    if ploidy != 2:
        abnormalities.append(Abnormality(f"{ploidy}n", 1.0, "ploidy"))
    if sex not in ("X" * ploidy, "X" * (ploidy - 1) + "Y"):
        abnormalities.append(Abnormality(sex or "no sex chromosome", 1.0, "sex"))
    for number, sign in count_changes(counts, ploidy):
        abnormalities.append(Abnormality(("+" if sign > 0 else "-") + str(number), 1.0,
                                         "gain" if sign > 0 else "loss", number))
    n, assigned = len(labels), int(np.sum(labels > 0))
    statement = f"{statement_prefix}: {karyotype}. {n} objects, {assigned} chromosomes."
    return KaryotypeCall(labels=labels, confidence=np.asarray(confidence, float), flags=[list(f) for f in flags],
                         karyotype=karyotype, abnormalities=abnormalities, sex=sex, statement=statement,
                         pairs=homolog_pairs(labels, lengths),
                         counts=counts, ploidy=ploidy, callable=True)


def review(report_path, changes: dict[int, int], image=None, reviewer: str = ""):
    """Apply ``changes`` (object id -> class number, 0 = not a chromosome) to an ``infer`` report.

    Parameters
    ----------
    report_path : str or Path
        ``report.json`` written by ``karyopipe infer`` / ``KaryotypeResult.save``.
    changes : dict of int to int
        :func:`parse_corrections`.
    image : str or Path, optional
        The spread, when the report's ``source`` is not found from here.
    reviewer : str
        Recorded with the corrections.

    Returns
    -------
    KaryotypeResult
        Save it with ``.save(out_dir)``.
    """
    from karyopipe.geometry import analyze_in_image
    from karyopipe.pipeline.core import _PAD, ChromosomeResult, KaryoPipeline, KaryotypeResult, _abn
    from karyopipe.pipeline.report import polygon_mask

    report_path = Path(report_path)
    report = read_report(report_path)
    rows = report["chromosomes"]
    ids = [int(r["id"]) for r in rows]
    bad = {k: v for k, v in changes.items() if not (isinstance(v, (int, np.integer)) and 0 <= v <= NUM_CLASSES)}
    if bad:
        raise ReviewError(f"corrections {bad}: a class is a number 1..{NUM_CLASSES} (23 = X, 24 = Y) or 0 for "
                          "not a chromosome; parse_class turns names into numbers")
    unknown = sorted(set(changes) - set(ids))
    if unknown:
        raise ReviewError(f"{report_path}: no object {', '.join(map(str, unknown))} "
                          f"(its objects are {min(ids) if ids else '-'}..{max(ids) if ids else '-'})")
    source = _source_image(report, report_path, image)
    gray, polarity, _ = KaryoPipeline.load(source, report["polarity"])
    if list(gray.shape) != list(report["image_shape"]):
        raise ReviewError(f"{source}: {gray.shape[1]}x{gray.shape[0]} pixels, but the report was made on a "
                          f"{report['image_shape'][1]}x{report['image_shape'][0]} image: not the same spread")
    geometries = analyze_in_image(gray, [polygon_mask(r["polygon"], gray.shape) for r in rows], pad=_PAD)

    labels, confidence, flags, made = [], [], [], []
    for r, g in zip(rows, geometries):
        ident, label = int(r["id"]), int(r.get("label") or 0)
        conf = r.get("confidence")
        conf = float("nan") if conf is None else float(conf)
        own = [f for f in r.get("flags", []) if f not in (SET_FLAG, DROP_FLAG)]
        if ident in changes and changes[ident] != label:
            made.append({"id": ident, "from": CLASS_NAMES[label - 1] if label else "?",
                         "to": CLASS_NAMES[changes[ident] - 1] if changes[ident] else "not a chromosome"})
            label, conf = changes[ident], 1.0
            # What was said of the machine's label no longer applies to the reviewer's.
            own = ([f for f in own if f not in ("uncertain", "unassigned", "classifier_disagrees")]
                   + [SET_FLAG if label else DROP_FLAG])
            if not label:
                own.append("unassigned")
        labels.append(label)
        confidence.append(conf if label else 0.0)
        flags.append(own)
    lengths = [g.length_px for g in geometries]
    call = counted_call(labels, confidence, flags, lengths)
    machine = report.get("karyotype") or "no call"
    if "review" in report.get("stages", {}):
        machine = f"reviewed {machine}"
    if made:
        call.statement += (f" {len(made)} correction(s) by the reviewer to karyopipe's {machine}: "
                           + ", ".join(f"object {m['id']} {m['from']} -> {m['to']}" for m in made) + ".")
    else:
        call.statement += f" No corrections: karyopipe's {machine} stands as reviewed."

    chromosomes = []
    for r, g, label, conf, f in zip(rows, geometries, labels, confidence, flags):
        chromosomes.append(ChromosomeResult(
            id=int(r["id"]), bbox=tuple(r["bbox"]), polygon=np.asarray(r["polygon"], float).reshape(-1, 2),
            mask=None, score=_float(r.get("score")), label=label, confidence=conf,
            top3=[(t["class"], _float(t["prob"])) for t in r.get("top3", [])],
            length_px=_float(r.get("length_px")), relative_length=_float(r.get("relative_length")),
            centromere_index=_float(r.get("centromere_index")), polarity_confidence=_float(r.get("polarity_confidence")),
            flags=sorted(set(f)), geometry=g))
    stages = dict(report.get("stages", {}))
    # A second review of a reviewed report keeps the first: the machine's call and every earlier round.
    earlier = stages.get("review")
    stages["review"] = {"machine_karyotype": earlier["machine_karyotype"] if earlier else report.get("karyotype", ""),
                        "corrections": made, "reviewer": reviewer, "date": _dt.date.today().isoformat(),
                        "report": str(report_path),
                        "earlier": (earlier.get("earlier", []) + [{k: v for k, v in earlier.items() if k != "earlier"}])
                        if earlier else []}
    return KaryotypeResult(
        source=str(source), image=gray, polarity=polarity, chromosomes=chromosomes, karyotype=call.karyotype,
        statement=call.statement, abnormalities=[_abn(a) for a in call.abnormalities], sex=call.sex,
        sex_confidence=1.0, call=call, timings=dict(report.get("timings_s", {})), stages=stages,
        warnings=list(report.get("warnings", [])), scale=dict(report.get("scale", {})))


def _float(v) -> float:
    return float("nan") if v is None else float(v)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe review", description=__doc__.split("\n\n")[0])
    p.add_argument("report", help="report.json of a karyopipe infer run")
    p.add_argument("--set", action="append", default=[], metavar="ID=CLASS",
                   help="give object ID (as numbered in overlay.png) the class CLASS (1..22, X, Y); repeatable")
    p.add_argument("--drop", action="append", default=[], metavar="ID",
                   help="object ID is not a chromosome (debris, a nucleus, a piece counted twice); repeatable")
    p.add_argument("--csv", default=None, metavar="CHROMOSOMES_CSV",
                   help="the cell's chromosomes.csv with its class column edited (in a spreadsheet); '?', '-' or "
                        "empty: not a chromosome. --set and --drop given as well win over it")
    p.add_argument("--image", default=None, help="the spread, when the report's source path is not found from here")
    p.add_argument("--reviewer", default="", help="name or initials recorded with the corrections")
    p.add_argument("--out", default=None, help="output folder (default: the report's folder + '_reviewed'; a reviewed "
                                                "report is updated in its own folder, earlier rounds kept in its record)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from karyopipe.io import ImageReadError

    try:
        changes = corrections_from_csv(args.csv) if args.csv else {}
        changes.update(parse_corrections(args.set, args.drop))
        result = review(args.report, changes, image=args.image, reviewer=args.reviewer)
    except (ReviewError, ImageReadError) as exc:
        print(f"karyopipe review: {exc}", file=sys.stderr)
        return 2
    report_dir = Path(args.report).parent
    # A reviewed cell stays in its one _reviewed folder, which karyopipe case reads for it.
    out = Path(args.out) if args.out else (report_dir if report_dir.name.endswith(REVIEWED_SUFFIX)
                                           else report_dir.with_name(report_dir.name + REVIEWED_SUFFIX))
    result.save(out)
    print(f"{result.karyotype}  ({len(result.stages['review']['corrections'])} correction(s)); wrote {out}/")
    print(result.statement)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
