"""Tests of karyopipe.classification.shift and ``eval-cls --shift``."""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch

from karyopipe.classification.shift import LAB_SHIFTS, apply_shift, cell_shifter, parse_shifts


def _crop() -> np.ndarray:
    crop = np.zeros((70, 24), np.float32)
    crop[6:64, 7:17] = 0.8
    crop[30:34, 7:17] = 0.3  # a pale band
    return crop


@pytest.mark.parametrize("name", list(LAB_SHIFTS))
def test_every_shift_returns_a_grey_crop_in_range(name):
    out = apply_shift(_crop(), name, np.random.default_rng(0))
    assert out.ndim == 2 and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    # the chromosome survives: something bright on a darker background
    assert out.max() > out[0, 0] + 0.3


def test_shifts_do_what_they_say():
    crop, rng = _crop(), np.random.default_rng(0)
    assert apply_shift(crop, "scale0.5", rng).shape == (35, 12)
    assert apply_shift(crop, "scale1.5", rng).shape == (105, 36)
    assert apply_shift(crop, "margin16", rng).shape == (102, 56)
    assert np.abs(apply_shift(crop, "jpeg30", rng) - crop).mean() < 0.05
    lifted = apply_shift(crop, "contrast0.6", rng)
    assert lifted[0, 0] == pytest.approx(0.15) and lifted[10, 10] == pytest.approx(0.15 + 0.6 * 0.8)
    # blur before the cut keeps the cut-out's edge and its flat fill; plain blur spreads into it
    cut = apply_shift(crop, "cutblur1.5", rng)
    assert np.array_equal(cut > 0, crop > 0) and cut[31, 12] > crop[31, 12]
    assert (apply_shift(crop, "blur1.5", rng) > 0.01).sum() > (crop > 0).sum()
    # a rotated crop keeps the chromosome's area
    turned = apply_shift(crop, "rotate", rng)
    assert abs((turned > 0.4).sum() - (crop > 0.4).sum()) < 0.1 * (crop > 0.4).sum()


def test_unknown_shift_names_the_known_ones():
    with pytest.raises(ValueError, match="scale0.5"):
        parse_shifts("scale0.5,sharpen")
    assert parse_shifts("all") == list(LAB_SHIFTS)
    assert parse_shifts(None) == []


def test_cell_shifter_is_reproducible_and_varies_per_crop():
    shift = cell_shifter("rotate", seed=0)
    crop = _crop()
    a, b = shift(crop, "src/cell1", 0), shift(crop, "src/cell1", 0)
    np.testing.assert_array_equal(a, b)
    assert shift(crop, "src/cell1", 1).shape != a.shape or not np.array_equal(shift(crop, "src/cell1", 1), a)


