"""Judge a candidate model against the shipped one under the project's standing rule, on val cells only.

Candidates have been judged by rules written before they were scored (BENCHMARKS.md). Two have stood long
enough to be written down here, one per trained stage.

``classifier`` (Classification, twenty-third to twenty-sixth updates): on the val cells,

(i)   clean top-1 and assigned accuracy stay within 2 crops on BioImLab and 7 on gband612 of the shipped model's;
(ii)  the mean top-1 over the imitated lab shifts (``eval-cls --shift all``) does not fall on either source;
(iii) on the BioImLab val frames and on the G-band composites of val cells, detected-and-right falls by at
      most 2 chromosomes and the exact karyotypes do not fall;
(iv)  on pieces of val chromosomes, the share read as Y (P(Y) > 0.3) does not rise on either source.

``segmenter`` (Segmentation, fourteenth to sixteenth updates): on the val spreads,

(i)   mask AP, AP50 and counts within one are all no lower, and one of them is higher;
(ii)  end to end on the BioImLab val frames, detected-and-right and the exact karyotypes are no lower.

A segmenter candidate is judged as it would ship: its count threshold, outline model and junk calibration
fitted on the training spreads first (tools/gpu_lease/README.md, after the lease). A session may add a
criterion of its own (the purpose of its change); this script checks the standing ones. It runs the
evaluations (a classifier about 17 minutes on the 2-core CPU, a segmenter about 3; a model's reports are reused
while the model, the other stage's shipped weights and the package's code are unchanged), prints the table BENCHMARKS.md records, and exits 0 only when every check
passes. Test cells are never scored here: test is scored once, after the decision.

    python tools/judge.py classifier runs/candidate.pth
    python tools/judge.py segmenter runs/gpu_seg/best.pth
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
SEGMENTATION_FIGURES = {"segm_AP": "mask AP", "segm_AP50": "AP50", "count_within_1": "counts within one"}


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


def spread_check(name: str, shipped: dict, candidate: dict, rule: str = "(iii)",
                 tolerance: int = FRAME_TOLERANCE) -> Check:
    """Detected-and-right (down by at most ``tolerance`` chromosomes) and exact karyotypes (not down) from two
    ``eval-e2e`` JSON reports of the same spreads."""
    right = [sum(s["correct"] for s in r["per_spread"]) for r in (shipped, candidate)]
    exact = [sum(1 for s in r["per_spread"] if s["exact"]) for r in (shipped, candidate)]
    scored = sum(1 for s in shipped["per_spread"] if s.get("true_karyotype"))
    changed = [f"{Path(a['file']).stem}: {a['karyotype']} -> {b['karyotype']} (truth {a['true_karyotype']})"
               for a, b in zip(shipped["per_spread"], candidate["per_spread"])
               if a["karyotype"] != b["karyotype"] and (a["exact"] or b["exact"])]
    return Check(rule, f"{name}: detected and right / exact",
                 f"{shipped['detected_and_right']:.4f} / {exact[0]} of {scored}",
                 f"{candidate['detected_and_right']:.4f} / {exact[1]} of {scored}",
                 right[1] - right[0] >= -tolerance and exact[1] >= exact[0],
                 f"{right[1] - right[0]:+d} chromosomes" + ("; " + "; ".join(changed) if changed else ""))


def piece_checks(shipped: dict, candidate: dict) -> list[Check]:
    """Rule (iv) from two ``eval-fragments`` JSON reports."""
    sb = _by_source({r["data"]: r for r in shipped["results"]})
    sc = _by_source({r["data"]: r for r in candidate["results"]})
    return [Check("(iv)", f"{source} val pieces with P(Y) > 0.3 ({sc[source]['pieces']})",
                  f"{sb[source]['pieces_y_over_0.3']:.3f}", f"{sc[source]['pieces_y_over_0.3']:.3f}",
                  sc[source]["pieces_y_over_0.3"] <= sb[source]["pieces_y_over_0.3"] + 1e-9)
            for source in sb if source in sc]


def judge_classifier(shipped: dict, candidate: dict) -> list[Check]:
    """Every check of the classifier rule from two dicts of reports, keyed ``crops``, ``pieces`` and one per
    spread set."""
    checks = crop_checks(shipped["crops"], candidate["crops"])
    for name in shipped:
        if name not in ("crops", "pieces") and name in candidate:
            checks.append(spread_check(name, shipped[name], candidate[name]))
    return checks + piece_checks(shipped["pieces"], candidate["pieces"])


def judge_segmenter(shipped: dict, candidate: dict) -> list[Check]:
    """Every check of the segmenter rule from two dicts of reports, keyed ``spreads`` (``eval-seg``) and one per
    spread set (``eval-e2e``)."""
    sb, sc = shipped["spreads"], candidate["spreads"]
    lower = [name for key, name in SEGMENTATION_FIGURES.items() if sc[key] < sb[key]]
    higher = [name for key, name in SEGMENTATION_FIGURES.items() if sc[key] > sb[key]]
    note = "; ".join(part for part in (f"lower: {', '.join(lower)}" if lower else "",
                                       f"higher: {', '.join(higher)}" if higher else "none higher") if part)
    checks = [Check("(i)", f"val, {' / '.join(SEGMENTATION_FIGURES.values())} ({sb['images']} spreads)",
                    f"{sb['segm_AP']:.4f} / {sb['segm_AP50']:.4f} / {sb['count_within_1']:.0%}",
                    f"{sc['segm_AP']:.4f} / {sc['segm_AP50']:.4f} / {sc['count_within_1']:.0%}",
                    not lower and bool(higher), note)]
    for name in shipped:
        if name != "spreads" and name in candidate:
            checks.append(spread_check(name, shipped[name], candidate[name], "(ii)", tolerance=0))
    return checks


def table(checks: list[Check]) -> str:
    lines = ["| rule | figure | shipped | candidate | passes? |", "|---|---|---|---|---|"]
    for c in checks:
        verdict = "yes" if c.passes else "**no**"
        lines.append(f"| {c.rule} | {c.figure} | {c.shipped} | {c.candidate} | {verdict}"
                     + (f" ({c.note})" if c.note else "") + " |")
    return "\n".join(lines)


def _folder_name(weights: str, stage: str) -> str:
    """A model's report folder, named by everything its reports depend on: its own content, the other stage's
    shipped weights (the end-to-end runs use them) and the package's code (commit and uncommitted changes)."""
    import hashlib

    digest = hashlib.sha256(Path(weights).read_bytes())
    other = ROOT / "weights" / next(name for key, (_, _, name) in STAGES.items() if key != stage)
    digest.update(other.read_bytes() if other.is_file() else b"")
    # The package's code, not the repository's commit: a commit of notes leaves the reports valid.
    for source in sorted((ROOT / "karyopipe").rglob("*.py")):
        digest.update(str(source.relative_to(ROOT)).encode() + source.read_bytes())
    return f"{stage}-{Path(weights).stem}-{digest.hexdigest()[:10]}"


