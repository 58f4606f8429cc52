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
