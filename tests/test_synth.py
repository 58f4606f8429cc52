"""karyopipe.synth: ideogram, single chromosomes, spreads, the synth CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from karyopipe.classes import X, Y
from karyopipe.synth import (
    BENDS,
    compose_spread,
    generate_dataset,
    load_ideogram,
    parse_karyotype,
    render_chromosome,
)


# --- ideogram ---------------------------------------------------------------

def test_ideogram_has_24_classes_with_known_shapes():
    ideo = load_ideogram()
    assert sorted(ideo) == list(range(1, 25))
    assert load_ideogram() is ideo  # cached
    assert ideo[1].length_bp > ideo[2].length_bp > ideo[21].length_bp
    # Metacentric 1, acrocentric 13..15, 21, 22 and submetacentric 4, 5 (textbook CIs).
    assert 0.45 < ideo[1].centromere_index < 0.52
    for k in (13, 14, 15, 21, 22):
        assert ideo[k].centromere_index < 0.3, k
    for k in (4, 5):
        assert 0.24 < ideo[k].centromere_index < 0.3
    assert 0.35 < ideo[X].centromere_index < 0.42
    stains = {b.stain for k in ideo for b in ideo[k].bands}
    assert {"gneg", "gpos100", "acen", "gvar", "stalk"} <= stains
    prof = ideo[1].profile(np.linspace(0, 1, 200))
    assert prof.shape == (200,) and prof.min() == 0.0 and prof.max() == 1.0


# --- single chromosomes -----------------------------------------------------

@pytest.mark.parametrize("bend", BENDS)
@pytest.mark.parametrize("banding", ["g", "q"])
def test_render_chromosome_ground_truth(bend, banding):
    rng = np.random.default_rng(7)
    for number in (1, 7, 13, 21, X, Y):
        c = render_chromosome(number, rng, banding=banding, bend=bend, chromatid_split=0.5 if number == 7 else 0.0)
        assert c.image.dtype == np.float32 and c.mask.dtype == bool and c.image.shape == c.mask.shape
        assert 0.0 <= c.image.min() and c.image.max() <= 1.0
        assert c.axis.shape[0] >= 20 and c.axis.shape[1] == 2 and c.profile.shape == (len(c.axis),)
        # Axis polyline length equals the true length (2 %).
        polyline = float(np.linalg.norm(np.diff(c.axis, axis=0), axis=1).sum())
        assert abs(polyline - c.length_px) / c.length_px < 0.02
        # Arc-length spacing.
        steps = np.linalg.norm(np.diff(c.axis, axis=0), axis=1)
        assert steps.max() - steps.min() < 0.05 * steps.mean() + 0.05
        x, y = np.round(c.centromere_xy).astype(int)
        assert c.mask[y, x], f"centromere outside the mask for {number} {bend}"
        assert c.centromere_index == pytest.approx(load_ideogram()[number].centromere_index)
        # Tips are on the mask, or in the fork between split chromatids.
        ys, xs = np.nonzero(c.mask)
        reach = 1.5 if number != 7 else 0.3 * c.width_px + 1.5
        for tip in (c.axis[0], c.axis[-1]):
            assert np.hypot(xs - tip[0], ys - tip[1]).min() < reach
        # Polarity: G dark on light, Q bright on dark.
        inside, outside = c.image[c.mask].mean(), c.image[~c.mask].mean()
        assert (inside < outside) if banding == "g" else (inside > outside)


def test_render_mask_is_exactly_the_rendered_pixels():
    c = render_chromosome(3, np.random.default_rng(1), banding="q", noise=0.0)
    assert np.all(c.image[~c.mask] == pytest.approx(c.background, abs=1e-6))
    assert np.all(c.image[c.mask] > c.background + 1e-3)


def test_render_is_deterministic_and_validates():
    a = render_chromosome(5, np.random.default_rng(3))
    b = render_chromosome(5, np.random.default_rng(3))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.axis, b.axis)
    with pytest.raises(ValueError, match="1..24"):
        render_chromosome(25, np.random.default_rng(0))
    with pytest.raises(ValueError, match="banding"):
        render_chromosome(1, np.random.default_rng(0), banding="r")


def test_profile_along_true_axis_follows_the_ideogram():
    """Grey read along the true axis correlates with the ideogram's banding."""
    from scipy.ndimage import map_coordinates

    for banding in ("g", "q"):
        for number in (1, 2, 9):
            c = render_chromosome(number, np.random.default_rng(number), banding=banding, length_px=200,
                                  width_px=16, bend="gentle", noise=0.01)
            read = map_coordinates(c.image, [c.axis[:, 1], c.axis[:, 0]], order=1)
            if banding == "g":
                read = -read
            ideal = load_ideogram()[number].profile(np.linspace(0, 1, len(c.axis)))
            inner = slice(len(read) // 20, -len(read) // 20)  # tips are shaded by the cap
            r = np.corrcoef(read[inner], ideal[inner])[0, 1]
            assert r > 0.6, (banding, number, r)
            # The ground-truth profile is the ideogram at the rendered band resolution.
            assert np.corrcoef(c.profile, ideal)[0, 1] > 0.7
            assert np.corrcoef(read[inner], c.profile[inner])[0, 1] > 0.8


def test_relative_lengths_follow_base_pairs():
    rng = np.random.default_rng(0)
    ideo = load_ideogram()
    lengths = {k: render_chromosome(k, np.random.default_rng(11), bend="straight").length_px for k in (1, 10, 21)}
    for k in (10, 21):
        assert lengths[k] / lengths[1] == pytest.approx(ideo[k].length_bp / ideo[1].length_bp, rel=0.01)
    assert rng is not None


# --- karyotypes ---------------------------------------------------------------

@pytest.mark.parametrize("text,total,check", [
    ("46,XX", 46, {X: 2, Y: 0, 1: 2}),
    ("46,XY", 46, {X: 1, Y: 1}),
    ("47,XX,+21", 47, {21: 3, X: 2}),
    ("47,XY,+18", 47, {18: 3, Y: 1}),
    ("45,X", 45, {X: 1, Y: 0}),
    ("47,XXY", 47, {X: 2, Y: 1}),
    ("47,XYY", 47, {X: 1, Y: 2}),
    ("69,XXY", 69, {1: 3, 22: 3, X: 2, Y: 1}),
    ("45,XY,-21", 45, {21: 1}),
])
def test_parse_karyotype(text, total, check):
    counts = parse_karyotype(text)
    assert list(counts) == list(range(1, 25)) and sum(counts.values()) == total
    for k, v in check.items():
        assert counts[k] == v


@pytest.mark.parametrize("bad", ["", "XY", "46", "46,XZ", "47,XX", "47,XX,+25", "46,XY,t(9;22)"])
def test_parse_karyotype_rejects(bad):
    with pytest.raises(ValueError, match="karyotype"):
        parse_karyotype(bad)


# --- spreads ------------------------------------------------------------------

def test_compose_spread_instances_and_masks():
    spread = compose_spread("47,XY,+18", np.random.default_rng(4), size=(640, 512), banding="g",
                            overlap_fraction=0.15, nuclei=1, debris=3, noise=0.0, blur=0.0, illumination=0.0)
    chroms = spread.chromosomes
    assert spread.image.shape == (512, 640) and spread.karyotype == "47,XY,+18"
    assert len(chroms) == 47
    assert sorted(i.number for i in chroms).count(18) == 3
    assert sum(i.category == "nucleus" for i in spread.instances) == 1
    assert sum(i.category == "debris" for i in spread.instances) == 3
    union = np.zeros(spread.image.shape, bool)
    visible_sum = np.zeros(spread.image.shape, int)
    for inst in spread.instances:
        vis, amo = inst.mask, inst.amodal_mask
        assert not (vis & ~amo).any()
        union |= amo
        visible_sum += vis
    # Visible masks tile the objects exactly once; amodal masks overlap where chromosomes cross.
    assert np.array_equal(visible_sum > 0, union) and visible_sum.max() == 1
    assert any(i.occluded_fraction > 0 for i in chroms)
    # With no noise/blur, the background is flat and every object pixel is darker (G).
    bg = np.median(spread.image[~union])
    assert spread.image[~union].std() < 0.01
    assert np.all(spread.image[union] < bg)
    for inst in chroms:
        x, y = np.round(inst.centromere_xy).astype(int)
        assert inst.amodal_mask[y, x]
        polyline = float(np.linalg.norm(np.diff(inst.axis, axis=0), axis=1).sum())
        assert abs(polyline - inst.length_px) / inst.length_px < 0.02


def test_compose_spread_q_band_and_determinism():
    a = compose_spread("45,X", np.random.default_rng(9), size=(384, 320), banding="q")
    b = compose_spread("45,X", np.random.default_rng(9), size=(384, 320), banding="q")
    assert np.array_equal(a.image_u8, b.image_u8) and a.polarity == "fluorescence"
    union = np.any([i.amodal_mask for i in a.chromosomes], axis=0)
    assert a.image[union].mean() > a.image[~union].mean() + 0.1
    assert len(a.chromosomes) == 45


# --- CLI and COCO -------------------------------------------------------------

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools on numpy 2


def _load(path):
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_synth_cli_writes_deterministic_coco(tmp_path):
    from pycocotools import mask as mask_utils

    from karyopipe.cli import main

    args = ["--n", "4", "--seed", "3", "--size", "384", "320", "--no-progress"]
    assert main(["synth", "--out", str(tmp_path / "a")] + args) == 0
    assert main(["synth", "--out", str(tmp_path / "b")] + args) == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files_a) == 5
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel

    coco = _load(tmp_path / "a" / "annotations.json")
    assert len(coco.imgs) == 4
    for img_id, img in coco.imgs.items():
        expected = sum(parse_karyotype(img["karyotype"]).values())
        anns = coco.imgToAnns[img_id]
        chroms = [a for a in anns if a["category_id"] <= 24]
        assert len(chroms) == expected, img["karyotype"]
        assert img["polarity"] in ("brightfield", "fluorescence")
        for ann in chroms:
            vis = mask_utils.decode(coco.annToRLE(ann)).astype(bool)
            amo = mask_utils.decode(ann["amodal_segmentation"] | {"counts": ann["amodal_segmentation"]["counts"].encode()})
            assert not (vis & ~amo.astype(bool)).any()
            assert vis.sum() == ann["area"]
            assert len(ann["axis"]) >= 20 and ann["length_px"] > 0 and 0 < ann["centromere_index"] < 1
    # Readable by karyopipe's own COCO reader, classes intact.
    from karyopipe.data import read_dataset

    ds = read_dataset(tmp_path / "a" / "annotations.json")
    assert not ds.problems and len(ds.samples) == 4
    assert all(s.meta["karyotype"] for s in ds.samples)


