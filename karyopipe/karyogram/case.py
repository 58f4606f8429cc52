"""One case from several cells: the modal karyotype and the clones, as a lab reports them.

A laboratory does not report one metaphase. It counts several cells of the same
patient (commonly 15 to 20), reports the karyotype most of them show, and takes
a change seen in only one cell for an artefact of that cell (a chromosome lost
when the spread burst, or one misread), not for the patient's. ISCN writes this
down as the definition of a clone: **at least two cells with the same gain or
structural change, or at least three cells with the same loss**. This module
applies it to the calls karyopipe made cell by cell, so that a single cell's
error (a sex misread, a chromosome missed) is seen as such.

Examples
--------
>>> from karyopipe.karyogram.case import summarize_case
>>> case = summarize_case([("c1", "46,XX"), ("c2", "46,XX"), ("c3", "47,XX,+21"), ("c4", "46,XY")])
>>> case["modal_karyotype"], case["sex"], case["clones"]
('46,XX', 'XX', [])
>>> [(c["change"], c["cells"]) for c in case["single_cell_changes"]]
[('+21', 1), ('+Y', 1), ('-X', 1)]
"""
from __future__ import annotations

from collections import Counter

#: ISCN's clone criteria: cells needed for the same gain (or structural change), and for the same loss.
CLONE_GAIN_CELLS = 2
CLONE_LOSS_CELLS = 3


def parse_karyotype(karyotype: str) -> tuple[int, str, list[str]] | None:
    """``"47,XY,+21"`` -> ``(47, "XY", ["+21"])``; None for an empty or unreadable string."""
    parts = [p.strip() for p in str(karyotype or "").split(",")]
    if len(parts) < 2 or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1], [p for p in parts[2:] if p]


def _sex_changes(sex: str, modal_sex: str) -> list[str]:
    """The gains and losses of X and Y that take ``modal_sex`` to ``sex`` (``"XY"`` from ``"XX"``: +Y, -X)."""
    changes = []
    for chromosome in ("X", "Y"):
        diff = sex.count(chromosome) - modal_sex.count(chromosome)
        changes += [f"{'+' if diff > 0 else '-'}{chromosome}"] * abs(diff)
    return changes


def summarize_case(calls) -> dict:
    """The case's modal karyotype, its clones and the cells that differ.

    Parameters
    ----------
    calls : iterable of (source, karyotype)
        One per cell of the same patient; a cell without a call has ``""``.

    Returns
    -------
    dict
        ``cells`` (all), ``called`` (with a readable karyotype),
        ``modal_karyotype`` and ``modal_cells``, ``modal_number``, ``sex`` (the
        commonest sex complement) and ``sex_cells``; ``clones``: changes
        against the modal sex that meet ISCN's criteria, each ``{"change",
        "cells", "sources"}``; ``single_cell_changes``: those that do not;
        ``discordant``: cells whose karyotype is not the modal one;
        ``statement``: all of it in a sentence or three.
    """
    calls = [(str(source), str(karyotype or "")) for source, karyotype in calls]
    parsed = [(source, karyotype, parse_karyotype(karyotype)) for source, karyotype in calls]
    called = [(source, karyotype, p) for source, karyotype, p in parsed if p is not None]
    summary = {"cells": len(calls), "called": len(called), "modal_karyotype": "", "modal_cells": 0,
               "modal_number": None, "sex": "", "sex_cells": 0, "clones": [], "single_cell_changes": [],
               "discordant": []}
    if not called:
        summary["statement"] = f"No karyotype called in any of the {len(calls)} cells: no case summary."
        return summary
    # Ties go to the karyotype met first, so the order of the cells decides only a tie.
    modal, modal_cells = Counter(k for _, k, _ in called).most_common(1)[0]
    number, number_cells = Counter(p[0] for _, _, p in called).most_common(1)[0]
    sex, sex_cells = Counter(p[1] for _, _, p in called).most_common(1)[0]
    changes: dict[str, list[str]] = {}
    for source, _, (_, cell_sex, abnormalities) in called:
        for change in [a for a in abnormalities if a[:1] in "+-"] + _sex_changes(cell_sex, sex):
            changes.setdefault(change, [])
            if source not in changes[change]:
                changes[change].append(source)
    for change in sorted(changes, key=lambda c: (-len(changes[c]), c)):
        sources = changes[change]
        needed = CLONE_LOSS_CELLS if change.startswith("-") else CLONE_GAIN_CELLS
        entry = {"change": change, "cells": len(sources), "sources": sources}
        (summary["clones"] if len(sources) >= needed else summary["single_cell_changes"]).append(entry)
    summary.update(modal_karyotype=modal, modal_cells=modal_cells, modal_number=number, sex=sex, sex_cells=sex_cells,
                   discordant=[{"source": s, "karyotype": k} for s, k, _ in called if k != modal])
    summary["statement"] = _statement(summary)
    return summary


def _statement(summary: dict) -> str:
    text = (f"Modal karyotype {summary['modal_karyotype']} in {summary['modal_cells']} of {summary['called']} "
            f"cells called ({summary['cells']} analysed).")
    if summary["clones"]:
        text += " Clonal by the ISCN criteria (2 cells for a gain, 3 for a loss): " + ", ".join(
            f"{c['change']} in {c['cells']} cells" for c in summary["clones"]) + "."
    else:
        text += " No change meets the ISCN clone criteria (2 cells for a gain, 3 for a loss)."
    if summary["single_cell_changes"]:
        text += " Below them, so more likely single-cell artefacts or errors: " + ", ".join(
            f"{c['change']} ({', '.join(c['sources'])})" for c in summary["single_cell_changes"]) + "."
    if summary["called"] < 20:
        text += f" Labs usually count 15-20 cells; {summary['called']} called is a small count."
    return text
