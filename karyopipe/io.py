"""Image reading and polarity normalisation.

Real chromosome images come as 8- or 16-bit BMP, PNG, JPEG and TIFF, grey, RGB,
RGBA or palette. Many TIFFs in the wild are rejected by PIL as "truncated" yet
decode in OpenCV, so :func:`read_image` tries PIL, then OpenCV, then tifffile.

Canonical polarity in karyopipe is **bright chromosomes on a dark background**
(fluorescence / Q-band look). Brightfield G-band images are inverted on load by
:func:`normalize_polarity`, so after it Q-bright bands and G-dark bands both read
as high values.

Examples
--------
>>> import numpy as np
>>> from karyopipe.io import normalize_polarity
>>> g = np.full((64, 64), 230, np.uint8); g[20:40, 30:34] = 40   # dark object on light
>>> img, polarity = normalize_polarity(g)
>>> polarity, bool(img[30, 31] > img[0, 0])
('brightfield', True)
"""
from __future__ import annotations

import io
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = frozenset(
    {".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm"}
)
FLUORESCENCE, BRIGHTFIELD = "fluorescence", "brightfield"

# Pixels beyond this are refused before decoding: a 10000x10000 RGB image is
# 300 MB and no microscope spread needs more than ~4000 px a side.
MAX_PIXELS = 60_000_000

# Bit depths of camera counts that 16-bit files hold (effective_bit_depth).
CAMERA_BIT_DEPTHS = (8, 10, 12, 14, 16)

# The background of every spread the models were trained on, canonical and as
# the median pixel, lies at or below this (BioImLab 0.004 at most, real G-band
# spreads 0.10, the synthetic spreads 0.23). A spread whose background reads
# higher (dim brightfield illumination, a camera offset) is brought to it by
# standardize_background; on synthetic G-band spreads, 0.5 lost 10 of 46
# chromosomes and 0.6 every one (BENCHMARKS.md, Data layer).
BACKGROUND_CEILING = 0.25


def too_large_message(size: str | None) -> str:
    """Why an image is refused for its size, and what to do: ``size`` as known (``"10000x10000 pixels"``)."""
    return (f"image too large ({size or 'size unknown'}; karyopipe reads up to {MAX_PIXELS} pixels): "
            "a metaphase spread needs at most about 4000 px a side, so downscale or crop it")


