"""Tests of karyopipe.classification: model shapes, overfitting, weights roundtrip, CLI, real data."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from karyopipe.classification.assign import assign_cell
from karyopipe.classification.classifier import Classifier
from karyopipe.classification.dataset import CellArrays, CropDataset, build_arrays, find_crops, split_cells
from karyopipe.classification.model import HybridResNet, build_hybrid_resnet
from karyopipe.classification.preprocess import fit_canvas, prepare_cell, upright


@pytest.fixture(autouse=True)
def _one_thread():
    # These models are tiny: on a shared 2-core machine extra threads only add sync overhead.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def banded_crop(k: int, rng, angle=0.0) -> np.ndarray:
    """A toy chromosome of class k: length grows with k, band pattern depends on k."""
    from skimage.transform import rotate

    length, width = 14 + 3 * k, 7
    profile = 0.45 + 0.4 * (np.sin(np.arange(length) * (0.25 + 0.09 * k)) > 0)
    body = np.repeat(profile[:, None], width, axis=1).astype(np.float32)
    body += rng.normal(0, 0.03, body.shape).astype(np.float32)
    crop = np.zeros((length + 8, width + 8), np.float32)
    crop[4:-4, 4:-4] = np.clip(body, 0.2, 1)
    if angle:
        crop = rotate(crop, angle, resize=True, order=1).astype(np.float32)
    return crop


def toy_cell(rng, classes=range(1, 9)):
    return [(banded_crop(k, rng, angle=float(rng.uniform(-20, 20))), None) for k in classes], np.array(list(classes))


def test_forward_shapes_all_modes():
    x, f = torch.rand(3, 1, 64, 32), torch.rand(3, 6)
    for kwargs in ({}, {"num_features": 0}, {"use_image": False}, {"arch": "resnet34", "norm": "group"},
                   {"arch": "resnet50", "stem": "imagenet"}):
        net = build_hybrid_resnet(**{"num_features": 6, "width": 8, **kwargs}).eval()
        assert net(x, f).shape == (3, 24)
    with pytest.raises(ValueError):
        HybridResNet(num_features=0, use_image=False)


def test_preprocess_uprights_and_relative_features():
    rng = np.random.default_rng(0)
    crop = banded_crop(5, rng, angle=35.0)
    g, m = upright(crop, crop > 0.1)
    assert g.shape[0] > 2 * g.shape[1]  # major axis now vertical
    assert fit_canvas(g, (64, 32)).shape == (64, 32)
    crops, labels = toy_cell(rng)
    images, feats = prepare_cell(crops, size=(48, 24))
    assert images.shape == (8, 48, 24) and feats.shape == (8, 6)
    assert np.argmax(feats[:, 0]) == 7 and np.argmin(feats[:, 0]) == 0  # rel_length follows class length
    assert feats[:, 4].min() == 0.0 and feats[:, 4].max() == 1.0


def test_tiny_hybrid_overfits_eight_crops():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    crops, labels = toy_cell(rng)
    images, feats = prepare_cell(crops, size=(48, 24))
    x = torch.from_numpy(images)[:, None]
    f = torch.from_numpy(feats)
    y = torch.from_numpy(labels - 1)
    net = build_hybrid_resnet(num_features=6, width=8, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        net.train()
        loss = torch.nn.functional.cross_entropy(net(x, f), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    with torch.no_grad():
        acc = float((net(x, f).argmax(1) == y).float().mean())
    assert losses[-1] < 0.2 * losses[0]
    assert acc == 1.0


def test_classifier_roundtrip_identical(tmp_path):
    rng = np.random.default_rng(1)
    crops, _ = toy_cell(rng)
    net = build_hybrid_resnet(num_features=6, width=8).eval()
    with torch.no_grad():  # fp16 storage: make the reference exactly representable
        for p in net.state_dict().values():
            if p.is_floating_point():
                p.copy_(p.half().float())
    clf = Classifier(net, {"num_features": 6, "width": 8, "size": [48, 24], "preprocess": "pca"})
    before = clf.predict_cell(crops)
    path = clf.save(tmp_path / "cls.pth", {"data": "toy"})
    assert path.with_suffix(".md").is_file()
    loaded = Classifier.from_pretrained(path)
    after = loaded.predict_cell(crops)
    assert before.shape == (8, 24)
    np.testing.assert_allclose(np.exp(before).sum(1), 1.0, atol=1e-5)
    # the loaded classifier predicts through its CPU-optimised copy: equal up to float rounding
    np.testing.assert_allclose(before, after, atol=1e-5)
    loaded._inference_model = None
    np.testing.assert_array_equal(before, loaded.predict_cell(crops))


def _net_with_running_statistics(**kwargs):
    """A small HybridResNet whose BatchNorm layers hold non-trivial statistics, in eval mode."""
    torch.manual_seed(0)
    net = build_hybrid_resnet(**kwargs)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_inference_copy_matches_the_model_and_leaves_it_alone():
    from karyopipe.classification.model import inference_copy

    net = _net_with_running_statistics(num_features=6, width=8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = inference_copy(net)
    if not torch.backends.mkldnn.is_available():
        assert fast is net
        pytest.skip("this torch build has no oneDNN: the plain model is used")
    assert fast is not net and type(fast.backbone) is not type(net.backbone)
    images, features = torch.rand(5, 1, 48, 24), torch.randn(5, 6)
    with torch.no_grad():
        torch.testing.assert_close(fast(images, features), net(images, features), rtol=0, atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_inference_copy_is_not_made_where_it_does_not_apply():
    from karyopipe.classification.model import inference_copy

    training = build_hybrid_resnet(num_features=6, width=8).train()
    assert inference_copy(training) is training  # BatchNorm would be folded with statistics still moving
    features_only = build_hybrid_resnet(num_features=6, width=8, use_image=False).eval()
    assert inference_copy(features_only) is features_only


TOY_CONFIG = {"num_features": 6, "width": 8, "size": [48, 24], "preprocess": "pca"}


def _saved_toy_classifier(tmp_path, seed):
    """A toy cell's crops and the path of a small classifier saved as weights are shipped."""
    crops, _ = toy_cell(np.random.default_rng(seed))
    net = _net_with_running_statistics(num_features=6, width=8)
    return crops, Classifier(net, TOY_CONFIG).save(tmp_path / "cls.pth")


