"""One case from several cells (karyopipe.karyogram.case): the modal karyotype and ISCN's clone criteria."""
from __future__ import annotations

from karyopipe.karyogram.case import parse_karyotype, summarize_case


def test_parse_karyotype():
    assert parse_karyotype("47,XY,+21") == (47, "XY", ["+21"])
    assert parse_karyotype("45,X") == (45, "X", [])
    assert parse_karyotype("") is None and parse_karyotype("(no call)") is None


def test_a_gain_in_two_cells_is_a_clone_a_loss_needs_three():
    cells = [("a", "47,XX,+21"), ("b", "47,XX,+21"), ("c", "46,XX"), ("d", "45,XX,-7"), ("e", "45,XX,-7"),
             ("f", "46,XX"), ("g", "46,XX")]
    case = summarize_case(cells)
    assert case["modal_karyotype"] == "46,XX" and case["modal_cells"] == 3 and case["sex"] == "XX"
    assert [(c["change"], c["sources"]) for c in case["clones"]] == [("+21", ["a", "b"])]
    # Two cells missing the same 7 are not yet a clone: losses are the commonest artefact of a spread.
    assert [(c["change"], c["cells"]) for c in case["single_cell_changes"]] == [("-7", 2)]
    case = summarize_case(cells + [("h", "45,XX,-7")])
    assert [c["change"] for c in case["clones"]] == ["-7", "+21"]
    assert "ISCN" in case["statement"] and "-7 in 3 cells" in case["statement"]


def test_one_cell_of_the_other_sex_is_a_single_cell_change_not_the_case():
    case = summarize_case([("a", "46,XX"), ("b", "46,XX"), ("c", "46,XY"), ("d", "")])
    assert (case["cells"], case["called"], case["sex"]) == (4, 3, "XX")
    assert case["clones"] == [] and {c["change"] for c in case["single_cell_changes"]} == {"+Y", "-X"}
    assert case["discordant"] == [{"source": "c", "karyotype": "46,XY"}]
    assert "15-20 cells" in case["statement"]


def test_no_call_at_all():
    case = summarize_case([("a", ""), ("b", "")])
    assert case["called"] == 0 and case["modal_karyotype"] == "" and "No karyotype" in case["statement"]