class ImageReadError(ValueError):
    """An image file that cannot be read. The message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_image_path(path: str | Path) -> bool:
    """True if the file name has an image suffix karyopipe reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _pil_read(data: bytes) -> np.ndarray:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    with warnings.catch_warnings():
        # Pillow warns about odd EXIF/TIFF tags; a failed read reports its own reason.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as im:
            if _pil_would_drop_bits(im, data):
                raise ValueError("PIL would reduce its 16-bit colour channels to 8 bits")
            im.load()
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
            elif im.mode in ("1", "LA", "La", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
                im = im.convert("L" if im.mode in ("1", "LA", "La") else "RGB")
            elif im.mode.startswith("I;16"):
                return np.asarray(im).astype(np.uint16)
            elif im.mode == "I":
                return np.asarray(im).astype(np.int64).clip(0, 65535).astype(np.uint16)
            return np.asarray(im).copy()


def _pil_would_drop_bits(im, data: bytes) -> bool:
    # Pillow opens 16-bit RGB(A) TIFF and PNG as 8-bit RGB(A) without a word;
    # OpenCV keeps the 16 bits, so such files go to it instead.
    if im.mode not in ("RGB", "RGBA"):
        return False
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return max(bits) > 8
    if im.format == "PNG" and len(data) > 24:
        return data[24] == 16  # IHDR bit depth
    return False


def _cv2_read(data: bytes) -> np.ndarray:
    import cv2

    _quiet_opencv()
    with _native_stderr_silenced():
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError("OpenCV could not decode it")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def _quiet_opencv() -> None:
    # OpenCV logs "[ WARN ]"/"[ ERROR ]" lines for tag oddities and truncated
    # files; the read either succeeds or our own error names the file and reason.
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:
        pass


@contextmanager
def _native_stderr_silenced():
    # libpng and libjpeg inside OpenCV print "libpng error: ..." straight to the process's
    # stderr, past OpenCV's log level; the failed read is reported by our own error instead.
    import os
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield  # no real file descriptor 2 (an embedding host): nothing to silence
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _tifffile_read(data: bytes) -> np.ndarray:
    import logging

    import tifffile

    # tifffile logs its own complaint before raising; ours carries the file name.
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        return np.asarray(tifffile.imread(io.BytesIO(data)))
    finally:
        log.setLevel(level)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file into a numpy array, as robustly as the formats allow.

    Parameters
    ----------
    path : str or Path
        Image file.

    Returns
    -------
    image : ndarray
        ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, dtype uint8 or
        uint16 as stored. Palette images are expanded to RGB(A); float and
        signed images are brought to uint16.

    Raises
    ------
    ImageReadError
        Missing, empty, non-image, corrupt or oversized file; the message
        names the file and what is wrong with it.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        raise ImageReadError(path, "is a folder, not an image")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(path, f"cannot read the file ({exc.strerror or exc})") from None
    return decode_image(data, path)


def decode_image(data: bytes, source: str | Path = "<bytes>") -> np.ndarray:
    """Decode an encoded image (file bytes, labelme ``imageData``) like :func:`read_image`.

    Parameters
    ----------
    data : bytes
        The encoded file content (PNG, JPEG, BMP, TIFF...).
    source : str or Path
        Name used in error messages.

    Returns
    -------
    image : ndarray
        As :func:`read_image`.
    """
    if len(data) == 0:
        raise ImageReadError(source, "empty file (0 bytes)")
    reasons = []
    readers = [("PIL", _pil_read), ("OpenCV", _cv2_read)]
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+") or str(source).lower().endswith(
        (".tif", ".tiff")
    ):
        readers.append(("tifffile", _tifffile_read))
    for name, reader in readers:
        try:
            image = reader(data)
        except Exception as exc:  # each backend fails in its own way; keep the reason
            if "DecompressionBomb" in type(exc).__name__ or "exceeds limit" in str(exc):
                # Pillow refuses before decoding, so only the pixel count in its message is known.
                found = re.search(r"\((\d+) pixels\)", str(exc))
                raise ImageReadError(source, too_large_message(f"{int(found.group(1))} pixels" if found else None)) from None
            text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc)).strip()
            reasons.append(f"{name}: {text.splitlines()[0] if text else type(exc).__name__}")
            continue
        image = _squeeze_channels(image)
        if image.size == 0 or image.ndim not in (2, 3):
            reasons.append(f"{name}: decoded to an empty or malformed array {image.shape}")
            continue
        if image.shape[0] * image.shape[1] > MAX_PIXELS:
            raise ImageReadError(source, too_large_message(f"{image.shape[1]}x{image.shape[0]} pixels"))
        if image.dtype not in (np.uint8, np.uint16):
            image = _to_uint16(image)
        return image
    raise ImageReadError(source, "not a readable image (" + "; ".join(reasons) + ")")


