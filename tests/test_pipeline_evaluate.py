"""eval-e2e: detection, classification and karyotype scores on a generated annotated spread."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from karyopipe.data import Instance, Sample, write_coco
from karyopipe.pipeline import KaryoPipeline
from karyopipe.pipeline.evaluate import evaluate, main, match_instances, spread_truth, truth_karyotype
from test_pipeline import RODS, draw_spread


def _annotated(tmp_path, with_extra: bool = False):
    from scipy import ndimage as ndi

    img = draw_spread(brightfield=True)
    path = tmp_path / "spread.png"
    Image.fromarray(img).save(path)
    labels, n = ndi.label(img < 150)
    masks = [labels == k for k in range(1, n + 1)]
    assert n == len(RODS)
    instances = [Instance(mask=m, label=k + 1) for k, m in enumerate(masks)]
    if with_extra:  # a spurious truth nobody can find: recall drops below 1
        extra = np.zeros_like(masks[0]); extra[220:230, 5:15] = True
        instances.append(Instance(mask=extra, label=7))
    sample = Sample(path=path, cell_id="c1", instances=instances, image_id="spread",
                    loader=lambda: np.asarray(Image.open(path)))
    return sample


def test_match_instances_one_to_one():
    a = np.zeros((20, 20), bool); a[2:10, 2:6] = True
    b = np.zeros((20, 20), bool); b[12:18, 10:14] = True
    pairs, iou = match_instances([b, a, a], [a, b])
    assert sorted((p, t) for p, t, _ in pairs) in ([(0, 1), (1, 0)], [(0, 1), (2, 0)])
    assert iou.shape == (3, 2)


def test_truth_karyotype():
    labels = [k for k in range(1, 23) for _ in range(2)] + [23, 24]
    assert truth_karyotype(labels) == "46,XY"
    assert truth_karyotype(labels[:-1] + [0]) == ""


def test_spread_truth_prefers_the_recorded_cell_karyotype():
    normal = [k for k in range(1, 23) for _ in range(2)] + [23, 24]
    # Unsure polygon labels (two 1s called 2) do not matter when the cell's karyotype is recorded.
    noisy = [2, 2] + normal[2:]
    assert spread_truth({"karyotype": "46,XY"}, noisy) == ("46,XY", "cell")
    # An overlap drawn as its own polygon: the frame still shows the whole cell.
    assert spread_truth({"karyotype": "46,XY"}, noisy + [0]) == ("46,XY", "cell")
    truth, why = spread_truth({"karyotype": "46,XY"}, noisy[:41])
    assert truth == "" and "41 of the cell's 46" in why
    assert spread_truth({}, normal) == ("46,XY", "labels")
    assert spread_truth({}, normal[:-1] + [0])[0] == ""


def test_evaluate_detection_and_classes(tmp_path, monkeypatch):
    monkeypatch.setenv("KARYOPIPE_WEIGHTS", str(tmp_path))
    sample = _annotated(tmp_path, with_extra=True)

    class Fake:  # right class for the rod with the largest area, "1" for the others
        def predict_cell(self, crops):
            lp = np.full((len(crops), 24), -10.0, np.float32)
            lp[:, 0] = 0.0
            return lp

    m = evaluate(KaryoPipeline(classifier=Fake()), [sample], progress=False)
    assert m["detection_precision@0.5"] == 1.0
    assert abs(m["detection_recall@0.5"] - len(RODS) / (len(RODS) + 1)) < 1e-3
    assert m["classified_matched"] == len(RODS)
    assert m["classification_accuracy_matched"] < 1.0  # 6 different true classes, one predicted
    assert m["exact_karyotype_spreads"] == 1 and m["exact_karyotype_rate"] == 0.0
    assert m["detected_and_right"] == pytest.approx(m["detection_recall@0.5"] * m["classification_accuracy_matched"],
                                                    abs=1e-3)
    assert m["detected_and_right_ci95"] is None  # one cell: no interval over cells
    assert m["seconds_per_spread"] > 0
    # Each spread says how many objects the second look added (none without a segmenter's reserve).
    assert (m["per_spread"][0]["rescued"], m["per_spread"][0]["split"]) == (0, 0)
    # Every matched chromosome called wrong is listed by its object id, and the confusions are counted.
    errors = m["per_spread"][0]["errors"]
    assert len(errors) == round(len(RODS) * (1 - m["classification_accuracy_matched"]))
    assert all(e["truth"] != e["called"] for e in errors)
    assert sum(c["n"] for c in m["confusions"]) == len(errors) and all(c["spreads"] == 1 for c in m["confusions"])
    # The reader's marks: how many objects carry one, whether the wrong calls do, and whether a wrong karyotype
    # came with no mark at all.
    row = m["per_spread"][0]
    assert 0 <= row["to_check"] <= row["n_pred"] and m["objects_marked"] == round(row["to_check"] / row["n_pred"], 4)
    assert m["errors_marked"] == round(sum(e["marked"] for e in errors) / len(errors), 4)
    # The fake classifier is sure of "1": a wrong 1 carries no mark, the objects pushed into other classes do.
    assert [e["marked"] for e in errors if e["called"] == "1"] == [False]
    assert all(e["marked"] for e in errors if e["called"] != "1")
    assert m["wrong_calls_unmarked"] == int(not row["exact"] and row["to_check"] == 0)
    assert m["wrong_calls_unprompted"] == int(not row["exact"] and not row["review_prompts"])
    assert row["review_prompts"]  # 4 objects marked, and the call is not normal
    # Each reason for a mark, with how often it marks a wrong call; "unmarked" is the baseline it is read against.
    marks = m["marks_by_reason"]
    assert marks["unmarked"]["objects"] == row["n_pred"] - row["to_check"]
    assert marks["unmarked"]["wrong"] == sum(not e["marked"] for e in errors)
    # Every object pushed out of "1" got a class the classifier gave e^-10: the assignment's choice, not its.
    assert marks["classifier_disagrees"]["wrong"] == sum(e["called"] != "1" for e in errors) > 0
    assert all(t["wrong"] <= t["matched"] <= t["objects"] for t in marks.values())


def test_cli_on_coco(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KARYOPIPE_WEIGHTS", str(tmp_path / "none"))
    sample = _annotated(tmp_path)
    coco = write_coco([sample], tmp_path / "gt" / "annotations.json")
    out = tmp_path / "e2e.json"
    assert main([str(coco), "--json", str(out), "--no-progress"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["detection_recall@0.5"] == 1.0 and metrics["detection_precision@0.5"] == 1.0
    assert metrics["classification_accuracy_matched"] == 0.0  # no classifier: nothing is right
    assert "classifier weights missing" in capsys.readouterr().err


def test_heldout_split_keeps_cells_no_stage_trained_on(tmp_path):
    from types import SimpleNamespace

    import torch

    from karyopipe.pipeline.evaluate import select_cells
    from karyopipe.weights import save_weights

    state = {"w": torch.zeros(1)}
    seg = save_weights(tmp_path / "seg.pth", state, {"val_cells": ["1", "2", "3"]})
    cls = save_weights(tmp_path / "cls.pth", state, {"heldout_cells": ["bioimlab/2", "bioimlab/3", "bioimlab/9"]})
    old = save_weights(tmp_path / "old.pth", state, {})
    dataset = SimpleNamespace(samples=[SimpleNamespace(cell_id=c, meta={}) for c in ("1", "2", "3", "4", "9")])
    samples, note = select_cells(dataset, "heldout", seg, cls)
    assert [s.cell_id for s in samples] == ["2", "3"] and "classifier" in note
    # A frame whose crops label-bioimlab found in another folder counts as that folder's cell for the
    # classifier; once folders are recorded, a frame without one (cell 3) cannot be called held out.
    dataset.samples[0].meta["crop_cell"] = "9"
    dataset.samples[1].meta["crop_cell"] = "5"
    assert [s.cell_id for s in select_cells(dataset, "heldout", seg, cls)[0]] == ["1"]
    with pytest.raises(ValueError, match="held-out cells"):
        select_cells(dataset, "heldout", seg, old)


def test_a_lab_shift_reaches_every_spread_the_same_way(tmp_path, monkeypatch):
    from karyopipe.classification.shift import shift_spread

    monkeypatch.setenv("KARYOPIPE_WEIGHTS", str(tmp_path))
    sample = _annotated(tmp_path)
    seen = []

    class Recorder(KaryoPipeline):
        def __call__(self, image, polarity=None):
            seen.append(np.array(image))
            return super().__call__(image, polarity)

    pipe = Recorder()
    evaluate(pipe, [sample], progress=False, shift="gamma0.6")
    evaluate(pipe, [sample], progress=False, shift="gamma0.6")
    plain = evaluate(pipe, [sample], progress=False)
    assert np.array_equal(seen[0], seen[1]) and not np.array_equal(seen[0], seen[2])
    # A brightfield spread comes back brightfield: the pipeline still has to tell its polarity.
    dark_on_light = np.full((40, 40), 0.9, np.float32)
    dark_on_light[10:30, 18:22] = 0.2
    shifted = shift_spread(dark_on_light, "gamma0.6", np.random.default_rng(0))
    assert shifted[0, 0] > shifted[20, 20]
    with pytest.raises(ValueError, match="whole spreads"):
        shift_spread(dark_on_light, "scale0.5", np.random.default_rng(0))
    assert plain["spreads"] == 1


def test_detected_and_right_over_the_confident_truths_counts_those_never_found(tmp_path, monkeypatch):
    monkeypatch.setenv("KARYOPIPE_WEIGHTS", str(tmp_path))
    sample = _annotated(tmp_path, with_extra=True)
    for k, inst in enumerate(sample.instances):
        inst.extra["coco_id"] = k + 1
    # two rods and the truth nobody can find are labelled with confidence, the other rods are guesses
    unfindable = len(sample.instances)
    confidence = {1: "high", 2: "high", 3: "low", unfindable: "high"}

    class Unsure:  # no preference between classes: the karyotype assignment alone names the objects
        def predict_cell(self, crops):
            return np.full((len(crops), 24), -np.log(24.0), np.float32)

    m = evaluate(KaryoPipeline(classifier=Unsure()), [sample], confidence, progress=False)
    row = m["per_spread"][0]
    assert (m["confident_truth"], m["confident_truth_matched"], row["confident_truth_all"]) == (3, 2, 3)
    assert m["detected_and_right_confident_truth"] == round(row["confident_correct"] / 3, 4)
    assert m["detected_and_right_confident_truth"] <= 2 / 3  # the unfound one counts against it
    without = evaluate(KaryoPipeline(classifier=Unsure()), [sample], progress=False)
    assert without["detected_and_right_confident_truth"] is None and without["confident_truth"] == 0
