"""tools/judge_classifier.py: the standing rule for classifier candidates, checked from the evaluations' reports."""
import copy
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("judge_classifier", ROOT / "tools" / "judge_classifier.py")
judge_classifier = importlib.util.module_from_spec(_spec)
sys.modules["judge_classifier"] = judge_classifier  # dataclasses look their module up there
_spec.loader.exec_module(judge_classifier)

Q, G = "../shared/data/bioimlab/crops", "../shared/data/gband612"


def _reports():
    source = lambda acc, assigned, n: {"n": n, "accuracy": acc, "accuracy_assigned": assigned}  # noqa: E731
    crops = {"data": {Q: source(0.9764, 0.9964, 552), G: source(0.9794, 0.9923, 3496)},
             "shifts": {"blur1.5": {Q: source(0.95, 0.97, 552), G: source(0.96, 0.98, 3496)},
                        "jpeg30": {Q: source(0.97, 0.99, 552), G: source(0.97, 0.99, 3496)}}}
    pieces = {"results": [{"data": G, "pieces": 443, "pieces_y_over_0.3": 0.020},
                          {"data": Q, "pieces": 70, "pieces_y_over_0.3": 0.086}]}
    spread = lambda name, exact, correct: {"file": f"x/{name}.png", "karyotype": "46,XX" if exact else "46,XY",  # noqa: E731
                                           "true_karyotype": "46,XX", "exact": exact, "correct": correct}
    frames = {"detected_and_right": 0.9, "per_spread": [spread("a", True, 40), spread("b", False, 41)]}
    return {"crops": crops, "pieces": pieces, "frames": frames}


def _failed(shipped, candidate):
    return [(c.rule, c.figure.split(" ")[0]) for c in judge_classifier.judge(shipped, candidate) if not c.passes]


def test_a_candidate_equal_to_the_shipped_model_passes_every_check():
    checks = judge_classifier.judge(_reports(), _reports())
    assert [c.rule for c in checks] == ["(i)", "(i)", "(ii)", "(ii)", "(iii)", "(iv)", "(iv)"]
    assert all(c.passes for c in checks)
    assert "| (iii) | frames: detected and right / exact | 0.9000 / 1 of 2 |" in judge_classifier.table(checks)


def test_each_rule_fails_on_its_own_loss_and_allows_its_tolerance():
    shipped = _reports()
    candidate = copy.deepcopy(shipped)
    candidate["crops"]["data"][Q]["accuracy"] -= 2 / 552  # two crops: allowed
    candidate["crops"]["data"][G]["accuracy_assigned"] -= 8 / 3496  # eight: one too many
    assert _failed(shipped, candidate) == [("(i)", "gband612")]
    candidate = copy.deepcopy(shipped)
    candidate["crops"]["shifts"]["jpeg30"][Q]["accuracy"] -= 0.001
    assert _failed(shipped, candidate) == [("(ii)", "bioimlab,")]
    candidate = copy.deepcopy(shipped)
    candidate["frames"]["per_spread"][1]["correct"] -= 2  # two chromosomes: allowed
    assert _failed(shipped, candidate) == []
    candidate["frames"]["per_spread"][0].update(exact=False, karyotype="46,XY")
    failed = [c for c in judge_classifier.judge(shipped, candidate) if not c.passes]
    assert [c.rule for c in failed] == ["(iii)"] and "a: 46,XX -> 46,XY (truth 46,XX)" in failed[0].note
    candidate = copy.deepcopy(shipped)
    candidate["pieces"]["results"][1]["pieces_y_over_0.3"] = 0.1
    assert _failed(shipped, candidate) == [("(iv)", "bioimlab")]


def test_missing_weights_are_named_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        judge_classifier.main([str(tmp_path / "nope.pth"), "--frames", "", "--composites"])
    assert "nope.pth: not found" in capsys.readouterr().err