def image_pages(path: str | Path) -> int:
    """How many images (pages, frames) a file holds: a multi-page TIFF or an animated GIF more than one.

    :func:`read_image` reads the first; a caller that reads one spread from
    the file says so for the rest. Files PIL cannot open count as one page.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:  # unreadable here: read_image reports why, or another reader copes
        return 1


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, from its header when PIL can parse it.

    Cheaper than :func:`read_image` for readers that only need the size
    (YOLO boxes are stored relative to it); falls back to a full read.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
            return int(height), int(width)
    except Exception:
        image = read_image(path)
        return int(image.shape[0]), int(image.shape[1])


def _squeeze_channels(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] == 2:  # grey + alpha
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] > 4:  # multi-page TIFF read as (pages, H, W)
        image = image[0]
    return image


def _to_uint16(image: np.ndarray) -> np.ndarray:
    # Float images already in [0, 1] keep their scale; anything else (signed
    # integers, floats in counts) is stretched to the full 16-bit range.
    image = image.astype(np.float64)
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, np.uint16)
    lo, hi = float(finite.min()), float(finite.max())
    image = np.nan_to_num(image, nan=lo, posinf=hi, neginf=lo)
    if lo >= 0.0 and hi <= 1.0:
        return (image * 65535.0 + 0.5).astype(np.uint16)
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0
    return ((image - lo) * scale).astype(np.uint16)


def effective_bit_depth(image: np.ndarray) -> int:
    """Smallest of :data:`CAMERA_BIT_DEPTHS` whose range holds every colour value of a 16-bit image.

    Microscope cameras of 10, 12 or 14 bits store their counts in 16-bit
    files. Scaled by 65535, a 12-bit spread fills a sixteenth of the range
    and a brightfield background, inverted, reads near 1: no chromosome was
    found in such a file before it was scaled by its own depth.

    >>> effective_bit_depth(np.array([[0, 4095]], np.uint16))
    12
    """
    image = np.asarray(image)
    colour = image[..., :3] if image.ndim == 3 and image.shape[2] == 4 else image
    top = int(colour.max()) if colour.size else 0
    return next(bits for bits in CAMERA_BIT_DEPTHS if top < 2 ** bits)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Convert any image from :func:`read_image` to a float32 grey image in [0, 1].

    RGBA alpha is used as a matte: transparent pixels (alpha < 0.5) become one
    flat value, the median grey of what lies under them, so hidden colour
    noise there cannot look like structure. Which side is bright is decided
    later by :func:`normalize_polarity`, so no fixed background value is assumed.

    A 16-bit image is scaled by the camera depth its values fit
    (:func:`effective_bit_depth`), so a 12-bit camera's counts stored in a
    16-bit file read as they would from an 8-bit one.

    Returns
    -------
    gray : ndarray, shape (H, W), float32 in [0, 1]
    """
    image = np.asarray(image)
    if image.dtype == np.uint16:
        scaled = image.astype(np.float32) / float(2 ** effective_bit_depth(image) - 1)
        if scaled.ndim == 3 and scaled.shape[2] == 4:
            scaled[..., 3] = image[..., 3] / 65535.0  # an alpha channel keeps the file's own range
    elif image.dtype == np.uint8:
        scaled = image.astype(np.float32) / 255.0
    elif image.dtype == bool:
        scaled = image.astype(np.float32)
    else:
        scaled = image.astype(np.float32)
        if scaled.max() > 1.0:
            scaled = scaled / max(float(scaled.max()), 1e-6)
    if scaled.ndim == 2:
        return scaled
    alpha = scaled[..., 3] if scaled.shape[2] == 4 else None
    rgb = scaled[..., :3]
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if alpha is not None and alpha.min() < 1.0 and alpha.max() > 0.0:
        transparent = alpha < 0.5
        if transparent.any() and (~transparent).any():
            gray = gray.copy()
            gray[transparent] = float(np.median(gray[transparent]))
    return gray.astype(np.float32)


def detect_polarity(gray: np.ndarray) -> tuple[str, float]:
    """Tell fluorescence (bright on dark) from brightfield (dark on light).

    The background is the majority of a spread or a crop, so the border and
    the median pixel sit on the background side. The decision compares the
    border median with the image's Otsu threshold.

    Parameters
    ----------
    gray : ndarray, shape (H, W), float in [0, 1]

    Returns
    -------
    polarity : str
        ``"fluorescence"`` or ``"brightfield"``.
    confidence : float
        0.5 (undecidable, flat image) to 1.0.
    """
    from skimage.filters import threshold_otsu

    gray = np.asarray(gray, dtype=np.float32)
    if gray.size == 0 or float(gray.max() - gray.min()) < 1e-6:
        return FLUORESCENCE, 0.5
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = 0.5 * float(np.median(border)) + 0.5 * float(np.median(gray))
    threshold = float(threshold_otsu(gray))
    span = float(np.percentile(gray, 99.5) - np.percentile(gray, 0.5)) or 1.0
    margin = abs(background - threshold) / span
    confidence = float(min(1.0, 0.5 + margin))
    return (BRIGHTFIELD if background > threshold else FLUORESCENCE), confidence