def _toy_folder(root, cells=5):
    """``cells`` cells of classes 1..6: longer with the class, banded by it."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for c in range(cells):
        for k in range(1, 7):
            length = 16 + 4 * k
            crop = np.zeros((length + 8, 15), np.float32)
            crop[4:-4, 4:-4] = (0.5 + 0.4 * (np.sin(np.arange(length) * 0.3 * k) > 0))[:, None]
            crop[4:-4, 4:-4] += rng.normal(0, 0.03, (length, 7))
            d = root / f"cell{c}" / str(k)
            d.mkdir(parents=True)
            Image.fromarray((np.clip(crop, 0, 1) * 255).astype(np.uint8)).save(d / f"c{c}_{k}.png")


def test_build_arrays_takes_a_cell_subset_and_a_transform(tmp_path):
    from karyopipe.classification.dataset import build_arrays

    _toy_folder(tmp_path / "toy")
    cache = tmp_path / "cache"
    plain = build_arrays(tmp_path / "toy", size=(32, 16), cache_dir=cache, progress=False)
    written = sorted(cache.iterdir())
    wanted = {"toy/cell1", "toy/cell3"}
    half = build_arrays(tmp_path / "toy", size=(32, 16), cache_dir=cache, progress=False,
                        cells=wanted, transform=cell_shifter("scale0.5"))
    assert set(half.cells.tolist()) == wanted and len(half.labels) == 12
    assert sorted(cache.iterdir()) == written  # shifted or partial sets never enter the cache
    same = np.isin(plain.cells, list(wanted))
    np.testing.assert_array_equal(half.labels, plain.labels[same])
    assert not np.allclose(half.images, plain.images[same])  # the shift reached the preprocessing


def test_eval_cls_scores_each_shift(tmp_path, capsys, monkeypatch):
    from karyopipe.classification import evaluate
    from karyopipe.classification.classifier import Classifier
    from karyopipe.classification.model import build_hybrid_resnet

    _toy_folder(tmp_path / "toy")
    torch.manual_seed(0)
    net = build_hybrid_resnet(num_features=6, width=8).eval()
    weights = Classifier(net, {"num_features": 6, "width": 8, "size": [32, 16], "preprocess": "pca",
                               "split_seed": 0, "val_fraction": 0.2, "test_fraction": 0.2}).save(tmp_path / "w.pth", {})
    out = tmp_path / "eval.json"
    argv = [str(tmp_path / "toy"), "--weights", str(weights), "--split", "val", "--shift", "scale0.5,rotate",
            "--json", str(out)]
    from karyopipe.classification import dataset

    reads = []
    real_build = dataset.build_arrays
    monkeypatch.setattr(dataset, "build_arrays", lambda *a, **k: reads.append(k.get("transform")) or real_build(*a, **k))
    assert evaluate.main(argv) == 0
    # the unshifted crops are read once, for the plain score and all shifts alike
    assert sum(t is None for t in reads) == 1 and len(reads) == 3
    shifts = json.loads(out.read_text())["shifts"]
    assert list(shifts) == ["scale0.5", "rotate"]
    for per_root in shifts.values():
        (row,) = per_root.values()
        assert row["n"] == 6 and 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["accuracy_assigned"] <= 1.0
    assert "shift rotate" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        evaluate.main([str(tmp_path / "toy"), "--weights", str(weights), "--shift", "sharpen"])


def test_random_cell_shifter_is_one_lab_per_cell():
    from karyopipe.classification.shift import draw_lab_shift, random_cell_shifter

    names = [draw_lab_shift(np.random.default_rng(s)) for s in range(40)]
    assert all(1 <= len(n) <= 2 for n in names)
    assert len({n[0].rstrip("0123456789.") for n in names}) == 8  # every kind is drawn
    shift = random_cell_shifter(seed=5)
    crop = _crop()
    np.testing.assert_array_equal(shift(crop, "src/a", 0), shift(crop, "src/a", 0))
    # the same lab for every crop of a cell: a scale or margin changes all of them alike
    sizes = {shift(crop, "src/b", i).shape for i in range(3)}
    drawn = draw_lab_shift(np.random.default_rng([5, zlib.crc32(b"src/b")]))
    if "rotate" not in drawn:
        assert len(sizes) == 1


def test_train_cls_adds_shifted_copies_of_training_cells_only(tmp_path):
    from types import SimpleNamespace

    from karyopipe.classification.dataset import build_arrays, split_arrays
    from karyopipe.classification.train import _add_shifted_copies

    _toy_folder(tmp_path / "toy")
    arrays = build_arrays(tmp_path / "toy", size=(32, 16), cache_dir=None, progress=False)
    train = split_arrays(arrays, 0, 0.2, 0.2)["train"]
    args = SimpleNamespace(data=[str(tmp_path / "toy")], size=[32, 16], preprocess="pca", seed=0, shift_copies=2)
    more = _add_shifted_copies(train, args, progress=False)
    assert len(more.labels) == 3 * len(train.labels)
    assert set(more.unique_cells) == set(train.unique_cells)
    np.testing.assert_array_equal(more.labels[: len(train.labels)], train.labels)
    assert not np.allclose(more.images[len(train.labels):2 * len(train.labels)], train.images)


def test_cell_shifter_takes_any_parameter_but_checks_the_kind():
    assert cell_shifter("gamma0.8")(_crop(), "c", 0).max() == pytest.approx(0.8 ** 0.8, rel=1e-5)
    with pytest.raises(ValueError, match="unknown lab shift"):
        cell_shifter("sharpen2")


def test_gamma_range_of_the_augmentation_is_configurable():
    from karyopipe.classification.dataset import CellArrays, CropDataset

    image = np.zeros((1, 32, 16), np.float32)
    image[0, 4:28, 5:11] = 0.25
    arrays = CellArrays(image, np.ones((1, 6), np.float32), np.array([1]), np.array(["s/c"]))

    def spread(gamma_max):
        ds = CropDataset(arrays, augment=True, seed=0, blur_p=0.0, **({} if gamma_max is None else {"gamma_max": gamma_max}))
        return np.ptp([float(ds[0][0][0, 16, 8]) for _ in range(200)])

    # brightness and contrast vary too, but a wide gamma range spreads a pale pixel much further
    assert spread(2.0) > 1.3 * spread(None)


def test_train_cls_refuses_meaningless_shift_options(tmp_path):
    from karyopipe.classification import train

    for bad in (["--gamma-max", "0.5"], ["--shift-copies", "-1"], ["--stretch-max", "0.9"]):
        with pytest.raises(SystemExit):
            train.main(["--data", str(tmp_path), "--out", str(tmp_path / "run")] + bad)
