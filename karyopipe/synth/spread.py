"""Compose a whole metaphase spread of a given karyotype with exact ground truth.

Every chromosome of the cell is rendered by :func:`render_chromosome` at one
per-cell condensation (so relative lengths stay true), laid out inside a roughly
elliptical spread, some touching or crossing. Stain densities add where
chromosomes overlap (absorbance in brightfield, emission in fluorescence), then
the microscope is simulated: illumination, blur, noise, 8-bit quantisation and
optional JPEG.

Every instance keeps its amodal mask (the whole chromosome) and its visible mask
(minus what lies on top of it), class, centromere, medial axis, true length and
centromere index. Interphase nuclei and debris are instances too, with their own
categories, so a segmenter can learn to reject them.

Examples
--------
>>> import numpy as np
>>> from karyopipe.synth import compose_spread
>>> s = compose_spread("47,XX,+21", np.random.default_rng(0), size=(512, 512), nuclei=0, debris=0)
>>> s.image.shape, sum(i.category == "chromosome" for i in s.instances)
((512, 512), 47)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from karyopipe.synth.chromosome import BANDINGS, BENDS, banding_polarity, render_chromosome
from karyopipe.synth.ideogram import relative_lengths
from karyopipe.synth.karyotype import parse_karyotype

CHROMOSOME, NUCLEUS, DEBRIS = "chromosome", "nucleus", "debris"
_BEND_WEIGHTS = (0.3, 0.45, 0.17, 0.08)  # straight, gentle, strong, fold


@dataclass
class SynthInstance:
    """One object of a synthetic spread; masks are stored as crops at ``origin``.

    Attributes
    ----------
    category : str
        ``"chromosome"``, ``"nucleus"`` or ``"debris"``.
    number : int
        Class 1..24 for chromosomes, 0 otherwise.
    origin : tuple of int
        ``(x0, y0)`` of the crops in the spread.
    amodal_crop, visible_crop : ndarray, shape (h, w), bool
        The whole object, and the part of it not covered by objects on top.
    axis : ndarray, shape (N, 2), float32 or None
        Medial axis, spread xy, p-tip to q-tip.
    centromere_xy : ndarray, shape (2,), float32 or None
    length_px, centromere_index : float
    z : int
        Stacking order, higher is on top.
    """

    category: str
    number: int
    origin: tuple[int, int]
    amodal_crop: np.ndarray
    visible_crop: np.ndarray | None = None
    axis: np.ndarray | None = None
    centromere_xy: np.ndarray | None = None
    length_px: float = 0.0
    centromere_index: float = 0.0
    width_px: float = 0.0
    z: int = 0
    shape: tuple[int, int] = (0, 0)
    extra: dict = field(default_factory=dict)

    def _full(self, crop: np.ndarray) -> np.ndarray:
        out = np.zeros(self.shape, dtype=bool)
        x0, y0 = self.origin
        h, w = crop.shape
        out[y0:y0 + h, x0:x0 + w] = crop
        return out

    @property
    def mask(self) -> np.ndarray:
        """Visible mask, shape (H, W) bool."""
        return self._full(self.visible_crop if self.visible_crop is not None else self.amodal_crop)

    @property
    def amodal_mask(self) -> np.ndarray:
        """Amodal (whole-object) mask, shape (H, W) bool."""
        return self._full(self.amodal_crop)

    @property
    def occluded_fraction(self) -> float:
        area = int(self.amodal_crop.sum())
        return 0.0 if area == 0 or self.visible_crop is None else 1.0 - int(self.visible_crop.sum()) / area


@dataclass
class SynthSpread:
    """A synthetic spread.

    Attributes
    ----------
    image : ndarray, shape (H, W), float32 in [0, 1]
        Raw polarity: G-band dark on light, Q-band bright on dark.
    image_u8 : ndarray, shape (H, W), uint8
        What gets written to disk (after quantisation and optional JPEG).
    karyotype : str
    counts : dict of int to int
    banding : str
    instances : list of SynthInstance
        Chromosomes, nuclei and debris, in stacking order.
    settings : dict
        The drawn spread-level parameters.
    """

    image: np.ndarray
    image_u8: np.ndarray
    karyotype: str
    counts: dict[int, int]
    banding: str
    instances: list[SynthInstance]
    settings: dict

    @property
    def chromosomes(self) -> list[SynthInstance]:
        return [i for i in self.instances if i.category == CHROMOSOME]

    @property
    def polarity(self) -> str:
        return banding_polarity(self.banding)


def _draw(value, rng, default):
    """A setting given as a number, a ``(lo, hi)`` range, or None for ``default`` range."""
    if value is None:
        value = default
    if isinstance(value, (tuple, list)):
        return float(rng.uniform(*value))
    return float(value)


def _blob(rng: np.random.Generator, rx: float, ry: float, roughness: float) -> tuple[np.ndarray, np.ndarray]:
    """An irregular filled ellipse: ``(mask, density)`` crops."""
    h, w = int(np.ceil(2 * ry * (1 + roughness))) + 3, int(np.ceil(2 * rx * (1 + roughness))) + 3
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    angle = rng.uniform(0, np.pi)
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = (xx - cx) * ca + (yy - cy) * sa, -(xx - cx) * sa + (yy - cy) * ca
    r = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    phi = np.arctan2(v, u)
    wobble = 1.0 + roughness * sum(rng.normal(0, 1.0 / k) * np.cos(k * phi + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    mask = r <= wobble
    texture = gaussian_filter(rng.normal(0, 1, (h, w)).astype(np.float32), max(rx, ry) / 6)
    texture = (texture - texture.mean()) / (texture.std() + 1e-6)
    edge = np.clip((wobble - r) / 0.25, 0, 1)
    density = np.where(mask, (0.8 + 0.12 * texture) * (0.6 + 0.4 * edge), 0.0).astype(np.float32)
    return mask, np.clip(density, 0, 1)


def _place(mask: np.ndarray, occupied: np.ndarray, halo: np.ndarray, rng: np.random.Generator,
           centre: tuple[float, float], radii: tuple[float, float], mode: str, tries: int = 60) -> tuple[int, int]:
    """Top-left ``(x0, y0)`` for a crop ``mask``: free of ``halo`` (apart), touching, or overlapping ``occupied``."""
    H, W = occupied.shape
    h, w = mask.shape
    area = max(int(mask.sum()), 1)
    best, best_cost = None, np.inf
    for _ in range(tries):
        r = np.sqrt(rng.uniform(0, 1))
        t = rng.uniform(0, 2 * np.pi)
        cx = centre[0] + r * radii[0] * np.cos(t)
        cy = centre[1] + r * radii[1] * np.sin(t)
        x0 = int(np.clip(round(cx - w / 2), 0, max(W - w, 0)))
        y0 = int(np.clip(round(cy - h / 2), 0, max(H - h, 0)))
        if x0 + w > W or y0 + h > H:
            continue
        over = int(occupied[y0:y0 + h, x0:x0 + w][mask].sum())
        near = int(halo[y0:y0 + h, x0:x0 + w][mask].sum())
        if mode == "apart":
            cost = near
        elif mode == "touch":
            cost = over * 10 + (0 if near > 0 else 1)
        else:  # overlap: cross another chromosome over 5..30 % of its own area
            frac = over / area
            cost = 0 if 0.05 <= frac <= 0.3 else abs(frac - 0.15) + 1
        if cost < best_cost:
            best, best_cost = (x0, y0), cost
            if cost == 0:
                break
    if best is None:  # the crop is larger than the image: clip at the corner
        best = (0, 0)
    return best


def compose_spread(
    karyotype: str | dict[int, int],
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = (1024, 1024),
    banding: str = "g",
    density=None,
    rotation: float = 180.0,
    overlap_fraction=None,
    touching=None,
    nuclei=None,
    debris=None,
    illumination=None,
    noise=None,
    blur=None,
    jpeg_quality: int | None = None,
    pixel_scale=None,
    composite_cell=None,
) -> SynthSpread:
    """Lay out one cell of ``karyotype`` as a metaphase spread.

    Parameters
    ----------
    karyotype : str or dict
        ISCN string (``"46,XY"``, ``"47,XX,+21"``...) or class counts.
    rng : numpy.random.Generator
        All randomness: same state, same spread.
    size : (W, H)
    banding : {"g", "q"}
        G-band brightfield (dark on light) or Q-band fluorescence (bright on dark).
    density : float or (lo, hi), optional
        Chromosome area over spread-ellipse area. Default 0.07..0.22.
    rotation : float
        Largest deviation of a chromosome from vertical, degrees (180 = any direction).
    overlap_fraction, touching : float or (lo, hi), optional
        Share of chromosomes placed crossing another / touching another.
        Defaults 0..0.1 and 0.05..0.25.
    nuclei, debris : int, optional
        Number of interphase nuclei and debris particles. Default 0..2 and 0..10.
    illumination : float or (lo, hi), optional
        Peak-to-peak strength of the smooth illumination gradient. Default 0..0.25.
    noise : float or (lo, hi), optional
        Pixel noise std (of [0, 1] grey). Default 0.01..0.04.
    blur : float or (lo, hi), optional
        Optical blur sigma, px. Default 0.4..1.2.
    jpeg_quality : int, optional
        Re-encode as JPEG at this quality (the PNG then carries its artefacts).
    pixel_scale : float or (lo, hi), optional
        Chromosome-1 length in px per 1000 px of image diagonal-ish size
        (``sqrt(W * H)``). Default 105..150 (about 70..100 px for 768x576,
        as in the BioImLab spreads).
    composite_cell : list of (number, density, mask), optional
        Real crops of one cell (stain density in [0, 1], 0 = background) to place,
        rotated, instead of rendered chromosomes, at their own scale; see
        :func:`karyopipe.synth.composite.load_composite_cells`. Pass the cell's banding.

    Returns
    -------
    SynthSpread
    """
    if banding not in BANDINGS:
        raise ValueError(f"banding must be 'g' or 'q', got {banding!r}")
    if isinstance(karyotype, str):
        name, counts = karyotype, parse_karyotype(karyotype)
    else:
        from karyopipe.synth.composite import counts_to_karyotype

        counts = {k: int(karyotype.get(k, 0)) for k in range(1, 25)}
        name = counts_to_karyotype(counts)
    W, H = int(size[0]), int(size[1])
    settings = {
        "density": _draw(density, rng, (0.07, 0.22)),
        "overlap_fraction": _draw(overlap_fraction, rng, (0.0, 0.1)),
        "touching": _draw(touching, rng, (0.05, 0.25)),
        "illumination": _draw(illumination, rng, (0.0, 0.25)),
        "noise": _draw(noise, rng, (0.01, 0.04)),
        "blur": _draw(blur, rng, (0.4, 1.2)),
        "pixel_scale": _draw(pixel_scale, rng, (105.0, 150.0)),
        "nuclei": int(rng.integers(0, 3)) if nuclei is None else int(nuclei),
        "debris": int(rng.integers(0, 11)) if debris is None else int(debris),
    }
    chr1 = settings["pixel_scale"] * np.sqrt(W * H) / 1000.0
    width = chr1 * rng.uniform(0.11, 0.16)
    rel = relative_lengths()

    # Objects to place: rendered chromosomes (or real crops), then nuclei and debris.
    objects = []
    if composite_cell is not None:
        from karyopipe.synth.composite import _rotate

        for number, gray, mask in composite_cell:
            d, m = _rotate(gray, mask, float(rng.uniform(-rotation, rotation)))
            objects.append({"category": CHROMOSOME, "number": int(number), "mask": m, "density": d,
                            "axis": None, "centromere": None, "length": 0.0, "ci": 0.0, "width": 0.0})
        # Real crops set the scale: width from their typical area (a chromosome ~ 8 widths long).
        width = float(np.sqrt(np.median([m.sum() for _, _, m in composite_cell]) / 8.0))
    else:
        order = [k for k in range(1, 25) for _ in range(counts[k])]
        for number in order:
            bend = BENDS[rng.choice(len(BENDS), p=_BEND_WEIGHTS)]
            split = rng.uniform(0.2, 0.8) if rng.uniform() < 0.35 else 0.0
            # Small per-chromosome spread around the cell's condensation, as in real cells.
            length = chr1 * rel[number] * rng.normal(1.0, 0.05)
            base = rng.uniform(-np.pi, np.pi) * rotation / 180.0
            angle = np.pi / 2 + base + (np.pi if rng.uniform() < 0.5 and rotation >= 90 else 0.0)
            c = render_chromosome(number, rng, banding=banding, length_px=max(length, 6.0),
                                  width_px=max(width * rng.normal(1.0, 0.04), 3.0), bend=bend,
                                  chromatid_split=split, noise=0.0, pad=1, angle=angle)
            objects.append({"category": CHROMOSOME, "number": number, "mask": c.mask, "density": c.darkness,
                            "axis": c.axis, "centromere": c.centromere_xy, "length": c.length_px,
                            "ci": c.centromere_index, "width": c.width_px})
    if len(objects) == 0:
        raise ValueError(f"karyotype {name!r} has no chromosomes")
    order = rng.permutation(len(objects))
    objects = [objects[i] for i in order]

    total_area = sum(float(o["mask"].sum()) for o in objects)
    ellipse_area = total_area / settings["density"]
    aspect = rng.uniform(0.75, 1.33)
    rx = min(np.sqrt(ellipse_area / np.pi * aspect), 0.46 * W)
    ry = min(np.sqrt(ellipse_area / np.pi / aspect), 0.46 * H)
    centre = (W / 2 + rng.uniform(-0.5, 0.5) * (W / 2 - rx), H / 2 + rng.uniform(-0.5, 0.5) * (H / 2 - ry))

    occupied = np.zeros((H, W), dtype=bool)
    halo = np.zeros((H, W), dtype=bool)
    density_map = np.zeros((H, W), dtype=np.float32)
    instances: list[SynthInstance] = []
    gap = max(2, int(round(width * 0.4)))

    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))

    def put(obj, x0, y0, z):
        m, d = obj["mask"], obj["density"]
        h, w = m.shape
        h, w = min(h, H - y0), min(w, W - x0)
        m, d = m[:h, :w], d[:h, :w]
        density_map[y0:y0 + h, x0:x0 + w] += np.where(m, d, 0.0).astype(np.float32)
        occupied[y0:y0 + h, x0:x0 + w] |= m
        grown = cv2.dilate(np.pad(m, gap).astype(np.uint8), kernel).astype(bool)
        ys, xs = slice(y0 - gap, y0 + h + gap), slice(x0 - gap, x0 + w + gap)
        gy0, gx0 = max(0, -(y0 - gap)), max(0, -(x0 - gap))
        sub = halo[max(ys.start, 0):ys.stop, max(xs.start, 0):xs.stop]
        sub |= grown[gy0:gy0 + sub.shape[0], gx0:gx0 + sub.shape[1]]
        offset = np.array([x0, y0], dtype=np.float32)
        inst = SynthInstance(
            category=obj["category"], number=obj["number"], origin=(x0, y0), amodal_crop=m.copy(),
            axis=None if obj.get("axis") is None else obj["axis"] + offset,
            centromere_xy=None if obj.get("centromere") is None else obj["centromere"] + offset,
            length_px=float(obj.get("length", 0.0)), centromere_index=float(obj.get("ci", 0.0)),
            width_px=float(obj.get("width", 0.0)), z=z, shape=(H, W))
        instances.append(inst)

    # Nuclei first and underneath: chromosomes keep clear of them, as in most spreads.
    z = 0
    for _ in range(settings["nuclei"]):
        r = chr1 * rng.uniform(0.45, 0.8)
        m, d = _blob(rng, r * rng.uniform(0.85, 1.0), r * rng.uniform(0.7, 1.0), 0.06)
        far = (W / 2 if centre[0] < W / 2 else -W / 2, 0)
        x0, y0 = _place(m, occupied, halo, rng, (centre[0] + far[0] * 0.7, centre[1]), (W / 3, H / 2.5), "apart")
        # Interphase chromatin is less condensed: paler than the chromosomes.
        put({"category": NUCLEUS, "number": 0, "mask": m, "density": d * rng.uniform(0.35, 0.8)}, x0, y0, z)
        z += 1
    n_overlap = settings["overlap_fraction"]
    for obj in objects:
        u = rng.uniform()
        mode = "overlap" if u < n_overlap and z > 0 else "touch" if u < n_overlap + settings["touching"] and z > 0 else "apart"
        x0, y0 = _place(obj["mask"], occupied, halo, rng, centre, (rx, ry), mode)
        put(obj, x0, y0, z)
        z += 1
    for _ in range(settings["debris"]):
        r = width * rng.uniform(0.2, 0.9)
        m, d = _blob(rng, r * rng.uniform(0.6, 1.0), r * rng.uniform(0.4, 1.0), 0.25)
        x0, y0 = _place(m, occupied, halo, rng, (W / 2, H / 2), (W / 2, H / 2), "apart", tries=20)
        put({"category": DEBRIS, "number": 0, "mask": m, "density": d * rng.uniform(0.5, 1.1)}, x0, y0, z)
        z += 1

    # Visible = amodal minus everything stacked above it.
    covered = np.zeros((H, W), dtype=bool)
    for inst in reversed(instances):
        x0, y0 = inst.origin
        h, w = inst.amodal_crop.shape
        inst.visible_crop = inst.amodal_crop & ~covered[y0:y0 + h, x0:x0 + w]
        covered[y0:y0 + h, x0:x0 + w] |= inst.amodal_crop

    image = _microscope(density_map, banding, settings, rng)
    image_u8 = np.round(image * 255.0).astype(np.uint8)
    if jpeg_quality is not None:
        ok, buf = cv2.imencode(".jpg", image_u8, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        image_u8 = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        settings["jpeg_quality"] = int(jpeg_quality)
    return SynthSpread(image=image_u8.astype(np.float32) / 255.0, image_u8=image_u8, karyotype=name, counts=counts,
                       banding=banding, instances=instances, settings=settings)


def _microscope(density: np.ndarray, banding: str, settings: dict, rng: np.random.Generator) -> np.ndarray:
    """Stain density (H, W) -> raw grey image in [0, 1]."""
    import cv2

    H, W = density.shape
    # The illumination field is smooth: compute it coarse and interpolate up.
    gh, gw = max(2, H // 16), max(2, W // 16)
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    yy, xx = yy * (H / gh), xx * (W / gw)
    t = rng.uniform(0, 2 * np.pi)
    ramp = ((xx - W / 2) * np.cos(t) + (yy - H / 2) * np.sin(t)) / max(W, H)
    vignette = ((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / (max(W, H) ** 2)
    illum = 1.0 - settings["illumination"] * (0.5 * ramp + 0.5 + rng.uniform(0, 1) * vignette)
    illum = cv2.resize(illum.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    density = np.minimum(density, 1.4)
    if banding == "g":
        # Transmitted light: Beer-Lambert absorbance of the stain.
        # Ranges read off the real gband_spreads histograms (docs/scripts/real_synth_compare.py):
        # a bright background, chromosomes mid grey rather than black.
        bg = rng.uniform(0.86, 0.97)
        k = rng.uniform(0.5, 0.95)
        image = np.float32(bg) * illum * np.exp(np.float32(-k) * density)
    else:
        # BioImLab-like: near-black background, bands reaching 0.6..1.
        bg = rng.uniform(0.0, 0.06)
        amp = rng.uniform(0.6, 0.95)
        image = np.float32(bg) + np.float32(amp) * density * illum
    settings.update(background=float(bg))
    image = image.astype(np.float32)

    if settings["blur"] > 0:
        image = cv2.GaussianBlur(image, (0, 0), settings["blur"])
    if settings["noise"] > 0:
        # Shot-like noise grows with brightness; plus a floor of read noise.
        scale = np.float32(settings["noise"]) * (np.float32(0.5) + np.float32(0.5) * np.sqrt(np.clip(image, 0, 1)))
        image = image + rng.standard_normal(image.shape, dtype=np.float32) * scale
    return np.clip(image, 0.0, 1.0).astype(np.float32)
