"""Chromosomes cut from annotated spreads as classifier data, and relabel-frames' karyotype-constrained labels."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from karyopipe.classification.dataset import build_arrays, build_spread_arrays, concat_arrays, split_arrays
from karyopipe.classification.frames import karyotype_hypothesis, relabel_coco, relabel_frame
from karyopipe.classes import CHROMOSOMES
from karyopipe.data import Instance, Sample, read_dataset, write_coco
from test_pipeline import RODS, draw_spread


# Classes whose relative lengths fit the rods' lengths (46, 34, 52, 28, 40, 24 px).
ROD_CLASSES = [2, 7, 1, 10, 4, 13]


def _frames_coco(tmp_path, cells=("c1", "c1", "c2"), source="toy", karyotype=None):
    """One spread drawn once per entry of ``cells`` (a cell may have two frames); the last rod unlabelled."""
    from scipy import ndimage as ndi

    img = draw_spread(brightfield=True)
    labels, n = ndi.label(img < 150)
    samples = []
    for k, cell in enumerate(cells):
        path = tmp_path / f"frame{k}.png"
        Image.fromarray(img).save(path)
        instances = [Instance(mask=labels == j, label=ROD_CLASSES[j - 1] if j < n else None) for j in range(1, n + 1)]
        meta = {"karyotype": karyotype} if karyotype else {}
        samples.append(Sample(path=path, cell_id=cell, instances=instances, image_id=f"frame{k}", meta=meta,
                              loader=lambda p=path: np.asarray(Image.open(p))))
    out = tmp_path / "coco" / "annotations.json"
    write_coco(samples, out)
    doc = json.loads(out.read_text())
    doc["info"]["source"] = source
    out.write_text(json.dumps(doc))
    return out


def test_spread_chromosomes_become_rows_of_their_cell_and_frame(tmp_path):
    coco = _frames_coco(tmp_path)
    arrays = build_spread_arrays(coco, size=(32, 16), mode="geometry", cache_dir=tmp_path / "cache", progress=False)
    labelled = len(RODS) - 1
    assert arrays.images.shape == (3 * labelled, 32, 16) and set(arrays.labels.tolist()) == set(ROD_CLASSES[:labelled])
    # Split with the source's crops (same "<source>/<cell>" ids), assigned frame by frame.
    assert set(arrays.cells.tolist()) == {"toy/c1", "toy/c2"}
    assert len(set(arrays.groups.tolist())) == 3
    assert set(arrays.parts()) == {"toy_frames"}
    again = build_spread_arrays(coco, size=(32, 16), mode="geometry", cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(again.frames, arrays.frames)  # read back from the cache
    assert build_arrays(coco, size=(32, 16), mode="pca", cache_dir=None, progress=False).features.shape[1] == 6


def test_frames_follow_their_cell_in_the_split(tmp_path):
    coco = _frames_coco(tmp_path, cells=("a", "a", "b", "b", "c", "c", "d"))
    frames = build_spread_arrays(coco, size=(32, 16), mode="pca", cache_dir=None, progress=False)
    splits = split_arrays(frames, seed=0, val_fraction=0.25, test_fraction=0.25)
    seen = [set(part.cells.tolist()) for part in splits.values()]
    assert sum(len(s) for s in seen) == 4 and not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    # Mixed with crops, the frames keep their own frame ids and the crops none.
    both = concat_arrays([frames.subset(np.arange(3)), frames.subset(np.arange(3))])
    assert both.frames.tolist()[:3] == frames.frames.tolist()[:3]


def _cell_log_probs(truth, wrong=None, p=0.98):
    log_probs = np.full((len(truth), 24), np.log((1 - p) / 23))
    log_probs[np.arange(len(truth)), np.asarray(truth) - 1] = np.log(p)
    for i, k in (wrong or {}).items():
        log_probs[i] = np.log((1 - p) / 23)
        log_probs[i, k - 1] = np.log(p)
    return log_probs


def _lengths(truth):
    return np.array([CHROMOSOMES[k].relative_length * 12 for k in truth])


def test_relabel_frame_puts_a_y_call_back_when_the_cell_is_female():
    truth = [k for k in range(1, 23) for _ in range(2)] + [23, 23]
    # A 22 confidently called Y; its crop match (not a confident one) says 22.
    log_probs = _cell_log_probs(truth, wrong={43: 24})
    matches = np.zeros(46, int)
    matches[43] = 22
    labels, stats = relabel_frame(log_probs, _lengths(truth), np.full(46, np.nan), "46,XX", matches, np.zeros(46, bool))
    assert labels[43] == 22 and (labels == np.array(truth)).all()
    assert stats["whole"] and stats["changed_from_top"] == 1
    # With no match to back it, the karyotype alone still says it is no Y: the assignment's choice stands.
    labels, _ = relabel_frame(log_probs, _lengths(truth), np.full(46, np.nan), "46,XX", np.zeros(46, int),
                              np.zeros(46, bool))
    assert labels[43] == 22
    # A possible but disputed call (a 22 called 21, no match) is left unlabelled rather than guessed.
    log_probs = _cell_log_probs(truth, wrong={43: 21})
    labels, _ = relabel_frame(log_probs, _lengths(truth), np.full(46, np.nan), "46,XX", np.zeros(46, int),
                              np.zeros(46, bool))
    assert labels[43] in (0, 22) and (labels[:40] == np.array(truth[:40])).all()


def test_relabel_frame_partial_frame_may_miss_chromosomes_but_not_gain_them():
    truth = [k for k in range(1, 23) for _ in range(2)][:30]
    labels, stats = relabel_frame(_cell_log_probs(truth), _lengths(truth), np.full(30, np.nan), "46,XY",
                                  np.zeros(30, int), np.zeros(30, bool))
    assert not stats["whole"] and (labels == np.array(truth)).all()
    three = truth + [1]  # a third chromosome 1 cannot be: one of the three stays unlabelled
    labels, _ = relabel_frame(_cell_log_probs(three), _lengths(three), np.full(31, np.nan), "46,XY",
                              np.zeros(31, int), np.zeros(31, bool))
    assert (labels == 1).sum() == 2


def test_karyotype_hypothesis():
    h = karyotype_hypothesis("47,XXY")
    assert (h.ploidy, h.n_x, h.n_y) == (2, 2, 1)
    with pytest.raises(ValueError, match="autosome"):
        karyotype_hypothesis("47,XX,+21")


class _FixedClassifier:
    """Calls every object by its truth, except one labelled chromosome it calls Y."""

    def __init__(self, truth):
        self.truth = truth

    def predict_cell(self, geoms):
        assert len(geoms) == len(self.truth)
        return _cell_log_probs(self.truth, wrong={0: 24})


def test_relabel_coco_writes_training_labels_for_the_frames(tmp_path):
    coco = _frames_coco(tmp_path, cells=("c1",), source="toy", karyotype="46,XX")
    samples = read_dataset(coco).samples
    truth = ROD_CLASSES  # the last, unlabelled rod included
    n = len(truth)
    doc, report = relabel_coco(coco, _FixedClassifier(truth), samples, progress=False)
    assert report["frames"] == 1 and report["objects"] == n and not report["skipped"]
    assert doc["info"]["source"] == "toy"
    names = {c["id"]: c["name"] for c in doc["categories"]}
    got = [names[a["category_id"]] for a in doc["annotations"]]
    # Object 0 (class 2 by its crop match, called Y): no Y in 46,XX, and the match says 2.
    assert got == [str(k) for k in truth]
    assert report["changed_from_top"] == 1
