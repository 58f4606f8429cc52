"""Render one synthetic chromosome with exact ground truth.

A chromosome is a tube around a smooth curve (its medial axis) of known arc
length. Its half-width follows a profile with a constriction at the centromere and
elliptical caps that close exactly at the two tips, so the axis runs tip to tip and
``length_px`` is the length a perfect measurement would find. Banding comes from
the hg38 ideogram (:mod:`karyopipe.synth.ideogram`), blurred to a microscope's
band resolution.

Coordinates: ``xy`` with pixel ``(row, col)`` at ``(x=col, y=row)``.

Examples
--------
>>> import numpy as np
>>> from karyopipe.synth import render_chromosome
>>> c = render_chromosome(1, np.random.default_rng(0), length_px=120, width_px=12, noise=0.0)
>>> c.image.shape == c.mask.shape, c.axis.shape[1], abs(c.length_px - 120) < 1
(True, 2, True)
>>> bool(c.mask[int(round(c.centromere_xy[1])), int(round(c.centromere_xy[0]))])
True
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial import cKDTree

from karyopipe.synth.ideogram import load_ideogram, relative_lengths

BENDS = ("straight", "gentle", "strong", "fold")
BANDINGS = ("g", "q")
_STEP = 0.5  # px between dense axis samples: fine enough that chords equal arcs to <0.1%


def banding_polarity(banding: str) -> str:
    """Raw polarity of a banding: G-band is brightfield (dark on light), Q-band fluorescence."""
    return "brightfield" if banding == "g" else "fluorescence"


@dataclass
class SynthChromosome:
    """One rendered chromosome and its ground truth.

    Attributes
    ----------
    number : int
        Class 1..24.
    image : ndarray, shape (H, W), float32 in [0, 1]
        Raw polarity of its banding: G = dark chromosome on light, Q = bright on dark.
    mask : ndarray, shape (H, W), bool
        Exactly the rendered chromosome pixels.
    axis : ndarray, shape (N, 2), float32
        True medial axis, xy, from p-tip to q-tip, ``N >= 20``, equally spaced in arc length.
    centromere_xy : ndarray, shape (2,), float32
    length_px : float
        True axis length (tip to tip).
    centromere_index : float
        p / (p + q) from the ideogram.
    profile : ndarray, shape (N,), float32
        Banding intensity at the axis points as rendered (high = G-dark = Q-bright).
    banding : str
        ``"g"`` or ``"q"``.
    width_px : float
        Full width of the arms (outside the centromere and the tips).
    background : float
        Background grey level the chromosome was drawn on.
    """

    number: int
    image: np.ndarray
    mask: np.ndarray
    axis: np.ndarray
    centromere_xy: np.ndarray
    length_px: float
    centromere_index: float
    profile: np.ndarray
    banding: str
    width_px: float = 0.0
    background: float = 0.0
    darkness: np.ndarray | None = None  # (H, W) float32 stain density before polarity, 0 outside

    @property
    def polarity(self) -> str:
        """``"brightfield"`` (G) or ``"fluorescence"`` (Q): what :func:`karyopipe.io.normalize_polarity` takes."""
        return banding_polarity(self.banding)

    @property
    def p_length(self) -> float:
        return self.centromere_index * self.length_px

    @property
    def q_length(self) -> float:
        return (1.0 - self.centromere_index) * self.length_px


def _curvature(bend: str, n: int, length: float, half_width: float, rng: np.random.Generator) -> np.ndarray:
    """Curvature (rad / px) at ``n`` dense samples over ``length`` px."""
    t = np.linspace(0.0, 1.0, n)
    # The inner side of a bend folds over itself below this radius.
    k_max = 1.0 / (half_width + 1.0)
    if bend == "straight":
        return np.zeros(n)
    turn = {"gentle": (0.15, 0.6), "strong": (0.9, 2.0), "fold": (0.0, 0.3)}[bend]
    kappa = np.zeros(n)
    for k in (1, 2, 3):
        kappa += rng.normal(0.0, 1.0 / k) * np.sin(np.pi * k * t + rng.uniform(0, 2 * np.pi))
    total = np.abs(kappa).sum() * (length / max(n - 1, 1))
    if total > 0:
        kappa *= rng.uniform(*turn) / total
    if bend == "fold":
        # A U-turn of pi over arc length l_f with a raised-cosine curvature bump,
        # wide enough that its peak curvature stays within k_max.
        l_f = 2.0 * np.pi * (half_width + 1.0) * rng.uniform(1.0, 1.3)
        if length > l_f + 4.0 * half_width:
            centre = rng.uniform(0.35, 0.65) * length
            s = t * length
            u = (s - (centre - l_f / 2)) / l_f
            inside = (u >= 0) & (u <= 1)
            bump = np.where(inside, (np.pi / l_f) * (1.0 - np.cos(2.0 * np.pi * np.clip(u, 0, 1))), 0.0)
            kappa = kappa + rng.choice([-1.0, 1.0]) * bump
        else:  # too short to fold: bend it strongly instead
            return _curvature("strong", n, length, half_width, rng)
    return np.clip(kappa, -k_max, k_max)


def _half_width(s: np.ndarray, length: float, half: float, centromere_s: float, pinch: float) -> np.ndarray:
    """Half-width along the axis: flat arms, centromere pinch, elliptical caps closing at the tips."""
    cap = min(half, length / 2.0)
    u = np.clip(np.minimum(s, length - s) / cap, 0.0, 1.0)
    h = half * np.sqrt(np.clip(1.0 - (1.0 - u) ** 2, 0.0, 1.0))
    sigma = max(0.6 * half, 1.0)
    return h * (1.0 - pinch * np.exp(-0.5 * ((s - centromere_s) / sigma) ** 2))


def render_chromosome(
    number: int,
    rng: np.random.Generator,
    *,
    banding: str = "g",
    length_px: float | None = None,
    width_px: float | None = None,
    bend: str = "gentle",
    chromatid_split: float = 0.0,
    band_blur: float | None = None,
    noise: float = 0.02,
    pad: int = 4,
    angle: float | None = None,
    contrast: float | None = None,
    background: float | None = None,
) -> SynthChromosome:
    """Render one chromosome of class ``number`` with its exact ground truth.

    Parameters
    ----------
    number : int
        Class 1..24 (23 = X, 24 = Y).
    rng : numpy.random.Generator
        All randomness comes from it: same state, same chromosome.
    banding : {"g", "q"}
        G-band (brightfield, dark on light) or Q-band (fluorescence, bright on dark).
    length_px : float, optional
        Axis length tip to tip. Default: a random chromosome-1 length of 90..130 px
        scaled by this class's share of chromosome 1's base pairs.
    width_px : float, optional
        Arm width. Default: 9..12 % of that chromosome-1 length.
    bend : {"straight", "gentle", "strong", "fold"}
        Shape of the axis; a fold is a U-turn (chromosomes too short to fold bend strongly).
    chromatid_split : float
        0..1, how far the two sister chromatids stand apart (a pale seam along
        the arms and forked tips).
    band_blur : float, optional
        Gaussian sigma, px along the axis, of the band pattern. Default: 1 % of
        the corresponding chromosome-1 length (about 400-band resolution).
    noise : float
        Standard deviation of additive Gaussian pixel noise.
    pad : int
        Background pixels around the chromosome.
    angle : float, optional
        Direction of the p-tip end of the axis, radians. Default random.
    contrast, background : float, optional
        Stain contrast and background grey. Defaults random, per banding.

    Returns
    -------
    SynthChromosome
    """
    ideogram = load_ideogram()
    if number not in ideogram:
        raise ValueError(f"class number must be 1..24, got {number!r}")
    if banding not in BANDINGS:
        raise ValueError(f"banding must be 'g' or 'q', got {banding!r}")
    if bend not in BENDS:
        raise ValueError(f"bend must be one of {BENDS}, got {bend!r}")
    ideo = ideogram[number]
    rel = relative_lengths()[number]
    chr1_length = rng.uniform(90.0, 130.0) if length_px is None else None
    if length_px is None:
        length_px = chr1_length * rel
    if chr1_length is None:
        chr1_length = length_px / rel
    if width_px is None:
        width_px = chr1_length * rng.uniform(0.09, 0.12)
    length = float(length_px)
    if length < 4 or width_px < 2:
        raise ValueError(f"chromosome too small to render: length {length_px} px, width {width_px} px")
    half = width_px / 2.0

    # Dense axis by integrating the tangent angle: arc length is exact by construction.
    n_dense = max(int(np.ceil(length / _STEP)) + 1, 50)
    s = np.linspace(0.0, length, n_dense)
    ds = s[1] - s[0]
    kappa = _curvature(bend, n_dense, length, half, rng)
    theta0 = rng.uniform(0, 2 * np.pi) if angle is None else float(angle)
    theta = theta0 + np.concatenate([[0.0], np.cumsum(0.5 * (kappa[1:] + kappa[:-1]) * ds)])
    tangent = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    steps = 0.5 * (tangent[1:] + tangent[:-1]) * ds
    dense = np.concatenate([[[0.0, 0.0]], np.cumsum(steps, axis=0)])

    centromere_index = ideo.centromere_index
    centromere_s = centromere_index * length
    pinch = rng.uniform(0.2, 0.35)
    h_dense = _half_width(s, length, half, centromere_s, pinch)

    sigma = band_blur if band_blur is not None else max(0.6, 0.01 * chr1_length)
    profile_dense = ideo.profile(s / length).astype(np.float64)
    profile_dense = gaussian_filter1d(profile_dense, sigma / ds, mode="nearest")

    # Place the tube in a patch with `pad` px of margin.
    lo = dense.min(axis=0) - half - pad
    dense = dense - np.floor(lo)
    width = int(np.ceil(dense[:, 0].max() + half + pad)) + 1
    height = int(np.ceil(dense[:, 1].max() + half + pad)) + 1
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64)

    # (s, d) coordinates of every pixel from its nearest dense axis sample.
    tree = cKDTree(dense)
    dist, index = tree.query(pixels, distance_upper_bound=half + 1.5)
    near = np.isfinite(dist)
    idx = index[near]
    offset = pixels[near] - dense[idx]
    along = np.einsum("ij,ij->i", offset, tangent[idx])
    across = offset[:, 0] * -tangent[idx, 1] + offset[:, 1] * tangent[idx, 0]
    s_pix = s[idx] + along
    inside_ends = (s_pix >= 0) & (s_pix <= length)
    h_pix = np.interp(s_pix, s, h_dense)
    inside = inside_ends & (np.abs(across) <= h_pix)

    if chromatid_split > 0:
        # Sister chromatids part along the arms (not at the centromere) and fork at the tips.
        away = np.clip(np.abs(s_pix - centromere_s) / max(2.0 * half, 1.0), 0.0, 1.0)
        tip = np.minimum(s_pix, length - s_pix) < 0.8 * half
        seam = np.abs(across) < 0.12 * width_px * chromatid_split * away
        inside &= ~(tip & seam)

    prof_pix = np.interp(s_pix, s, profile_dense)
    shade = np.sqrt(np.clip(1.0 - (across / np.maximum(h_pix, 1e-6)) ** 2, 0.0, 1.0))
    density = (0.35 + 0.65 * prof_pix) * (0.55 + 0.45 * shade)
    if chromatid_split > 0:
        density *= 1.0 - 0.6 * chromatid_split * away * np.exp(-0.5 * (across / (0.12 * width_px)) ** 2)

    mask = np.zeros(height * width, dtype=bool)
    darkness = np.zeros(height * width, dtype=np.float32)
    flat_inside = np.flatnonzero(near)[inside]
    mask[flat_inside] = True
    darkness[flat_inside] = density[inside]
    mask = mask.reshape(height, width)
    darkness = darkness.reshape(height, width)

    if banding == "g":
        bg = rng.uniform(0.82, 0.95) if background is None else float(background)
        amp = rng.uniform(0.55, 0.75) if contrast is None else float(contrast)
        image = bg - amp * darkness
    else:
        bg = rng.uniform(0.03, 0.12) if background is None else float(background)
        amp = rng.uniform(0.55, 0.8) if contrast is None else float(contrast)
        image = bg + amp * darkness
    if noise > 0:
        image = image + rng.normal(0.0, noise, image.shape)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)

    n_axis = max(20, int(round(length / 2.0)) + 1)
    s_axis = np.linspace(0.0, length, n_axis)
    axis = np.stack([np.interp(s_axis, s, dense[:, 0]), np.interp(s_axis, s, dense[:, 1])], axis=1)
    centromere_xy = np.array([np.interp(centromere_s, s, dense[:, 0]), np.interp(centromere_s, s, dense[:, 1])])
    true_length = float(np.linalg.norm(np.diff(dense, axis=0), axis=1).sum())

    return SynthChromosome(
        number=number,
        image=image,
        mask=mask,
        axis=axis.astype(np.float32),
        centromere_xy=centromere_xy.astype(np.float32),
        length_px=true_length,
        centromere_index=float(centromere_index),
        profile=np.interp(s_axis, s, profile_dense).astype(np.float32),
        banding=banding,
        width_px=float(width_px),
        background=float(bg),
        darkness=darkness,
    )
