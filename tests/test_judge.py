"""tools/judge.py: the standing rules for classifier and segmenter candidates, checked from the evaluations' reports."""
import copy
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("judge", ROOT / "tools" / "judge.py")
judge = importlib.util.module_from_spec(_spec)
sys.modules["judge"] = judge  # dataclasses look their module up there
_spec.loader.exec_module(judge)

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
    return [(c.rule, c.figure.split(" ")[0]) for c in judge.judge_classifier(shipped, candidate) if not c.passes]


def test_a_candidate_equal_to_the_shipped_model_passes_every_check():
    checks = judge.judge_classifier(_reports(), _reports())
    assert [c.rule for c in checks] == ["(i)", "(i)", "(ii)", "(ii)", "(iii)", "(iv)", "(iv)"]
    assert all(c.passes for c in checks)
    assert "| (iii) | frames: detected and right / exact | 0.9000 / 1 of 2 |" in judge.table(checks)


def test_each_classifier_rule_fails_on_its_own_loss_and_allows_its_tolerance():
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
    failed = [c for c in judge.judge_classifier(shipped, candidate) if not c.passes]
    assert [c.rule for c in failed] == ["(iii)"] and "a: 46,XX -> 46,XY (truth 46,XX)" in failed[0].note
    candidate = copy.deepcopy(shipped)
    candidate["pieces"]["results"][1]["pieces_y_over_0.3"] = 0.1
    assert _failed(shipped, candidate) == [("(iv)", "bioimlab")]


def test_missing_weights_are_named_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        judge.main(["classifier", str(tmp_path / "nope.pth"), "--frames", "", "--composites"])
    assert "nope.pth: not found" in capsys.readouterr().err


def test_a_segmenter_must_lose_nothing_and_gain_something():
    spreads = {"images": 25, "segm_AP": 0.7561, "segm_AP50": 0.9789, "count_within_1": 0.76}
    frames = _reports()["frames"]
    shipped = {"spreads": spreads, "frames": frames}
    same = judge.judge_segmenter(shipped, copy.deepcopy(shipped))
    assert [c.rule for c in same] == ["(i)", "(ii)"] and [c.passes for c in same] == [False, True]
    assert "none higher" in same[0].note  # equal on every figure is no reason to ship
    better = copy.deepcopy(shipped)
    better["spreads"]["count_within_1"] = 0.8
    assert all(c.passes for c in judge.judge_segmenter(shipped, better))
    better["spreads"]["segm_AP"] = 0.7553  # ... unless another figure falls
    assert "lower: mask AP" in judge.judge_segmenter(shipped, better)[0].note
    worse_frames = copy.deepcopy(shipped)
    worse_frames["spreads"]["segm_AP50"] = 0.98
    worse_frames["frames"]["per_spread"][1]["correct"] -= 1  # end to end, not one chromosome may be lost
    assert [c.passes for c in judge.judge_segmenter(shipped, worse_frames)] == [True, False]
