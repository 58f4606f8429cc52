"""The learned outline model (karyopipe.segmentation.outline)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from karyopipe.segmentation.infer import Detection, InferenceSettings, Segmenter, refine_mask
from karyopipe.segmentation.outline import (
    FEATURES, OutlineModel, fit_outline_model, outline_features, outline_mask, training_pixels,
)


def blurred_bars(n: int, seed: int):
    """Sharp bars of random width and contrast, blurred by a random optic, under a blob-like mask-head output."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:40, :60]
    prob = np.clip(1.2 - np.hypot((yy - 20) / 9.0, (xx - 30) / 26.0), 0, 1).astype(np.float32)
    bars = []
    for _ in range(n):
        width = int(rng.integers(6, 11))
        top = 20 - width // 2
        truth = np.zeros((40, 60), bool)
        truth[top:top + width, 8:52] = True
        region = np.where(truth, 0.1 + rng.uniform(0.4, 0.9), 0.1).astype(np.float32)
        region = cv2.GaussianBlur(region, (0, 0), rng.uniform(1.0, 1.8))
        region += rng.normal(0, 0.01, region.shape).astype(np.float32)
        bars.append((prob, region, truth))
    return bars


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _fit(bars):
    xs, ys = zip(*(training_pixels([Detection(0, 0, p, 0.9, "chromosome")], r, [t]) for p, r, t in bars))
    return fit_outline_model(np.concatenate(xs), np.concatenate(ys))


def test_features_have_the_documented_layout():
    prob, region, truth = blurred_bars(1, 0)[0]
    features, rule = outline_features(prob, region)
    assert features.shape == prob.shape + (len(FEATURES),) and features.dtype == np.float32
    assert np.array_equal(rule, refine_mask(prob, region))
    level = features[..., FEATURES.index("intensity")]
    assert level[20, 30] > 1.0 > level[2, 2]  # bar above its Otsu level, background near 0


def test_fitted_outline_beats_the_rule_on_unseen_objects():
    model, loss = _fit(blurred_bars(8, 0))
    assert loss < 0.2
    unseen = blurred_bars(8, 1)
    rule = np.mean([_iou(refine_mask(p, r), t) for p, r, t in unseen])
    learned = np.mean([_iou(outline_mask(p, r, model), t) for p, r, t in unseen])
    assert learned > 0.9 and learned > rule + 0.03
    # never outside the mask head's support
    p, r, _ = unseen[0]
    assert not (outline_mask(p, r, model, support=0.35) & (p < 0.35)).any()


def test_outline_model_round_trips_through_a_dict_and_checks_its_features():
    model, _ = _fit(blurred_bars(3, 0))
    again = OutlineModel.from_dict(model.to_dict())
    x = np.random.default_rng(0).normal(size=(5, len(FEATURES)))
    assert np.allclose(again.logits(x), model.logits(x), atol=1e-5)
    record = model.to_dict() | {"features": ["something", "else"]}
    with pytest.raises(ValueError, match="features"):
        OutlineModel.from_dict(record)
    with pytest.raises(ValueError, match="both sides"):
        fit_outline_model(np.zeros((50, len(FEATURES))), np.ones(50))


def test_segmenter_uses_the_outline_model_its_weights_carry(monkeypatch):
    from karyopipe.segmentation import outline as outline_module

    from test_segmentation import ComponentDetector

    model, _ = _fit(blurred_bars(3, 0))
    calls = []
    real = outline_module.outline_mask

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(outline_module, "outline_mask", spy)
    image = np.full((64, 64), 0.05, np.float32)
    image[20:28, 10:50] = 0.9
    image = cv2.GaussianBlur(image, (0, 0), 1.0)
    settings = InferenceSettings(rescale=False)
    with_model = Segmenter(ComponentDetector(), settings, config={"outline_model": model.to_dict()})
    assert len(with_model(image)) == 1 and calls
    calls.clear()
    Segmenter(ComponentDetector(), InferenceSettings(rescale=False, learned_outline=False),
              config={"outline_model": model.to_dict()})(image)
    Segmenter(ComponentDetector(), settings)(image)
    assert not calls


def test_fit_outline_cli_writes_the_model_into_the_weights(tmp_path, monkeypatch):
    from karyopipe.segmentation import infer, outline
    from karyopipe.weights import load_weights

    from test_segmentation import ComponentDetector, _tiny_weights, tube_image, write_labelme

    data = tmp_path / "spreads"
    data.mkdir()
    for k in range(6):
        image, polys = tube_image(k)
        write_labelme(data, f"original_{k + 1}", image, polys)
    path = _tiny_weights(tmp_path)
    # An untrained network finds nothing; a stand-in finds each bright tube.
    monkeypatch.setattr(infer.Segmenter, "from_pretrained", classmethod(
        lambda cls, *a, **k: cls(ComponentDetector(), InferenceSettings(rescale=False, learned_outline=False))))
    assert outline.main([str(data), "--weights", str(path), "--write", "--no-progress"]) == 0
    _, config, card = load_weights(path)
    assert config["outline_model"]["features"] == list(FEATURES)
    assert "training spreads" in card["outline_model"]
    assert OutlineModel.from_dict(config["outline_model"]).w1.shape == (16, len(FEATURES))
