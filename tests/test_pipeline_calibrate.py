"""calibrate-junk: the logistic fit of junk on the detection score."""
from __future__ import annotations

import numpy as np
import pytest

from karyopipe.karyogram import junk_prior_from_scores
from karyopipe.pipeline.calibrate import fit_junk_calibration


def test_fit_recovers_a_known_calibration():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.7, 0.999, 20000)
    truth = junk_prior_from_scores(scores, intercept=1.2, slope=-1.2)
    junk = rng.random(len(scores)) < truth
    intercept, slope = fit_junk_calibration(scores, junk)
    assert intercept == pytest.approx(1.2, abs=0.25) and slope == pytest.approx(-1.2, abs=0.15)


def test_fit_needs_both_kinds_of_object():
    with pytest.raises(ValueError, match="both"):
        fit_junk_calibration([0.9, 0.95], [False, False])


def test_cli_needs_segmentation_weights(tmp_path, capsys):
    from karyopipe.cli import main

    assert main(["calibrate-junk", str(tmp_path / "frames.json"), "--seg-weights", str(tmp_path / "none.pth")]) == 2
    assert "none.pth" in capsys.readouterr().err


def test_a_new_calibration_sees_below_the_floor_of_an_earlier_one(tmp_path):
    from test_segmentation import _tiny_weights

    from karyopipe.pipeline.calibrate import calibration_pipeline
    from karyopipe.weights import update_weights

    path = update_weights(_tiny_weights(tmp_path), config={
        "junk_calibration": {"intercept": 0.0, "slope": -1.0, "score_thresh": 0.3}})
    pipe, thresh = calibration_pipeline(path, score_thresh=0.1)
    assert thresh == 0.1 and pipe.segmenter.settings.score_thresh == 0.1
    assert pipe.rescue_below is None and pipe.rescue_floor is None
    # Without a threshold given, the weights' own inference threshold.
    assert calibration_pipeline(path)[1] == pipe.segmenter.config["inference"]["score_thresh"]


class _TruthAndASpeck:
    """A stand-in pipeline: the frame's true chromosomes as sure detections, classified right, and one weak speck.

    The speck scores 0.45 and reads as a 21 as surely as the chromosomes read as theirs: only its detection score
    tells it from a third 21.
    """

    def __init__(self, sample):
        self.truth = [i for i in sample.instances if i.category == "chromosome"]

    def segment(self, gray):
        from karyopipe.data.model import Instance

        found = [Instance(mask=i.get_mask(gray.shape), score=0.99) for i in self.truth]
        speck = np.zeros(gray.shape, bool)
        speck[2:8, 2:16] = True  # in the corner, away from every chromosome
        assert not any((f.mask & speck).any() for f in found)
        return found + [Instance(mask=speck, score=0.45)]

    @staticmethod
    def analyze(gray, instances):
        from karyopipe.pipeline import KaryoPipeline

        return KaryoPipeline.analyze(gray, instances)

    def classify(self, geometries, scores):
        labels = [i.label for i in self.truth] + [21]
        log_probs = np.full((len(geometries), 24), np.log(0.02 / 23))
        log_probs[np.arange(len(labels)), np.array(labels) - 1] = np.log(0.98)
        return log_probs


def test_frame_objects_mark_what_matches_no_truth_and_exact_rates_score_the_priors():
    from pathlib import Path

    from karyopipe.data import read_dataset
    from karyopipe.pipeline.calibrate import exact_rates, frame_objects

    sample = read_dataset(Path(__file__).parents[1] / "examples" / "spread_46XY.json").samples[0]
    rows = frame_objects(_TruthAndASpeck(sample), [sample], progress=False)
    (row,) = rows
    assert row["karyotype"] == "46,XY" and row["n_true"] == 46
    assert row["matched"].tolist() == [True] * 46 + [False]
    assert row["scores"][-1] == pytest.approx(0.45) and row["log_probs"].shape == (47, 24)
    # A flat prior as rare as the default cannot tell the speck from a trisomy; its score can.
    rates = exact_rates(rows, calibration=(0.0, -1.0), flat=1e-3)
    assert rates["frames"] == 1
    assert rates["flat_measured"] == {"exact": 0, "gains_called": 1}
    assert rates["calibrated"] == {"exact": 1, "gains_called": 0}