def test_a_loaded_classifier_pickles_and_predicts_the_same_after(tmp_path):
    import pickle

    crops, path = _saved_toy_classifier(tmp_path, seed=4)
    loaded = Classifier.from_pretrained(path)
    copied = pickle.loads(pickle.dumps(loaded))  # how a pipeline reaches worker processes
    assert (copied._inference_model is None) == (loaded._inference_model is None)
    np.testing.assert_allclose(copied.predict_cell(crops), loaded.predict_cell(crops), atol=1e-6)


def test_predictions_follow_weights_changed_after_loading(tmp_path):
    crops, path = _saved_toy_classifier(tmp_path, seed=3)
    clf = Classifier.from_pretrained(path)
    first = clf.predict_cell(crops)
    with torch.no_grad():  # an in-place change, as an optimiser step makes
        clf.model.head[-1].bias.add_(torch.arange(24, dtype=torch.float32))
    changed = clf.predict_cell(crops)
    np.testing.assert_allclose(changed, Classifier(copy.deepcopy(clf.model), TOY_CONFIG).predict_cell(crops), atol=1e-5)
    clf.model.load_state_dict(Classifier.from_pretrained(path).model.state_dict())
    restored = clf.predict_cell(crops)
    plain = Classifier.from_pretrained(path)
    plain._inference_model = None
    np.testing.assert_allclose(restored, first, atol=1e-5)
    np.testing.assert_allclose(restored, plain.predict_cell(crops), atol=1e-5)
    assert np.abs(changed - first).max() > 0.1


def test_bfloat16_predictions_stay_close_to_float32_and_leave_the_weights_float32(tmp_path):
    from karyopipe.classification.classifier import ClassifierEnsemble

    crops, path = _saved_toy_classifier(tmp_path, seed=5)
    exact = Classifier.from_pretrained(path)
    low = Classifier.from_pretrained(path, precision="bfloat16")
    assert (exact.precision, low.precision) == ("float32", "bfloat16")
    a, b = exact.predict_cell(crops), low.predict_cell(crops)
    assert b.dtype == np.float32 and np.isfinite(b).all()
    np.testing.assert_allclose(np.exp(b), np.exp(a), atol=0.05)  # bfloat16 keeps about 3 significant digits
    assert all(p.dtype == torch.float32 for p in low.model.parameters())
    assert not np.array_equal(a, b)  # it did run in bfloat16
    ensemble = ClassifierEnsemble([exact, Classifier.from_pretrained(path)]).set_precision("bfloat16")
    assert ensemble.precision == "bfloat16" and all(m.precision == "bfloat16" for m in ensemble.members)
    with pytest.raises(ValueError, match="precision"):
        exact.set_precision("float16")


def test_assign_cell_respects_copy_numbers():
    lp = np.full((5, 24), -10.0)
    lp[:3, 0] = -0.1  # three chromosomes all look like chromosome 1
    lp[2, 1] = -0.5   # ... the third one a little like 2
    lp[3, 22], lp[4, 23] = -0.1, -0.1
    out = assign_cell(lp)
    assert sorted(out[:3].tolist()) == [1, 1, 2] and out[2] == 2
    assert out[3] == 23 and out[4] == 24
    # More chromosomes than slots still get a class each.
    assert len(assign_cell(np.log(np.full((50, 24), 1 / 24)))) == 50


def test_split_cells_deterministic_and_disjoint():
    cells = [str(i) for i in range(40)]
    a, b = split_cells(cells), split_cells(list(reversed(cells)))
    assert a == b
    assert not set(a["train"]) & set(a["test"]) and not set(a["val"]) & set(a["test"])
    assert len(a["train"]) + len(a["val"]) + len(a["test"]) == 40


def test_augmentation_keeps_shapes():
    arrays = CellArrays(np.random.rand(4, 48, 24).astype(np.float32), np.random.rand(4, 6).astype(np.float32),
                        np.array([1, 2, 3, 24]), np.array(["a/1"] * 4), ["x"] * 4)
    ds = CropDataset(arrays, augment=True, blur_p=1.0, seed=0)
    for i in range(4):
        image, feats, target = ds[i]
        assert image.shape == (1, 48, 24) and feats.shape == (6,) and torch.isfinite(image).all()
    assert ds[3][2] == 23


