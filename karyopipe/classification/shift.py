"""Lab shifts: what another lab's crops do differently, applied to labelled crops.

The classifier is judged on G-band crops from a lab it never saw. No such
labelled set is at hand, so this module imitates the ways one lab's crops
differ from another's (camera resolution and magnification, focus, JPEG
export, staining contrast and background, margins, orientation) on crops whose
labels are known, and ``karyopipe eval-cls --shift`` scores the classifier on
them. Each shift is a property of the lab, so it is the same for every crop of
a cell; only the ``rotate`` shift draws a new angle per crop.

All shifts act on canonical-polarity grey crops (float in [0, 1], chromosome
bright on a dark background), after :func:`karyopipe.io.load_canonical`.

Examples
--------
>>> import numpy as np
>>> from karyopipe.classification.shift import apply_shift
>>> crop = np.zeros((60, 20), np.float32); crop[5:55, 6:14] = 0.8
>>> apply_shift(crop, "scale0.5", np.random.default_rng(0)).shape
(30, 10)
"""
from __future__ import annotations

import cv2
import numpy as np

from karyopipe.geometry.axis import cutout_fill

#: Shift name -> what it imitates. ``eval-cls --shift all`` runs them in this order.
LAB_SHIFTS = {
    "scale0.5": "half the resolution (lower magnification or a coarser camera)",
    "scale0.7": "0.7x the resolution",
    "scale1.5": "1.5x the resolution (higher magnification), interpolated",
    "blur1.5": "out of focus: Gaussian blur, sigma 1.5 px",
    "cutblur1.5": "out of focus before the crop was cut: blur sigma 1.5 px inside the cut-out, its edge kept",
    "jpeg30": "JPEG export at quality 30 (in the lab's brightfield polarity)",
    "contrast0.6": "weaker staining: contrast x0.6 on a background lifted to 0.15",
    "gamma0.6": "gamma 0.6 (pale bands brighter)",
    "gamma1.6": "gamma 1.6 (pale bands darker)",
    "noise0.04": "camera noise: Gaussian, sigma 0.04",
    "margin16": "crops cut with a 16 px margin of background",
    "rotate": "crops not upright: each turned by a random angle",
}


