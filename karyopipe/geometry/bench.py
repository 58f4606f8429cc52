"""``karyopipe bench-geometry``: axis, centromere and straightening against synthetic truth.

Synthetic chromosomes from :func:`karyopipe.synth.render_chromosome` carry their
exact axis, length, centromere and banding profile. Each goes through
:func:`karyopipe.io.normalize_polarity` and :func:`analyze_chromosome` with the
renderer's mask, and is scored:

- ``centromere_error``: arc distance along our axis between our centromere and
  the true one projected onto it, as a fraction of the true length;
- ``length_error``: ``|length - true| / true``;
- ``polarity``: our p-tip is nearer the true p-tip than the true q-tip. Scored
  on chromosomes whose true CI <= 0.45 (``polarity_accuracy``); near-metacentric
  ones have no shorter arm to find, they count in ``polarity_accuracy_all``;
- ``profile_r``: Pearson r between the straightened image's row means and the
  true banding profile, both resampled to 64 points, ours put in the true
  orientation first (so this scores straightening, not polarity).

``--real DIR`` instead sweeps every BioImLab and gband612 crop under DIR through
:func:`mask_from_crop` and :func:`analyze_chromosome`, counts exceptions and
flags, and compares each measured CI with its class's textbook CI (a loose
plausibility check: real crops have no true centromere).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from karyopipe.geometry.analyze import analyze_chromosome
from karyopipe.geometry.axis import arc_length, mask_from_crop

BENDS = ("straight", "gentle", "strong", "fold")
BANDINGS = ("g", "q")
POLARITY_CI_MAX = 0.45
TARGETS = {
    "centromere_within_5pct": (">=", 0.95),
    "length_error_median": ("<=", 0.03),
    "polarity_accuracy": (">=", 0.95),
    "profile_r_median": (">=", 0.9),
    "ms_per_chromosome": ("<=", 5.0),
}


def _project(axis: np.ndarray, point: np.ndarray) -> float:
    """Arc-length position on ``axis`` of the point nearest ``point``."""
    s = arc_length(axis)
    a, b = axis[:-1], axis[1:]
    ab = b - a
    denom = np.maximum((ab ** 2).sum(1), 1e-12)
    u = np.clip(((point - a) * ab).sum(1) / denom, 0.0, 1.0)
    closest = a + u[:, None] * ab
    k = int(np.argmin(((closest - point) ** 2).sum(1)))
    return float(s[k] + u[k] * np.sqrt(denom[k]))


def _resample(x: np.ndarray, n: int = 64) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return np.full(n, float(x[0]) if len(x) else 0.0)
    return np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(x)), x)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a ** 2).sum() * (b ** 2).sum()))
    return float((a * b).sum() / den) if den > 1e-12 else 0.0


def score_one(syn, geom) -> dict:
    """Scores of one analysed synthetic chromosome against its truth."""
    true_len = float(syn.length_px)
    true_axis = np.asarray(syn.axis, np.float64)
    ours = geom.axis
    polarity_ok = bool(np.hypot(*(ours[0] - true_axis[0])) <= np.hypot(*(ours[0] - true_axis[-1])))
    c_true = _project(ours, np.asarray(syn.centromere_xy, np.float64))
    c_err = abs(c_true - geom.p_length) / max(true_len, 1e-6)
    rows = geom.straightened_mask.sum(1)
    row_mean = np.where(rows > 0, geom.straightened.sum(1) / np.maximum(rows, 1), 0.0)
    if not polarity_ok:
        row_mean = row_mean[::-1]
    r = _pearson(_resample(row_mean), _resample(syn.profile))
    return {
        "number": int(syn.number),
        "true_ci": float(syn.centromere_index),
        "ci": float(geom.centromere_index),
        "centromere_error": float(c_err),
        "length_error": float(abs(geom.length_px - true_len) / max(true_len, 1e-6)),
        "polarity_ok": polarity_ok,
        "polarity_defined": bool(syn.centromere_index <= POLARITY_CI_MAX),
        "profile_r": r,
        "flags": list(geom.flags),
    }


def summarize(rows: list[dict]) -> dict:
    """Aggregate scores of :func:`score_one` rows (empty input gives NaNs)."""
    if not rows:
        return {"n": 0}
    ce = np.array([r["centromere_error"] for r in rows])
    le = np.array([r["length_error"] for r in rows])
    pr = np.array([r["profile_r"] for r in rows])
    defined = [r for r in rows if r["polarity_defined"]]
    ms = np.array([r["ms"] for r in rows if "ms" in r])
    cpu = np.array([r["cpu_ms"] for r in rows if "cpu_ms" in r])
    return {
        "n": len(rows),
        "centromere_within_5pct": float((ce <= 0.05).mean()),
        "centromere_error_median": float(np.median(ce)),
        "length_error_median": float(np.median(le)),
        "polarity_accuracy": float(np.mean([r["polarity_ok"] for r in defined])) if defined else float("nan"),
        "polarity_n": len(defined),
        "polarity_accuracy_all": float(np.mean([r["polarity_ok"] for r in rows])),
        "profile_r_median": float(np.median(pr)),
        "ms_per_chromosome": float(np.median(ms)) if len(ms) else float("nan"),
        "ms_per_chromosome_mean": float(ms.mean()) if len(ms) else float("nan"),
        # CPU time of this process: on a shared, oversubscribed machine wall time
        # also counts the waits for a core.
        "cpu_ms_per_chromosome": float(np.median(cpu)) if len(cpu) else float("nan"),
    }


def run_synthetic(n: int = 200, seed: int = 0, *, split_fraction: float = 0.25,
                  bends=BENDS, bandings=BANDINGS, progress: bool = False) -> dict:
    """Render ``n`` synthetic chromosomes, analyse and score them.

    Conditions cycle through ``bends`` x ``bandings``; a ``split_fraction`` of
    them have split chromatids. Returns the summary, a per-condition breakdown
    and the per-chromosome rows.
    """
    from karyopipe.io import normalize_polarity
    from karyopipe.synth import render_chromosome

    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    iterator = range(n)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="bench-geometry", file=sys.stderr, mininterval=2.0)
    for i in iterator:
        number = int(rng.integers(1, 25))
        bend = bends[i % len(bends)]
        banding = bandings[(i // len(bends)) % len(bandings)]
        split = float(rng.uniform(0.3, 0.8)) if rng.random() < split_fraction else 0.0
        syn = render_chromosome(number, rng, banding=banding, bend=bend, chromatid_split=split)
        gray, _ = normalize_polarity(syn.image, syn.polarity)
        t0, c0 = time.perf_counter(), time.process_time()
        geom = analyze_chromosome(np.asarray(syn.mask, bool), gray)
        ms = (time.perf_counter() - t0) * 1e3
        cpu_ms = (time.process_time() - c0) * 1e3
        row = score_one(syn, geom)
        row.update(ms=ms, cpu_ms=cpu_ms, bend=bend, banding=banding, split=split > 0)
        rows.append(row)
    by_condition = {}
    for bend in bends:
        for banding in bandings:
            sub = [r for r in rows if r["bend"] == bend and r["banding"] == banding]
            if sub:
                by_condition[f"{bend}/{banding}"] = summarize(sub)
    for split in (False, True):
        sub = [r for r in rows if r["split"] == split]
        if sub:
            by_condition["split_chromatids" if split else "joined_chromatids"] = summarize(sub)
    summary = summarize(rows)
    # The headline metrics also sit at the top level, where scripts look for them first.
    return {**summary, "summary": summary, "by_condition": by_condition, "rows": rows, "n": n, "seed": seed}


def run_real(root: Path, limit: int | None = None, progress: bool = True) -> dict:
    """Every BioImLab and gband612 crop under ``root`` through the geometry; exceptions counted."""
    from karyopipe.io import ImageReadError, load_canonical

    root = Path(root)
    paths = sorted((root / "bioimlab" / "crops").glob("*/*.bmp")) + sorted(
        (root / "gband612").glob("*/clase*/*.tif*"))
    if limit:
        paths = paths[:limit]
    from karyopipe.classes import CHROMOSOMES, parse_bioimlab_name, parse_label

    failures, unreadable, flag_counts, ms = [], [], {}, []
    # No real crop has a true centromere; the class's textbook CI (karyopipe.classes)
    # is a loose check that the measured CI is plausible, per data set.
    ci_gap: dict[str, list[float]] = {"bioimlab": [], "gband612": []}
    # (data set, cell) -> [(class, length)]: relative length needs the whole cell.
    cell_lengths: dict[tuple[str, str], list[tuple[int, float]]] = {}
    iterator = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="geometry sweep", file=sys.stderr, mininterval=10.0)
    t_start = time.perf_counter()
    for path in iterator:
        try:
            gray, _ = load_canonical(path)
        except ImageReadError as exc:
            unreadable.append(str(exc))
            continue
        try:
            t0 = time.perf_counter()
            geom = analyze_chromosome(mask_from_crop(gray), gray)
            ms.append((time.perf_counter() - t0) * 1e3)
        except Exception as exc:  # the point of the sweep is to catch any of them
            failures.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        for flag in geom.flags:
            flag_counts[flag] = flag_counts.get(flag, 0) + 1
        try:
            if path.suffix.lower() == ".bmp":
                number, which = parse_bioimlab_name(path.stem).number, "bioimlab"
            else:
                number, which = parse_label(path.parent.name), "gband612"
        except ValueError:
            continue
        ci_gap[which].append(abs(geom.centromere_index - CHROMOSOMES[number].centromere_index))
        cell = path.parent.name if which == "bioimlab" else path.parent.parent.name
        cell_lengths.setdefault((which, cell), []).append((number, geom.length_px))
    ci_check = {
        name: {"n": len(v), "median_abs_gap": float(np.median(v)),
               "within_0.05": float(np.mean(np.array(v) <= 0.05)),
               "within_0.10": float(np.mean(np.array(v) <= 0.10))}
        for name, v in ci_gap.items() if v
    }
    from scipy.stats import spearmanr

    rel: dict[str, tuple[list[float], list[float]]] = {}
    for (which, _), items in cell_lengths.items():
        mean = float(np.mean([length for _, length in items])) or 1.0
        ours, ref = rel.setdefault(which, ([], []))
        ours += [length / mean for _, length in items]
        ref += [CHROMOSOMES[number].relative_length for number, _ in items]
    for name, (ours, ref) in rel.items():
        if name in ci_check and len(ours) > 2:
            ci_check[name]["relative_length_spearman"] = float(spearmanr(ours, ref)[0])
    return {
        "ci_vs_class_reference": ci_check,
        "crops": len(paths), "analysed": len(ms), "failures": len(failures),
        "failure_list": failures, "unreadable": unreadable, "flags": flag_counts,
        "ms_per_crop_median": float(np.median(ms)) if ms else float("nan"),
        "ms_per_crop_mean": float(np.mean(ms)) if ms else float("nan"),
        "wall_s": time.perf_counter() - t_start,
    }


def draw_figure(out: Path, seed: int = 0) -> None:
    """Synthetic examples: raw | truth (yellow) and our axis (cyan), centromeres | straightened."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from karyopipe.io import normalize_polarity
    from karyopipe.synth import render_chromosome

    rng = np.random.default_rng(seed)
    cases = [(1, "g", "gentle", 0.0), (7, "q", "strong", 0.0), (13, "g", "straight", 0.0),
             (2, "q", "fold", 0.0), (9, "g", "gentle", 0.6), (18, "q", "strong", 0.5),
             (21, "g", "straight", 0.0), (23, "q", "fold", 0.5)]
    fig, axes = plt.subplots(2, 12, figsize=(14, 5.2))
    for ax in axes.ravel():
        ax.axis("off")
    for k, (number, banding, bend, split) in enumerate(cases):
        syn = render_chromosome(number, rng, banding=banding, bend=bend, chromatid_split=split)
        gray, _ = normalize_polarity(syn.image, syn.polarity)
        geom = analyze_chromosome(np.asarray(syn.mask, bool), gray)
        row, col = divmod(k, 4)
        a0, a1, a2 = axes[row, 3 * col:3 * col + 3]
        a0.imshow(syn.image, cmap="gray", vmin=0, vmax=1)
        a0.set_title(f"chr{number} {banding.upper()} {bend}" + (" split" if split else ""), fontsize=6)
        a1.imshow(gray, cmap="gray", vmin=0, vmax=1)
        a1.plot(*np.asarray(syn.axis).T, "y-", lw=1.2)
        a1.plot(*geom.axis.T, "c--", lw=1.0)
        a1.plot(*geom.axis[0], "go", ms=3)
        a1.plot(*syn.centromere_xy, "yx", ms=6)
        a1.plot(*geom.centromere_xy, "r+", ms=7)
        a1.set_title(f"CI {geom.centromere_index:.2f} (true {syn.centromere_index:.2f})\n"
                     f"L {geom.length_px:.0f} (true {syn.length_px:.0f})", fontsize=6)
        a2.imshow(geom.straightened, cmap="gray", vmin=0, vmax=1)
        a2.axhline(geom.p_length, color="r", lw=0.7)
        a2.set_title("straightened", fontsize=6)
    fig.suptitle("karyopipe.geometry on synthetic chromosomes: yellow = truth axis/centromere, "
                 "cyan = ours, green dot = our p-tip, red + = our centromere", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


def _print_summary(result: dict) -> None:
    s = result["summary"]
    print(f"bench-geometry: {s['n']} synthetic chromosomes (seed {result['seed']})")
    for key, (op, target) in TARGETS.items():
        value = s[key]
        ok = value >= target if op == ">=" else value <= target
        print(f"  {key:24s} {value:8.4f}   target {op} {target}   {'ok' if ok else 'MISSED'}")
    print(f"  {'centromere_error_median':24s} {s['centromere_error_median']:8.4f}")
    print(f"  {'cpu_ms_per_chromosome':24s} {s['cpu_ms_per_chromosome']:8.4f}   (process CPU time; wall above)")
    print(f"  {'polarity_accuracy_all':24s} {s['polarity_accuracy_all']:8.4f}   (incl. CI > {POLARITY_CI_MAX})")
    print("  per condition: n  cen<=5%  len_err  polarity  profile_r  ms")
    for name, c in result["by_condition"].items():
        print(f"    {name:18s} {c['n']:4d}  {c['centromere_within_5pct']:.3f}  {c['length_error_median']:.4f}"
              f"  {c['polarity_accuracy']:.3f}  {c['profile_r_median']:.3f}  {c['ms_per_chromosome']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="karyopipe bench-geometry",
        description="Benchmark axis, centromere, polarity and straightening on synthetic chromosomes, "
                    "or sweep real crops for robustness (--real).")
    parser.add_argument("--n", type=int, default=200, help="synthetic chromosomes (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--real", type=Path, metavar="DATA",
                        help="instead: run every crop under DATA (bioimlab/, gband612/) and count failures")
    parser.add_argument("--limit", type=int, help="with --real: only the first N crops")
    parser.add_argument("--figure", type=Path, metavar="PNG",
                        help="instead: draw synthetic examples (truth vs ours, straightened) to PNG")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if args.figure is not None:
        draw_figure(args.figure, args.seed)
        return 0
    if args.real is not None:
        if not args.real.is_dir():
            raise FileNotFoundError(f"{args.real}: data folder not found")
        result = run_real(args.real, args.limit)
        print(f"geometry sweep: {result['crops']} crops, {result['analysed']} analysed, "
              f"{result['failures']} failures, {len(result['unreadable'])} unreadable, "
              f"median {result['ms_per_crop_median']:.2f} ms/crop, wall {result['wall_s']:.0f} s")
        print(f"  flags: {json.dumps(result['flags'], sort_keys=True)}")
        for name, c in result["ci_vs_class_reference"].items():
            print(f"  CI vs class reference CI, {name}: n {c['n']}, median |gap| {c['median_abs_gap']:.3f}, "
                  f"within 0.05 {c['within_0.05']:.3f}, within 0.10 {c['within_0.10']:.3f}; "
                  f"relative length vs class reference, Spearman {c.get('relative_length_spearman', float('nan')):.3f}")
        for line in result["failure_list"][:20] + result["unreadable"][:20]:
            print(f"  {line}")
    else:
        result = run_synthetic(args.n, args.seed, progress=True)
        _print_summary(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 1 if args.real is not None and result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