def test_synth_cli_fixed_karyotype_and_bad_input(tmp_path, capsys):
    from karyopipe.cli import main

    out = tmp_path / "t"
    assert main(["synth", "--out", str(out), "--n", "2", "--seed", "0", "--karyotype", "47,XX,+21",
                 "--banding", "q", "--size", "320", "256", "--no-progress"]) == 0
    doc = json.loads((out / "annotations.json").read_text())
    assert {im["karyotype"] for im in doc["images"]} == {"47,XX,+21"}
    assert {im["banding"] for im in doc["images"]} == {"q"}
    per_image = [sum(a["image_id"] == im["id"] and a["category_id"] <= 24 for a in doc["annotations"]) for im in doc["images"]]
    assert per_image == [47, 47]
    assert main(["synth", "--out", str(tmp_path / "u"), "--n", "1", "--karyotype", "46,XQ"]) == 2
    err = capsys.readouterr().err
    assert "46,XQ" in err and len(err.strip().splitlines()) == 1
    # Image i does not depend on --n.
    generate_dataset(tmp_path / "n1", 1, 0, karyotype="47,XX,+21", banding="q", size=(320, 256))
    assert (tmp_path / "n1" / "images" / "synth_000000.png").read_bytes() == (out / "images" / "synth_000000.png").read_bytes()


