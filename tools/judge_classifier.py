"""Judge a classifier candidate against the shipped one under the project's standing rule, on val cells only.

Every classifier candidate since the twenty-third update of BENCHMARKS.md (Classification) has been judged by
the same rule, written before it was scored: on the val cells,

(i)   clean top-1 and assigned accuracy stay within 2 crops on BioImLab and 7 on gband612 of the shipped model's;
(ii)  the mean top-1 over the imitated lab shifts (``eval-cls --shift all``) does not fall on either source;
(iii) on the BioImLab val frames and on the G-band composites of val cells, detected-and-right falls by at
      most 2 chromosomes and the exact karyotypes do not fall;
(iv)  on pieces of val chromosomes, the share read as Y (P(Y) > 0.3) does not rise on either source.

A session may add its own criterion (the purpose of its change); this script checks the four. It runs the
evaluations (about 17 minutes a model on the 2-core CPU; a model's results are reused when its folder already
holds them), prints the table BENCHMARKS.md records, and exits 0 only when every check passes. Test cells are
never scored here: test is scored once, after the decision.

    python tools/judge_classifier.py runs/candidate.pth
    python tools/judge_classifier.py joined.pth --frames .cache/bioimlab_labelled5/annotations.json \\
        --composites .cache/synth_comp_g_val/annotations.json --out out/judge
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Crops a model may lose on each source before the loss counts (about 1 in 250 and 1 in 500 of the val crops).
CROP_TOLERANCE = {"bioimlab": 2, "gband612": 7}
FRAME_TOLERANCE = 2


@dataclass
class Check:
    """One line of the rule's table."""

    rule: str
    figure: str
    shipped: str
    candidate: str
    passes: bool
    note: str = ""


def _by_source(mapping: dict) -> dict:
    """Results keyed by data folder path, re-keyed by the source each folder is (bioimlab, gband612, ...)."""
    out = {}
    for path, value in mapping.items():
        parts = Path(path).parts
        out["bioimlab" if "bioimlab" in parts else parts[-1]] = value
    return out


def crop_checks(shipped: dict, candidate: dict) -> list[Check]:
    """Rules (i) and (ii) from two ``eval-cls --split val --shift all`` JSON reports."""
    checks = []
    sb, sc = _by_source(shipped["data"]), _by_source(candidate["data"])
    for source, tolerance in CROP_TOLERANCE.items():
        if source not in sb or source not in sc:
            continue
        n = sb[source]["n"]
        lost = [round((sc[source][m] - sb[source][m]) * n) for m in ("accuracy", "accuracy_assigned")]
        checks.append(Check("(i)", f"{source} val, clean top-1 / assigned ({n} crops)",
                            f"{sb[source]['accuracy']:.4f} / {sb[source]['accuracy_assigned']:.4f}",
                            f"{sc[source]['accuracy']:.4f} / {sc[source]['accuracy_assigned']:.4f}",
                            min(lost) >= -tolerance, f"{lost[0]:+d} / {lost[1]:+d} crops; {tolerance} may be lost"))
    for source in CROP_TOLERANCE:
        means = []
        for report in (shipped, candidate):
            shifts = [_by_source(results).get(source) for results in report.get("shifts", {}).values()]
            means.append(float(np.mean([s["accuracy"] for s in shifts if s])) if any(shifts) else None)
        if None in means:
            continue
        checks.append(Check("(ii)", f"{source}, mean top-1 over the {len(shipped['shifts'])} shifts",
                            f"{means[0]:.4f}", f"{means[1]:.4f}", means[1] >= means[0]))
    return checks


def spread_check(name: str, shipped: dict, candidate: dict) -> Check:
    """Rule (iii) from two ``eval-e2e`` JSON reports of the same spreads."""
    right = [sum(s["correct"] for s in r["per_spread"]) for r in (shipped, candidate)]
    exact = [sum(1 for s in r["per_spread"] if s["exact"]) for r in (shipped, candidate)]
    scored = sum(1 for s in shipped["per_spread"] if s.get("true_karyotype"))
    changed = [f"{Path(a['file']).stem}: {a['karyotype']} -> {b['karyotype']} (truth {a['true_karyotype']})"
               for a, b in zip(shipped["per_spread"], candidate["per_spread"])
               if a["karyotype"] != b["karyotype"] and (a["exact"] or b["exact"])]
    return Check("(iii)", f"{name}: detected and right / exact",
                 f"{shipped['detected_and_right']:.4f} / {exact[0]} of {scored}",
                 f"{candidate['detected_and_right']:.4f} / {exact[1]} of {scored}",
                 right[1] - right[0] >= -FRAME_TOLERANCE and exact[1] >= exact[0],
                 f"{right[1] - right[0]:+d} chromosomes" + ("; " + "; ".join(changed) if changed else ""))


