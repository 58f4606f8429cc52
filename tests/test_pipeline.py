"""End-to-end pipeline: fallbacks, the five outputs, batch behaviour and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from karyopipe.pipeline import ChromosomeResult, KaryoPipeline, KaryotypeResult
from karyopipe.pipeline.cli import main

OUTPUTS = ("overlay.png", "karyogram.png", "masks.png", "report.json", "chromosomes.csv")
# (x, y, length, angle) of well-separated banded rods: one chromosome each.
RODS = [(40, 50, 46, 0), (120, 60, 34, 30), (200, 50, 52, 90), (60, 150, 28, 60), (150, 160, 40, 120), (230, 170, 24, 10)]


def draw_spread(brightfield: bool = True, size=(240, 280)) -> np.ndarray:
    """Banded rods on a flat background; G-band look (dark on light) when ``brightfield``."""
    import cv2

    img = np.zeros(size, np.float32)
    for x, y, length, angle in RODS:
        rod = np.zeros((length + 8, 16), np.float32)
        rod[4:-4, 4:12] = 0.85
        rod[4 + length // 3: 4 + length // 3 + 3, 4:12] = 0.65  # a band
        rot = cv2.getRotationMatrix2D((8, (length + 8) / 2), angle, 1.0)
        side = length + 16
        rot[:, 2] += [(side - 16) / 2, (side - length - 8) / 2]
        patch = cv2.warpAffine(rod, rot, (side, side))
        y0, x0 = y - side // 2, x - side // 2
        img[y0:y0 + side, x0:x0 + side] = np.maximum(img[y0:y0 + side, x0:x0 + side], patch)
    img = np.clip(img + np.random.default_rng(0).normal(0, 0.02, size), 0, 1)
    if brightfield:
        img = 1.0 - 0.8 * img
    return (img * 255).astype(np.uint8)


@pytest.fixture()
def no_weights(tmp_path, monkeypatch):
    """Default weights point at an empty folder: every stage must fall back."""
    empty = tmp_path / "no_weights"
    empty.mkdir()
    monkeypatch.setenv("KARYOPIPE_WEIGHTS", str(empty))
    return empty


@pytest.fixture()
def spread_png(tmp_path):
    path = tmp_path / "spread.png"
    Image.fromarray(draw_spread()).save(path)
    return path


def test_library_fallbacks_and_result(no_weights):
    pipe = KaryoPipeline.from_pretrained()
    assert pipe.segmenter is None and pipe.classifier is None
    result = pipe(draw_spread())
    assert isinstance(result, KaryotypeResult)
    assert result.polarity == "brightfield"  # G-band look detected and inverted
    assert len(result.chromosomes) == len(RODS)
    assert all(isinstance(c, ChromosomeResult) and c.class_name == "?" for c in result.chromosomes)
    lengths = sorted(c.length_px for c in result.chromosomes)
    assert np.allclose(lengths, sorted(r[2] for r in RODS), atol=6)
    assert result.karyotype == "" and "not classified" in result.statement
    assert set(result.to_dict()["fallbacks"]) == {"segmentation", "classification"}
    assert result.karyogram_image().ndim == 3 and result.overlay_image().shape == (240, 280, 3)


def test_fake_classifier_fills_classes(no_weights):
    class Fake:  # always says "class 5", surely enough to check the wiring
        def predict_cell(self, crops):
            lp = np.full((len(crops), 24), np.log(0.5 / 23), np.float32)
            lp[:, 4] = np.log(0.5)
            return lp

    result = KaryoPipeline(classifier=Fake())(draw_spread(brightfield=False))
    assert result.polarity == "fluorescence"
    assert all(c.top3[0] == ("5", 0.5) for c in result.chromosomes)
    assert result.call is not None and len(result.call.labels) == len(RODS)


def test_a_field_of_specks_gets_no_karyotype_call(no_weights):
    from karyopipe.pipeline import core

    class Fake:
        calls = 0

        def predict_cell(self, crops):
            Fake.calls += 1
            return np.zeros((len(crops), 24), np.float32)

    from karyopipe.data import Instance

    field = np.full((440, 440), 0.05, np.float32)
    specks = []
    for k in range(core.MAX_OBJECTS_FOR_A_CALL + 21):  # dust: far more objects than any metaphase has
        y, x = 10 + 20 * (k // 11), 10 + 20 * (k % 11)
        field[y:y + 4, x:x + 9] = 0.9
        mask = np.zeros(field.shape, bool)
        mask[y:y + 4, x:x + 9] = True
        specks.append(Instance(mask=mask, bbox=(x, y, x + 9, y + 4), score=0.9, category="chromosome"))
    result = KaryoPipeline(segmenter=lambda gray: specks, classifier=Fake())(field)
    assert len(result.chromosomes) > core.MAX_OBJECTS_FOR_A_CALL
    assert result.karyotype == "" and Fake.calls == 0
    assert "more than any metaphase" in result.statement and result.statement in result.warnings
    assert "--chromosome-width" not in result.statement  # no rescaling happened, so no scale to doubt
    # Dust measured as chromosomes set a 2.2x scale: the statement names it and the way round it.
    for speck in specks:
        speck.extra = {"scale": 2.2283, "chromosome_width": 6.0}
    result = KaryoPipeline(segmenter=lambda gray: specks, classifier=Fake())(field)
    assert "measured 6 px wide" in result.statement and "2.2283 times" in result.statement
    assert "--chromosome-width" in result.statement


def test_cli_writes_every_output(no_weights, spread_png, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(spread_png), "--out", str(out), "--no-progress"]) == 0
    for name in OUTPUTS:
        assert (out / "spread" / name).stat().st_size > 0
    report = json.loads((out / "spread" / "report.json").read_text())
    assert report["n_chromosomes"] == len(RODS)
    assert report["stages"]["segmentation"]["model"] == "watershed"
    assert report["sex_confidence"] is None  # no classifier, so no call to be sure of
    assert report["scale"] == {}  # the watershed fallback works at the image's own scale
    assert set(report["timings_s"]) >= {"segmentation", "geometry", "classification", "karyogram", "second_look", "total"}
    c0 = report["chromosomes"][0]
    assert {"id", "bbox", "polygon", "class", "top3", "length_px", "relative_length", "centromere_index", "flags"} <= set(c0)
    rows = (out / "spread" / "chromosomes.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + len(RODS)
    # Why each object is marked, in both: no classifier here, so every object is unclassified.
    assert all(c["check_reasons"] == ["unclassified"] and c["low_confidence"] for c in report["chromosomes"])
    assert rows[0].endswith(",flags,check") and all(row.endswith(",unclassified") for row in rows[1:])
    # masks.png: 16-bit labels, chromosome id + 1 on its pixels, as report.json says
    import cv2

    labels = cv2.imread(str(out / "spread" / "masks.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.shape == tuple(report["image_shape"][:2])
    assert set(np.unique(labels)) == {0} | {c["id"] + 1 for c in report["chromosomes"]}
    assert "id + 1" in report["masks_png"]
    err = capsys.readouterr().err
    assert "classifier weights missing" in err and "watershed" in err


def test_label_image_gives_overlaps_to_the_smaller_chromosome_and_fills_polygons_without_masks():
    from karyopipe.pipeline.report import label_image

    big = np.zeros((20, 30), bool)
    big[2:18, 2:28] = True
    small = np.zeros((20, 30), bool)
    small[8:12, 10:14] = True
    # the small one listed first: drawing order comes from size, not from the list
    chromosomes = [ChromosomeResult(id=0, bbox=(10, 8, 14, 12), polygon=np.zeros((0, 2)), mask=small),
                   ChromosomeResult(id=1, bbox=(2, 2, 28, 18), polygon=np.zeros((0, 2)), mask=big)]
    labels = label_image(chromosomes, (20, 30))
    assert labels.dtype == np.uint16 and (labels[small] == 1).all() and (labels[big & ~small] == 2).all()
    assert (labels[~big] == 0).all()
    # a reviewed report keeps polygons only: they are filled instead
    square = np.array([[3, 3], [8, 3], [8, 8], [3, 8]], float)
    reviewed = label_image([ChromosomeResult(id=4, bbox=(3, 3, 8, 8), polygon=square, mask=None)], (20, 30))
    assert reviewed[5, 5] == 5 and reviewed[15, 15] == 0


def test_batch_goes_past_bad_files(no_weights, spread_png, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not an image")
    data = spread_png.read_bytes()
    (bad / "truncated.png").write_bytes(data[: len(data) // 3])
    (bad / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    code = main([str(spread_png), str(bad / "notes.txt"), str(bad / "truncated.png"), str(bad / "empty.png"),
                 str(tmp_path / "missing.png"), "--out", str(out), "--no-progress"])
    assert code == 0
    captured = capsys.readouterr()
    assert "1 of 5 processed" in captured.out
    for name in ("notes.txt", "truncated.png", "empty.png", "missing.png"):
        assert name in captured.err
    assert (out / "spread" / "report.json").exists()
    assert not (out / "truncated").exists()
    # The summary, also as CSV: every input, in order, with what to check or why it failed.
    import csv

    with open(out / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert [r["status"] for r in summary] == ["ok", "FAILED", "FAILED", "FAILED", "SKIPPED"]
    # unclassified (no classifier weights), so every chromosome is one to check
    assert summary[0]["n_chromosomes"] == summary[0]["n_to_check"] == str(len(RODS))
    assert "truncated.png" in summary[2]["error"] and summary[2]["karyotype"] == ""
    assert "to_check" in captured.out.splitlines()[0]


def test_a_file_of_several_images_is_read_as_its_first_and_the_report_says_so(no_weights, tmp_path):
    from karyopipe.io import image_pages

    spread = Image.fromarray(draw_spread())
    stack = tmp_path / "stack.tif"
    spread.save(stack, save_all=True, append_images=[spread.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    single = tmp_path / "single.png"
    spread.save(single)
    assert image_pages(stack) == 2 and image_pages(single) == 1 and image_pages(tmp_path / "missing.png") == 1
    pipe = KaryoPipeline.from_pretrained()
    first = pipe(stack)
    assert any("holds 2 images; only the first was read" in w for w in first.warnings)
    assert len(first.chromosomes) == len(pipe(single).chromosomes)
    assert not any("images; only the first" in w for w in pipe(single).warnings)


def test_all_bad_batch_fails(no_weights, tmp_path, capsys):
    (tmp_path / "empty.png").write_bytes(b"")
    assert main([str(tmp_path / "empty.png"), "--out", str(tmp_path / "out"), "--no-progress"]) != 0
    assert main([str(tmp_path / "nothing_*.png"), "--out", str(tmp_path / "out"), "--no-progress"]) != 0


def test_folder_glob_and_no_chromosomes(no_weights, spread_png, tmp_path, capsys):
    folder = tmp_path / "spreads"
    folder.mkdir()
    Image.fromarray(np.full((64, 64), 200, np.uint8)).save(folder / "blank.png")
    Image.fromarray(draw_spread(brightfield=False)).save(folder / "qband.tif")
    out = tmp_path / "out"
    assert main([str(folder), str(tmp_path / "sp*.png"), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "3 of 3 processed" in captured.out
    assert "no chromosomes found" in captured.err
    report = json.loads((out / "blank" / "report.json").read_text())
    assert report["n_chromosomes"] == 0 and "no chromosomes found" in report["statement"]
    assert json.loads((out / "qband" / "report.json").read_text())["polarity"] == "fluorescence"


def test_a_case_of_several_cells_gets_its_summary(no_weights, tmp_path, capsys):
    spread = tmp_path / "cell_1.png"
    blank = tmp_path / "cell_2.png"
    Image.fromarray(draw_spread()).save(spread)
    Image.new("L", (64, 64)).save(blank)
    assert main([str(spread), str(blank), "--out", str(tmp_path / "out"), "--no-progress", "--case"]) == 0
    case = json.loads((tmp_path / "out" / "case.json").read_text())
    assert case["cells"] == 2 and case["statement"] in capsys.readouterr().out


def test_too_large_image_is_refused(no_weights, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.new("1", (10000, 10000)).save(big)
    assert main([str(big), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "big.png" in err and "too large" in err.lower()
    assert "100000000 pixels" in err and "downscale" in err  # what it is, and what to do about it


def test_explicit_missing_weights_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        KaryoPipeline.from_pretrained(cls_weights=tmp_path / "nope.pth")


def test_real_gband_spread(shared_data, no_weights, tmp_path):
    spread = sorted((shared_data / "gband_spreads").glob("L19*.JPG"))[1]
    result = KaryoPipeline.from_pretrained()(spread)
    assert result.polarity == "brightfield"
    assert 20 <= len(result.chromosomes) <= 120
    paths = result.save(tmp_path / "real")
    assert all(p.exists() for p in paths.values())


def test_bench_pipeline_times_each_size(no_weights, tmp_path, capsys):
    from karyopipe.pipeline.bench import main

    out = tmp_path / "bench.json"
    assert main(["--sizes", "384x288", "512x384", "--n", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    sizes = [row["size"] for row in result["rows"]]
    assert sizes[:2] == ["384x288", "512x384"] and "wide field" in sizes[2]
    for row in result["rows"]:
        assert row["median_seconds"] > 0 and row["objects_median"] > 0
        assert {"segmentation", "geometry", "karyogram"} <= set(row["stage_median_seconds"])
    assert result["load_seconds"] >= 0 and result["models"]["segmentation"] == "watershed"
    assert "model loading" in capsys.readouterr().out


def test_junk_prior_comes_from_the_segmenter_calibration(no_weights):
    from karyopipe.data import Instance

    class CalibratedSegmenter:
        config = {"junk_calibration": {"intercept": 1.0, "slope": -1.2}}

        def __call__(self, gray):
            return []

    objects = [Instance(mask=np.ones((2, 2), bool), score=s) for s in (0.75, 0.99)]
    prior = KaryoPipeline(segmenter=CalibratedSegmenter()).junk_prior(objects)
    assert prior[0] > 0.3 and prior[1] < 0.02
    # Weights without a calibration (or no segmenter): the assignment's default prior.
    assert KaryoPipeline(segmenter=lambda gray: []).junk_prior(objects) is None


def test_the_cell_is_measured_by_its_confident_detections(no_weights):
    from karyopipe.pipeline import core

    class Recording:
        def predict_cell(self, crops, reference=None):
            self.reference = reference
            return np.zeros((len(crops), 24), np.float32)

    pipe = KaryoPipeline(classifier=Recording())
    geoms = [object()] * 14
    sure = [0.99] * core.MIN_REFERENCE_OBJECTS + [0.4] * 4  # four doubtful objects, likely debris
    pipe.classify(geoms, sure)
    np.testing.assert_array_equal(pipe.classifier.reference, np.array(sure) >= core.REFERENCE_SCORE)
    # Too few sure objects to measure a cell by, all sure, or no scores at all: every object counts.
    for scores in ([0.99] * 3 + [0.4] * 11, [0.99] * 14, None):
        pipe.classify(geoms, scores)
        assert pipe.classifier.reference is None


def test_precision_and_chromosome_width_reach_the_segmenter_and_the_report():
    from karyopipe.pipeline.cli import build_parser
    from karyopipe.weights import SEGMENTATION_WEIGHTS, weights_path

    if not weights_path(None, SEGMENTATION_WEIGHTS).is_file():
        pytest.skip("shipped segmentation weights absent")
    assert build_parser().parse_args(["spread.png", "--precision", "bfloat16"]).precision == "bfloat16"
    pipe = KaryoPipeline.from_pretrained(precision="bfloat16", chromosome_width=14.0)
    assert pipe.segmenter.settings.precision == "bfloat16"
    assert pipe.stages["segmentation"]["precision"] == "bfloat16"
    assert pipe.segmenter.settings.chromosome_width == pipe.stages["segmentation"]["chromosome_width"] == 14.0
    assert build_parser().parse_args(["s.png", "--chromosome-width", "14"]).chromosome_width == 14.0
    assert KaryoPipeline.from_pretrained().segmenter.settings.precision == "float32"
    # The second look before a loss: on by default for calibrated weights, off with --no-rescue.
    assert pipe.rescue_floor is not None and pipe.segmenter.settings.score_thresh == pipe.rescue_floor
    assert build_parser().parse_args(["s.png", "--no-rescue"]).no_rescue
    off = KaryoPipeline.from_pretrained(rescue=False)
    assert off.rescue_floor is None and off.segmenter.settings.score_thresh == off.rescue_below
    # The zoomed look is opt-in, and only with the second look.
    assert pipe.zoom_look is None and off.zoom_look is None
    assert KaryoPipeline.from_pretrained(zoom_look=1.25).zoom_look == 1.25
    assert KaryoPipeline.from_pretrained(rescue=False, zoom_look=1.25).zoom_look is None
    assert build_parser().parse_args(["s.png", "--zoom-look"]).zoom_look == 1.25
    assert build_parser().parse_args(["s.png"]).zoom_look is None
    with pytest.raises(ValueError, match="zoom_look"):
        KaryoPipeline.from_pretrained(zoom_look=0.8)
    # Homolog pairing by banding: opt-in (it costs accuracy under lab shifts), recorded with the karyogram stage.
    assert not pipe.pairing and pipe.stages["karyogram"]["pairing"] is False
    assert build_parser().parse_args(["s.png", "--pairing"]).pairing and not build_parser().parse_args(["s.png"]).pairing
    paired = KaryoPipeline.from_pretrained(pairing=True)
    assert paired.pairing and paired.stages["karyogram"]["pairing"] is True


class _Geometry:
    """What the pipeline reads from a geometry result, for objects whose class is known."""

    def __init__(self, cls):
        self.cls, self.length_px, self.centromere_index, self.polarity_confidence = cls, float("nan"), float("nan"), 1.0
        self.flags = []
        self.straightened = np.zeros((24, 8), np.float32)  # no bands: homolog pairing has nothing to go on


class _ByClass:
    """A classifier sure of each object's class, with the next two classes its second and third choices."""

    def predict_cell(self, geometries, reference=None):
        lp = np.full((len(geometries), 24), np.log(0.03 / 21), np.float32)
        for i, g in enumerate(geometries):
            lp[i, g.cls - 1], lp[i, g.cls % 24], lp[i, (g.cls + 1) % 24] = np.log([0.9, 0.04, 0.03])
        return lp