def background_level(gray: np.ndarray) -> float:
    """The background grey of a crop: the median of its border pixels."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border))


def apply_shift(gray: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """One lab shift of one canonical-polarity crop.

    Parameters
    ----------
    gray : ndarray, shape (h, w), float in [0, 1]
    name : str
        A key of :data:`LAB_SHIFTS`.
    rng : numpy Generator
        Used by the random shifts (``noise0.04``, ``rotate``).

    Returns
    -------
    ndarray, shape (h', w'), float32 in [0, 1]
    """
    gray = np.ascontiguousarray(gray, dtype=np.float32)
    h, w = gray.shape
    if name.startswith("scale"):
        factor = float(name[len("scale"):])
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        return cv2.resize(gray, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    if name.startswith("blur"):
        return cv2.GaussianBlur(gray, (0, 0), float(name[len("blur"):]))
    if name.startswith("cutblur"):
        # A karyogram tile is cut from the lab's image after it was taken: the focus blurs the
        # chromosome, but the cut and the flat fill around it stay sharp.
        blurred = cv2.GaussianBlur(gray, (0, 0), float(name[len("cutblur"):]))
        fill = cutout_fill(gray)
        if fill is None:
            return blurred
        return np.where(fill, gray.min(), blurred).astype(np.float32)
    if name.startswith("jpeg"):
        quality = int(name[len("jpeg"):])
        # A brightfield lab exports dark chromosomes on white; compress in that polarity.
        brightfield = np.clip((1.0 - gray) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        ok, data = cv2.imencode(".jpg", brightfield, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode a crop")
        return 1.0 - cv2.imdecode(data, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    if name.startswith("contrast"):
        return np.clip(0.15 + float(name[len("contrast"):]) * gray, 0.0, 1.0)
    if name.startswith("gamma"):
        return np.clip(gray, 0.0, 1.0) ** float(name[len("gamma"):])
    if name.startswith("noise"):
        sigma = float(name[len("noise"):])
        return np.clip(gray + rng.normal(0.0, sigma, gray.shape).astype(np.float32), 0.0, 1.0)
    if name.startswith("margin"):
        pad = int(name[len("margin"):])
        return np.pad(gray, pad, mode="constant", constant_values=background_level(gray))
    if name == "rotate":
        angle = float(rng.uniform(0, 360))
        centre = (w / 2.0, h / 2.0)
        matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
        cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
        new_w, new_h = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
        matrix[0, 2] += new_w / 2.0 - centre[0]
        matrix[1, 2] += new_h / 2.0 - centre[1]
        return cv2.warpAffine(gray, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=background_level(gray))
    raise ValueError(f"unknown lab shift {name!r}; known: {', '.join(LAB_SHIFTS)}")


#: The shifts that mean the same for a whole spread as for a crop: they change grey levels, not the
#: geometry the truth is drawn in (``karyopipe eval-e2e --shift``).
SPREAD_SHIFTS = ("blur1.5", "jpeg30", "contrast0.6", "gamma0.6", "gamma1.6", "noise0.04")


def shift_spread(gray: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """A lab shift of a whole grey spread, as the camera would have given it.

    The shift acts in canonical polarity (:func:`apply_shift`), and the spread
    comes back in its own, so the pipeline still has to tell its polarity.

    Parameters
    ----------
    gray : ndarray, shape (H, W), float in [0, 1], the spread as read
    name : str
        One of :data:`SPREAD_SHIFTS`.
    """
    from karyopipe.io import BRIGHTFIELD, normalize_polarity

    if name not in SPREAD_SHIFTS:
        raise ValueError(f"lab shift {name!r} does not apply to whole spreads; these do: {', '.join(SPREAD_SHIFTS)}")
    canonical, polarity = normalize_polarity(np.asarray(gray, np.float32))
    shifted = apply_shift(canonical, name, rng)
    return (1.0 - shifted if polarity == BRIGHTFIELD else shifted).astype(np.float32)


def parse_shifts(spec: str | None) -> list[str]:
    """``"all"`` or a comma list of :data:`LAB_SHIFTS` names -> the names (checked)."""
    if not spec:
        return []
    names = list(LAB_SHIFTS) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in LAB_SHIFTS]
    if unknown:
        raise ValueError(f"unknown lab shift(s) {', '.join(unknown)}; known: {', '.join(LAB_SHIFTS)}")
    return names


def cell_shifter(name: str, seed: int = 0):
    """A ``transform(gray, cell_id, index) -> gray`` for :func:`karyopipe.classification.dataset.build_arrays`.

    ``index`` is the crop's position within its cell. The random draws depend
    on the cell, the index and ``seed`` only, so a shifted data set is the same
    every time it is built.
    """
    import zlib

    # Any parameter works here ("gamma0.8"), not only the fixed points of LAB_SHIFTS; fail now, not mid-build.
    apply_shift(np.zeros((4, 4), np.float32), name, np.random.default_rng(0))

    def transform(gray: np.ndarray, cell_id: str, index: int) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(f"{name}|{cell_id}".encode()), index])
        return apply_shift(gray, name, rng)

    return transform


#: Training ranges of :func:`draw_lab_shift`: kind -> (low, high, how drawn, format of the parameter).
TRAINING_RANGES = {
    "scale": (0.4, 1.7, "log", "{:.3f}"),
    "blur": (0.5, 2.5, "linear", "{:.2f}"),
    "jpeg": (15, 85, "integer", "{}"),
    "contrast": (0.45, 0.9, "linear", "{:.2f}"),
    "gamma": (0.5, 2.0, "log", "{:.2f}"),
    "noise": (0.01, 0.06, "linear", "{:.3f}"),
    "margin": (4, 30, "integer", "{}"),
    "rotate": None,
}


def draw_lab_shift(rng: np.random.Generator) -> list[str]:
    """One or two lab shifts with parameters drawn at random, as ``apply_shift`` names.

    For training: the ranges (:data:`TRAINING_RANGES`) are wide and continuous,
    so a model trained on them is not fitted to the fixed points that
    ``eval-cls --shift`` scores.
    """
    names = []
    for kind in rng.choice(list(TRAINING_RANGES), size=int(rng.integers(1, 3)), replace=False):
        if TRAINING_RANGES[kind] is None:
            names.append(str(kind))
            continue
        low, high, how, fmt = TRAINING_RANGES[kind]
        if how == "log":
            value = np.exp(rng.uniform(np.log(low), np.log(high)))
        elif how == "integer":
            value = int(rng.integers(low, high + 1))
        else:
            value = rng.uniform(low, high)
        names.append(f"{kind}{fmt.format(value)}")
    return names


def random_cell_shifter(seed: int = 0):
    """A ``transform(gray, cell_id, index)`` that gives each cell its own random lab (:func:`draw_lab_shift`).

    Every crop of a cell gets the same shifts; noise and rotation angles are
    drawn per crop. The draws depend on ``seed``, the cell and the index only.
    """
    import zlib

    def transform(gray: np.ndarray, cell_id: str, index: int) -> np.ndarray:
        key = zlib.crc32(cell_id.encode())
        names = draw_lab_shift(np.random.default_rng([seed, key]))
        rng = np.random.default_rng([seed, key, index])
        for name in names:
            gray = apply_shift(gray, name, rng)
        return gray

    return transform