def classifier_runs(weights: str, args) -> dict:
    """The evaluations the classifier rule reads, by report name: ``karyopipe`` arguments."""
    crops = [str(Path(args.data_root) / "bioimlab" / "crops"), str(Path(args.data_root) / "gband612")]
    runs = {"crops": ["eval-cls", *crops, "--split", "val", "--shift", "all", "--weights", weights],
            "pieces": ["eval-fragments", crops[1], crops[0], "--split", "val", "--weights", weights]}
    if args.frames:
        runs["BioImLab val frames"] = ["eval-e2e", args.frames, "--split", "val", "--cls-weights", weights]
    for k, composites in enumerate(args.composites):
        runs[f"G-band composites {k + 1}" if len(args.composites) > 1 else "G-band composites of val cells"] = [
            "eval-e2e", composites, "--cls-weights", weights]
    return runs


def segmenter_runs(weights: str, args) -> dict:
    """The evaluations the segmenter rule reads, by report name."""
    runs = {"spreads": ["eval-seg", str(Path(args.data_root) / "bioimlab" / "metaphases"), "--split", "val",
                        "--weights", weights]}
    if args.frames:
        runs["BioImLab val frames"] = ["eval-e2e", args.frames, "--split", "val", "--seg-weights", weights]
    return runs


def evaluate(weights: str, folder: Path, runs: dict) -> dict:
    """Run (or reuse) each evaluation of ``runs`` for one model; the reports by name."""
    folder.mkdir(parents=True, exist_ok=True)
    reports = {}
    for name, command in runs.items():
        path = folder / (name.replace(" ", "_") + ".json")
        if not path.is_file():
            print(f"{weights}: {name} ...", flush=True)
            done = subprocess.run([sys.executable, "-m", "karyopipe", *command, "--json", str(path)], cwd=ROOT,
                                  capture_output=True, text=True)
            if done.returncode != 0 or not path.is_file():
                raise SystemExit(f"judge: {' '.join(command[:2])} failed for {weights}:\n{done.stderr[-2000:]}")
        reports[name] = json.loads(path.read_text())
    return reports


STAGES = {
    "classifier": (classifier_runs, judge_classifier, "karyotype_classifier_best.pth"),
    "segmenter": (segmenter_runs, judge_segmenter, "mask_rcnn_karyotype_best.pth"),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=sorted(STAGES), help="which stage's rule")
    p.add_argument("candidate", help="the candidate's weights (.pth)")
    p.add_argument("--shipped", default=None, help="the weights to beat (default: the stage's shipped file)")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--frames", default=str(ROOT / ".cache" / "bioimlab_labelled5" / "annotations.json"),
                   help="label-bioimlab's COCO file of the BioImLab frames ('' to leave them out)")
    p.add_argument("--composites", nargs="*", default=[str(ROOT / ".cache" / "synth_comp_g_val" / "annotations.json")],
                   help="classifier: G-band composite spreads of val cells (karyopipe synth --composite)")
    p.add_argument("--out", default=str(ROOT / "out" / "judge"), help="where the reports go (ignored by git)")
    args = p.parse_args(argv)
    make_runs, rule, shipped_name = STAGES[args.stage]
    args.shipped = args.shipped or str(ROOT / "weights" / shipped_name)
    needed = [args.candidate, args.shipped] + ([args.frames] if args.frames else [])
    needed += list(args.composites) if args.stage == "classifier" else []
    for path in needed:
        if not Path(path).exists():
            p.error(f"{path}: not found")
    out = Path(args.out)
    shipped = evaluate(args.shipped, out / _folder_name(args.shipped, args.stage), make_runs(args.shipped, args))
    candidate = evaluate(args.candidate, out / _folder_name(args.candidate, args.stage),
                         make_runs(args.candidate, args))
    checks = rule(shipped, candidate)
    print(table(checks))
    passed = all(c.passes for c in checks)
    print("every check passes" if passed else "not passed: " + ", ".join(sorted({c.rule for c in checks if not c.passes})))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
