"""Hand-made features of a chromosome within its cell (the "feature triad").

Size (relative length and area: only meaningful against the rest of the cell),
shape (aspect ratio, centromere index, width variation) and banding (density
profile statistics, a coarse oriented profile, GLCM texture from
scikit-image). Sizes are relative to the cell mean, so crops of any scanner or
magnification compare; none of the features uses absolute pixel counts.

Examples
--------
>>> import numpy as np
>>> from karyopipe.geometry import analyze_chromosome, cell_features, FEATURE_NAMES
>>> masks = [np.pad(np.ones((n, 6), bool), 4) for n in (20, 30, 40)]
>>> feats = cell_features([analyze_chromosome(m, m.astype(np.float32)) for m in masks])
>>> feats.shape == (3, len(FEATURE_NAMES)), bool(feats[2, 0] > feats[0, 0])
(True, True)
"""
from __future__ import annotations

import numpy as np

from karyopipe.geometry.analyze import ChromosomeGeometry

PROFILE_BINS = 8
GLCM_LEVELS = 16
_GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")

FEATURE_NAMES: tuple[str, ...] = (
    "relative_length",        # length / mean length of the cell's chromosomes
    "relative_area",          # area / mean area of the cell's chromosomes
    "aspect_ratio",           # length / mean width
    "centromere_index",       # p / (p + q), <= 0.5
    "polarity_confidence",
    "width_cv",               # std / mean of the width over the central 80%
    "relative_density",       # mean intensity / mean of the cell
    "density_cv",             # std / mean of the density profile
    "pq_density_ratio",       # mean p-arm density / mean q-arm density
    "band_rate",              # density peaks per mean width of length
    *(f"glcm_{p}" for p in _GLCM_PROPS),
    *(f"profile_{i}" for i in range(PROFILE_BINS)),  # z-scored density bin means, p-tip first
    "confidence",
)
N_FEATURES = len(FEATURE_NAMES)


def _central(x: np.ndarray) -> np.ndarray:
    k = len(x) // 10
    return x[k:len(x) - k] if len(x) - 2 * k >= 2 else x