def test_stretch_changes_the_length_to_width_ratio_on_the_same_canvas():
    image = torch.zeros(1, 64, 32)
    image[0, 4:60, 10:22] = 1.0  # 56 x 12 px

    def extent(img):
        ys, xs = np.nonzero(img[0].numpy() > 0.5)
        return ys.max() - ys.min() + 1, xs.max() - xs.min() + 1

    for factor in (1.25, 0.8):
        out = CropDataset._stretch(image, factor)
        assert out.shape == image.shape
        length, width = extent(out)
        assert length / width == pytest.approx(factor * 56 / 12, rel=0.12)
        # the chromosome only ever shrinks along one axis, so nothing is cut off the canvas
        assert length <= 56 and width <= 12
    assert torch.equal(CropDataset._stretch(image, 1.0), image)


def test_stretch_augmentation_is_off_by_default_and_keeps_shapes_when_on():
    arrays = CellArrays(np.random.rand(2, 48, 24).astype(np.float32), np.random.rand(2, 6).astype(np.float32),
                        np.array([1, 2]), np.array(["a/1"] * 2), ["x"] * 2)
    assert CropDataset(arrays, augment=True).stretch_max == 1.0
    ds = CropDataset(arrays, augment=True, seed=0, stretch_max=1.3)
    assert all(ds[i][0].shape == (1, 48, 24) for i in range(2))


def test_mirror_augmentation_flips_left_to_right_and_keeps_the_features():
    image = torch.zeros(1, 48, 24)
    image[0, 4:44, 2:8] = 1.0  # a chromosome against the left edge
    arrays = CellArrays(image.numpy().copy(), np.ones((1, 6), np.float32), np.array([3]), np.array(["a/1"]), ["x"])
    assert CropDataset(arrays, augment=True).flip_p == 0.0
    ds = CropDataset(arrays, augment=True, seed=0, flip_p=1.0, blur_p=0.0, gamma_max=1.0)
    out, feats = ds._augment(image.clone(), torch.ones(6))
    # mass moves from the left half to the right half; the length is unchanged
    assert out[0, :, 12:].sum() > 5 * out[0, :, :12].sum()
    ys = np.nonzero(out[0].numpy().max(axis=1) > 0.5)[0]
    assert 30 <= ys.max() - ys.min() + 1 <= 48
    assert torch.allclose(feats, torch.ones(6), atol=0.1)


