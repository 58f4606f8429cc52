"""``karyopipe infer``: run the full pipeline on spreads (files, folders, globs).

For each spread, ``OUT/<stem>/`` gets ``overlay.png``, ``karyogram.png``,
``masks.png`` (16-bit instance labels), ``report.json`` and ``chromosomes.csv``.
Bad files are skipped with their reason and listed in the summary at the end, which is also written to
``OUT/summary.csv`` with how many chromosomes of each spread to check; the
exit code is non-zero only when no spread could be processed. With ``--case``
the spreads are taken as cells of one patient and ``OUT/case.json`` gives the
modal karyotype and the changes that meet ISCN's clone criteria.

Examples
--------
    karyopipe infer examples/spread_46XY.png --out out/
    karyopipe infer "spreads/*.png" more_spreads/ --out out/ --device cuda
    karyopipe infer patient_17/ --case --out out/patient_17/
"""
from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

from karyopipe.cli import add_pairing_argument, add_precision_argument, add_rescue_argument
from karyopipe.io import is_image_path


#: What the summary shows for a spread processed without a karyotype call.
NO_CALL = "(no call)"


def build_parser(prog: str = "karyopipe infer") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Segment, measure, classify and karyotype metaphase spreads.")
    p.add_argument("inputs", nargs="+", metavar="SPREAD", help="image files, folders (their image files) or glob patterns")
    p.add_argument("--out", default="out", help="output folder; one sub-folder per spread (default: out)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="torch device (default: cpu)")
    p.add_argument("--seg-weights", default=None, help="Mask R-CNN weights (default weights/mask_rcnn_karyotype_best.pth,"
                   " the ResNet50; mask_rcnn_karyotype_r18.pth is about twice as fast; the watershed baseline runs"
                   " when absent)")
    p.add_argument("--cls-weights", default=None, help="classifier weights (default weights/karyotype_classifier_best.pth;"
                   " chromosomes stay unclassified when absent)")
    add_precision_argument(p)
    p.add_argument("--chromosome-width", type=float, default=None, metavar="PX",
                   help="chromosome width in pixels instead of measuring it per spread (a fixed microscope, or a field "
                        "where debris misleads the measurement; each report's scale.chromosome_width_px gives it)")
    p.add_argument("--polarity", choices=("fluorescence", "brightfield"), default=None,
                   help="force the input polarity (default: detected per image; G-band is brightfield, Q-band fluorescence)")
    add_rescue_argument(p)
    add_pairing_argument(p)
    p.add_argument("--case", action="store_true",
                   help="the spreads are cells of one patient: also write OUT/case.json with the modal karyotype and "
                        "the changes that meet ISCN's clone criteria (karyopipe.karyogram.case)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def write_case(rows, path: Path) -> dict:
    """:func:`karyopipe.karyogram.case.summarize_case` of a batch's processed cells, written as JSON."""
    import json

    from karyopipe.karyogram.case import summarize_case

    case = summarize_case((str(file), karyotype if karyotype != NO_CALL else "")
                          for file, status, karyotype, *_ in rows if status == "ok")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(case, indent=1) + "\n")
    return case


def expand_inputs(inputs) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to process, and (input, reason) for inputs that name nothing.

    Folders contribute their image files (recursively, sorted); glob patterns
    their matches; explicit files are kept whatever their suffix, so a
    non-image is reported as such instead of vanishing.
    """
    files: list[Path] = []
    missing: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_path(p))
            if not found:
                missing.append((item, "folder holds no image files"))
            files += found
        elif path.exists():
            files.append(path)
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                missing.append((item, "pattern matches no files"))
            files += found
        else:
            missing.append((item, "no such file or folder"))
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, missing


def _out_dirs(files: list[Path], out: Path) -> list[Path]:
    # Same stem in two folders: suffix the parent's name so outputs do not overwrite each other.
    stems: dict[str, int] = {}
    for f in files:
        stems[f.stem] = stems.get(f.stem, 0) + 1
    return [out / (f.stem if stems[f.stem] == 1 else f"{f.parent.name}_{f.stem}") for f in files]


SUMMARY_HEADER = ("file", "status", "karyotype", "n", "to_check", "time_s / error")


def format_summary(rows) -> str:
    """Table of (file, status, karyotype, count, chromosomes to check, seconds-or-error)."""
    table = [SUMMARY_HEADER] + [tuple(str(v) for v in r) for r in rows]
    last = len(SUMMARY_HEADER) - 1
    widths = [max(len(r[i]) for r in table) for i in range(last)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(last)) + "  " + r[last] for r in table]
    return "\n".join(lines)


def write_summary(rows, path: Path) -> Path:
    """The batch summary as CSV: one row per input, processed or not, in the order of :func:`format_summary`."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "status", "karyotype", "n_chromosomes", "n_to_check", "seconds", "error"])
        for file, status, karyotype, n, check, last in rows:
            ok = status == "ok"
            writer.writerow([file, status, karyotype if ok else "", n if ok else "", check if ok else "",
                             last if ok else "", "" if ok else last])
    return path


def run_batch(files, out: Path, pipe, polarity=None, progress: bool = True, log=print) -> list[tuple]:
    """Process each file, never stopping on one bad file. Returns summary rows."""
    from tqdm import tqdm

    rows = []
    for path, out_dir in tqdm(list(zip(files, _out_dirs(files, out))), desc="spreads", unit="spread",
                              disable=not progress, file=sys.stderr):
        t = time.perf_counter()
        try:
            result = pipe(path, polarity=polarity)
            result.save(out_dir)
        except Exception as exc:  # one bad file must not stop the batch; the reason is listed
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if str(path) not in message:
                message = f"{path}: {message}"
            rows.append((path, "FAILED", "-", "-", "-", message))
            continue
        n = len(result.chromosomes)
        if n == 0:
            log(f"{path}: no chromosomes found (see {out_dir / 'report.json'})")
        rows.append((path, "ok", result.karyotype or NO_CALL, n, result.n_to_check, f"{time.perf_counter() - t:.1f}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    files, missing = expand_inputs(args.inputs)
    for item, reason in missing:
        print(f"karyopipe infer: skipping {item}: {reason}", file=sys.stderr)
    if not files:
        print("karyopipe infer: nothing to process", file=sys.stderr)
        return 1
    from karyopipe.pipeline.core import KaryoPipeline

    pipe = KaryoPipeline.from_pretrained(args.seg_weights, args.cls_weights, device=args.device, precision=args.precision,
                                         chromosome_width=args.chromosome_width, rescue=not args.no_rescue,
                                         zoom_look=args.zoom_look, pairing=args.pairing,
                                         hidden_look=args.hidden_look, second_segmenter=args.second_segmenter)
    for name, info in pipe.stages.items():
        if info.get("fallback"):
            print(f"karyopipe infer: {info['reason']}", file=sys.stderr)
        elif info.get("weights"):
            print(f"karyopipe infer: {name}: {info['model']} ({info['weights']})", file=sys.stderr)
    out = Path(args.out)
    rows = run_batch(files, out, pipe, args.polarity, progress=not args.no_progress,
                     log=lambda m: print(f"karyopipe infer: {m}", file=sys.stderr))
    rows += [(item, "SKIPPED", "-", "-", "-", f"{item}: {reason}") for item, reason in missing]
    print(format_summary(rows))
    write_summary(rows, out / "summary.csv")
    if args.case:
        print("\ncase: " + write_case(rows, out / "case.json")["statement"] + f" ({out / 'case.json'})")
    ok = sum(r[1] == "ok" for r in rows)
    bad = [r for r in rows if r[1] != "ok"]
    print(f"\n{ok} of {len(rows)} processed; outputs in {out}/")
    if bad:
        print(f"{len(bad)} not processed:", file=sys.stderr)
        for r in bad:
            print(f"  {r[-1]}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
