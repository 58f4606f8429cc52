"""Reviewed infer reports read as annotated spreads (karyopipe.data.reports): a lab's corrected cells as data."""
import json

import pytest
from test_pipeline_review import write_spread_and_report

from karyopipe.data import detect_format, read_dataset
from karyopipe.pipeline.review import main as review_main


@pytest.fixture()
def outputs(tmp_path):
    """An infer output folder: ``<out>/spread/report.json`` beside its spread."""
    return write_spread_and_report(tmp_path / "out")


def test_reviewed_reports_are_spreads_labelled_by_the_reviewer(outputs, tmp_path):
    from karyopipe.classification.dataset import build_arrays

    made, a21, a22, truth = outputs
    outputs = made.parent
    # the reviewer mends the swapped 21 and 22 and drops object 0
    assert review_main([str(outputs / "spread" / "report.json"), "--set", f"{a21}=21", "--set", f"{a22}=22",
                        "--drop", "0", "--reviewer", "AB"]) == 0
    assert detect_format(outputs) == "reports"
    assert detect_format(outputs / "spread_reviewed" / "report.json") == "reports"
    dataset = read_dataset(outputs)
    assert dataset.format == "reports" and len(dataset) == 1
    # the machine's report is not data: listed, with why
    assert [p.reason for p in dataset.problems] == ["superseded by its review (spread_reviewed)"]
    sample = dataset.samples[0]
    labels = [inst.label for inst in sample.instances]
    assert sample.instances[0].category == "debris" and labels[0] is None
    assert labels[1:] == truth[1:].tolist()  # the reviewer's classes, the swap mended
    assert sample.meta["karyotype"].startswith("46,") and sample.meta["reviewer"] == "AB"
    assert sample.load_image().shape[:2] == tuple(sample.meta[k] for k in ("height", "width"))
    # classifier data like any annotated spreads: one row per chromosome the reviewer kept
    arrays = build_arrays(outputs, size=(32, 16), mode="pca", cache_dir=None, progress=False)
    assert sorted(arrays.labels.tolist()) == sorted(truth[1:].tolist())


def test_unreviewed_and_orphaned_reports_are_listed_not_read(outputs, tmp_path):
    made, _, _, _ = outputs
    report = json.loads((made / "report.json").read_text())
    report["karyopipe_version"] = "0.1.0"
    machine = tmp_path / "machine" / "report.json"
    machine.parent.mkdir()
    machine.write_text(json.dumps(report))
    orphan = tmp_path / "orphan" / "report.json"
    orphan.parent.mkdir()
    orphan.write_text(json.dumps({**report, "source": "gone.png", "stages": {"review": {"reviewer": "AB"}}}))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text(json.dumps({"karyotype": "46,XX"}))
    dataset = read_dataset(tmp_path, format="reports")
    assert dataset.samples == []
    reasons = {p.path.split("/")[-2]: p.reason for p in dataset.problems}
    assert reasons["machine"].startswith("not reviewed: its classes are karyopipe's own calls")
    assert reasons["orphan"] == "its spread gone.png is not found (as written or beside the report)"
    assert reasons["other"].startswith("not a karyopipe report (no karyopipe_version, source, image_shape")