def test_random_erasing_sets_one_rectangle_to_background():
    image = torch.ones(1, 64, 32)
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = CropDataset._erase(image.clone(), rng)
        erased = out[0] == 0
        share = float(erased.float().mean())
        assert 0.01 <= share <= 0.21
        ys, xs = np.nonzero(erased.numpy())
        # one filled rectangle
        assert erased[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
    arrays = CellArrays(np.ones((2, 64, 32), np.float32), np.ones((2, 6), np.float32), np.array([1, 2]),
                        np.array(["a/1"] * 2), ["x"] * 2)
    assert CropDataset(arrays, augment=True).erase_p == 0.0
    calls = []
    ds = CropDataset(arrays, augment=True, seed=0, erase_p=1.0)
    ds._erase = lambda img, _rng: calls.append(1) or img
    for i in range(2):
        ds[i]
    assert len(calls) == 2


def test_train_cls_rejects_a_probability_outside_0_to_1(capsys):
    from karyopipe.classification import train

    with pytest.raises(SystemExit):
        train.main(["--data", "x", "--hflip", "1.5"])
    assert "--hflip 1.5" in capsys.readouterr().err


def _write_toy_folder(root: Path, cells=6):
    from PIL import Image

    rng = np.random.default_rng(2)
    for c in range(cells):
        for k in range(1, 9):
            d = root / f"cell{c}" / str(k)
            d.mkdir(parents=True, exist_ok=True)
            crop = banded_crop(k, rng, angle=float(rng.uniform(-15, 15)))
            Image.fromarray((np.clip(crop, 0, 1) * 255).astype(np.uint8)).save(d / f"c{c}_{k}.png")
    (root / "cell0" / "25").mkdir()
    (root / "cell0" / "25" / "stray.png").write_bytes(b"")  # unknown class: reported, not dropped silently


def test_train_and_eval_cli_on_toy_folder(tmp_path, capsys):
    from karyopipe.classification import evaluate, train

    data = tmp_path / "toy"
    _write_toy_folder(data)
    records, problems = find_crops(data)
    assert len(records) == 48 and any("stray.png" in p for p in problems)
    run = tmp_path / "run"
    argv = ["--data", str(data), "--width", "8", "--size", "32", "16", "--epochs", "2", "--batch-size", "16",
            "--out", str(run), "--no-progress", "--val-fraction", "0.2", "--test-fraction", "0.2"]
    assert train.main(argv) == 0
    assert (run / "last.pt").is_file() and (run / "curves.png").is_file() and (run / "weights.pth").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    # Resume continues from epoch 3 instead of starting over.
    assert train.main(argv[:argv.index("--epochs") + 1] + ["3"] + argv[argv.index("--epochs") + 2:]
                      + ["--resume", str(run / "last.pt")]) == 0
    assert [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    # Fine-tuning starts where the weights left off, with a fresh history.
    tuned = tmp_path / "tuned"
    argv_init = argv[:argv.index("--out")] + ["--out", str(tuned), "--init", str(run / "weights.pth")]
    assert train.main(argv_init[:argv_init.index("--epochs") + 1] + ["1"] + argv_init[argv_init.index("--epochs") + 2:]) == 0
    first = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()][0]
    tuned_first = [json.loads(l) for l in (tuned / "metrics.jsonl").read_text().splitlines()]
    assert len(tuned_first) == 1 and tuned_first[0]["train_loss"] < first["train_loss"]
    # ... but never on cells the weights held out: another split is refused, naming the right one.
    argv_leak = argv_init[:argv_init.index("--epochs") + 1] + ["1"] + argv_init[argv_init.index("--epochs") + 2:]
    with pytest.raises(ValueError, match="held out .* use the split the weights were trained with"):
        train.main(argv_leak + ["--split-seed", "3", "--out", str(tmp_path / "leak")])
    out = tmp_path / "eval" / "metrics.json"
    assert evaluate.main([str(data), "--weights", str(run / "weights.pth"), "--json", str(out), "--pairing"]) == 0
    report = json.loads(out.read_text())
    for key in ("accuracy", "accuracy_assigned", "n", "cells", "per_class", "crops_per_second",
                "accuracy_ci95", "accuracy_assigned_ci95", "accuracy_assigned_unpaired"):
        assert key in report
    assert report["assigner"].endswith("+ pairing")
    assert report["n"] == 48 and report["cells"] == 6
    assert any("stray.png" in p for p in report["problems"])
    assert (out.parent / "metrics_confusion.png").is_file()
    assert "unpaired" in capsys.readouterr().out
    assert report["precision"] == "float32"
    assert evaluate.main([str(data), "--weights", str(run / "weights.pth"), "--split", "test", "--precision",
                          "bfloat16", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["precision"] == "bfloat16"
    printed = capsys.readouterr().out
    assert "n=8 cells=1" in printed and "unpaired" not in printed  # 0.2 of 6 cells rounds to 1 held-out test cell


def test_train_stops_before_the_call_limit_and_resumes_to_the_end(tmp_path, capsys):
    from karyopipe.classification import train

    data = tmp_path / "toy"
    _write_toy_folder(data, cells=5)
    run = tmp_path / "run"
    argv = ["--data", str(data), "--width", "8", "--size", "32", "16", "--epochs", "3", "--batch-size", "16",
            "--out", str(run), "--no-progress", "--val-fraction", "0.2", "--test-fraction", "0.2"]
    # A limit any epoch overruns: the call ends after its first epoch, resumable, with nothing finalised.
    assert train.main(argv + ["--stop-after", "1e-6", "--source-share", "toy=0.5"]) == 0
    assert "stopped after epoch 1 of 3" in capsys.readouterr().out
    assert (run / "last.pt").is_file() and not (run / "weights.pth").exists()
    assert train.main(argv + ["--stop-after", "1e-6", "--resume", str(run / "last.pt")]) == 0
    assert "stopped after epoch 2 of 3" in capsys.readouterr().out
    # The last epoch is never cut short: the call that reaches it calibrates and writes the weights.
    assert train.main(argv + ["--stop-after", "1e-6", "--resume", str(run / "last.pt")]) == 0
    assert "stopped after" not in capsys.readouterr().out and (run / "weights.pth").is_file()
    assert [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    with pytest.raises(SystemExit):
        train.main(argv + ["--stop-after", "0"])


def _toy_train_argv(data, out, epochs, *extra) -> list[str]:
    """``train-cls`` arguments for a tiny run on :func:`_write_toy_folder`'s crops."""
    return ["--data", str(data), "--width", "8", "--size", "32", "16", "--epochs", str(epochs), "--batch-size", "16",
            "--lr", "3e-3", "--out", str(out), "--no-progress", "--val-fraction", "0.2", "--test-fraction", "0.2",
            "--patience", "20", *extra]


def _train_toy(tmp_path, *extra, epochs: int = 8):
    """Train on a toy crop folder; returns the run folder and its per-epoch metrics."""
    from karyopipe.classification import train

    data, run = tmp_path / "toy", tmp_path / "run"
    _write_toy_folder(data)
    assert train.main(_toy_train_argv(data, run, epochs, *extra)) == 0
    return run, [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_bfloat16_training_steps_learn_and_save_float32_weights(tmp_path):
    from karyopipe.classification.classifier import Classifier
    from karyopipe.weights import load_weights

    run, history = _train_toy(tmp_path, "--precision", "bfloat16")
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    state, _, card = load_weights(run / "weights.pth")
    assert "bfloat16 autocast steps" in card["training"]
    assert all(t.dtype == torch.float32 for t in state.values() if t.is_floating_point())
    clf = Classifier.from_pretrained(run / "weights.pth")
    assert np.isfinite(clf.predict_arrays(np.zeros((2, 32, 16), np.float32), np.ones((2, 6), np.float32))).all()


def test_weight_average_learns_ships_the_average_and_resumes(tmp_path):
    from karyopipe.classification import train
    from karyopipe.weights import load_weights

    data = tmp_path / "toy"
    _write_toy_folder(data)

    def argv(out, epochs, *extra):
        return _toy_train_argv(data, out, epochs, *extra)

    run = tmp_path / "run"
    assert train.main(argv(run, 4, "--ema-half-life", "0.5")) == 0
    last = torch.load(run / "last.pt", weights_only=False)
    average = {k.removeprefix("module."): v for k, v in last["average"].items() if k.startswith("module.")}
    # The average trails the trained weights: it is its own set of numbers, and the one kept as best.
    assert any(not torch.equal(average[k], v) for k, v in last["model"].items() if v.is_floating_point())
    best = torch.load(run / "best.pt", weights_only=False)
    if best["epoch"] == last["epoch"]:
        assert all(torch.equal(best["model"][k], average[k]) for k in best["model"])
    assert train.main(argv(run, 8, "--ema-half-life", "0.5", "--resume", str(run / "last.pt"))) == 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < 0.9 * history[0]["val_loss"]  # val scores the average, and it learns too
    _, _, card = load_weights(run / "weights.pth")
    assert "EMA, half-life 0.5 epochs" in card["training"]
    # A run saved without an average cannot silently resume as one.
    plain = tmp_path / "plain"
    assert train.main(argv(plain, 1)) == 0
    with pytest.raises(ValueError, match="saved without --ema-half-life"):
        train.main(argv(plain, 8, "--ema-half-life", "1", "--resume", str(plain / "last.pt")))


def test_mixup_blends_rows_with_their_partners_and_is_off_by_default():
    from karyopipe.classification.train import build_parser, mixup_batch

    images = torch.arange(4, dtype=torch.float32).reshape(4, 1, 1, 1).expand(4, 1, 4, 2).clone()
    features = torch.arange(4, dtype=torch.float32)[:, None].repeat(1, 3)
    mixed, mixed_feats, order, lam = mixup_batch(images, features, 0.4, np.random.default_rng(0))
    assert 0.0 <= lam <= 1.0 and sorted(order.tolist()) == [0, 1, 2, 3]
    expected = lam * torch.arange(4.0) + (1 - lam) * torch.arange(4.0)[order]
    assert torch.allclose(mixed[:, 0, 0, 0], expected) and torch.allclose(mixed_feats[:, 0], expected)
    assert mixed.shape == images.shape
    assert build_parser().parse_args(["--data", "x"]).mixup == 0.0


def test_mixup_training_still_learns_and_says_so_in_the_card(tmp_path):
    from karyopipe.weights import load_weights

    run, history = _train_toy(tmp_path, "--mixup", "0.2")
    assert history[-1]["val_loss"] < 0.9 * history[0]["val_loss"]
    assert "mixup Beta(0.2, 0.2)" in load_weights(run / "weights.pth")[2]["training"]


@pytest.mark.parametrize("option", ["--shift-copies", "--fragment-copies", "--outlier-weight", "--mixup", "--sam",
                                    "--ema-half-life", "--workers"])
def test_train_cls_refuses_a_negative_count_or_weight_by_name(option, capsys):
    from karyopipe.classification import train

    with pytest.raises(SystemExit):
        train.main(["--data", "x", option, "-1"])
    err = capsys.readouterr().err
    assert f"{option} -1" in err and "must be 0 or more" in err


def test_sharpness_ascent_moves_rho_along_the_gradient_and_descent_undoes_it():
    from karyopipe.classification.train import sharpness_ascent, sharpness_descent

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    net(torch.randn(5, 3)).square().sum().backward()
    before = [p.detach().clone() for p in net.parameters()]
    offsets = sharpness_ascent(net.parameters(), 0.05)
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(net.parameters(), before)])
    grads = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert torch.linalg.vector_norm(moved) == pytest.approx(0.05, rel=1e-4)
    assert torch.nn.functional.cosine_similarity(moved, grads, dim=0) == pytest.approx(1.0, abs=1e-5)
    sharpness_descent(offsets)
    assert all(torch.allclose(p, b, atol=1e-7) for p, b in zip(net.parameters(), before))
    assert sharpness_ascent([torch.nn.Parameter(torch.ones(2))], 0.05) == []  # no gradient: nothing moves


def test_frozen_batchnorm_statistics_normalise_by_the_batch_without_updating():
    from karyopipe.classification.train import frozen_batchnorm_statistics

    bn = torch.nn.BatchNorm1d(3).train()
    batch = torch.randn(8, 3) * 4 + 2
    with frozen_batchnorm_statistics(bn):
        out = bn(batch)
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.running_var, torch.ones(3))
    assert torch.allclose(out.mean(0), torch.zeros(3), atol=1e-5)  # still the batch's statistics
    assert bn.momentum == 0.1
    bn(batch)
    assert not torch.equal(bn.running_mean, torch.zeros(3))


def test_sam_training_still_learns_and_says_so_in_the_card(tmp_path):
    from karyopipe.classification.train import build_parser
    from karyopipe.weights import load_weights

    assert build_parser().parse_args(["--data", "x"]).sam == 0.0
    run, history = _train_toy(tmp_path, "--sam", "0.05")
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < 0.9 * history[0]["val_loss"]
    assert "SAM, rho 0.05" in load_weights(run / "weights.pth")[2]["training"]


def test_resumed_call_reads_the_training_set_its_first_call_prepared(tmp_path, capsys):
    from karyopipe.classification import train
    from karyopipe.classification.dataset import load_arrays

    data = tmp_path / "toy"
    _write_toy_folder(data, cells=5)
    run = tmp_path / "run"
    argv = ["--data", str(data), "--width", "8", "--size", "32", "16", "--epochs", "3", "--batch-size", "16",
            "--out", str(run), "--no-progress", "--val-fraction", "0.2", "--test-fraction", "0.2",
            "--stop-after", "1e-6", "--shift-copies", "1"]
    assert train.main(argv) == 0
    kept = run / train.PREPARED_TRAINING_SET
    first = load_arrays(kept)
    assert len(first.labels) == 2 * 3 * 8  # three training cells' crops and a lab-shifted copy of each
    capsys.readouterr()
    assert train.main(argv + ["--resume", str(run / "last.pt")]) == 0
    assert "prepared by this run's first call" in capsys.readouterr().out
    # other settings make another training set: it is prepared again, not read
    assert train.main(argv[:-2] + ["--resume", str(run / "last.pt")]) == 0
    assert "prepared under other settings" in capsys.readouterr().out


def test_cli_reports_missing_data_on_one_line(tmp_path, capsys):
    from karyopipe.cli import main

    assert main(["eval-cls", str(tmp_path / "nope"), "--weights", str(tmp_path / "w.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("nope" in err[0] or "w.pth" in err[0])


def test_real_bioimlab_cell(shared_data):
    from karyopipe.classes import parse_bioimlab_name
    from karyopipe.io import load_canonical

    cell = shared_data / "bioimlab" / "crops" / "10"
    if not cell.is_dir():
        pytest.skip("bioimlab crops of cell 10 absent")
    files = sorted(cell.glob("*.bmp"))
    crops = [(load_canonical(p)[0], None) for p in files]
    labels = np.array([parse_bioimlab_name(p.stem).number for p in files])
    images, feats = prepare_cell(crops)
    assert images.shape == (len(files), 64, 32) and np.isfinite(feats).all()
    # Relative length separates the largest from the smallest autosomes.
    assert feats[labels == 1, 0].min() > feats[np.isin(labels, [19, 20, 21, 22]), 0].max()
    weights = Path(__file__).resolve().parents[1] / "weights" / "karyotype_classifier_best.pth"
    if weights.is_file():
        lp = Classifier.from_pretrained(weights).predict_cell(crops)
        assert np.mean(lp.argmax(1) + 1 == labels) > 0.7
        assert np.mean(assign_cell(lp) == labels) > 0.7


def test_predict_cell_accepts_geometries_in_both_modes():
    from karyopipe.classification.preprocess import mask_from_crop
    from karyopipe.geometry import analyze_chromosome

    rng = np.random.default_rng(3)
    crops, _ = toy_cell(rng)
    geoms = [analyze_chromosome(mask_from_crop(g), g) for g, _ in crops]
    for mode, nf in (("pca", 6), ("geometry", None)):
        if nf is None:
            nf = prepare_cell(crops, size=(48, 24), mode="geometry")[1].shape[1]
        net = build_hybrid_resnet(num_features=nf, width=8).eval()
        clf = Classifier(net, {"num_features": nf, "width": 8, "size": [48, 24], "preprocess": mode})
        lp = clf.predict_cell(geoms)
        assert lp.shape == (8, 24) and np.isfinite(lp).all()


def test_temperature_scaling_recovers_underconfidence_and_keeps_argmax(tmp_path):
    from karyopipe.classification.calibrate import expected_calibration_error, fit_temperature, nll

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (3000, 24))
    logits[np.arange(3000), rng.integers(0, 24, 3000)] += 5.0
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = np.array([rng.choice(24, p=p) for p in probs])  # calibrated at T = 1 by construction
    soft = logits / 3.0  # what label smoothing does: same ranking, compressed scale
    t = fit_temperature(soft, labels)
    assert 0.25 < t < 0.45
    assert nll(soft, labels, t) < nll(soft, labels)
    from scipy.special import log_softmax
    assert expected_calibration_error(log_softmax(soft / t, 1), labels) < expected_calibration_error(
        log_softmax(soft, 1), labels)

    # The stored temperature sharpens the classifier's output without changing its argmax.
    crops, _ = toy_cell(rng)
    net = build_hybrid_resnet(num_features=6, width=8).eval()
    clf = Classifier(net, {"num_features": 6, "width": 8, "size": [48, 24], "preprocess": "pca"})
    raw = clf.predict_cell(crops)
    clf.config["temperature"] = 0.5
    path = clf.save(tmp_path / "cls.pth", {"data": "toy"})
    sharp = Classifier.from_pretrained(path).predict_cell(crops)
    np.testing.assert_array_equal(raw.argmax(1), sharp.argmax(1))
    np.testing.assert_allclose(sharp, log_softmax(2 * raw, 1), atol=2e-2)


def _tiny_classifier(mode, num_features, seed):
    torch.manual_seed(seed)
    net = build_hybrid_resnet(num_features=num_features, width=8).eval()
    with torch.no_grad():  # fp16 storage: make the reference exactly representable
        for p in net.state_dict().values():
            if p.is_floating_point():
                p.copy_(p.half().float())
    return Classifier(net, {"num_features": num_features, "width": 8, "size": [48, 24], "preprocess": mode,
                            "split_seed": 0, "val_fraction": 0.2, "test_fraction": 0.2})


def test_ensemble_joins_saves_and_scores_like_its_members(tmp_path):
    from karyopipe.classification import ensemble, evaluate
    from karyopipe.classification.classifier import ClassifierEnsemble

    crops, _ = toy_cell(np.random.default_rng(4))
    n_geometry = prepare_cell(crops, size=(48, 24), mode="geometry")[1].shape[1]
    members = [_tiny_classifier("pca", 6, 0), _tiny_classifier("geometry", n_geometry, 1)]
    paths = [m.save(tmp_path / f"m{i}.pth", {"data": "toy"}) for i, m in enumerate(members)]
    joined = tmp_path / "ens.pth"
    assert ensemble.main([str(p) for p in paths] + ["--out", str(joined)]) == 0
    loaded = Classifier.from_pretrained(joined)
    assert isinstance(loaded, ClassifierEnsemble) and [m.preprocess for m in loaded.members] == ["pca", "geometry"]
    lp = loaded.predict_cell(crops)
    np.testing.assert_allclose(np.exp(lp).sum(1), 1.0, atol=1e-5)
    expected = ClassifierEnsemble.combine([m.predict_cell(crops) for m in members])
    np.testing.assert_allclose(lp, expected, atol=1e-6)
    # eval-cls preprocesses the data once per member and scores the average
    data = tmp_path / "toy"
    _write_toy_folder(data)
    out = tmp_path / "eval.json"
    assert evaluate.main([str(data), "--weights", str(joined), "--json", str(out)]) == 0
    arrays = [evaluate.load_eval_arrays(data, m) for m in members]
    manual = ClassifierEnsemble.combine([m.predict_arrays(a.images, a.features) for m, a in zip(members, arrays)])
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(float(np.mean(manual.argmax(1) + 1 == arrays[0].labels)))
    # fine-tuning from an ensemble file starts from the member that preprocesses the same way
    from karyopipe.classification import train

    argv = ["--data", str(data), "--width", "8", "--size", "48", "24", "--epochs", "1", "--batch-size", "16",
            "--out", str(tmp_path / "ft"), "--no-progress", "--val-fraction", "0.2", "--test-fraction", "0.2"]
    assert train.main(argv + ["--init", str(joined)]) == 0
    with pytest.raises(ValueError, match="no 'geometry' member"):
        single = tmp_path / "pca_only.pth"
        ClassifierEnsemble([members[0], members[0]]).save(single)
        train.main(argv + ["--init", str(single), "--preprocess", "geometry"])


def test_join_refuses_members_with_different_splits(tmp_path):
    from karyopipe.classification.ensemble import join_classifiers

    a, b = _tiny_classifier("pca", 6, 0), _tiny_classifier("pca", 6, 1)
    b.config["split_seed"] = 3
    paths = [a.save(tmp_path / "a.pth", {}), b.save(tmp_path / "b.pth", {})]
    with pytest.raises(ValueError, match="split_seed"):
        join_classifiers(paths)


def test_join_takes_a_member_of_an_ensemble_by_index(tmp_path, capsys):
    from karyopipe.classification import ensemble
    from karyopipe.classification.classifier import ClassifierEnsemble

    crops, _ = toy_cell(np.random.default_rng(5))
    a, b, c = (_tiny_classifier("pca", 6, seed) for seed in (0, 1, 2))
    pair = ClassifierEnsemble([a, b]).save(tmp_path / "pair.pth")
    single = c.save(tmp_path / "c.pth", {})
    swapped = tmp_path / "swapped.pth"
    # member 0 of the pair kept, member 1 replaced
    assert ensemble.main([f"{pair}@0", str(single), "--out", str(swapped)]) == 0
    expected = ClassifierEnsemble.combine([a.predict_cell(crops), c.predict_cell(crops)])
    np.testing.assert_allclose(Classifier.from_pretrained(swapped).predict_cell(crops), expected, atol=1e-6)
    # a whole ensemble, a member that is not there, '@' on a single model: one line each, no traceback
    for bad, reason in ([str(pair), str(single)], "already an ensemble"), ([f"{pair}@2", str(single)], "has 2 members"), \
            ([f"{single}@0", str(pair) + "@1"], "holds one model"), ([f"{tmp_path}/none.pth@0", str(single)], "no such file"):
        assert ensemble.main(bad + ["--out", str(tmp_path / "x.pth")]) == 2
        assert reason in capsys.readouterr().err


def test_cell_features_can_be_measured_against_reference_objects():
    from karyopipe.classification.preprocess import fallback_cell_features

    measures = [{"length_px": v, "area_px": 5.0 * v, "intensity": 10.0 * v, "width_px": 5.0} for v in (10, 20, 30, 2)]
    alone = fallback_cell_features(measures)
    sure = np.array([True, True, True, False])  # the last object is a speck of debris
    against = fallback_cell_features(measures, sure)
    # Relative length: the speck pulled the mean down to 15.5; measured by the sure objects it is 20.
    assert alone[0, 0] == pytest.approx(10 / 15.5) and against[0, 0] == pytest.approx(10 / 20)
    # Length rank among the sure objects, the speck below them all.
    np.testing.assert_allclose(against[:, 4], [0.0, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(fallback_cell_features(measures, np.ones(4, bool)), alone)
    with pytest.raises(ValueError, match="one flag per object"):
        fallback_cell_features(measures, [True, False])


def test_predict_cell_with_a_reference_matches_predicting_the_reference_alone():
    rng = np.random.default_rng(3)
    crops, _ = toy_cell(rng)
    clf = Classifier(build_hybrid_resnet(num_features=6, width=8),
                     {"size": [48, 24], "preprocess": "pca", "mode": "hybrid"})
    reference = np.arange(len(crops)) < 6
    both = clf.predict_cell(crops, reference=reference)
    alone = clf.predict_cell(crops[:6])
    np.testing.assert_allclose(both[:6], alone, atol=1e-5)


def test_preprocessing_cache_is_written_whole_and_read_back(tmp_path):
    data = tmp_path / "toy"
    _write_toy_folder(data, cells=2)
    cache = tmp_path / "cache"
    first = build_arrays(data, (32, 16), "pca", cache_dir=cache, progress=False)
    # runs side by side share the folder: only the finished file is ever there under its name
    written = [p.name for p in cache.iterdir()]
    assert len(written) == 1 and written[0].startswith("toy-") and "partial" not in written[0]
    again = build_arrays(data, (32, 16), "pca", cache_dir=cache, progress=False)
    assert np.array_equal(first.images, again.images) and again.paths == first.paths


def test_a_source_can_be_given_a_share_of_the_draws():
    from karyopipe.classification.train import build_parser, sampling_weights

    # source q: 2 chromosomes of 10; the pieces (label 0) keep their own share
    labels = np.array([1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 0, 0])
    sources = np.array(["q", "q"] + ["g"] * 6 + ["s"] * 2 + ["g", "g"])
    weights = sampling_weights(labels, 0.2, sources, {"q": 0.3})
    chromosomes = weights[labels > 0].sum()
    assert weights[sources == "q"].sum() / chromosomes == pytest.approx(0.3)
    assert weights[labels == 0].sum() / weights.sum() == pytest.approx(0.2)
    # the unnamed sources keep their proportions between them, and classes stay balanced in each
    g, s = (weights[(sources == name) & (labels > 0)].sum() for name in ("g", "s"))
    assert g / s == pytest.approx(3.0)
    for name in ("q", "g", "s"):
        assert weights[(sources == name) & (labels == 1)].sum() == pytest.approx(weights[(sources == name) & (labels == 2)].sum())
    np.testing.assert_allclose(sampling_weights(labels, 0.2, sources, {}), sampling_weights(labels, 0.2))
    with pytest.raises(ValueError, match="no training chromosomes from it"):
        sampling_weights(labels, None, sources, {"x": 0.3})
    with pytest.raises(ValueError, match="nothing for the other sources"):
        sampling_weights(labels, None, sources, {"q": 0.6, "g": 0.4})
    assert build_parser().parse_args(["--data", "d", "--source-share", "bioimlab=0.3"]).source_share == [("bioimlab", 0.3)]
    for bad in ("bioimlab", "bioimlab=1.5", "=0.3", "bioimlab=x"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--data", "d", "--source-share", bad])


def test_loader_workers_draw_their_own_augmentation_and_repeat_with_the_seed(tmp_path):
    from karyopipe.classification import train

    data = tmp_path / "toy"
    _write_toy_folder(data, cells=5)

    def losses(name, *extra):
        argv = ["--data", str(data), "--width", "8", "--size", "32", "16", "--epochs", "2", "--batch-size", "8",
                "--out", str(tmp_path / name), "--no-progress", "--val-fraction", "0.2", "--test-fraction", "0.2"]
        assert train.main(argv + list(extra)) == 0
        return [json.loads(line)["train_loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    first = losses("a", "--workers", "2")
    assert losses("b", "--workers", "2") == pytest.approx(first, rel=1e-5)  # the same seed, the same run
    # each process augments on its own stream: the dataset's copy in a worker is reseeded from the loader
    from torch.utils.data import DataLoader

    arrays = CellArrays(np.random.rand(16, 32, 16).astype(np.float32), np.random.rand(16, 6).astype(np.float32),
                        np.ones(16, int), np.array(["a/1"] * 16), ["x"] * 16)
    ds = CropDataset(arrays, augment=True, seed=0)
    ds.arrays.images[:] = ds.arrays.images[0]  # every row the same image: only the augmentation differs
    loader = DataLoader(ds, batch_size=4, num_workers=2, worker_init_fn=train._seed_worker,
                        generator=torch.Generator().manual_seed(0))
    batches = [b[0] for b in loader]
    assert not torch.allclose(batches[0], batches[1])  # batches 0 and 1 come from different workers
    with pytest.raises(SystemExit):
        losses("c", "--workers", "-1")