def piece_checks(shipped: dict, candidate: dict) -> list[Check]:
    """Rule (iv) from two ``eval-fragments`` JSON reports."""
    sb = _by_source({r["data"]: r for r in shipped["results"]})
    sc = _by_source({r["data"]: r for r in candidate["results"]})
    return [Check("(iv)", f"{source} val pieces with P(Y) > 0.3 ({sc[source]['pieces']})",
                  f"{sb[source]['pieces_y_over_0.3']:.3f}", f"{sc[source]['pieces_y_over_0.3']:.3f}",
                  sc[source]["pieces_y_over_0.3"] <= sb[source]["pieces_y_over_0.3"] + 1e-9)
            for source in sb if source in sc]


def judge(shipped: dict, candidate: dict) -> list[Check]:
    """Every check of the rule from two dicts of reports, keyed ``crops``, ``pieces`` and one per spread set."""
    checks = crop_checks(shipped["crops"], candidate["crops"])
    for name in shipped:
        if name not in ("crops", "pieces") and name in candidate:
            checks.append(spread_check(name, shipped[name], candidate[name]))
    return checks + piece_checks(shipped["pieces"], candidate["pieces"])


def table(checks: list[Check]) -> str:
    lines = ["| rule | figure | shipped | candidate | passes? |", "|---|---|---|---|---|"]
    for c in checks:
        verdict = "yes" if c.passes else "**no**"
        lines.append(f"| {c.rule} | {c.figure} | {c.shipped} | {c.candidate} | {verdict}"
                     + (f" ({c.note})" if c.note else "") + " |")
    return "\n".join(lines)


def _folder_name(weights: str) -> str:
    """A model's report folder: its name and content, so a retrained file of the same name is scored anew."""
    import hashlib

    return f"{Path(weights).stem}-{hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:10]}"


def evaluate(weights: str, folder: Path, args) -> dict:
    """Run (or reuse) every evaluation the rule reads for one model; the reports by name."""
    folder.mkdir(parents=True, exist_ok=True)
    karyopipe = [sys.executable, "-m", "karyopipe"]
    crops = [str(Path(args.data_root) / "bioimlab" / "crops"), str(Path(args.data_root) / "gband612")]
    runs = {"crops": ["eval-cls", *crops, "--split", "val", "--shift", "all", "--weights", weights],
            "pieces": ["eval-fragments", crops[1], crops[0], "--split", "val", "--weights", weights]}
    if args.frames:
        runs["BioImLab val frames"] = ["eval-e2e", args.frames, "--split", "val", "--cls-weights", weights]
    for k, composites in enumerate(args.composites):
        runs[f"G-band composites {k + 1}" if len(args.composites) > 1 else "G-band composites of val cells"] = [
            "eval-e2e", composites, "--cls-weights", weights]
    reports = {}
    for name, command in runs.items():
        path = folder / (name.replace(" ", "_") + ".json")
        if not path.is_file():
            print(f"{weights}: {name} ...", flush=True)
            done = subprocess.run(karyopipe + command + ["--json", str(path)], cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0 or not path.is_file():
                raise SystemExit(f"judge_classifier: {' '.join(command[:2])} failed for {weights}:\n{done.stderr[-2000:]}")
        reports[name] = json.loads(path.read_text())
    return reports


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("candidate", help="the candidate classifier weights (.pth)")
    p.add_argument("--shipped", default=str(ROOT / "weights" / "karyotype_classifier_best.pth"))
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--frames", default=str(ROOT / ".cache" / "bioimlab_labelled5" / "annotations.json"),
                   help="label-bioimlab's COCO file of the BioImLab frames ('' to leave them out)")
    p.add_argument("--composites", nargs="*", default=[str(ROOT / ".cache" / "synth_comp_g_val" / "annotations.json")],
                   help="G-band composite spreads of val cells (karyopipe synth --composite)")
    p.add_argument("--out", default=str(ROOT / "out" / "judge"), help="where the reports go (ignored by git)")
    args = p.parse_args(argv)
    for path in [args.candidate, args.shipped] + ([args.frames] if args.frames else []) + list(args.composites):
        if not Path(path).exists():
            p.error(f"{path}: not found")
    out = Path(args.out)
    shipped = evaluate(args.shipped, out / _folder_name(args.shipped), args)
    candidate = evaluate(args.candidate, out / _folder_name(args.candidate), args)
    checks = judge(shipped, candidate)
    print(table(checks))
    passed = all(c.passes for c in checks)
    print("every check passes" if passed else "not passed: " + ", ".join(sorted({c.rule for c in checks if not c.passes})))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
