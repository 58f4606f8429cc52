"""karyopipe.geometry: axis, profiles, centromere, straightening, features, bench."""
from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.spatial import cKDTree

from karyopipe.geometry import (
    FEATURE_NAMES,
    ChromosomeGeometry,
    analyze_chromosome,
    cell_features,
    feature_vector,
    mask_from_crop,
)
from karyopipe.geometry.centromere import find_centromere, valley_depth


def tube(length=80.0, width=12.0, ci=0.3, bend=0.0, pinch=0.45, split=0.0, band_period=5.0):
    """A capped rod along a circular arc with a pinch at ``ci`` of its tip-to-tip length.

    ``bend`` is the total turning angle in radians. The axis runs from the p-tip
    (top-left for a straight tube) to the q-tip. ``split`` opens a seam of that
    fraction of the width along the arms, forking the tips (X-shaped sisters).

    Returns mask, canonical gray, true axis (N, 2) xy and true centromere xy.
    """
    half = width / 2.0
    s = np.linspace(0.0, length, int(length * 4) + 1)
    if bend == 0:
        pts = np.stack([np.zeros_like(s), s], 1)
        tangent = np.tile([0.0, 1.0], (len(s), 1))
    else:
        radius = length / bend
        angle = s / radius
        pts = np.stack([radius * (1 - np.cos(angle)), radius * np.sin(angle)], 1)
        tangent = np.stack([np.sin(angle), np.cos(angle)], 1)
    pts = pts - pts.min(0) + half + 5
    height, width_px = (pts.max(0) + half + 6).astype(int)[::-1]
    yy, xx = np.mgrid[0:height, 0:width_px]
    pix = np.stack([xx.ravel(), yy.ravel()], 1).astype(float)
    _, idx = cKDTree(pts).query(pix)
    off = pix - pts[idx]
    along = (off * tangent[idx]).sum(1)
    across = off[:, 0] * tangent[idx, 1] - off[:, 1] * tangent[idx, 0]
    sp = s[idx] + along
    cap = np.clip(np.minimum(sp, length - sp) / half, 0, 1)
    hw = half * np.sqrt(np.clip(1 - (1 - cap) ** 2, 0, 1))
    hw = hw * (1 - pinch * np.exp(-0.5 * ((sp - ci * length) / (0.6 * half)) ** 2))
    inside = (sp >= 0) & (sp <= length) & (np.abs(across) <= hw)
    if split:
        away = np.clip(np.abs(sp - ci * length) / (2 * half), 0, 1)
        inside &= ~((np.abs(across) < split * half * away) & (np.minimum(sp, length - sp) < 2.0 * half))
    mask = inside.reshape(height, width_px)
    bands = 0.6 + 0.3 * np.sin(2 * np.pi * sp / (band_period * 2))
    gray = np.where(mask, bands.reshape(height, width_px), 0.0).astype(np.float32)
    cen = pts[np.argmin(np.abs(s - ci * length))]
    return mask, gray, pts, cen


def _arc_position(axis, point):
    d = np.hypot(*(axis - point).T)
    seg = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(axis, axis=0).T))])
    return seg[int(np.argmin(d))]


@pytest.mark.parametrize("bend", [0.0, 1.2, 2.6])
@pytest.mark.parametrize("ci", [0.18, 0.3, 0.42])
def test_tube_axis_length_centromere_and_polarity(bend, ci):
    mask, gray, true_axis, cen = tube(80, 12, ci, bend)
    geom = analyze_chromosome(mask, gray)
    assert isinstance(geom, ChromosomeGeometry)
    assert abs(geom.length_px - 80) / 80 < 0.03
    # p-tip (shorter arm) first: the true p-tip is the first axis point.
    assert np.hypot(*(geom.axis[0] - true_axis[0])) < 4
    assert abs(geom.centromere_index - ci) < 0.04
    assert np.hypot(*(geom.centromere_xy - cen)) < 0.05 * 80
    assert abs(geom.p_length + geom.q_length - geom.length_px) < 1e-6
    assert geom.centromere_index <= 0.5 and geom.polarity_confidence > 0.5
    # The axis stays inside the chromosome, one point per pixel of arc length.
    steps = np.hypot(*np.diff(geom.axis, axis=0).T)
    assert np.allclose(steps[:-1], 1.0, atol=0.05)
    rows, cols = np.round(geom.axis[2:-2, 1]).astype(int), np.round(geom.axis[2:-2, 0]).astype(int)
    assert mask[rows, cols].mean() > 0.97


