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
