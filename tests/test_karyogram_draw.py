"""The karyogram picture on synthetic straightened chromosomes."""
from __future__ import annotations

import numpy as np
import pytest

from karyopipe.classes import CHROMOSOMES
from karyopipe.karyogram import assign_karyotype, draw_karyogram, parse_karyotype
from karyopipe.karyogram.draw import KARYOGRAM_ROWS
from karyopipe.karyogram.simulate import karyotype_labels


def _straightened(k: int, scale: float = 9.0, width: int = 32) -> np.ndarray:
    """A bright rod with a centromere pinch and a few bands: canonical polarity, p-tip at row 0."""
    length = int(round(CHROMOSOMES[k].relative_length * scale))
    t = np.linspace(0, 1, length)[:, None]
    x = np.arange(width)[None, :] - width / 2
    half = 5.0 * (1 - 0.4 * np.exp(-((t - CHROMOSOMES[k].centromere_index) / 0.04) ** 2))
    body = (np.abs(x) < half).astype(np.float32)
    bands = 0.6 + 0.4 * np.sin(2 * np.pi * t * (3 + k % 5)) ** 2
    return (body * bands).astype(np.float32)


def _cell(karyotype: str, extra_debris: bool = False):
    labels = karyotype_labels(parse_karyotype(karyotype))
    log_probs = np.full((len(labels), 24), np.log(0.03 / 23))
    log_probs[np.arange(len(labels)), labels - 1] = np.log(0.97)
    lengths = np.array([CHROMOSOMES[k].relative_length * 9.0 for k in labels])
    images = [_straightened(int(k)) for k in labels]
    if extra_debris:
        log_probs = np.vstack([log_probs, np.log(np.full((1, 24), 1 / 24))])
        lengths = np.append(lengths, 200.0)
        images.append(np.ones((200, 14), np.float32))
    return images, assign_karyotype(log_probs, lengths)


def _dark_rows(picture: np.ndarray) -> np.ndarray:
    """Rows of the picture that hold dark (chromosome) pixels."""
    return np.flatnonzero((picture.min(axis=2) < 100).sum(axis=1) > 20)


def test_draw_karyogram_g_band_layout():
    images, call = _cell("47,XX,+21")
    picture = draw_karyogram(images, call)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert picture.shape[0] > 400 and picture.shape[1] > 600
    # White lab background, dark chromosomes.
    assert np.median(picture) == 255
    # Four bands of rows (1-5, 6-12+X, 13-18, 19-22+Y) separated by blank gaps.
    rows = _dark_rows(picture[60:])
    blocks = np.split(rows, np.flatnonzero(np.diff(rows) > 8) + 1)
    assert len(blocks) >= len(KARYOGRAM_ROWS)


def test_centromeres_of_a_row_share_one_line():
    images, call = _cell("46,XY")
    ct = np.array([CHROMOSOMES[int(k)].centromere_index for k in call.labels])
    a = draw_karyogram(images, call, centromere_t=ct, ideogram=False)
    # Shifting every centromere to the p-tip moves chromosomes down: the picture changes.
    b = draw_karyogram(images, call, centromere_t=np.zeros(len(ct)), ideogram=False)
    assert a.shape != b.shape or np.any(a != b)


def test_unassigned_tray_and_q_band_display():
    images, call = _cell("46,XY", extra_debris=True)
    assert call.labels[-1] == 0
    with_tray = draw_karyogram(images, call)
    plain_images, plain_call = _cell("46,XY")
    without = draw_karyogram(plain_images, plain_call)
    assert with_tray.shape[0] > without.shape[0] + 150
    q = draw_karyogram(images, call, banding="q", title="Q-band test")
    assert np.median(q) == 0


def test_draw_karyogram_bad_input():
    images, call = _cell("46,XX")
    with pytest.raises(ValueError, match="straightened images"):
        draw_karyogram(images[:-1], call)
    with pytest.raises(ValueError, match="banding"):
        draw_karyogram(images, call, banding="c")
    with pytest.raises(ValueError, match="2-D"):
        draw_karyogram([np.zeros((3, 3, 3))] + images[1:], call)


def test_save_png_and_svg(tmp_path):
    from PIL import Image

    from karyopipe.karyogram.draw import save_karyogram

    images, call = _cell("46,XX")
    picture = draw_karyogram(images, call)
    save_karyogram(tmp_path / "k.png", picture)
    save_karyogram(tmp_path / "k.svg", picture)
    assert Image.open(tmp_path / "k.png").size == (picture.shape[1], picture.shape[0])
    assert (tmp_path / "k.svg").read_text().startswith("<svg")


def test_object_ids_are_written_under_the_chromosomes_for_review():
    images, call = _cell("46,XY")
    with_ids = draw_karyogram(images, call, ideogram=False)
    without = draw_karyogram(images, call, ideogram=False, ids=False)
    # Each of the four rows gains a line of ids, in the grey ink that is neither chromosome nor label.
    assert with_ids.shape[0] == without.shape[0] + 4 * 12
    grey = np.all(np.abs(with_ids.astype(int) - 120) < 30, axis=2).sum()
    assert grey > np.all(np.abs(without.astype(int) - 120) < 30, axis=2).sum() + 200


def test_marked_objects_are_framed_and_by_default_the_uncertain_ones():
    from karyopipe.karyogram.draw import _WARN

    images, call = _cell("46,XY")
    assert not any("uncertain" in f for f in call.flags)
    warn = lambda picture: int(np.all(picture == np.array(_WARN, np.uint8), axis=2).sum())  # noqa: E731
    default = draw_karyogram(images, call, ideogram=False)
    assert warn(default) == 0
    marked = [False] * len(call.labels)
    marked[3] = True  # a chromosome the pipeline marks for a check, whatever the assignment's confidence
    framed = draw_karyogram(images, call, ideogram=False, marked=marked)
    assert framed.shape == default.shape and warn(framed) > 100
    with pytest.raises(ValueError, match="marks for"):
        draw_karyogram(images, call, marked=marked[:-1])