def glcm_features(straightened: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """GLCM contrast, dissimilarity, homogeneity, energy and correlation ``(5,)`` of the chromosome.

    Grey levels 1..15 hold the chromosome's own intensity range; level 0 is the
    background and its co-occurrences are dropped, so the outline does not
    dominate the texture.
    """
    from skimage.feature import graycomatrix, graycoprops

    values = straightened[mask]
    if values.size < 4 or float(values.max() - values.min()) < 1e-6:
        return np.zeros(len(_GLCM_PROPS), np.float32)
    lo, hi = np.percentile(values, [1, 99])
    levels = 1 + np.clip((straightened - lo) / max(hi - lo, 1e-6) * (GLCM_LEVELS - 1), 0, GLCM_LEVELS - 2)
    image = np.where(mask, levels.astype(np.uint8), 0).astype(np.uint8)
    glcm = graycomatrix(image, distances=[1, 2], angles=[0.0, np.pi / 2], levels=GLCM_LEVELS,
                        symmetric=True, normed=False)[1:, 1:].astype(np.float64)
    total = glcm.sum(axis=(0, 1), keepdims=True)
    if (total == 0).all():
        return np.zeros(len(_GLCM_PROPS), np.float32)
    glcm = glcm / np.maximum(total, 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        props = [np.nan_to_num(graycoprops(glcm, p)).mean() for p in _GLCM_PROPS]
    return np.asarray(props, np.float32)


def _bin_means(x: np.ndarray, bins: int) -> np.ndarray:
    """Means of ``x`` over ``bins`` equal stretches of its length (point samples would catch the tips)."""
    if len(x) < 2:
        return np.zeros(bins)
    fine = np.interp(np.linspace(0, 1, bins * 8), np.linspace(0, 1, len(x)), x)
    return fine.reshape(bins, 8).mean(1)


def _band_rate(density: np.ndarray, mean_width: float) -> float:
    from scipy.signal import find_peaks

    d = _central(density)
    if len(d) < 5 or float(d.std()) < 1e-6:
        return 0.0
    z = (d - d.mean()) / d.std()
    peaks, _ = find_peaks(z, prominence=0.5, distance=2)
    return float(len(peaks) * max(mean_width, 1.0) / len(d))


def feature_vector(geom: ChromosomeGeometry, *, mean_length: float, mean_area: float,
                   mean_density: float) -> np.ndarray:
    """Features ``(F,)`` float32 of one chromosome, given its cell's means.

    Parameters
    ----------
    geom : ChromosomeGeometry
    mean_length, mean_area, mean_density : float
        Means over the cell's chromosomes (see :func:`cell_features`).
    """
    out = np.zeros(N_FEATURES, np.float32)
    if "degenerate" in geom.flags or geom.length_px <= 0:
        return out
    width = _central(geom.width_profile)
    density = geom.density_profile
    mean_width = float(width.mean()) if len(width) else 0.0
    dens_mean = float(density.mean()) if len(density) else 0.0
    cut = int(round(geom.centromere_t * (len(density) - 1)))
    p_d = float(density[:cut + 1].mean()) if cut >= 0 else dens_mean
    q_d = float(density[cut:].mean()) if cut < len(density) else dens_mean
    profile = _bin_means(density, PROFILE_BINS)
    sd = float(profile.std())
    profile = (profile - profile.mean()) / sd if sd > 1e-6 else np.zeros(PROFILE_BINS)
    values = [
        geom.length_px / max(mean_length, 1e-6),
        geom.area_px / max(mean_area, 1e-6),
        geom.length_px / max(mean_width, 1.0),
        geom.centromere_index,
        geom.polarity_confidence,
        float(width.std() / mean_width) if mean_width > 0 else 0.0,
        dens_mean / max(mean_density, 1e-6),
        float(density.std() / dens_mean) if dens_mean > 1e-6 else 0.0,
        p_d / q_d if q_d > 1e-6 else 1.0,
        _band_rate(density, mean_width),
        *glcm_features(geom.straightened, geom.straightened_mask),
        *profile,
        geom.confidence,
    ]
    out[:] = np.nan_to_num(np.asarray(values, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return out


def cell_totals(geoms: list[ChromosomeGeometry]) -> dict[str, float]:
    """Mean length, area and density over a cell's non-degenerate chromosomes."""
    ok = [g for g in geoms if "degenerate" not in g.flags and g.length_px > 0]
    if not ok:
        return {"mean_length": 1.0, "mean_area": 1.0, "mean_density": 1.0}
    return {
        "mean_length": float(np.mean([g.length_px for g in ok])),
        "mean_area": float(np.mean([g.area_px for g in ok])),
        "mean_density": float(np.mean([g.density_profile.mean() for g in ok])) or 1.0,
    }


def reference_mask(reference, n: int) -> np.ndarray:
    """``reference`` (bool per object, or None) as a bool mask of length ``n``; all objects when None or none flagged."""
    if reference is None:
        return np.ones(n, bool)
    ref = np.asarray(reference, bool).reshape(-1)
    if ref.shape != (n,):
        raise ValueError(f"reference must have one flag per object ({n}), got shape {ref.shape}")
    return ref if ref.any() else np.ones(n, bool)


def cell_features(geoms: list[ChromosomeGeometry], reference=None) -> np.ndarray:
    """Features of every chromosome of one cell.

    Parameters
    ----------
    geoms : list of ChromosomeGeometry
    reference : array_like of bool, shape (n,), optional
        The objects whose mean length, area and density the features are
        relative to; default all (a segmented spread may pass its confident
        detections, so that debris does not shift every relative size).

    Returns
    -------
    features : ndarray, shape (n, F), float32
        Columns as :data:`FEATURE_NAMES`. Degenerate chromosomes get a zero row.
    """
    if not geoms:
        return np.zeros((0, N_FEATURES), np.float32)
    keep = reference_mask(reference, len(geoms))
    totals = cell_totals([g for g, k in zip(geoms, keep) if k])
    return np.stack([feature_vector(g, **totals) for g in geoms])
