"""Reviewed ``karyopipe infer`` reports as annotated spreads: a lab's own corrected cells become data.

``karyopipe infer`` writes ``<out>/<stem>/report.json`` with every chromosome's
polygon and class; ``karyopipe review`` writes the corrected cell to
``<out>/<stem>_reviewed/report.json`` and records the review in
``stages.review``. Read as a dataset, the reviewed reports are spreads whose
chromosomes carry the classes a person confirmed or set, so ``train-cls``
(fine-tuning on the lab's own cells), ``eval-e2e`` and ``eval-cls`` take
them like any annotated spreads:

    karyopipe train-cls --data out/ --init weights/karyotype_classifier_best.pth ...
    karyopipe eval-e2e out/

Only reviewed reports are read: an unreviewed report's classes are the
model's own calls, not labels, so it is listed among the problems instead.
An object the reviewer dropped (or left without a class) is read as debris.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from karyopipe.data._common import add_problem, file_loader, natural_key
from karyopipe.data.model import SPREADS, Dataset, Instance, Problem, Sample

#: The keys that tell a karyopipe report from other JSON.
REPORT_KEYS = ("karyopipe_version", "source", "image_shape", "chromosomes")
#: ``karyopipe review`` writes a cell's reviewed report to its folder's name plus this.
REVIEWED_SUFFIX = "_reviewed"


def is_report(doc) -> bool:
    """True for a parsed ``report.json`` of ``karyopipe infer`` or ``karyopipe review``."""
    return isinstance(doc, dict) and all(key in doc for key in REPORT_KEYS)


def report_files(root: Path) -> list[Path]:
    """``report.json`` files under ``root`` (or ``root`` itself), in natural order."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(root.rglob("report.json"), key=lambda p: natural_key(str(p.relative_to(root))))


def _spread_image(report: dict, report_path: Path) -> Path | None:
    source = Path(report["source"])
    for candidate in (source, report_path.parent / source, report_path.parent / source.name):
        if candidate.is_file():
            return candidate
    return None


def read_reports(root) -> Dataset:
    """Reviewed karyopipe reports under ``root`` (a folder of ``infer`` outputs, or one ``report.json``).

    Parameters
    ----------
    root : str or Path

    Returns
    -------
    Dataset
        One sample per reviewed report: the spread image (``report["source"]``,
        looked for as written, then beside the report), its chromosomes as
        polygon instances with the reviewed class, and ``meta["karyotype"]``,
        the reviewed karyotype. The cell id is the spread's file stem.
        Unreviewed reports, reports whose spread is not found and files that
        are not reports are in ``problems``, each with its reason.
    """
    root = Path(root)
    problems: list[Problem] = []
    samples = []
    files = report_files(root)
    reviewed_folders = {p.parent.name for p in files if p.parent.name.endswith(REVIEWED_SUFFIX)}
    for path in files:
        if path.parent.name + REVIEWED_SUFFIX in reviewed_folders:
            add_problem(problems, path, f"superseded by its review ({path.parent.name}{REVIEWED_SUFFIX})")
            continue
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            add_problem(problems, path, f"not a readable report ({str(exc).splitlines()[0]})")
            continue
        if not is_report(report):
            add_problem(problems, path, "not a karyopipe report (no " + ", ".join(
                k for k in REPORT_KEYS if not isinstance(report, dict) or k not in report) + ")")
            continue
        if "review" not in report.get("stages", {}):
            add_problem(problems, path, "not reviewed: its classes are karyopipe's own calls, not labels "
                                        "(karyopipe review it)")
            continue
        image = _spread_image(report, path)
        if image is None:
            add_problem(problems, path, f"its spread {report['source']} is not found (as written or beside the report)")
            continue
        height, width = (int(v) for v in report["image_shape"][:2])
        instances = []
        for row in report["chromosomes"]:
            polygon = np.asarray(row.get("polygon") or [], dtype=np.float32).reshape(-1, 2)
            if len(polygon) < 3:
                add_problem(problems, path, f"object {row.get('id')}: a polygon of {len(polygon)} points, skipped")
                continue
            label = int(row.get("label") or 0)
            instances.append(Instance(polygon=polygon, label=label or None,
                                      category="chromosome" if label else "debris",
                                      extra={"report_id": int(row["id"]), "flags": list(row.get("flags", []))}))
        samples.append(Sample(path=image, cell_id=image.stem, kind=SPREADS, instances=instances,
                              image_id=path.parent.name, loader=file_loader(image),
                              meta={"karyotype": report.get("karyotype", ""), "width": width, "height": height,
                                    "report": str(path), "polarity": report.get("polarity"),
                                    "reviewer": report["stages"]["review"].get("reviewer", "")}))
    return Dataset(root=root, format="reports", kind=SPREADS, samples=samples, problems=problems)
