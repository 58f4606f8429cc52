"""Assignment, ISCN strings and statements on synthetic classifier outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from karyopipe.classes import CHROMOSOMES, X, Y
from karyopipe.karyogram import assign_karyotype, junk_prior_from_scores, karyotype_string, parse_karyotype
from karyopipe.karyogram.assign import JUNK_PRIOR, JUNK_PRIOR_BOUNDS
from karyopipe.karyogram.simulate import karyotype_labels, synthetic_cell


def _clean_cell(karyotype: str, rng, p_true: float = 0.97):
    """Confident one-hot-ish scores and exact relative lengths."""
    labels = karyotype_labels(parse_karyotype(karyotype))
    labels = labels[rng.permutation(len(labels))]
    log_probs = np.full((len(labels), 24), np.log((1 - p_true) / 23))
    log_probs[np.arange(len(labels)), labels - 1] = np.log(p_true)
    lengths = np.array([CHROMOSOMES[k].relative_length * 9.0 for k in labels])
    return labels, log_probs, lengths


@pytest.mark.parametrize("karyotype", ["46,XX", "46,XY", "47,XX,+21", "47,XY,+21", "47,XX,+18", "45,X",
                                       "47,XXY", "47,XYY", "69,XXY", "45,XX,-22"])
def test_clean_scores_give_exact_karyotype(karyotype):
    labels, log_probs, lengths = _clean_cell(karyotype, np.random.default_rng(0))
    call = assign_karyotype(log_probs, lengths)
    assert call.karyotype == karyotype
    np.testing.assert_array_equal(call.labels, labels)
    assert call.callable


def test_noisy_calibrated_scores_mostly_recover_karyotypes():
    # Calibrated scores at ~95 % single-chromosome accuracy: the joint assignment
    # must beat per-chromosome argmax and call nearly every cell right.
    rng = np.random.default_rng(1)
    hits, single, assigned = 0, [], []
    karyotypes = ["46,XX", "46,XY", "47,XY,+21", "45,X", "47,XXY", "69,XXY"]
    for karyotype in karyotypes:
        for _ in range(5):
            cell = synthetic_cell(parse_karyotype(karyotype), rng, noise=0.33)
            call = assign_karyotype(cell.log_probs, cell.lengths, cell.centromere_index)
            hits += call.karyotype == karyotype
            single.append(np.mean(cell.log_probs.argmax(1) + 1 == cell.labels))
            assigned.append(np.mean(call.labels == cell.labels))
    assert hits >= 26, hits  # of 30
    assert np.mean(assigned) > np.mean(single) + 0.02


def test_repeated_label_confusion_is_fixed_by_assignment():
    rng = np.random.default_rng(2)
    labels, log_probs, lengths = _clean_cell("46,XX", rng)
    # One chromosome 8 is scored as 9 by the classifier: argmax gives three 9s, one 8.
    i = int(np.flatnonzero(labels == 8)[0])
    log_probs[i] = np.log(np.full(24, 0.01 / 22))
    log_probs[i, 8] = np.log(0.6)  # class 9
    log_probs[i, 7] = np.log(0.39)  # class 8
    assert np.sum(log_probs.argmax(1) + 1 == 9) == 3
    call = assign_karyotype(log_probs, lengths)
    assert call.karyotype == "46,XX"
    assert call.labels[i] == 8
    assert "reassigned" in call.flags[i]
    assert call.abnormalities == []


def test_real_trisomy_is_not_forced_into_46():
    labels, log_probs, lengths = _clean_cell("47,XX,+21", np.random.default_rng(3))
    call = assign_karyotype(log_probs, lengths)
    assert call.karyotype == "47,XX,+21"
    (ab,) = call.abnormalities
    assert ab.description == "+21" and ab.kind == "gain" and ab.confidence > 0.99
    assert sum("extra_copy" in f for f in call.flags) == 1
    assert len(call.pairs[21]) == 3
    assert "Down syndrome" in call.statement


def test_pairs_are_ordered_longest_first_and_confidence_in_range():
    labels, log_probs, lengths = _clean_cell("46,XY", np.random.default_rng(4))
    lengths = lengths * np.random.default_rng(5).uniform(0.95, 1.05, len(lengths))
    call = assign_karyotype(log_probs, lengths)
    for k, members in call.pairs.items():
        assert all(call.labels[i] == k for i in members)
        assert list(lengths[members]) == sorted(lengths[members], reverse=True)
    assert call.sex == "XY" and len(call.pairs[X]) == 1 and len(call.pairs[Y]) == 1
    assert np.all((call.confidence > 0) & (call.confidence <= 1))


def test_low_confidence_objects_are_flagged_not_hidden():
    rng = np.random.default_rng(6)
    labels, log_probs, lengths = _clean_cell("46,XX", rng)
    i = int(np.flatnonzero(labels == 20)[0])
    log_probs[i] = np.log(np.full(24, 1 / 24))  # the classifier has no idea
    call = assign_karyotype(log_probs, lengths, polarity_confidence=np.where(np.arange(46) == i, 0.2, 0.9))
    assert call.labels[i] > 0
    assert "polarity_uncertain" in call.flags[i]
    assert call.karyotype == "46,XX"


def test_outsized_object_is_left_unassigned():
    labels, log_probs, lengths = _clean_cell("46,XY", np.random.default_rng(7))
    # A clump of two chromosomes, twice the length of chromosome 1, with vague scores.
    log_probs = np.vstack([log_probs, np.log(np.full((1, 24), 1 / 24))])
    lengths = np.append(lengths, 2.2 * CHROMOSOMES[1].relative_length * 9.0)
    call = assign_karyotype(log_probs, lengths)
    assert call.labels[-1] == 0 and "unassigned" in call.flags[-1]
    assert call.karyotype == "46,XY"
    assert "1 left unassigned" in call.statement


def test_too_few_and_too_many_objects_give_a_statement_not_a_call():
    labels, log_probs, lengths = _clean_cell("46,XX", np.random.default_rng(8))
    few = assign_karyotype(log_probs[:20], lengths[:20])
    assert few.karyotype == "" and not few.callable and "too few" in few.statement
    assert len(few.labels) == 20
    rng = np.random.default_rng(9)
    many = assign_karyotype(np.log(rng.dirichlet(np.ones(24), 120)), rng.uniform(10, 80, 120))
    assert many.karyotype == "" and "too many" in many.statement
    empty = assign_karyotype(np.zeros((0, 24)), np.zeros(0))
    assert empty.karyotype == "" and "too few" in empty.statement


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="log_probs must have shape"):
        assign_karyotype(np.zeros((46, 23)), np.ones(46))
    with pytest.raises(ValueError, match="lengths must have shape"):
        assign_karyotype(np.zeros((46, 24)), np.ones(45))
    with pytest.raises(ValueError, match="look like probabilities"):
        assign_karyotype(np.full((46, 24), 1 / 24), np.ones(46))


def test_objects_without_length_are_scored_and_flagged():
    labels, log_probs, lengths = _clean_cell("46,XX", np.random.default_rng(12))
    lengths[3], lengths[7] = np.nan, 0.0
    call = assign_karyotype(log_probs, lengths)
    assert call.karyotype == "46,XX"
    assert "no_length" in call.flags[3] and "no_length" in call.flags[7]
    np.testing.assert_array_equal(call.labels, labels)


@pytest.mark.parametrize("text", ["46,XX", "46,XY", "47,XY,+21", "45,X", "47,XXY", "47,XX,+18", "69,XXY",
                                  "48,XY,+13,+21", "45,XX,-22", "70,XXY,+21", "47,XYY", "44,X,-21"])
def test_iscn_round_trip(text):
    assert karyotype_string(parse_karyotype(text)) == text


def test_iscn_ordering_and_errors():
    counts = {k: 2 for k in range(1, 23)} | {X: 1, Y: 1}
    counts[21], counts[13], counts[7] = 3, 3, 1
    assert karyotype_string(counts) == "47,XY,-7,+13,+21"
    assert karyotype_string({k: 3 for k in range(1, 23)} | {X: 2, Y: 1}) == "69,XXY"
    assert parse_karyotype("47,XY,+X") == parse_karyotype("47,XXY")
    with pytest.raises(ValueError, match="disagrees"):
        parse_karyotype("46,XX,+21")
    with pytest.raises(ValueError, match="not an ISCN"):
        parse_karyotype("XX")
    with pytest.raises(ValueError, match="1..24"):
        karyotype_string({25: 1})


def test_call_to_dict_is_json_ready():
    import json

    labels, log_probs, lengths = _clean_cell("47,XXY", np.random.default_rng(10))
    out = assign_karyotype(log_probs, lengths).to_dict()
    text = json.dumps(out)
    assert '"karyotype": "47,XXY"' in text and out["abnormalities"][0]["description"] == "XXY"


def test_bench_synthetic_scorer_reports_metrics(tmp_path):
    from karyopipe.karyogram.bench import main, run_bench

    result = run_bench(("46,XX", "47,XY,+21"), n=3, seed=0, scorer="synthetic", noise=0.3, progress=False)
    assert result["scorer"] == "synthetic" and "SYNTHETIC" in result["scorer_note"]
    assert result["cells"] == 6
    assert set(result["per_karyotype"]) == {"46,XX", "47,XY,+21"}
    for key in ("karyotype_exact_rate", "normal_called_abnormal_rate", "accuracy_single", "accuracy_assigned"):
        assert 0.0 <= result[key] <= 1.0
    out = tmp_path / "bench.json"
    assert main(["--n", "2", "--karyotypes", "46,XY", "--json", str(out), "--quiet"]) == 0
    assert out.is_file() and '"karyotype_exact_rate"' in out.read_text()
    with pytest.raises(ValueError, match="not an ISCN"):
        main(["--n", "2", "--karyotypes", "XY", "--quiet"])


def test_bench_falls_back_to_synthetic_scorer_without_weights(tmp_path, monkeypatch, capsys):
    from karyopipe.karyogram.bench import main

    monkeypatch.setenv("KARYOPIPE_WEIGHTS", str(tmp_path))
    out = tmp_path / "bench.json"
    assert main(["--n", "2", "--karyotypes", "45,X", "--json", str(out), "--quiet"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().err
    assert json.loads(out.read_text())["scorer"] == "synthetic"


def test_bench_classifier_scorer_without_weights_says_so(tmp_path):
    from karyopipe.karyogram.bench import run_bench

    with pytest.raises((FileNotFoundError, RuntimeError), match="weights|needs"):
        run_bench(("46,XX",), n=1, scorer="classifier", weights=tmp_path / "none.pth", progress=False)


def test_lengths_are_optional():
    labels, log_probs, _ = _clean_cell("47,XY,+21", np.random.default_rng(11))
    call = assign_karyotype(log_probs)
    assert call.karyotype == "47,XY,+21"
    np.testing.assert_array_equal(call.classes, labels)


def test_bench_real_crops_with_a_tiny_classifier(shared_data, tmp_path):
    # An untrained classifier: checks the real-data path (reading, geometry, truth
    # karyotype from the crop labels), not accuracy.
    torch = pytest.importorskip("torch")
    from karyopipe.classification.classifier import Classifier
    from karyopipe.classification.model import build_hybrid_resnet
    from karyopipe.karyogram.bench import run_real

    torch.manual_seed(0)
    config = {"num_features": 0, "arch": "resnet18", "width": 4, "use_image": True, "size": [64, 32],
              "preprocess": "geometry"}
    weights = Classifier(build_hybrid_resnet(**config), config).save(tmp_path / "tiny.pth", card={"data": "none"})
    result = run_real(shared_data / "bioimlab" / "crops", weights, split="test", limit=1, progress=False)
    assert result["cells"] == 1 and result["scorer"] == "classifier-real"
    (row,) = result["per_cell"]
    assert row["truth"] in ("46,XX", "46,XY")
    assert 0.0 <= row["assigned"] <= 1.0


def test_junk_prior_from_scores_falls_with_the_score():
    prior = junk_prior_from_scores([0.75, 0.9, 0.99, np.nan], intercept=-2.0, slope=-1.0)
    assert prior[0] > prior[1] > prior[2] >= JUNK_PRIOR_BOUNDS[0] and prior[3] == JUNK_PRIOR
    assert junk_prior_from_scores([0.01], intercept=5.0, slope=-1.0)[0] == JUNK_PRIOR_BOUNDS[1]


def test_per_object_junk_prior_decides_what_an_extra_object_is():
    labels, log_probs, lengths = _clean_cell("47,XX,+21", np.random.default_rng(3), p_true=0.9)
    third = int(np.flatnonzero(labels == 21)[-1])
    junk = np.full(len(labels), 1e-4)
    assert assign_karyotype(log_probs, lengths, junk_prior=junk).karyotype == "47,XX,+21"
    # The segmenter doubts one of the three 21s (say, a low detection score): it is left out.
    junk[third] = 0.9
    call = assign_karyotype(log_probs, lengths, junk_prior=junk)
    assert call.karyotype == "46,XX" and call.labels[third] == 0 and "unassigned" in call.flags[third]
    # One value for all objects is the same as the same value per object.
    same = assign_karyotype(log_probs, lengths, junk_prior=np.full(len(labels), 0.02))
    assert same.karyotype == assign_karyotype(log_probs, lengths, junk_prior=0.02).karyotype
    with pytest.raises(ValueError, match="junk_prior"):
        assign_karyotype(log_probs, lengths, junk_prior=np.full(3, 0.1))


def test_an_extra_object_left_as_junk_is_named_as_a_possible_gain():
    labels, log_probs, lengths = _clean_cell("47,XY,+13", np.random.default_rng(5), p_true=0.9)
    third = int(np.flatnonzero(labels == 13)[-1])
    junk = np.full(len(labels), 1e-4)
    junk[third] = 0.3  # a middling detection score
    call = assign_karyotype(log_probs, lengths, junk_prior=junk)
    assert call.karyotype == "46,XY" and call.labels[third] == 0
    (possible,) = call.possible
    assert possible.description == "+13" and possible.kind == "possible_gain" and 0.05 <= possible.confidence < 0.5
    assert "Possible gain of chromosome 13 (Patau syndrome)" in call.statement
    assert call.abnormalities == [] and "possible" in call.to_dict()
    # Without the extra object there is nothing to flag.
    clean = assign_karyotype(log_probs[np.arange(len(labels)) != third], lengths[np.arange(len(labels)) != third])
    assert clean.possible == []


def test_an_extra_sex_chromosome_left_as_junk_is_named_as_a_possible_complement():
    labels, log_probs, lengths = _clean_cell("47,XXY", np.random.default_rng(6), p_true=0.9)
    extra = int(np.flatnonzero(labels == X)[-1])
    junk = np.full(len(labels), 1e-4)
    junk[extra] = 0.5
    call = assign_karyotype(log_probs, lengths, junk_prior=junk)
    assert call.karyotype == "46,XY" and call.labels[extra] == 0
    assert [(a.description, a.kind) for a in call.possible] == [("XXY", "possible_sex")]
    assert "Possible sex complement XXY (Klinefelter syndrome)" in call.statement


def test_sex_call_carries_its_probability_and_an_uncertain_one_names_the_alternative():
    labels, log_probs, lengths = _clean_cell("46,XY", np.random.default_rng(7))
    clear = assign_karyotype(log_probs, lengths)
    assert clear.sex == "XY" and clear.sex_confidence > 0.99
    assert "Sex call uncertain" not in clear.statement
    # The only Y-like object reads as much X as Y and Y is weighed like any class:
    # male and female explain the cell equally well.
    y_object = int(np.flatnonzero(labels == Y)[0])
    log_probs[y_object] = np.log(np.full(24, 1e-4))
    log_probs[y_object, [X - 1, Y - 1]] = np.log(0.5)
    call = assign_karyotype(log_probs, y_weight=1.0)
    assert call.sex in ("XX", "XY") and 0.3 < call.sex_confidence < 0.7
    other = "XX" if call.sex == "XY" else "XY"
    assert f"the likeliest alternative is {other}" in call.statement
    assert "sex_confidence" in call.to_dict()


def test_weak_y_evidence_does_not_make_a_female_cell_male():
    # A segmented 46,XX spread: one 11 was missed, one X reads X only (its 11 score
    # is 0.001), a 21 reads 20 % Y and a fragment reads 21 with a middling score.
    # Weighing Y like any class, the cheapest story is male: the fragment is the
    # second 21, the weak 21 the Y, the other X the missing 11.
    labels, log_probs, lengths = _clean_cell("46,XX", np.random.default_rng(8))
    keep = np.arange(len(labels)) != np.flatnonzero(labels == 11)[0]
    labels, log_probs, lengths = labels[keep], log_probs[keep], lengths[keep]
    x, g = int(np.flatnonzero(labels == X)[0]), int(np.flatnonzero(labels == 21)[0])
    log_probs[x] = np.log(np.full(24, 1e-4))
    log_probs[x, [X - 1, 11 - 1]] = np.log([0.999, 0.001])
    log_probs[g] = np.log(np.full(24, 1e-4))
    log_probs[g, [21 - 1, Y - 1]] = np.log([0.8, 0.2])
    fragment = np.full((1, 24), np.log(1e-3))
    fragment[0, 21 - 1] = np.log(0.9)
    log_probs, lengths = np.vstack([log_probs, fragment]), np.append(lengths, lengths[g] * 0.9)
    junk = np.full(len(lengths), 1e-3)
    junk[-1] = 0.3
    assert assign_karyotype(log_probs, lengths, junk_prior=junk, y_weight=1.0).sex == "XY"
    call = assign_karyotype(log_probs, lengths, junk_prior=junk)
    assert call.sex == "XX" and call.labels[g] == 21
    # A clear Y (0.97) is not affected by the weight.
    _, male_log_probs, male_lengths = _clean_cell("46,XY", np.random.default_rng(8))
    assert assign_karyotype(male_log_probs, male_lengths).sex_confidence > 0.99
    with pytest.raises(ValueError, match="y_weight"):
        assign_karyotype(log_probs, y_weight=0.0)


def test_a_polyploid_call_on_uncertain_chromosomes_says_it_may_be_fragments():
    labels, log_probs, lengths = _clean_cell("69,XXY", np.random.default_rng(2))
    sure = assign_karyotype(log_probs, lengths)
    assert sure.karyotype == "69,XXY" and "count the chromosomes by eye" not in sure.statement
    # Each object torn between its class and the next: the 3n fit still wins on counts, but nearly all are uncertain.
    def torn(labels):
        lp = np.full((len(labels), 24), np.log(0.02 / 22))
        lp[np.arange(len(labels)), labels - 1] = lp[np.arange(len(labels)), labels % 22] = np.log(0.49)
        return lp

    call = assign_karyotype(torn(labels))
    assert call.ploidy == 3 and "Low confidence" in call.statement
    assert "count the chromosomes by eye" in call.statement
    diploid = assign_karyotype(torn(_clean_cell("46,XX", np.random.default_rng(2))[0]))
    assert diploid.ploidy == 2 and "count the chromosomes by eye" not in diploid.statement
