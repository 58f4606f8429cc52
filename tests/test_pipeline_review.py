"""``karyopipe review``: a reviewer's corrections applied to an infer report (karyopipe.pipeline.review)."""
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from karyopipe.pipeline.review import ReviewError, counted_call, parse_corrections, review
from karyopipe.pipeline.review import main as review_main


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    return write_spread_and_report(tmp_path_factory.mktemp("review"))


def write_spread_and_report(root):
    """A spread of 47,XX,+21 on disk and a report as infer writes it, with one 21 called a 22 and one 22 a 21.

    Returns ``(report folder, id of the 21 called 22, id of the 22 called 21, the true classes by id)``.
    """
    from karyopipe.synth import compose_spread

    spread = compose_spread("47,XX,+21", np.random.default_rng(5), size=(900, 700), banding="g",
                            overlap_fraction=0.0, touching=0.0, nuclei=0, debris=0)
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(spread.image_u8).save(root / "spread.png")
    rows, truth = [], []
    for i, inst in enumerate(spread.chromosomes):
        mask = np.zeros(spread.image.shape, np.uint8)
        h, w = inst.visible_crop.shape
        x0, y0 = inst.origin
        mask[y0:y0 + h, x0:x0 + w] = inst.visible_crop
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        polygon = max(contours, key=cv2.contourArea).reshape(-1, 2).tolist()
        rows.append({"id": i, "label": int(inst.number), "confidence": 0.97, "polygon": polygon,
                     "bbox": [x0, y0, x0 + w, y0 + h], "flags": [], "top3": [], "score": 0.99})
        truth.append(int(inst.number))
    truth = np.array(truth)
    a21, a22 = int(np.flatnonzero(truth == 21)[0]), int(np.flatnonzero(truth == 22)[0])
    rows[a21]["label"], rows[a22]["label"] = 22, 21
    rows[a21]["flags"] = ["uncertain", "at_image_edge", "classifier_disagrees"]
    out = root / "spread"
    out.mkdir()
    report = {"source": str(root / "spread.png"), "polarity": "brightfield", "image_shape": list(spread.image.shape),
              "karyotype": "47,XX,+21", "stages": {"segmentation": {"model": "mask_rcnn"}}, "chromosomes": rows}
    (out / "report.json").write_text(json.dumps(report))
    return out, a21, a22, truth


def test_corrections_are_parsed_by_name_and_refused_with_the_reason():
    assert parse_corrections(["12=7", "3=x", " 4 = Y "], ["45"]) == {12: 7, 3: 23, 4: 24, 45: 0}
    with pytest.raises(ReviewError, match="ID=CLASS"):
        parse_corrections(["12:7"])
    with pytest.raises(ReviewError, match="unknown chromosome class 'Z'"):
        parse_corrections(["12=Z"])
    with pytest.raises(ReviewError, match="not a number"):
        parse_corrections([], ["last"])


def test_counted_call_writes_iscn_and_its_abnormalities():
    labels = [k for k in range(1, 23) for _ in range(2)] + [23, 21]
    call = counted_call(labels, np.ones(46), [[] for _ in labels], np.ones(46))
    assert call.karyotype == "46,X,+21"
    assert {a.description for a in call.abnormalities} == {"X", "+21"}
    assert sorted(call.pairs[21]) == [40, 41, 45]
    assert counted_call([0] + labels[:-1] + [24], np.ones(47), [[]] * 47, np.ones(47)).karyotype == "46,XY"


def test_review_fixes_a_swap_and_redraws_everything(report_dir, tmp_path):
    out, a21, a22, _ = report_dir
    result = review(out / "report.json", {a21: 21, a22: 22}, reviewer="AB")
    assert result.karyotype == "47,XX,+21"
    assert result.chromosomes[a21].label == 21 and "set_by_reviewer" in result.chromosomes[a21].flags
    assert "uncertain" not in result.chromosomes[a21].flags and result.chromosomes[a21].confidence == 1.0
    assert "classifier_disagrees" not in result.chromosomes[a21].flags  # it spoke of the machine's label
    # checked by a person now, though the machine's reason to check it (the image edge) stays on record
    assert "at_image_edge" in result.chromosomes[a21].flags and not result.chromosomes[a21].low_confidence
    assert result.stages["review"]["corrections"] == [{"id": a21, "from": "22", "to": "21"},
                                                      {"id": a22, "from": "21", "to": "22"}]
    assert result.stages["segmentation"] == {"model": "mask_rcnn"}
    # Geometry runs again on the report's polygons: every chromosome is straightened for the karyogram.
    assert all(c.geometry is not None and c.geometry.length_px > 10 for c in result.chromosomes)
    paths = result.save(tmp_path / "reviewed")
    saved = json.loads(paths["report.json"].read_text())
    assert saved["stages"]["review"]["reviewer"] == "AB" and "2 correction(s)" in saved["statement"]
    assert saved["review_prompts"] == []  # signed by a reviewer: nothing left that asks for a look
    assert Image.open(paths["karyogram.png"]).size[0] > 500
    with pytest.raises(ReviewError, match="a class is a number"):
        review(out / "report.json", {a21: 25})


