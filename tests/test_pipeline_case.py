"""``karyopipe case``: a patient's case from its cells' reports, reviewed ones first (karyopipe.pipeline.case)."""
import json

from karyopipe.pipeline.case import find_reports, main


def _report(folder, karyotype, reviewed=False):
    folder.mkdir(parents=True)
    stages = {"segmentation": {"model": "mask_rcnn"}}
    if reviewed:
        stages["review"] = {"machine_karyotype": "47,XX,+21", "corrections": [{"id": 3, "from": "21", "to": "22"}]}
    (folder / "report.json").write_text(json.dumps({"karyotype": karyotype, "stages": stages}))


def test_a_reviewed_report_stands_for_its_cell(tmp_path, capsys):
    out = tmp_path / "patient"
    _report(out / "a", "46,XX")
    _report(out / "b", "47,XX,+21")
    _report(out / "b_reviewed", "46,XX", reviewed=True)
    _report(out / "c", "45,X")
    (out / "bad").mkdir()
    (out / "bad" / "report.json").write_text("{cut off")
    cells, empty = find_reports([out])
    assert list(cells) == ["a", "b", "bad", "c"] and cells["b"].parent.name == "b_reviewed" and not empty
    assert main([str(out)]) == 0
    captured = capsys.readouterr()
    case = json.loads((out / "case.json").read_text())
    assert case["modal_karyotype"] == "46,XX" and case["modal_cells"] == 2 and case["called"] == 3
    assert case["reviewed_cells"] == ["b"] and "1 of 3 cells reviewed" in case["statement"]
    assert [c["change"] for c in case["single_cell_changes"]] == ["-X"]
    assert len(case["unreadable"]) == 1 and "bad" in captured.err and "case.json" in captured.out


def test_a_case_of_report_files_is_written_beside_the_cells(tmp_path, monkeypatch, capsys):
    out = tmp_path / "patient"
    _report(out / "a", "46,XY")
    _report(out / "b", "46,XY")
    monkeypatch.chdir(tmp_path)
    assert main([str(out / "a" / "report.json"), str(out / "b" / "report.json")]) == 0
    assert (out / "case.json").is_file() and not (tmp_path / "case.json").exists()
    assert str(out / "case.json") in capsys.readouterr().out


def test_no_reports_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "no report.json" in err and "no such file or folder" in err and "no reports" in err
