"""The karyogram picture: the standard lab layout of a cell's chromosomes.

Rows 1-5 / 6-12 + X / 13-18 / 19-22 + Y, homologs side by side at one common
scale, p-arm up, the centromeres of a row on one line, an hg38 ideogram beside
each pair, the class under it, the ISCN karyotype as the title, uncertain
chromosomes framed in red and unassigned objects in a tray at the bottom.
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from karyopipe.classes import CHROMOSOMES, X, Y, class_name

__all__ = ["KARYOGRAM_ROWS", "draw_karyogram", "save_karyogram", "ideogram_bands"]

KARYOGRAM_ROWS: tuple[tuple[int, ...], ...] = (
    (1, 2, 3, 4, 5),
    (6, 7, 8, 9, 10, 11, 12, X),
    (13, 14, 15, 16, 17, 18),
    (19, 20, 21, 22, Y),
)

_INK = (20, 20, 20)
_WARN = (210, 40, 30)
_EXTRA = (30, 90, 200)
_ID_INK = (120, 120, 120)  # object ids: readable on the white G and the black Q background, quieter than the labels


@functools.lru_cache(maxsize=1)
def ideogram_bands() -> dict[int, tuple[float, list[tuple[float, float, str]]]]:
    """Per class: ``(centromere fraction, [(start, end, stain), ...])`` with positions as fractions of length.

    From :func:`karyopipe.synth.load_ideogram` (hg38 cytobands shipped with
    pyryotype; X and Y from the CHM13 table beside it).
    """
    from karyopipe.synth.ideogram import load_ideogram

    out = {}
    for k, ideo in load_ideogram().items():
        bands = [(b.start / ideo.length_bp, b.end / ideo.length_bp, b.stain) for b in ideo.bands]
        out[k] = (ideo.centromere_index, bands)
    return out


@functools.lru_cache(maxsize=8)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType
        return ImageFont.load_default()


_STAIN_GREY = {"gneg": 255, "gpos25": 190, "gpos50": 130, "gpos75": 80, "gpos100": 20, "gvar": 110,
               "stalk": 235, "acen": 200}


def _draw_ideogram(draw: ImageDraw.ImageDraw, x: int, y_cen: float, length: float, width: int, number: int):
    ci, bands = ideogram_bands()[number]
    top = y_cen - ci * length
    half = width / 2
    cx = x + half
    for start, end, stain in bands:
        y0, y1 = top + start * length, top + end * length
        w = half * (0.45 if stain in ("acen", "stalk") else 1.0)
        fill = (_STAIN_GREY.get(stain, 128),) * 3 if stain != "acen" else (200, 90, 90)
        draw.rectangle([cx - w, y0, cx + w, max(y0, y1 - 0.01)], fill=fill, outline=None)
    draw.rectangle([x, top, x + width, top + length], outline=_INK, width=1)


def _trim_columns(img: np.ndarray) -> np.ndarray:
    """Drop empty columns either side (straightening pads to a fixed width); rows stay, so the centromere does."""
    cols = np.flatnonzero(img.max(axis=0) > 0.02) if img.size else []
    if len(cols) == 0:  # blank (degenerate geometry): keep its length, one column wide
        return img[:, :1]
    lo, hi = max(cols[0] - 1, 0), min(cols[-1] + 2, img.shape[1])
    return img[:, lo:hi]


def _display(img: np.ndarray, banding: str) -> np.ndarray:
    """Canonical (bright on dark) float image -> display uint8: dark on white for G, as is for Q."""
    img = np.nan_to_num(np.asarray(img, dtype=np.float32))
    hi = float(np.percentile(img[img > 0], 99)) if np.any(img > 0) else 1.0
    img = np.clip(img / max(hi, 1e-6), 0, 1)
    if banding.lower().startswith("g"):
        img = 1.0 - img
    return (img * 255).astype(np.uint8)


def draw_karyogram(straightened, call, *, centromere_t=None, banding: str = "g", title: str | None = None,
                   max_chromosome_px: int = 220, ideogram: bool = True, ids: bool = True,
                   marked=None) -> np.ndarray:
    """Draw a cell's karyogram.

    Parameters
    ----------
    straightened : list of ndarray, each (L, W) float32
        Straightened chromosomes in canonical polarity (bright on dark), row 0
        at the p-tip, one per object of ``call``, all at the cell's pixel scale.
    call : KaryotypeCall
        From :func:`karyopipe.karyogram.assign_karyotype`.
    centromere_t : array_like, shape (n,), optional
        Centromere position per object as a fraction of its length from the
        p-tip; the reference centromere index of its class when omitted.
    banding : {"g", "q"}
        ``"g"``: dark chromosomes on white, as labs show G-banding;
        ``"q"``: bright chromosomes on black, as fluorescence.
    title : str, optional
        Defaults to the ISCN karyotype (or, if no call was made, the statement).
    max_chromosome_px : int
        Height of the longest chromosome in the picture.
    ideogram : bool
        Draw the hg38 ideogram beside each pair.
    ids : bool
        Write each chromosome's object id (``#12``, as in the overlay) under it,
        so that a reviewer can name it in a correction (``karyopipe review --set 12=7``).
    marked : sequence of bool, shape (n,), optional
        Objects framed with a "?" for the reader's check; by default those the
        call flags ``"uncertain"``. The pipeline passes every object its overlay marks.

    Returns
    -------
    ndarray, shape (H, W, 3), uint8
        RGB picture.
    """
    n = len(call.labels)
    if len(straightened) != n:
        raise ValueError(f"draw_karyogram: {len(straightened)} straightened images for {n} objects in the call")
    marked = [("uncertain" in f) for f in call.flags] if marked is None else [bool(m) for m in marked]
    if len(marked) != n:
        raise ValueError(f"draw_karyogram: {len(marked)} marks for {n} objects in the call")
    images = [np.nan_to_num(np.asarray(im, dtype=np.float32)) for im in straightened]
    for i, im in enumerate(images):
        if im.ndim != 2:
            raise ValueError(f"draw_karyogram: straightened image {i} must be 2-D (L, W), got shape {im.shape}")
    images = [_trim_columns(im) for im in images]
    if banding.lower()[:1] not in ("g", "q"):
        raise ValueError(f"draw_karyogram: banding must be 'g' or 'q', got {banding!r}")
    if centromere_t is None:
        ct = np.array([CHROMOSOMES[int(k)].centromere_index if k else 0.5 for k in call.labels], float)
    else:
        ct = np.clip(np.nan_to_num(np.asarray(centromere_t, float).reshape(-1), nan=0.5), 0.0, 1.0)
        if len(ct) != n:
            raise ValueError(f"draw_karyogram: centromere_t has {len(ct)} values for {n} objects")
    g_display = banding.lower().startswith("g")
    bg = (255, 255, 255) if g_display else (0, 0, 0)
    fg = _INK if g_display else (235, 235, 235)

    # The longest *assigned* chromosome sets the scale, so a clump in the tray does not shrink the karyogram.
    heights = [im.shape[0] for im, k in zip(images, call.labels) if im.size and k > 0]
    longest = max(heights or [im.shape[0] for im in images if im.size] or [1])
    s = max_chromosome_px / longest
    scaled = []
    for im in images:
        if im.size == 0:
            scaled.append(None)
            continue
        h, w = max(1, round(im.shape[0] * s)), max(1, round(im.shape[1] * s))
        scaled.append(Image.fromarray(_display(im, banding)).resize((w, h), Image.Resampling.LANCZOS))
    # Median, not max: one degenerate (blank, wide) object must not widen every slot.
    chrom_w = int(np.median([im.width for im in scaled if im is not None] or [8]))
    gap = max(3, chrom_w // 6)
    ideo_w = max(7, chrom_w // 2) if ideogram else 0
    pair_gap = max(14, chrom_w // 2)
    id_h = 12 if ids else 0
    label_h = 22 + id_h
    # Expected scaled length of a class, for ideograms of empty classes.
    unit = (call.scale * s) if np.isfinite(call.scale) and call.scale > 0 else max_chromosome_px / CHROMOSOMES[1].relative_length

    def pair_width(k: int) -> int:
        members = call.pairs.get(k, [])
        widths = [scaled[i].width for i in members if scaled[i] is not None] or [chrom_w] * 2
        return sum(widths) + gap * (max(len(widths), 2) - 1) + (gap + ideo_w if ideogram else 0) + \
            (chrom_w * max(0, 2 - len(widths)) if len(widths) < 2 else 0)

    def ideo_length(k: int) -> float:
        members = [i for i in call.pairs.get(k, []) if scaled[i] is not None]
        if members:
            return float(np.mean([scaled[i].height for i in members]))
        return CHROMOSOMES[k].relative_length * unit

    rows = []
    for row in KARYOGRAM_ROWS:
        above, below = 10.0, 10.0
        for k in row:
            for i in call.pairs.get(k, []):
                if scaled[i] is not None:
                    above = max(above, ct[i] * scaled[i].height)
                    below = max(below, (1 - ct[i]) * scaled[i].height)
            if ideogram:
                ci = ideogram_bands()[k][0]
                above = max(above, ci * ideo_length(k))
                below = max(below, (1 - ci) * ideo_length(k))
        width = sum(pair_width(k) for k in row) + pair_gap * (len(row) - 1)
        rows.append((row, above, below, width))

    unassigned = [i for i in range(n) if call.labels[i] == 0 and scaled[i] is not None]
    tray_h = (max(scaled[i].height for i in unassigned) + label_h + 24) if unassigned else 0
    tray_w = sum(scaled[i].width + pair_gap for i in unassigned)
    margin = 24
    title_h = 56
    head = title if title is not None else (call.karyotype or "no karyotype call")
    sub = call.statement if len(call.statement) < 160 else call.statement[:157] + "..."
    text_w = max(_font(24).getlength(head), _font(12).getlength(sub))
    width = int(max([r[3] for r in rows] + [tray_w, 600, text_w]) + 2 * margin)
    height = int(title_h + sum(a + b + label_h + 18 for _, a, b, _ in rows) + tray_h + margin)

    canvas = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(canvas)
    draw.text((width / 2, 8), head, fill=fg, font=_font(24), anchor="ma")
    draw.text((width / 2, 36), sub, fill=fg, font=_font(12), anchor="ma")

    y = title_h
    for row, above, below, row_w in rows:
        y_cen = y + above
        x = (width - row_w) / 2
        for k in row:
            members = [i for i in call.pairs.get(k, []) if scaled[i] is not None]
            x0 = x
            for i in members:
                im = scaled[i]
                top = round(y_cen - ct[i] * im.height)
                canvas.paste(im.convert("RGB"), (round(x), top))
                if marked[i]:
                    draw.rectangle([x - 2, top - 2, x + im.width + 1, top + im.height + 1], outline=_WARN, width=2)
                    draw.text((x + im.width / 2, top - 4), "?", fill=_WARN, font=_font(12), anchor="md")
                elif "extra_copy" in call.flags[i]:
                    draw.text((x + im.width / 2, top - 4), "+", fill=_EXTRA, font=_font(12), anchor="md")
                if ids:
                    draw.text((x + im.width / 2, y + above + below + 7), f"#{i}", fill=_ID_INK, font=_font(9),
                              anchor="ma")
                x += im.width + gap
            if len(members) < 2:
                x += (chrom_w + gap) * (2 - len(members))
            if ideogram:
                _draw_ideogram(draw, round(x), y_cen, ideo_length(k), ideo_w, k)
                x += ideo_w
            line_y = y + above + below + 4
            draw.line([x0, line_y, x, line_y], fill=fg, width=1)
            draw.text(((x0 + x) / 2, line_y + 3 + id_h), class_name(k), fill=fg, font=_font(14), anchor="ma")
            x += pair_gap
        y += above + below + label_h + 18

    if unassigned:
        draw.line([margin, y + 4, width - margin, y + 4], fill=(150, 150, 150), width=1)
        draw.text((margin, y + 8), f"unassigned ({len(unassigned)})", fill=_WARN, font=_font(12))
        x, top = margin, y + 26
        for i in unassigned:
            canvas.paste(scaled[i].convert("RGB"), (round(x), round(top)))
            draw.text((x + scaled[i].width / 2, top + scaled[i].height + 2), f"#{i}", fill=fg, font=_font(11),
                      anchor="ma")
            x += scaled[i].width + pair_gap
    return np.asarray(canvas)


def save_karyogram(path, picture: np.ndarray) -> None:
    """Write a karyogram picture: PNG (or any format PIL knows) by suffix; ``.svg`` wraps the PNG.

    The SVG holds the raster picture as an embedded PNG, so it opens in
    vector editors for annotation; the chromosomes themselves are pixels.
    """
    from pathlib import Path

    path = Path(path)
    image = Image.fromarray(np.asarray(picture, dtype=np.uint8))
    if path.suffix.lower() == ".svg":
        import base64
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        w, h = image.size
        path.write_text(
            f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
            f'<image width="{w}" height="{h}" xlink:href="data:image/png;base64,{data}"/></svg>\n')
        return
    image.save(path)