def _cell_pipeline(objects):
    """A pipeline over ``objects`` ((class, score) pairs, each a small square) with the shipped junk calibration."""
    from karyopipe.data import Instance

    shape = (200, 300)
    instances = []
    for k, (cls, score) in enumerate(objects):
        mask = np.zeros(shape, bool)
        y, x = 10 + 20 * (k // 12), 10 + 20 * (k % 12)
        mask[y:y + 4, x:x + 4] = True
        instances.append(Instance(mask=mask, bbox=(x, y, x + 4, y + 4), score=score, category="chromosome",
                                  extra={"cls": cls}))

    class Segmenter:
        config = {"junk_calibration": {"intercept": -0.106, "slope": -1.02, "score_thresh": 0.3}}

        def __call__(self, gray):
            return instances

    pipe = KaryoPipeline(segmenter=Segmenter(), classifier=_ByClass(), rescue_below=0.3, rescue_floor=0.1)
    pipe.analyze = lambda gray, found: [_Geometry(inst.extra["cls"]) for inst in found]
    return pipe, np.zeros(shape, np.float32), instances


def _female_cell_without(missing=()):
    classes = [c for c in range(1, 24) for _ in range(2)]
    for c in missing:
        classes.remove(c)
    return [(c, 0.99) for c in classes]


def test_a_y_or_an_extra_copy_from_a_weak_detection_is_flagged_and_named_and_the_call_stands(no_weights):
    from karyopipe.pipeline.core import REFERENCE_SCORE

    def run(objects):
        pipe, gray, _ = _cell_pipeline(objects)
        result = pipe(gray)
        return result, [c for c in result.chromosomes if "weak_detection" in c.flags]

    male = [(c, 0.99) for c in range(1, 23) for _ in range(2)] + [(23, 0.99), (24, 0.99)]
    result, flagged = run(male)
    assert result.karyotype == "46,XY" and not flagged
    assert not any("weak detections" in w for w in result.warnings)

    result, flagged = run(male[:-1] + [(24, 0.6)])
    assert result.karyotype == "46,XY" and 0.6 < REFERENCE_SCORE
    assert [(c.id, c.class_name) for c in flagged] == [(45, "Y")] and flagged[0].low_confidence
    assert any("weak detections" in w and "object 45 (chromosome Y, detection score 0.60)" in w for w in result.warnings)

    result, flagged = run([(c, 0.99) for c in range(1, 24) for _ in range(2)] + [(21, 0.7)])
    assert result.karyotype == "47,XX,+21"
    assert [(c.class_name, c.score) for c in flagged] == [("21", 0.7)]


class _UnknownFlat(_ByClass):
    """As :class:`_ByClass`, but objects of class 0 read as nothing known: a flat 1/24 over every class."""

    def predict_cell(self, geometries, reference=None):
        lp = super().predict_cell([g if g.cls else _Geometry(1) for g in geometries])
        lp[[i for i, g in enumerate(geometries) if g.cls == 0]] = np.log(1 / 24)
        return lp


def test_a_class_the_classifier_gave_under_five_percent_is_marked_however_sure_the_cell_is(no_weights):
    from karyopipe.karyogram.assign import CLASSIFIER_DISAGREES_BELOW
    from karyopipe.pipeline.core import LOW_CONFIDENCE

    # A female cell short of one 7, plus an object the classifier reads as nothing known: the assignment
    # puts it in the 7's slot and is sure of the cell, but the classifier gave it 7 at 1/24.
    pipe, gray, _ = _cell_pipeline(_female_cell_without(missing=(7,)) + [(0, 0.99)])
    pipe.classifier = _UnknownFlat()
    result = pipe(gray)
    assert result.karyotype == "46,XX"
    odd = result.chromosomes[-1]
    assert odd.class_name == "7" and odd.confidence >= LOW_CONFIDENCE and 1 / 24 < CLASSIFIER_DISAGREES_BELOW
    assert "classifier_disagrees" in odd.flags and odd.low_confidence
    assert result.n_to_check == 1
    assert not any("classifier_disagrees" in c.flags for c in result.chromosomes[:-1])


def test_a_chromosome_cut_by_the_image_edge_is_flagged_for_a_check_and_the_call_stands(no_weights):
    from karyopipe.pipeline.edges import touches_picture_edge

    pipe, gray, instances = _cell_pipeline(_female_cell_without())
    before = pipe(gray).karyotype
    moved = instances[5]
    moved.mask[:] = False
    moved.mask[0:4, 100:104] = True  # at the top border
    result = pipe(gray)
    assert result.karyotype == before == "46,XX"
    at_edge = [c for c in result.chromosomes if "at_image_edge" in c.flags]
    assert [c.id for c in at_edge] == [5] and at_edge[0].low_confidence
    assert any("at the image edge" in w and "object 5 (chromosome 3)" in w for w in result.warnings)
    assert not any("at_image_edge" in c.flags for c in result.chromosomes if c.id != 5)
    assert touches_picture_edge(moved.mask) and not touches_picture_edge(instances[6].mask)


def test_the_picture_edge_lies_inside_a_flat_frame_and_nowhere_else():
    from karyopipe.pipeline.edges import MAX_FRAME, picture_frame, touches_picture_edge

    rng = np.random.default_rng(0)
    field = np.clip(0.1 + 0.02 * rng.standard_normal((120, 160)), 0, 1).astype(np.float32)
    assert picture_frame(field) == (0, 0, 0, 0)  # camera noise, no frame
    framed = field.copy()
    framed[:, -6:] = 0.0                          # a brightfield export's white frame, in canonical polarity
    framed[:3] = 0.01
    assert picture_frame(framed) == (3, 0, 0, 6)
    mask = np.zeros(field.shape, bool)
    mask[50:60, 148:154] = True                   # runs into the frame on the right
    assert touches_picture_edge(mask, picture_frame(framed)) and not touches_picture_edge(mask)
    flat = np.full((120, 160), 0.1, np.float32)   # flat background all the way in: no frame to find
    flat[40:80, 40:120] = 0.5
    assert picture_frame(flat) == (0, 0, 0, 0)
    wide = field.copy()
    wide[:, : MAX_FRAME + 5] = 0.0                 # a band too wide to be a frame
    assert picture_frame(wide)[2] == 0
    assert not touches_picture_edge(None) and not touches_picture_edge(np.zeros((5, 5), bool))


def test_a_weak_detection_fills_a_loss_but_never_adds_a_gain_or_changes_the_sex(no_weights):
    pipe, gray, _ = _cell_pipeline(_female_cell_without([21]) + [(21, 0.2)])
    result = pipe(gray)
    assert result.karyotype == "46,XX"
    rescued = [c for c in result.chromosomes if "rescued" in c.flags]
    assert len(rescued) == 1 and rescued[0].class_name == "21" and rescued[0].score == pytest.approx(0.2)
    assert rescued[0].low_confidence  # marked in the overlay for a check, however sure its class
    assert any("(chromosome 21, detection score" in w and "kept as a chromosome instead of calling a loss" in w for w in result.warnings)
    # Off, or nothing weak enough to look at: the loss is called.
    pipe.rescue_floor = None
    assert pipe(gray).karyotype == "45,XX,-21"
    pipe, gray, _ = _cell_pipeline(_female_cell_without([21]) + [(21, 0.05)])
    assert pipe(gray).karyotype == "45,XX,-21"
    # A weak object the classifier reads as an X (then Y, then 1) is not pressed into the empty 21 slot,
    # and not shown.
    pipe, gray, _ = _cell_pipeline(_female_cell_without([21]) + [(23, 0.2)])
    result = pipe(gray)
    assert result.karyotype == "45,XX,-21" and len(result.chromosomes) == 45
    # One it reads as a 20 (then 21) may fill the empty 21 slot: its top 3 are in the report.
    pipe, gray, _ = _cell_pipeline(_female_cell_without([21]) + [(20, 0.2)])
    result = pipe(gray)
    assert result.karyotype == "46,XX" and [c.class_name for c in result.chromosomes if "rescued" in c.flags] == ["21"]
    # Without a loss, weak objects are never looked at, so they add no gain.
    pipe, gray, _ = _cell_pipeline(_female_cell_without() + [(21, 0.2)])
    result = pipe(gray)
    assert result.karyotype == "46,XX" and len(result.chromosomes) == 46 and not result.warnings


def test_the_reserve_leaves_out_pieces_of_kept_detections(no_weights):
    from karyopipe.data import Instance

    pipe, gray, instances = _cell_pipeline([(1, 0.99), (2, 0.2), (3, 0.5), (4, 0.05)])
    piece = instances[0].mask.copy()
    piece[10:14, 14:16] = True  # half on the first object, half beside it
    instances.append(Instance(mask=piece, bbox=(10, 10, 16, 14), score=0.2, category="chromosome", extra={"cls": 5}))
    kept, reserve = pipe.segment_with_reserve(gray)
    assert [i.score for i in kept] == [0.99, 0.5]
    assert [i.extra["cls"] for i in reserve()] == [2]
    # With the second look off nothing is kept back, and without a floor at all everything is kept.
    pipe.rescue_floor = None
    kept_off, reserve_off = pipe.segment_with_reserve(gray)
    assert (kept_off, reserve_off()) == (kept, [])
    pipe.rescue_below = None
    everything, nothing = pipe.segment_with_reserve(gray)
    assert (everything, nothing()) == (instances, [])


def test_a_segmenter_outlines_its_reserve_only_when_asked_and_as_it_would_have(tmp_path, no_weights):
    from test_segmentation import _tiny_weights, tube_image

    import torch

    from karyopipe.segmentation import Segmenter

    torch.manual_seed(0)  # an untrained model's detections; some seed gives every run the same
    segmenter = Segmenter.from_pretrained(_tiny_weights(tmp_path), score_thresh=0.0, rescale=False)
    gray = tube_image(1, size=96)[0].astype(np.float32)
    everything = segmenter(gray)
    scores = sorted(i.score for i in everything)
    assert len(scores) >= 4  # an untrained head scores everything low: enough to split
    below, floor = scores[len(scores) // 2], scores[1]
    drawn = []
    outline = segmenter.outline
    segmenter.outline = lambda det, smooth: drawn.append(det.score) or outline(det, smooth)
    pipe = KaryoPipeline(segmenter=segmenter, rescue_below=below, rescue_floor=floor)
    kept, reserve = pipe.segment_with_reserve(gray)
    assert all(s >= below for s in drawn) and len(drawn) == len(kept)
    # The same objects, the same masks, as the segmenter's own call gives and the generic path keeps back.
    plain = KaryoPipeline(segmenter=lambda g: everything, rescue_below=below, rescue_floor=floor)
    plain_kept, plain_reserve = plain.segment_with_reserve(gray)
    for mine, theirs in ((kept, plain_kept), (reserve(), plain_reserve())):
        assert mine and [i.score for i in mine] == [i.score for i in theirs]
        assert all((a.mask == b.mask).all() for a, b in zip(mine, theirs))
    assert any(s < below for s in drawn)


def _square(shape, y, x, h, w):
    mask = np.zeros(shape, bool)
    mask[y:y + h, x:x + w] = True
    return mask


def test_merged_objects_are_those_a_second_view_sees_as_parts():
    from karyopipe.data import Instance
    from karyopipe.pipeline.core import merged_objects

    shape = (60, 60)
    whole = Instance(mask=_square(shape, 10, 10, 4, 16), score=0.9)
    lone = Instance(mask=_square(shape, 40, 40, 4, 8), score=0.9)
    halves = [Instance(mask=_square(shape, 10, 10, 4, 8), score=0.8), Instance(mask=_square(shape, 10, 18, 4, 8), score=0.7)]
    again = Instance(mask=whole.mask.copy(), score=0.9)  # the zoomed view also sees the object whole: not a part
    found = merged_objects([whole, lone], [again] + halves)
    assert len(found) == 1 and found[0][0] is whole and found[0][1] == halves
    # One part, or parts that leave most of the object uncovered, or that lie mostly outside it: no split.
    assert merged_objects([whole], [halves[0]]) == []
    assert merged_objects([whole], [Instance(mask=_square(shape, 10, 10, 4, 4)), Instance(mask=_square(shape, 10, 22, 4, 4))]) == []
    assert merged_objects([lone], [Instance(mask=_square(shape, 40, 36, 4, 8)), Instance(mask=_square(shape, 40, 44, 4, 8))]) == []


def _merged_cell(part_classes):
    """A female cell with one 20 and one 21 touching, detected as one object read as a 20; the zoomed view's parts."""
    from karyopipe.data import Instance

    objects = _female_cell_without([20, 21])
    pipe, gray, instances = _cell_pipeline(objects)
    merged = Instance(mask=_square(gray.shape, 150, 10, 4, 8), score=0.99, category="chromosome", extra={"cls": 20})
    instances.append(merged)
    parts = [Instance(mask=_square(gray.shape, 150, 10 + 4 * k, 4, 4), score=0.9, category="chromosome",
                      extra={"cls": c}) for k, c in enumerate(part_classes)]
    looked = []
    pipe.zoom_look = 1.25
    pipe.zoomed_view = lambda g: looked.append(1) or parts
    return pipe, gray, looked


def test_the_zoomed_view_splits_touching_chromosomes_only_to_mend_a_loss(no_weights):
    pipe, gray, looked = _merged_cell([20, 21])
    result = pipe(gray)
    assert result.karyotype == "46,XX" and len(result.chromosomes) == 46 and looked == [1]
    split = [c for c in result.chromosomes if "split" in c.flags]
    assert sorted(c.class_name for c in split) == ["20", "21"] and all(c.low_confidence for c in split)
    assert any("split in a view 1.25x larger instead of calling a loss" in w for w in result.warnings)
    # Off, the loss is called; parts read as an X and a 20 would change the sex: no split.
    pipe.zoom_look = None
    assert pipe(gray).karyotype == "45,XX,-21"
    pipe, gray, _ = _merged_cell([23, 20])
    assert pipe(gray).karyotype == "45,XX,-21"
    # Without a loss the zoomed view is never run.
    pipe2, gray2, _ = _cell_pipeline(_female_cell_without())
    pipe2.zoom_look, seen = 1.25, []
    pipe2.zoomed_view = lambda g: seen.append(1) or []
    assert pipe2(gray2).karyotype == "46,XX" and not seen


def test_the_hidden_parts_of_a_merged_object_mend_a_loss_and_are_flagged(no_weights):
    from karyopipe.data import Instance

    pipe, gray, instances = _cell_pipeline(_female_cell_without([20, 21]))
    instances.append(Instance(mask=_square(gray.shape, 150, 10, 4, 8), score=0.99, category="chromosome",
                              extra={"cls": 20}))
    parts = [Instance(mask=_square(gray.shape, 150, 10 + 4 * k, 4, 4), score=0.5, category="chromosome",
                      extra={"cls": c}) for k, c in enumerate([20, 21])]
    segment = pipe.segment_with_reserve

    def with_hidden(g):
        kept, reserve = segment(g)
        reserve.hidden = lambda: parts
        return kept, reserve

    pipe.segment_with_reserve = with_hidden
    assert pipe.hidden_look, "on by default"
    result = pipe(gray)
    assert result.karyotype == "46,XX" and len(result.chromosomes) == 46
    assert sorted(c.class_name for c in result.chromosomes if "split" in c.flags) == ["20", "21"]
    assert any("segmenter also saw one of them apart" in w for w in result.warnings)
    pipe.hidden_look = False
    assert pipe(gray).karyotype == "45,XX,-21"


def test_hidden_splits_take_one_part_and_the_rest_or_several_parts():
    from karyopipe.data import Instance
    from karyopipe.pipeline.core import SPLIT_REMAINDER, hidden_splits

    shape = (60, 60)
    whole = Instance(mask=_square(shape, 10, 10, 4, 16), score=0.9, category="chromosome")
    part = Instance(mask=_square(shape, 10, 10, 4, 6), score=0.5)
    (host, (first, rest)), = hidden_splits([whole], [part])
    assert host is whole and first is part
    assert (rest.mask == _square(shape, 10, 16, 4, 10)).all() and rest.score == 0.9 and rest.bbox == (16, 10, 26, 14)
    assert rest.mask.sum() >= SPLIT_REMAINDER * whole.mask.sum()
    # Two parts that cover the object: those two, as merged_objects takes them.
    halves = [Instance(mask=_square(shape, 10, 10, 4, 8)), Instance(mask=_square(shape, 10, 18, 4, 8))]
    assert hidden_splits([whole], halves) == [(whole, halves)]
    # A part covering most of the object, or lying mostly outside it, splits nothing.
    assert hidden_splits([whole], [Instance(mask=_square(shape, 10, 10, 4, 14))]) == []
    assert hidden_splits([whole], [Instance(mask=_square(shape, 10, 22, 4, 8))]) == []


def test_the_zoomed_view_runs_the_segmenter_larger_and_leaves_its_settings(tmp_path, no_weights):
    from test_segmentation import _tiny_weights, tube_image

    from karyopipe.segmentation import Segmenter

    segmenter = Segmenter.from_pretrained(_tiny_weights(tmp_path), score_thresh=0.0)
    gray = tube_image(1, size=96)[0].astype(np.float32)
    before = segmenter.settings
    zooms = []
    detect = segmenter.detect
    segmenter.detect = lambda g, zoom=1.0: zooms.append(zoom) or detect(g, zoom=zoom)
    pipe = KaryoPipeline(segmenter=segmenter, rescue_below=0.0, rescue_floor=0.0, zoom_look=1.25)
    view = pipe.zoomed_view(gray)
    assert segmenter.settings is before and zooms == [1.25]
    lo, hi = before.scale_bounds
    width = segmenter.chromosome_width(gray)
    expected = np.clip(1.25 * before.reference_width / width, lo, hi)
    assert segmenter._scale_for_width(width, 1.25) == pytest.approx(expected)
    assert view, "the tiny model finds something at score 0"
    assert all(inst.mask.shape == gray.shape for inst in view)
    assert all(inst.extra["scale"] == pytest.approx(expected) for inst in view)
    pipe.zoom_look = None
    assert pipe.zoomed_view(gray) == []


def test_warnings_name_objects_by_id_class_and_optionally_detection_score():
    from types import SimpleNamespace

    from karyopipe.pipeline.core import describe_objects

    labels = np.array([0, 21, 24])  # 0: not assigned; 21 and 24 are chromosome 21 and Y
    instances = [SimpleNamespace(score=s) for s in (0.9, 0.62, 0.4)]
    assert describe_objects([1, 2], labels) == "object 1 (chromosome 21), object 2 (chromosome Y)"
    assert describe_objects([2], labels, instances) == "object 2 (chromosome Y, detection score 0.40)"
    assert describe_objects([], labels) == ""


def test_review_prompts_list_what_asks_for_a_look_and_nothing_for_a_clean_normal_call():
    from types import SimpleNamespace

    def result(**kw):
        kw = {"chromosomes": [SimpleNamespace(low_confidence=False)] * 46, "karyotype": "46,XY", "sex": "XY",
              "sex_confidence": 0.99, **kw}
        return KaryotypeResult(source="s", image=np.zeros((4, 4)), polarity="brightfield", **kw)

    assert result().review_prompts == []
    marked = [SimpleNamespace(low_confidence=k < 2) for k in range(46)]
    assert result(chromosomes=marked).review_prompts == ["2 objects marked for a check"]
    assert result(sex_confidence=0.6).review_prompts == ["sex call uncertain (p=0.60)"]
    assert result(karyotype="").review_prompts == ["no karyotype call"]
    prompts = result(abnormalities=[{"description": "+21"}], possible_abnormalities=[{"description": "+13"}],
                     warnings=["w"]).review_prompts
    assert prompts == ["abnormal call 46,XY", "possible +13", "1 warning"]
    # A reviewer's sign-out is the look the prompts asked for.
    assert result(chromosomes=marked, stages={"review": {"reviewer": "AB"}}).review_prompts == []


def test_a_second_segmenter_fills_a_loss_only_with_what_the_first_did_not_keep(no_weights):
    from karyopipe.data import Instance
    from karyopipe.pipeline.core import SECOND_SEGMENTER_SCORE_SCALE

    pipe, gray, instances = _cell_pipeline(_female_cell_without([21]))
    assert pipe(gray).karyotype == "45,XX,-21"

    def square(y, x, cls, score):
        mask = np.zeros(gray.shape, bool)
        mask[y:y + 4, x:x + 4] = True
        return Instance(mask=mask, bbox=(x, y, x + 4, y + 4), score=score, category="chromosome", extra={"cls": cls})

    class SecondSegmenter:
        def __init__(self, objects):
            self.objects = objects

        def __call__(self, gray):
            return [square(*o) for o in self.objects]

    # It sees the 21 the first missed (and, again, a chromosome the first kept: that one is not offered).
    pipe.second_segmenter = SecondSegmenter([(180, 280, 21, 0.9), (10, 10, 1, 0.95)])
    result = pipe(gray)
    assert result.karyotype == "46,XX"
    taken = [c for c in result.chromosomes if "rescued" in c.flags]
    assert len(taken) == 1 and taken[0].class_name == "21"
    assert taken[0].score == pytest.approx(0.9 * SECOND_SEGMENTER_SCORE_SCALE) and taken[0].low_confidence
    assert any("found by the second segmenter" in w and "chromosome 21" in w for w in result.warnings)
    assert not any("kept as a chromosome instead of calling a loss" in w for w in result.warnings)
    # What it scores too low once scaled to a weak detection, or reads as another class, does not fill the loss.
    pipe.second_segmenter = SecondSegmenter([(180, 280, 21, 0.2)])
    assert pipe(gray).karyotype == "45,XX,-21"
    pipe.second_segmenter = SecondSegmenter([(180, 280, 23, 0.9)])
    assert pipe(gray).karyotype == "45,XX,-21"
    # A cell without a loss never asks it.
    full, gray_full, _ = _cell_pipeline(_female_cell_without())
    full.second_segmenter = None
    asked = []
    full.second_segmenter = type("Asked", (), {"__call__": lambda self, g: asked.append(1) or []})()
    assert full(gray_full).karyotype == "46,XX" and not asked


def test_from_pretrained_loads_the_second_segmenter_only_when_asked(tmp_path):
    from karyopipe.weights import weights_path

    if not weights_path(None, "mask_rcnn_karyotype_best.pth").is_file():
        pytest.skip("shipped segmentation weights not present")
    plain = KaryoPipeline.from_pretrained(cls_weights=None)
    assert plain.second_segmenter is None and "second_segmenter" not in plain.stages["segmentation"]
    pipe = KaryoPipeline.from_pretrained(cls_weights=None, second_segmenter=True)
    assert pipe.second_segmenter is not None
    assert pipe.stages["segmentation"]["second_segmenter"]["weights"].endswith("mask_rcnn_karyotype_r18.pth")
    assert pipe.second_segmenter.settings.score_thresh == pytest.approx(0.3)
    assert KaryoPipeline.from_pretrained(cls_weights=None, second_segmenter=True, rescue=False).second_segmenter is None
    with pytest.raises(FileNotFoundError, match="second segmenter"):
        KaryoPipeline.from_pretrained(cls_weights=None, second_segmenter=tmp_path / "none.pth")


def test_precision_reaches_both_networks():
    from karyopipe.weights import weights_path

    if not weights_path(None, "karyotype_classifier_best.pth").is_file():
        pytest.skip("shipped classifier weights not present")
    pipe = KaryoPipeline.from_pretrained(precision="bfloat16")
    assert pipe.segmenter.settings.precision == "bfloat16" and pipe.classifier.precision == "bfloat16"
    assert KaryoPipeline.from_pretrained().classifier.precision == "float32"


def test_a_dim_or_twelve_bit_spread_reads_as_the_well_lit_one(tmp_path):
    """A dim lamp or a 12-bit camera's 16-bit file: the same call as the well-lit 8-bit spread, and a warning."""
    import cv2

    from karyopipe.synth import compose_spread
    from karyopipe.weights import SEGMENTATION_WEIGHTS, weights_path

    if not weights_path(None, SEGMENTATION_WEIGHTS).is_file():
        pytest.skip("shipped segmentation weights absent")
    spread = compose_spread("46,XY", np.random.default_rng(3), size=(768, 576), banding="g",
                            overlap_fraction=0.0, touching=0.0, nuclei=0, debris=0)
    lit = spread.image_u8
    cv2.imwrite(str(tmp_path / "lit.png"), lit)
    # A third of the light: the empty slide reads 0.75 after inversion, where the segmenter found no chromosome.
    cv2.imwrite(str(tmp_path / "dim.png"), np.round(lit * 0.3).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "twelve_bit.png"), lit.astype(np.uint16) * 16)
    pipe = KaryoPipeline.from_pretrained()
    results = {name: pipe(tmp_path / f"{name}.png") for name in ("lit", "dim", "twelve_bit")}
    assert results["lit"].karyotype == "46,XY"
    for name in ("dim", "twelve_bit"):
        assert results[name].karyotype == "46,XY"
        assert abs(len(results[name].chromosomes) - len(results["lit"].chromosomes)) <= 1
    background = [w for r in results.values() for w in r.warnings if "background reads" in w]
    assert len(background) == 1 and "dim.png" in background[0]
