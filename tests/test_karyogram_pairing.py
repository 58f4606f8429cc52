"""Homolog pairing by banding profile (karyopipe.karyogram.pairing) and its use in the assignment."""
import numpy as np
import pytest

from karyopipe.classes import denver_group
from karyopipe.karyogram import assign_karyotype
from karyopipe.karyogram.pairing import banding_profiles, homolog_log_odds, refine_homologs, standardized_similarity

NORMAL_XX = np.r_[np.repeat(np.arange(1, 23), 2), 23, 23]


def _confident_log_probs(labels):
    lp = np.full((len(labels), 24), -8.0)
    lp[np.arange(len(labels)), np.asarray(labels) - 1] = -0.01
    return lp


def _homolog_odds(labels, same=3.0, other=-1.5):
    labels = np.asarray(labels)
    odds = np.where(labels[:, None] == labels[None, :], same, other)
    np.fill_diagonal(odds, 0.0)
    return odds


def test_profiles_are_unit_norm_and_centred_and_check_their_input():
    rng = np.random.default_rng(0)
    images = np.zeros((5, 64, 32), np.float32)
    images[:, :, 10:22] = rng.random((5, 64, 1)) + 0.1
    profiles = banding_profiles(images)
    assert profiles.shape == (5, 64)
    np.testing.assert_allclose(np.linalg.norm(profiles, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(profiles.mean(1), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(n, L, W\)"):
        banding_profiles(images[0])


def test_similarity_sees_a_homolog_turned_upside_down():
    rng = np.random.default_rng(1)
    bands = rng.random((4, 64))
    images = np.zeros((8, 64, 32), np.float32)
    for i in range(8):
        profile = bands[i // 2] + 0.05 * rng.random(64)
        images[i, :, 12:20] = (profile[::-1] if i == 1 else profile)[:, None] + 0.1
    s = standardized_similarity(banding_profiles(images))
    np.testing.assert_allclose(s, s.T)
    assert s[0, 1] == max(s[0, k] for k in range(1, 8))
    odds = homolog_log_odds(banding_profiles(images))
    assert np.all(np.diag(odds) == 0) and odds[0, 1] > 1.0 and odds[0, 2] < 0.0


def test_rendered_homologs_are_more_alike_than_their_group_mates():
    # Rendered chromosomes of one class share an ideogram; two renders of it should pair up.
    from karyopipe.classification.preprocess import geometry_images
    from karyopipe.geometry import analyze_chromosome
    from karyopipe.io import normalize_polarity
    from karyopipe.synth import render_chromosome

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(6, 13), 2)  # the C group: same size range, told apart by bands
    geoms = []
    for k in labels:
        syn = render_chromosome(int(k), rng, banding="g", length_px=60.0, width_px=9.0)
        gray, _ = normalize_polarity(syn.image, syn.polarity)
        geoms.append(analyze_chromosome(syn.mask, gray * syn.mask))
    odds = homolog_log_odds(banding_profiles(geometry_images(geoms)))
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    assert denver_group(6) == denver_group(12)
    assert odds[same & off].mean() > odds[~same].mean() + 1.0


def test_refine_swaps_two_confused_chromosomes_to_their_homologs():
    lp = _confident_log_probs(NORMAL_XX)
    # Objects 6 and 8 are a 4 and a 5 that the classifier mildly takes for each other.
    lp[6, 3], lp[6, 4], lp[8, 4], lp[8, 3] = -0.8, -0.6, -0.8, -0.6
    wrong = NORMAL_XX.copy()
    wrong[6], wrong[8] = 5, 4
    labels, gains = refine_homologs(-lp, wrong, _homolog_odds(NORMAL_XX))
    np.testing.assert_array_equal(labels, NORMAL_XX)
    assert set(gains) == {6, 8} and all(g > 0 for g in gains.values())


def test_refine_leaves_confident_labels_and_unassigned_objects_alone():
    lp = _confident_log_probs(NORMAL_XX)
    labels = NORMAL_XX.copy()
    labels[0] = 0
    # Pairing evidence that points the wrong way cannot beat an 8-nat classifier margin.
    odds = _homolog_odds(np.r_[NORMAL_XX[:6][::-1], NORMAL_XX[6:]])
    out, gains = refine_homologs(-lp, labels, odds)
    np.testing.assert_array_equal(out, labels)
    assert gains == {}
    out, gains = refine_homologs(-lp, labels, odds, weight=0.0)
    assert gains == {}


def test_assignment_with_pairing_keeps_the_karyotype_and_flags_moves():
    lp = np.log(np.full((46, 24), 1e-4))
    lp[np.arange(46), NORMAL_XX - 1] = np.log(0.99)
    # Objects 6 and 8 (a 4 and a 5) lean the wrong way: 0.55 against 0.44.
    lp[6, 3], lp[6, 4], lp[8, 4], lp[8, 3] = np.log(0.44), np.log(0.55), np.log(0.44), np.log(0.55)
    plain = assign_karyotype(lp)
    paired = assign_karyotype(lp, pair_log_odds=_homolog_odds(NORMAL_XX))
    assert plain.labels[6] == 5 and plain.labels[8] == 4
    np.testing.assert_array_equal(paired.labels, NORMAL_XX)
    assert paired.karyotype == plain.karyotype == "46,XX"
    assert "paired_by_banding" in paired.flags[6] and "paired_by_banding" not in paired.flags[7]
    assert 0.5 < paired.confidence[6] <= 1.0
    assert sorted(paired.pairs[4]) == [6, 7]
    with pytest.raises(ValueError, match="pair_log_odds"):
        assign_karyotype(lp, pair_log_odds=np.zeros((3, 3)))