def test_straightened_keeps_length_width_and_banding():
    mask, gray, _, _ = tube(90, 12, 0.3, bend=2.0)
    geom = analyze_chromosome(mask, gray, straight_width=24)
    assert geom.straightened.shape == (len(geom.axis), 24)
    assert geom.straightened.dtype == np.float32 and geom.straightened_mask.dtype == bool
    assert abs(geom.straightened.shape[0] - geom.length_px) <= 2
    widths = geom.straightened_mask.sum(1)
    assert abs(np.median(widths) - 12) <= 1.5
    # Row means follow the band pattern of the straight tube with the same banding.
    straight = analyze_chromosome(*tube(90, 12, 0.3, bend=0.0)[:2], straight_width=24)
    a = geom.straightened.sum(1) / np.maximum(widths, 1)
    b = straight.straightened.sum(1) / np.maximum(straight.straightened_mask.sum(1), 1)
    n = min(len(a), len(b))
    r = np.corrcoef(a[5:n - 5], b[5:n - 5])[0, 1]
    assert r > 0.9


def test_width_and_density_profiles():
    mask, gray, _, _ = tube(80, 14, 0.35, pinch=0.4)
    geom = analyze_chromosome(mask, gray)
    assert geom.width_profile.shape == geom.density_profile.shape == (len(geom.axis),)
    assert abs(geom.mean_width - 14) < 2.0
    i = int(round(geom.centromere_t * (len(geom.axis) - 1)))
    assert geom.width_profile[i] < 0.8 * geom.mean_width
    assert 0.3 < float(np.median(geom.density_profile)) < 0.9


def test_x_shaped_split_chromatids():
    mask, gray, true_axis, cen = tube(90, 14, 0.35, bend=0.5, split=0.5)
    from scipy import ndimage as ndi

    # The seam really forks both tips of the mask.
    tip_rows = mask[: int(true_axis[0, 1]) + 4]
    assert ndi.label(tip_rows)[1] >= 1
    geom = analyze_chromosome(mask, gray)
    assert abs(geom.length_px - 90) / 90 < 0.05
    assert np.hypot(*(geom.centromere_xy - cen)) < 0.06 * 90
    assert "degenerate" not in geom.flags


def test_holes_and_ragged_edges():
    mask, gray, _, cen = tube(80, 12, 0.3, bend=1.0)
    rng = np.random.default_rng(0)
    ragged = mask.copy()
    ys, xs = np.nonzero(mask)
    drop = rng.random(len(ys)) < 0.04
    ragged[ys[drop], xs[drop]] = False  # pepper holes and notches along the edge
    geom = analyze_chromosome(ragged, gray * ragged)
    assert abs(geom.length_px - 80) / 80 < 0.05
    assert np.hypot(*(geom.centromere_xy - cen)) < 0.06 * 80