def test_dropping_an_object_is_a_loss_and_the_cli_writes_beside_the_report(report_dir, capsys):
    from karyopipe.karyogram import labels_karyotype

    out, a21, a22, truth = report_dir
    argv = [str(out / "report.json"), "--set", f"{a21}=21", "--set", f"{a22}=22", "--drop", "0"]
    assert review_main(argv) == 0
    printed = capsys.readouterr().out
    reviewed = json.loads((out.with_name(out.name + "_reviewed") / "report.json").read_text())
    first = reviewed["chromosomes"][0]
    assert first["label"] == 0 and "dropped_by_reviewer" in first["flags"]
    expected = labels_karyotype(truth[1:])
    assert expected.startswith("46,") and reviewed["karyotype"] == expected and expected in printed
    assert reviewed["stages"]["review"]["machine_karyotype"] == "47,XX,+21"


def test_bad_reviews_say_what_is_wrong_in_one_line(report_dir, tmp_path, capsys):
    out = report_dir[0]
    report = out / "report.json"
    assert review_main([str(report), "--set", "999=3"]) == 2
    assert "no object 999" in capsys.readouterr().err
    assert review_main([str(tmp_path / "none.json")]) == 2
    assert "no such report" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert review_main([str(tmp_path / "bad.json")]) == 2
    assert "not a readable report.json" in capsys.readouterr().err
    moved = json.loads(report.read_text())
    moved["source"] = str(tmp_path / "gone.png")
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    assert review_main([str(tmp_path / "moved.json")]) == 2
    assert "pass --image" in capsys.readouterr().err
    broken = json.loads(report.read_text())
    del broken["chromosomes"][2]["polygon"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    assert review_main([str(tmp_path / "broken.json")]) == 2
    assert "chromosome entry 2 has no polygon" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2]")
    assert review_main([str(tmp_path / "list.json")]) == 2
    assert "not a karyopipe report" in capsys.readouterr().err
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(tmp_path / "other.png")
    assert review_main([str(tmp_path / "moved.json"), "--image", str(tmp_path / "other.png")]) == 2
    assert "not the same spread" in capsys.readouterr().err


def test_a_second_review_updates_the_reviewed_cell_and_keeps_the_first(report_dir, tmp_path):
    import shutil

    out = report_dir[0]
    work = tmp_path / "cell"
    shutil.copytree(out, work)
    assert review_main([str(work / "report.json"), "--set", "5=1", "--reviewer", "AB"]) == 0
    reviewed = work.with_name("cell_reviewed")
    assert review_main([str(reviewed / "report.json"), "--set", "6=2", "--reviewer", "CD"]) == 0
    assert not (tmp_path / "cell_reviewed_reviewed").exists()
    record = json.loads((reviewed / "report.json").read_text())["stages"]["review"]
    assert record["reviewer"] == "CD" and record["machine_karyotype"] == "47,XX,+21"
    assert [r["reviewer"] for r in record["earlier"]] == ["AB"] and record["earlier"][0]["corrections"][0]["id"] == 5


def test_an_edited_chromosomes_csv_is_a_review(report_dir, tmp_path):
    import csv

    from karyopipe.pipeline.review import corrections_from_csv

    out, a21, a22, truth = report_dir
    # The draft's own csv, as infer writes it, with its class column corrected in a spreadsheet.
    draft = review(out / "report.json", {})
    paths = draft.save(tmp_path / "draft")
    rows = list(csv.DictReader(paths["chromosomes.csv"].open()))
    rows[a21]["class"], rows[a22]["class"], rows[0]["class"] = "21", "22", "?"
    edited = tmp_path / "edited.csv"
    with edited.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    changes = corrections_from_csv(edited)
    assert changes[a21] == 21 and changes[0] == 0 and len(changes) == len(truth)
    assert review_main([str(out / "report.json"), "--csv", str(edited), "--out", str(tmp_path / "checked")]) == 0
    record = json.loads((tmp_path / "checked" / "report.json").read_text())["stages"]["review"]
    assert sorted(c["id"] for c in record["corrections"]) == sorted([0, a21, a22])
    rows[3]["class"] = "23b"
    with edited.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ReviewError, match="line 5: unknown chromosome class '23b'"):
        corrections_from_csv(edited)
    (tmp_path / "bare.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ReviewError, match="columns id and class"):
        corrections_from_csv(tmp_path / "bare.csv")
