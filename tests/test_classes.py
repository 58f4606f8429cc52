import pytest

from karyopipe import classes as C


def test_vocabulary_has_24_classes_and_groups_cover_them():
    assert C.NUM_CLASSES == 24 and len(C.CLASS_NAMES) == 24
    covered = sorted(k for members in C.DENVER_GROUPS.values() for k in members)
    assert covered == list(range(1, 25))
    assert C.class_name(23) == "X" and C.class_name(24) == "Y"
    assert abs(sum(C.CHROMOSOMES[k].relative_length for k in C.AUTOSOMES) - 100) < 1.5


@pytest.mark.parametrize(
    "label,number",
    [("1", 1), (24, 24), ("X", 23), ("y", 24), ("clase7", 7), ("clase23", 23), ("A1", 1),
     ("B5", 5), ("C12", 12), ("D13", 13), ("G22", 22), ("chr7", 7), ("chrX", 23), ("23", 23)],
)
def test_parse_label_conventions(label, number):
    assert C.parse_label(label) == number


@pytest.mark.parametrize("label", ["clase25", "0", "25", "B7", "Z", "chr", ""])
def test_unknown_labels_raise(label):
    with pytest.raises(C.UnknownLabelError):
        C.parse_label(label)


def test_bioimlab_names():
    assert C.parse_bioimlab_name("10 7a") == C.BioImLabName("10", 7, "a")
    assert C.parse_bioimlab_name("10 23") == C.BioImLabName("10", 23, "")
    assert C.parse_bioimlab_name("10 24").number == 24
    assert C.bioimlab_cell_id("original_112c") == "112"
    assert C.bioimlab_cell_id("original_12") == "12"


def test_expected_copies():
    assert C.expected_copies("XY")[C.X] == 1 and C.expected_copies("XY")[C.Y] == 1
    assert sum(C.expected_copies("XX").values()) == 46
