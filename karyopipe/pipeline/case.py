"""``karyopipe case``: one patient's case from the reports of its cells, reviewed ones first.

The lab's order of work is ``infer`` on each cell, ``review`` of each draft, then
the case: the modal karyotype and the clones over the cells
(:func:`karyopipe.karyogram.case.summarize_case`, ISCN's clone criteria). This
command reads the cells' ``report.json`` files; where a cell has been reviewed
(``<cell>_reviewed/report.json`` beside ``<cell>/report.json``, as ``review``
writes it) the reviewed report stands for that cell, and the case says how many
cells were reviewed.

Usage::

    karyopipe case out/patient_17/                   # every <cell>/report.json under it
    karyopipe case out/a/report.json out/b_reviewed/report.json --json case.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from karyopipe.pipeline.review import REVIEWED_SUFFIX


def find_reports(inputs) -> tuple[dict[str, Path], list[str]]:
    """``{cell: report path}``, a reviewed report standing for its cell, and the inputs that held none.

    A cell is a report's folder name without :data:`REVIEWED_SUFFIX`.
    """
    found: list[Path] = []
    empty: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            reports = sorted(path.glob("*/report.json")) + ([path / "report.json"] if (path / "report.json").is_file() else [])
            if not reports:
                empty.append(f"{item}: no report.json in it or in its subfolders")
            found += reports
        else:
            empty.append(f"{item}: no such file or folder")
    cells: dict[str, Path] = {}
    for report in found:
        folder = report.parent.name
        cell = folder[: -len(REVIEWED_SUFFIX)] if folder.endswith(REVIEWED_SUFFIX) else folder
        if cell not in cells or folder.endswith(REVIEWED_SUFFIX):
            cells[cell] = report
    return dict(sorted(cells.items())), empty


def case_from_reports(cells: dict[str, Path]) -> dict:
    """:func:`~karyopipe.karyogram.case.summarize_case` of the cells' reports, plus which were reviewed.

    Unreadable reports are listed under ``unreadable`` and left out of the case.
    """
    from karyopipe.karyogram.case import summarize_case

    calls, reviewed, unreadable = [], [], []
    for cell, path in cells.items():
        try:
            report = json.loads(path.read_text())
            karyotype = str(report.get("karyotype") or "")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            unreadable.append(f"{path}: not a readable report ({str(exc).splitlines()[0]})")
            continue
        calls.append((cell, karyotype))
        if "review" in report.get("stages", {}):
            reviewed.append(cell)
    case = summarize_case(calls)
    case["reviewed_cells"] = reviewed
    case["reports"] = {cell: str(path) for cell, path in cells.items()}
    case["unreadable"] = unreadable
    case["statement"] += f" {len(reviewed)} of {len(calls)} cells reviewed."
    return case


def default_case_path(inputs, reports) -> Path:
    """Where ``case.json`` goes without ``--json``: in the first folder given, else in the folder that holds the
    cells' folders (``out/`` for ``out/a/report.json out/b/report.json``), never the working directory by surprise."""
    folders = [Path(item) for item in inputs if Path(item).is_dir()]
    if folders:
        return folders[0] / "case.json"
    return Path(os.path.commonpath([str(Path(r).resolve().parent.parent) for r in reports])) / "case.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="karyopipe case", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="report.json files, or folders of <cell>/report.json (infer --out)")
    p.add_argument("--json", default=None, help="write the case here (default: case.json in the first folder given, "
                                                 "or beside the cells' folders when reports are given)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cells, empty = find_reports(args.inputs)
    for line in empty:
        print(f"karyopipe case: {line}", file=sys.stderr)
    if not cells:
        print("karyopipe case: no reports to make a case of", file=sys.stderr)
        return 2
    case = case_from_reports(cells)
    for line in case["unreadable"]:
        print(f"karyopipe case: skipping {line}", file=sys.stderr)
    out = Path(args.json) if args.json else default_case_path(args.inputs, cells.values())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(case, indent=1) + "\n")
    print(f"{case['statement']} ({out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