@pytest.mark.parametrize("shape", ["empty", "pixel", "line", "diagonal", "disc", "full"])
def test_degenerate_masks_are_flagged_not_raised(shape):
    mask = np.zeros((30, 30), bool)
    if shape == "pixel":
        mask[10, 10] = True
    elif shape == "line":
        mask[5:25, 12] = True
    elif shape == "diagonal":
        mask[np.arange(5, 25), np.arange(5, 25)] = True
    elif shape == "disc":
        yy, xx = np.mgrid[:30, :30]
        mask = (yy - 15) ** 2 + (xx - 15) ** 2 < 36
    elif shape == "full":
        mask[:] = True
    geom = analyze_chromosome(mask, mask.astype(np.float32))
    assert geom.straightened.ndim == 2 and geom.straightened.shape[1] == 32
    assert 0.0 <= geom.confidence <= 1.0 and 0.0 <= geom.centromere_index <= 0.5
    if shape in ("empty", "pixel"):
        assert "degenerate" in geom.flags or "tiny" in geom.flags
        assert "low_confidence" in geom.flags
    if shape == "line":
        assert 18 <= geom.length_px <= 22
    if shape == "disc":
        assert "pca_axis" in geom.flags
    feats = cell_features([geom])
    assert feats.shape == (1, len(FEATURE_NAMES)) and np.isfinite(feats).all()


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="does not match"):
        analyze_chromosome(np.ones((5, 5), bool), np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        analyze_chromosome(np.ones((2, 5, 5), bool))


def test_centromere_valley_ignores_tip_taper():
    n = 60
    s = np.arange(n)
    u = np.clip(np.minimum(s, n - 1 - s) / 5.0, 0, 1)
    width = 10 * np.sqrt(1 - (1 - u) ** 2)  # a rod with half-disc caps, 10 px wide
    assert valley_depth(width).max() == 0  # no valley in a plain capped rod
    pinched = width * (1 - 0.4 * np.exp(-0.5 * ((s - 12) / 2.5) ** 2))
    cen = find_centromere(pinched, np.ones(n))
    assert abs(cen.index - 12) <= 1 and cen.confidence > 0.5
    flat = find_centromere(width, np.ones(n))
    assert flat.confidence == 0.0 and flat.t == 0.5


def test_mask_from_crop_on_synthetic_crop():
    mask, gray, _, _ = tube(60, 10, 0.3)
    noisy = gray + np.random.default_rng(1).normal(0, 0.03, gray.shape).astype(np.float32)
    noisy[0, 0] = 0.95  # a speck away from the chromosome must not win
    found = mask_from_crop(np.clip(noisy, 0, 1))
    assert (found & mask).sum() / (found | mask).sum() > 0.85
    assert not mask_from_crop(np.zeros((8, 8), np.float32)).any()


def test_mask_from_crop_keeps_pale_bands_of_cutouts():
    # A cut-out crop: exact-zero background; the chromosome has bands down to 0.1.
    mask, _, _, _ = tube(60, 12, 0.3)
    rows = np.arange(mask.shape[0])[:, None]
    bands = np.where((rows // 6) % 2 == 0, 0.8, 0.1).astype(np.float32)
    gray = np.where(mask, np.broadcast_to(bands, mask.shape), 0.0).astype(np.float32)
    found = mask_from_crop(gray)
    assert (found & mask).sum() / (found | mask).sum() > 0.9


def test_mask_from_crop_leaves_a_lifted_flat_background_out():
    # A BioImLab-like cut: the fill at exactly 0, the rest of the background one grey step above it,
    # and a chromosome with pale bands. A camera gamma of 0.6 lifts that step to 0.036.
    mask, _, _, _ = tube(60, 12, 0.3)
    rows = np.arange(mask.shape[0])[:, None]
    bands = np.where((rows // 6) % 2 == 0, 0.8, 0.1).astype(np.float32)
    gray = np.where(mask, np.broadcast_to(bands, mask.shape), 1 / 255).astype(np.float32)
    gray[:, : gray.shape[1] // 5] = 0.0
    for gamma in (1.0, 0.6):
        found = mask_from_crop(gray ** gamma)
        assert (found & mask).sum() / (found | mask).sum() > 0.9, gamma


def test_cell_features_relative_size_and_names():
    geoms = [analyze_chromosome(*tube(length, 10, ci)[:2]) for length, ci in ((40, 0.45), (60, 0.3), (90, 0.2))]
    feats = cell_features(geoms)
    assert feats.shape == (3, len(FEATURE_NAMES)) and feats.dtype == np.float32
    rel = feats[:, FEATURE_NAMES.index("relative_length")]
    assert rel[0] < rel[1] < rel[2] and abs(rel.mean() - 1) < 1e-5
    ci = feats[:, FEATURE_NAMES.index("centromere_index")]
    assert ci[0] > ci[1] > ci[2]
    one = feature_vector(geoms[1], mean_length=geoms[1].length_px, mean_area=geoms[1].area_px, mean_density=1.0)
    assert one[FEATURE_NAMES.index("relative_length")] == pytest.approx(1.0)
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def test_bench_thresholds_on_a_few_synthetic_chromosomes(tmp_path):
    pytest.importorskip("karyopipe.synth")
    from karyopipe.geometry.bench import main, run_synthetic

    # Well-posed cases (no folds, no split chromatids): the targets must hold.
    result = run_synthetic(24, seed=3, split_fraction=0.0, bends=("straight", "gentle", "strong"))
    s = result["summary"]
    assert s["n"] == 24
    assert s["centromere_within_5pct"] >= 0.8
    assert s["length_error_median"] <= 0.03
    assert s["profile_r_median"] >= 0.9
    assert s["polarity_accuracy"] >= 0.8
    out = tmp_path / "bench.json"
    assert main(["--n", "4", "--seed", "1", "--json", str(out)]) == 0
    import json

    saved = json.loads(out.read_text())
    for key in ("centromere_within_5pct", "centromere_error_median", "length_error_median",
                "polarity_accuracy", "profile_r_median", "ms_per_chromosome"):
        assert key in saved and saved[key] == saved["summary"][key]
    assert saved["by_condition"]


def test_cli_bench_geometry_runs(capsys):
    pytest.importorskip("karyopipe.synth")
    from karyopipe.cli import main

    assert main(["bench-geometry", "--n", "2"]) == 0
    assert "centromere_within_5pct" in capsys.readouterr().out
    assert main(["bench-geometry", "--real", "/nonexistent/folder"]) == 2


def test_real_crop_sample(shared_data):
    from karyopipe.io import load_canonical

    paths = sorted((shared_data / "bioimlab" / "crops").glob("*/*.bmp"))
    paths += sorted((shared_data / "gband612").glob("*/clase*/*.tif*"))
    if not paths:
        pytest.skip(f"no crops under {shared_data}")
    sample = random.Random(0).sample(paths, min(60, len(paths)))
    lengths = []
    for path in sample:
        gray, _ = load_canonical(path)
        geom = analyze_chromosome(mask_from_crop(gray), gray)
        assert geom.straightened.shape[1] == 32
        assert 0 <= geom.centromere_index <= 0.5
        lengths.append(geom.length_px)
    # Crops are single chromosomes: nearly all get a real axis.
    assert np.mean(np.array(lengths) > 10) > 0.9


def test_real_sweep_cli_on_a_few_crops(shared_data, capsys):
    from karyopipe.geometry.bench import run_real

    result = run_real(shared_data, limit=20, progress=False)
    assert result["crops"] == 20 and result["failures"] == 0
    assert result["analysed"] + len(result["unreadable"]) == 20
    assert result["ci_vs_class_reference"]["bioimlab"]["n"] == result["analysed"]


def test_mask_in_a_large_frame_gives_the_same_geometry_in_frame_coordinates():
    mask, gray, _, _ = tube(70, 12, 0.3, bend=1.0)
    big_mask = np.zeros((400, 500), bool)
    big_gray = np.zeros((400, 500), np.float32)
    big_mask[100:100 + mask.shape[0], 200:200 + mask.shape[1]] = mask
    big_gray[100:100 + mask.shape[0], 200:200 + mask.shape[1]] = gray
    small = analyze_chromosome(mask, gray)
    big = analyze_chromosome(big_mask, big_gray)
    assert np.allclose(big.axis, small.axis + [200, 100], atol=1e-6)
    assert np.allclose(big.centromere_xy, small.centromere_xy + [200, 100], atol=1e-6)
    assert np.allclose(big.straightened, small.straightened, atol=1e-6)
