"""Tests of karyopipe.classification.fragments and ``train-cls --fragment-copies``."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from karyopipe.classification.fragments import CellFragmenter, fragment_crop, outlier_exposure_loss, rows_cut
from tests.test_classification import toy_cell
from tests.test_classification_shift import _toy_folder


def _bar() -> np.ndarray:
    crop = np.zeros((64, 20), np.float32)
    crop[4:60, 6:14] = 0.8
    return crop


def test_fragment_crop_keeps_the_share_and_the_end_asked_for():
    crop = _bar()
    top, bottom = fragment_crop(crop, 0.4), fragment_crop(crop, 0.4, keep_start=False)
    for piece in (top, bottom):
        assert (piece > 0.4).sum() == pytest.approx(0.4 * (crop > 0.4).sum(), rel=0.1)
        assert piece.shape == crop.shape and piece.dtype == crop.dtype
    assert top[10, 10] == pytest.approx(0.8) and top[55, 10] == 0.0  # painted as the background
    assert bottom[10, 10] == 0.0 and bottom[55, 10] == pytest.approx(0.8)
    # a lying chromosome is cut across its length too
    lying = fragment_crop(crop.T.copy(), 0.5)
    assert lying[10, 10] == pytest.approx(0.8) and lying[10, 55] == 0.0
    with pytest.raises(ValueError, match="fraction"):
        fragment_crop(crop, 1.0)


def test_cell_fragmenter_is_reproducible_cuts_its_share_and_says_which():
    crop = _bar()
    a, b = CellFragmenter(seed=3), CellFragmenter(seed=3)
    outs = [a(crop, "src/cell", i) for i in range(400)]
    for i in range(400):
        np.testing.assert_array_equal(b(crop, "src/cell", i), outs[i])
    assert a.cut == b.cut
    assert 0.08 < len(a.cut) / 400 < 0.17
    for i, out in enumerate(outs):
        assert (("src/cell", i) in a.cut) == (not np.array_equal(out, crop))
    with pytest.raises(ValueError, match="share"):
        CellFragmenter(share=0.0)


def test_rows_cut_counts_crops_within_each_cell():
    cells = np.array(["s/a", "s/a", "s/a", "s/b", "s/b"])
    assert rows_cut(cells, {("s/a", 2), ("s/b", 0)}).tolist() == [2, 3]
    assert rows_cut(cells, set()).tolist() == []


def test_outlier_exposure_loss_is_the_plain_loss_without_outliers_and_flattens_outliers():
    torch.manual_seed(0)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    logits, target = torch.randn(6, 24), torch.tensor([0, 3, 5, 23, 1, 2])
    assert float(outlier_exposure_loss(logits, target, criterion)) == pytest.approx(float(criterion(logits, target)))
    # an outlier's loss is least, with zero gradient, at the uniform distribution
    flat = torch.zeros(1, 24, requires_grad=True)
    loss = outlier_exposure_loss(flat, torch.tensor([-1]), criterion, weight=0.5)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.5 * np.log(24)) and float(flat.grad.abs().max()) < 1e-7
    peaked = torch.zeros(1, 24)
    peaked[0, 23] = 5.0
    assert float(outlier_exposure_loss(peaked, torch.tensor([-1]), criterion, weight=0.5)) > float(loss.detach())


def _train_tiny(with_pieces: bool):
    from karyopipe.classification.model import build_hybrid_resnet
    from karyopipe.classification.preprocess import prepare_cell

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    crops, labels = toy_cell(rng)
    pieces = [(fragment_crop(g, 0.4, keep_start=bool(k % 2)), None) for k, (g, _) in enumerate(crops)]
    images, feats = prepare_cell(crops + pieces, size=(48, 24))
    x, f = torch.from_numpy(images)[:, None], torch.from_numpy(feats)
    y = torch.from_numpy(np.concatenate([labels - 1, np.full(len(pieces), -1)]))
    rows = slice(None) if with_pieces else slice(0, len(crops))
    net = build_hybrid_resnet(num_features=6, width=8, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    criterion = torch.nn.CrossEntropyLoss()
    for _ in range(60):
        net.train()
        loss = outlier_exposure_loss(net(x[rows], f[rows]), y[rows], criterion, weight=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        p = torch.softmax(net(x, f), 1).numpy()
    whole, piece = p[: len(crops)], p[len(crops):]
    return float((whole.argmax(1) == labels - 1).mean()), whole.max(1).mean(), piece.max(1).mean()


def test_pieces_as_outliers_leave_whole_crops_right_and_pieces_unclaimed():
    accuracy, whole_conf, piece_conf = _train_tiny(with_pieces=True)
    assert accuracy == 1.0 and whole_conf > 0.8
    assert piece_conf < 0.5
    # trained without them, the same model claims the pieces
    _, _, piece_conf_plain = _train_tiny(with_pieces=False)
    assert piece_conf_plain > piece_conf + 0.2


def test_train_cls_adds_pieces_of_training_cells_only_as_outliers(tmp_path):
    from karyopipe.classification.dataset import build_arrays, split_arrays
    from karyopipe.classification.train import _add_fragment_copies

    _toy_folder(tmp_path / "toy", cells=8)
    arrays = build_arrays(tmp_path / "toy", size=(32, 16), cache_dir=None, progress=False)
    train = split_arrays(arrays, 0, 0.2, 0.2)["train"]
    args = SimpleNamespace(data=[str(tmp_path / "toy")], size=[32, 16], preprocess="pca", seed=0, fragment_copies=2)
    more = _add_fragment_copies(train, args, progress=False)
    n = len(train.labels)
    np.testing.assert_array_equal(more.labels[:n], train.labels)
    assert len(more.labels) > n and (more.labels[n:] == 0).all()
    assert set(more.cells[n:].tolist()) <= set(train.unique_cells)
    # a piece is shorter than the crop it was cut from: its relative length (feature 0) falls
    assert more.features[n:, 0].mean() < train.features[:, 0].mean()


def test_train_cls_refuses_meaningless_fragment_options(tmp_path):
    from karyopipe.classification import train

    for bad in (["--fragment-copies", "-1"], ["--outlier-weight", "-0.5"], ["--outlier-share", "1.5"]):
        with pytest.raises(SystemExit):
            train.main(["--data", str(tmp_path), "--out", str(tmp_path / "run")] + bad)


def test_pieces_can_be_given_a_share_of_the_draws():
    from karyopipe.classification.train import sampling_weights

    labels = np.array([1, 1, 1, 2, 0, 0])
    plain = sampling_weights(labels)
    assert plain[labels == 0].sum() == pytest.approx(plain[labels == 1].sum())  # one class among the others
    weights = sampling_weights(labels, 0.25)
    assert weights[labels == 0].sum() / weights.sum() == pytest.approx(0.25)
    # the labelled classes stay balanced among themselves
    assert weights[labels == 1].sum() == pytest.approx(weights[labels == 2].sum())
    np.testing.assert_allclose(sampling_weights(np.array([1, 2, 2]), 0.3), sampling_weights(np.array([1, 2, 2])))


def test_eval_fragments_scores_pieces_against_whole_crops_and_names_skipped_files(tmp_path, capsys):
    import json

    from karyopipe.classification.classifier import Classifier
    from karyopipe.classification.fragments import main
    from karyopipe.classification.model import build_hybrid_resnet

    _toy_folder(tmp_path / "toy", cells=8)
    (tmp_path / "toy" / "cell0" / "3" / "broken.png").write_bytes(b"\x89PNG\r\n not an image")
    net = build_hybrid_resnet(num_features=6, width=8).eval()
    Classifier(net, {"num_features": 6, "width": 8, "size": [32, 16], "preprocess": "pca"}).save(tmp_path / "c.pth")
    out = tmp_path / "frag.json"
    assert main([str(tmp_path / "toy"), "--split", "all", "--weights", str(tmp_path / "c.pth"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())["results"][0]
    assert r["cells"] == 8 and r["whole"] + r["pieces"] == 48 and r["pieces"] > 0
    assert 0.0 <= r["pieces_top_y"] <= 1.0 and 0.0 < r["pieces_mean_max_p"] <= 1.0
    assert len(r["problems"]) == 1 and "broken.png" in r["problems"][0]
    printed = capsys.readouterr().out
    assert "pieces: Y first" in printed and "skipped" in printed and "broken.png" in printed
    assert json.loads(out.read_text())["precision"] == "float32"
    low = tmp_path / "frag_bf16.json"
    assert main([str(tmp_path / "toy"), "--split", "all", "--weights", str(tmp_path / "c.pth"), "--json", str(low),
                 "--precision", "bfloat16"]) == 0
    assert json.loads(low.read_text())["precision"] == "bfloat16"
