"""One chromosome in, its geometry out: :func:`analyze_chromosome`."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from karyopipe.geometry.axis import (
    TINY_AREA, arc_length, clean_mask, distance_to_background, fill_holes, medial_axis,
)
from karyopipe.geometry.centromere import find_centromere, polarity_confidence
from karyopipe.geometry.profiles import axis_normals, straighten, width_and_density

# Below this confidence a result carries the "low_confidence" flag.
LOW_CONFIDENCE = 0.5


@dataclass
class ChromosomeGeometry:
    """Geometry of one chromosome, oriented p-tip first.

    Attributes
    ----------
    axis : ndarray, shape (N, 2), float64
        Medial axis in xy pixel coordinates of the input, p-tip to q-tip, one
        point per pixel of arc length.
    length_px : float
        Arc length of the axis, tip to tip.
    width_profile : ndarray, shape (N,), float32
        Width across the chromosome along the axis normals, in pixels.
    density_profile : ndarray, shape (N,), float32
        Mean canonical intensity across the chromosome at each axis point.
    centromere_xy : ndarray, shape (2,)
        Centromere position (x, y) on the axis.
    centromere_t : float
        Fraction of the length from the p-tip (= ``centromere_index``).
    p_length, q_length : float
        Arm lengths in pixels, ``p_length <= q_length`` after orientation.
    centromere_index : float
        ``p / (p + q)``, at most 0.5 by definition.
    polarity_confidence : float
        0..1: how sure the p-arm is the shorter arm (0 for a metacentric).
    straightened : ndarray, shape (L, W), float32
        Curved planar reformation, row 0 at the p-tip, ``L = N``, 0 outside.
    straightened_mask : ndarray, shape (L, W), bool
    area_px : int
        Pixels of the input mask.
    flags : list of str
        ``"degenerate"`` (empty or no length), ``"tiny"``, ``"pca_axis"``
        (too round for a skeleton), ``"branched"`` (side branches of over a width pruned),
        ``"no_constriction"``, ``"wider_than_straightened"`` (the straightened
        image, one pixel per column, cuts the sides off), ``"low_confidence"``.
    confidence : float
        0..1 overall trust in the axis and centromere.
    """

    axis: np.ndarray
    length_px: float
    width_profile: np.ndarray
    density_profile: np.ndarray
    centromere_xy: np.ndarray
    centromere_t: float
    p_length: float
    q_length: float
    centromere_index: float
    polarity_confidence: float
    straightened: np.ndarray
    straightened_mask: np.ndarray
    area_px: int
    flags: list[str] = field(default_factory=list)
    confidence: float = 0.0

    @property
    def mean_width(self) -> float:
        """Mean width over the central 80% of the axis (the tips taper)."""
        w = self.width_profile
        if len(w) < 5:
            return float(w.mean()) if len(w) else 0.0
        k = len(w) // 10
        return float(w[k:len(w) - k].mean())


def _degenerate(mask: np.ndarray, straight_width: int, flags: list[str]) -> ChromosomeGeometry:
    ys, xs = np.nonzero(mask)
    centre = np.array([xs.mean(), ys.mean()]) if len(xs) else np.array(mask.shape[::-1]) / 2.0
    return ChromosomeGeometry(
        axis=np.repeat(centre[None], 2, 0), length_px=0.0,
        width_profile=np.zeros(2, np.float32), density_profile=np.zeros(2, np.float32),
        centromere_xy=centre.copy(), centromere_t=0.5, p_length=0.0, q_length=0.0,
        centromere_index=0.5, polarity_confidence=0.0,
        straightened=np.zeros((1, straight_width), np.float32),
        straightened_mask=np.zeros((1, straight_width), bool),
        area_px=int(mask.sum()), flags=sorted(set(flags + ["degenerate", "low_confidence"])),
        confidence=0.0,
    )


def analyze_chromosome(mask: np.ndarray, gray: np.ndarray | None = None, *,
                       straight_width: int = 32, clean: bool = True,
                       smooth_sigma: float | None = None) -> ChromosomeGeometry:
    """Medial axis, profiles, centromere, polarity and straightened image of one chromosome.

    Parameters
    ----------
    mask : ndarray, shape (H, W), bool
        The chromosome. Several components: the largest is used.
    gray : ndarray, shape (H, W), float32, optional
        Canonical polarity (chromosome bright, background dark), e.g. from
        :func:`karyopipe.io.normalize_polarity`. Without it the mask stands in
        and the density profile is flat.
    straight_width : int
        Columns of the straightened image (one pixel apart, centred on the axis).
    clean : bool
        Close small gaps (split chromatids) and fill holes before the skeleton.
    smooth_sigma : float, optional
        Axis smoothing in pixels; see :func:`karyopipe.geometry.axis.medial_axis`.

    Returns
    -------
    ChromosomeGeometry
        Never raises on a degenerate mask (empty, one pixel, a line): the
        result then carries flags and a low confidence.

    Raises
    ------
    ValueError
        ``mask`` not 2-D, or ``gray`` of a different shape.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    mask = mask.astype(bool)
    if gray is None:
        gray = mask.astype(np.float32)
    gray = np.asarray(gray, dtype=np.float32)
    if gray.shape != mask.shape:
        raise ValueError(f"gray shape {gray.shape} does not match mask shape {mask.shape}")
    if straight_width < 1:
        raise ValueError(f"straight_width must be >= 1, got {straight_width}")
    if not np.isfinite(gray).all():
        gray = np.nan_to_num(gray, nan=0.0, posinf=1.0, neginf=0.0)

    flags: list[str] = []
    area = int(mask.sum())
    if area == 0:
        return _degenerate(mask, straight_width, flags)
    # Work on the bounding box (plus a margin for the closing and tip marching):
    # a mask may come in the frame of a whole spread.
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    margin = 6
    r0, c0 = max(int(rows[0]) - margin, 0), max(int(cols[0]) - margin, 0)
    r1, c1 = min(int(rows[-1]) + margin + 1, mask.shape[0]), min(int(cols[-1]) + margin + 1, mask.shape[1])
    if (r1 - r0) * (c1 - c0) < mask.size:
        geom = analyze_chromosome(mask[r0:r1, c0:c1], gray[r0:r1, c0:c1], straight_width=straight_width,
                                  clean=clean, smooth_sigma=smooth_sigma)
        offset = np.array([c0, r0], dtype=np.float64)
        geom.axis = geom.axis + offset
        geom.centromere_xy = geom.centromere_xy + offset
        return geom
    body = clean_mask(mask) if clean else fill_holes(mask)
    if area < TINY_AREA:
        flags.append("tiny")
    axis, axis_flags = medial_axis(body, smooth_sigma=smooth_sigma)
    flags += axis_flags
    length = float(arc_length(axis)[-1])
    if length < 1.0 or len(axis) < 2:
        return _degenerate(mask, straight_width, flags)

    normals = axis_normals(axis, span=3)
    half_width = float(distance_to_background(body).max())
    width, density = width_and_density(body, gray, axis, normals, half_range=2.0 * half_width + 2.0,
                                       core=1.1 * half_width)
    cen = find_centromere(width, density)
    if cen.confidence == 0.0:
        flags.append("no_constriction")
    t = cen.t
    if t > 0.5:  # p-arm (the shorter one) goes first
        axis = axis[::-1].copy()
        width, density = width[::-1].copy(), density[::-1].copy()
        t = 1.0 - t
    s = arc_length(axis)
    c_len = t * length
    centromere_xy = np.array([np.interp(c_len, s, axis[:, 0]), np.interp(c_len, s, axis[:, 1])])
    pol_conf = polarity_confidence(t, cen.confidence)
    # Normals of the p -> q axis: after a reversal the picture turns 180 degrees, never mirrors.
    straightened, straight_mask = straighten(gray, body, axis, axis_normals(axis, span=3), straight_width,
                                            core=1.1 * half_width)

    if float(np.percentile(width, 90)) > straight_width:
        flags.append("wider_than_straightened")
    confidence = 0.5 + 0.5 * cen.confidence
    if "pca_axis" in flags:
        confidence *= 0.8
    if "tiny" in flags:
        confidence *= 0.4
    if length < 4.0:
        confidence *= 0.5
    if confidence < LOW_CONFIDENCE:
        flags.append("low_confidence")
    return ChromosomeGeometry(
        axis=axis, length_px=length, width_profile=width, density_profile=density,
        centromere_xy=centromere_xy, centromere_t=float(t), p_length=float(c_len),
        q_length=float(length - c_len), centromere_index=float(t),
        polarity_confidence=pol_conf, straightened=straightened,
        straightened_mask=straight_mask, area_px=area, flags=flags,
        confidence=float(confidence),
    )


def analyze_in_image(gray: np.ndarray, masks, pad: int = 4) -> list[ChromosomeGeometry]:
    """:func:`analyze_chromosome` of each instance of a whole image, axes in image pixels.

    Each chromosome is analysed on its box plus ``pad`` pixels, with everything
    outside its own mask zeroed so a touching neighbour cannot leak into its
    profiles; the axis and centromere are then moved back to image coordinates.

    Parameters
    ----------
    gray : ndarray, shape (H, W), float32
        Canonical polarity (chromosome bright).
    masks : iterable of ndarray, shape (H, W), bool
        Non-empty instance masks.
    pad : int
        Context pixels around each mask's box.

    Returns
    -------
    list of ChromosomeGeometry, one per mask
    """
    h, w = gray.shape
    out = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)
        x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)
        m = mask[y0:y1, x0:x1]
        g = analyze_chromosome(m, np.where(m, gray[y0:y1, x0:x1], 0).astype(np.float32))
        offset = np.array([x0, y0], float)
        g.axis = g.axis + offset
        g.centromere_xy = np.asarray(g.centromere_xy, float) + offset
        out.append(g)
    return out