def test_examples_are_synthetic_with_ground_truth():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "examples"
    png = root / "spread_46XY.png"
    assert png.is_file() and png.stat().st_size < 300_000
    from karyopipe.io import read_image

    assert read_image(png).shape[:2] == (576, 768)
    coco = _load(root / "spread_46XY.json")
    assert sum(a["category_id"] <= 24 for a in coco.dataset["annotations"]) == 46


# --- composite mode -----------------------------------------------------------

def test_counts_to_karyotype_round_trips():
    from karyopipe.synth.composite import counts_to_karyotype

    for text in ("46,XX", "46,XY", "47,XX,+21", "45,X", "47,XXY", "69,XXY", "45,XY,-21"):
        assert parse_karyotype(counts_to_karyotype(parse_karyotype(text))) == parse_karyotype(text)


def test_composite_spread_from_one_real_cell(shared_data):
    from karyopipe.synth.composite import CompositeSource

    source = CompositeSource(shared_data / "bioimlab" / "crops")
    cell = source.load(source.cell_ids[0])
    assert cell.banding == "q" and len(cell.crops) == sum(cell.counts.values()) >= 40
    spread = compose_spread(cell.counts, np.random.default_rng(0), size=(768, 576), banding=cell.banding,
                            composite_cell=cell.crops, nuclei=0, debris=0)
    chroms = spread.chromosomes
    assert len(chroms) == len(cell.crops)
    assert sorted(i.number for i in chroms) == sorted(n for n, _, _ in cell.crops)
    # Rotation keeps each crop's area (within interpolation), so relative sizes stay true.
    areas = sorted(int(m.sum()) for _, _, m in cell.crops)
    placed = sorted(int(i.amodal_crop.sum()) for i in chroms)
    assert abs(sum(placed) - sum(areas)) / sum(areas) < 0.05


def test_crop_cells_are_a_readable_generic_crop_set(tmp_path):
    from karyopipe.data import read_dataset
    from karyopipe.synth.crops import generate_crop_cells

    generate_crop_cells(tmp_path / "a", 2, seed=3, banding="mixed")
    generate_crop_cells(tmp_path / "b", 1, seed=3, banding="mixed")
    ds = read_dataset(tmp_path / "a")
    assert ds.format == "crops-generic" and ds.problems == []
    assert len(ds.cells) == 2 and len(ds) == 92
    counts = {}
    for sample in ds.samples:
        counts[sample.label] = counts.get(sample.label, 0) + 1
    assert all(counts[k] == 4 for k in range(1, 23))
    assert counts.get(23, 0) + counts.get(24, 0) == 4
    # Cell i does not depend on how many cells are written.
    first_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png") if "00000" in str(p))
    first_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert first_a == first_b
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in first_b)