def normalize_polarity(
    image: np.ndarray, polarity: str | None = None
) -> tuple[np.ndarray, str]:
    """Bring an image to karyopipe's canonical polarity: bright chromosomes on dark.

    Parameters
    ----------
    image : ndarray
        Any image from :func:`read_image`, or a float grey image.
    polarity : {"fluorescence", "brightfield"}, optional
        Force the input polarity instead of detecting it.

    Returns
    -------
    gray : ndarray, shape (H, W), float32 in [0, 1]
        Canonical image: chromosomes (and Q-bright / G-dark bands) high.
    polarity : str
        The polarity detected (or given) for the input.
    """
    gray = to_gray(image)
    if polarity is None:
        polarity, _ = detect_polarity(gray)
    elif polarity not in (FLUORESCENCE, BRIGHTFIELD):
        raise ValueError(f"polarity must be {FLUORESCENCE!r} or {BRIGHTFIELD!r}, got {polarity!r}")
    if polarity == BRIGHTFIELD:
        gray = 1.0 - gray
    return gray.astype(np.float32), polarity


def background_level(gray: np.ndarray) -> float:
    """Background of a canonical spread: its median pixel (a spread is mostly background)."""
    gray = np.asarray(gray)
    return float(np.median(gray)) if gray.size else 0.0


def standardize_background(gray: np.ndarray, ceiling: float = BACKGROUND_CEILING,
                           level: float | None = None) -> np.ndarray:
    """Bring a canonical spread whose background reads above ``ceiling`` down to it.

    A spread is returned as it is when its :func:`background_level` is at
    most ``ceiling``, as every training spread's is. Otherwise the linear map
    that takes the background to ``ceiling`` and keeps 1 at 1 is applied. For
    a brightfield spread this is the flat-field correction of a dim lamp (the
    transmitted light scaled up until the empty slide reads
    ``1 - ceiling``); for a fluorescence spread it removes a camera offset.
    The map is continuous at the ceiling, and a standardized spread is left
    alone by a second call.

    Parameters
    ----------
    gray : ndarray, shape (H, W), float in [0, 1]
        Canonical polarity (:func:`normalize_polarity`).
    ceiling : float
        The highest background left as it is (:data:`BACKGROUND_CEILING`).
    level : float, optional
        ``gray``'s :func:`background_level`, when the caller has measured it
        already (a median over the whole spread is not free on a large one).

    Returns
    -------
    ndarray, shape (H, W), float32 in [0, 1]

    Examples
    --------
    >>> dim = np.full((4, 4), 0.6, np.float32); dim[1, 1] = 0.9
    >>> out = standardize_background(dim)
    >>> round(float(out[0, 0]), 3), round(float(out[1, 1]), 3)
    (0.25, 0.812)
    """
    gray = np.asarray(gray, np.float32)
    if level is None:
        level = background_level(gray)
    if level <= ceiling:
        return gray
    gain = (1.0 - ceiling) / max(1.0 - level, 1e-6)
    return np.clip(ceiling + (gray - level) * gain, 0.0, 1.0).astype(np.float32)


def load_canonical(path: str | Path, polarity: str | None = None) -> tuple[np.ndarray, str]:
    """:func:`read_image` then :func:`normalize_polarity` in one call."""
    return normalize_polarity(read_image(path), polarity)


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Write an image (uint8/uint16 or float in [0, 1]) with PIL, creating folders."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(image)
    if array.dtype in (np.float32, np.float64):
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    Image.fromarray(array).save(path)
