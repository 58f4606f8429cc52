"""Image reading (bit depths, channel layouts, backend fallbacks, bad files) and polarity."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from karyopipe import io as kio
from karyopipe.io import (
    BRIGHTFIELD,
    FLUORESCENCE,
    ImageReadError,
    decode_image,
    detect_polarity,
    image_size,
    normalize_polarity,
    read_image,
    to_gray,
)

cv2 = pytest.importorskip("cv2")
RNG = np.random.default_rng(0)


def test_grey_8_and_16_bit_round_trip(tmp_path):
    g8 = RNG.integers(0, 256, (13, 17), dtype=np.uint8)
    g16 = RNG.integers(0, 65536, (13, 17), dtype=np.uint16)
    Image.fromarray(g8).save(tmp_path / "g8.png")
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    cv2.imwrite(str(tmp_path / "g16.tif"), g16)
    assert np.array_equal(read_image(tmp_path / "g8.png"), g8)
    for name in ("g16.png", "g16.tif"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint16 and np.array_equal(out, g16)


def test_rgb_rgba_and_palette(tmp_path):
    rgb = RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    rgba = RNG.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.bmp")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgb.bmp"), rgb)
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgba)

    palette = Image.new("P", (5, 4))
    palette.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    palette.putpixel((2, 1), 1)
    palette.save(tmp_path / "pal.png")
    out = read_image(tmp_path / "pal.png")
    assert out.shape == (4, 5, 3) and tuple(out[1, 2]) == (200, 10, 20) and tuple(out[0, 0]) == (0, 0, 0)

    palette.info["transparency"] = 0
    palette.save(tmp_path / "pal_t.png", transparency=0)
    out = read_image(tmp_path / "pal_t.png")
    assert out.shape == (4, 5, 4) and out[0, 0, 3] == 0 and out[1, 2, 3] == 255


def test_16_bit_colour_keeps_its_depth(tmp_path):
    # Pillow would open these as 8-bit RGB(A); read_image must keep all 16 bits.
    rgb16 = RNG.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    rgba16 = RNG.integers(0, 65536, (6, 7, 4), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])
    cv2.imwrite(str(tmp_path / "c16.tiff"), cv2.cvtColor(rgba16, cv2.COLOR_RGBA2BGRA))
    assert np.array_equal(read_image(tmp_path / "c16.png"), rgb16)
    assert np.array_equal(read_image(tmp_path / "c16.tiff"), rgba16)


def test_tiff_pil_rejects_but_opencv_reads(tmp_path):
    path = tmp_path / "float_rgb.tiff"
    data = RNG.random((8, 10, 3)).astype(np.float32)
    cv2.imwrite(str(path), data)
    with pytest.raises(Exception):
        kio._pil_read(path.read_bytes())
    out = read_image(path)
    assert out.dtype == np.uint16 and out.shape == (8, 10, 3)
    # float data in [0, 1] keeps its scale (no stretching), RGB order restored
    assert np.allclose(out / 65535.0, data[..., ::-1], atol=1e-4)


def test_backend_fallbacks(tmp_path, monkeypatch):
    g = RNG.integers(0, 256, (12, 9), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.tiff"), g)

    def refuse(data):
        raise OSError("image file is truncated")

    monkeypatch.setattr(kio, "_pil_read", refuse)
    assert np.array_equal(read_image(tmp_path / "g.tiff"), g)  # OpenCV
    monkeypatch.setattr(kio, "_cv2_read", refuse)
    import tifffile

    tifffile.imwrite(tmp_path / "plain.tiff", g)  # uncompressed, so tifffile needs no codec
    assert np.array_equal(read_image(tmp_path / "plain.tiff"), g)  # tifffile
    with pytest.raises(ImageReadError, match="PIL: image file is truncated; OpenCV: image file is truncated"):
        decode_image(b"not an image at all", "x.png")


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello, not an image"), "not a readable image"),
        (lambda p: p.mkdir(), "is a folder"),
    ],
)
def test_bad_files_name_the_file_and_reason(tmp_path, make, reason):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value) and reason in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_files_are_errors(tmp_path, capfd):
    big = RNG.integers(0, 256, (64, 64), dtype=np.uint8)
    for name in ("t.png", "t.tiff", "t.jpg"):
        full = tmp_path / f"full_{name}"
        cv2.imwrite(str(full), big)
        data = full.read_bytes()
        cut = tmp_path / name
        cut.write_bytes(data[: len(data) // 8])
        with pytest.raises(ImageReadError, match=name):
            read_image(cut)
    # A PNG cut inside its image data makes libpng print "libpng error: ..." from inside OpenCV; that stays
    # out of the user's terminal, where our own error already names the file and the reason.
    cv2.imwrite(str(tmp_path / "large.png"), RNG.integers(0, 256, (256, 256), dtype=np.uint8))
    data = (tmp_path / "large.png").read_bytes()
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])
    capfd.readouterr()
    with pytest.raises(ImageReadError, match="half.png"):
        read_image(tmp_path / "half.png")
    assert capfd.readouterr().err == ""


def test_decode_image_and_image_size(tmp_path):
    g = RNG.integers(0, 256, (5, 8), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", g)
    assert np.array_equal(decode_image(buf.tobytes(), "mem.png"), g)
    Image.fromarray(g).save(tmp_path / "s.png")
    assert image_size(tmp_path / "s.png") == (5, 8)


def test_to_gray_ranges_and_alpha():
    assert to_gray(np.full((3, 3), 65535, np.uint16)).max() == pytest.approx(1.0)
    assert to_gray(np.full((3, 3), 255, np.uint8)).dtype == np.float32
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    assert np.allclose(to_gray(rgba), 200 / 255, atol=1e-3)


def _rods(dark_on_light: bool, dtype=np.uint8) -> np.ndarray:
    top = 255 if dtype == np.uint8 else 65535
    image = np.full((80, 80), 0.1, np.float32)
    for x in (15, 35, 55):
        image[20:60, x:x + 5] = 0.85
    image += RNG.normal(0, 0.02, image.shape).astype(np.float32)
    if dark_on_light:
        image = 1.0 - image
    return (np.clip(image, 0, 1) * top).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_polarity_detection_and_normalisation(dtype):
    bright_on_dark, dark_on_light = _rods(False, dtype), _rods(True, dtype)
    assert detect_polarity(to_gray(bright_on_dark))[0] == FLUORESCENCE
    polarity, confidence = detect_polarity(to_gray(dark_on_light))
    assert polarity == BRIGHTFIELD and confidence > 0.7
    for image in (bright_on_dark, dark_on_light):
        canonical, _ = normalize_polarity(image)
        assert canonical.dtype == np.float32
        assert canonical[40, 17] > canonical[5, 5] + 0.5  # chromosome brighter than background
    rgb = np.repeat(dark_on_light[..., None], 3, axis=2)
    assert normalize_polarity(rgb)[1] == BRIGHTFIELD


def test_polarity_forced_flat_and_invalid():
    flat = np.full((10, 10), 0.5, np.float32)
    assert detect_polarity(flat) == (FLUORESCENCE, 0.5)
    out, polarity = normalize_polarity(_rods(False), BRIGHTFIELD)
    assert polarity == BRIGHTFIELD and out[5, 5] > 0.8
    with pytest.raises(ValueError, match="polarity"):
        normalize_polarity(flat, "phase")


def test_real_images_and_polarity(shared_data):
    gband = next((shared_data / "gband612").glob("*/clase1/*.tiff"))
    bio = next((shared_data / "bioimlab" / "crops" / "1").glob("*.bmp"))
    spread = shared_data / "gband_spreads" / "A.tif"
    assert normalize_polarity(read_image(gband))[1] == BRIGHTFIELD
    assert normalize_polarity(read_image(bio))[1] == FLUORESCENCE
    image = read_image(spread)
    assert image.shape == (1200, 1600) and normalize_polarity(image)[1] == BRIGHTFIELD


def test_transparent_pixels_are_flattened():
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., :3] = RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)  # noise under the matte
    rgba[2:4, 2:4, :3] = 250
    rgba[2:4, 2:4, 3] = 255
    gray = to_gray(rgba)
    outside = np.ones((6, 6), bool)
    outside[2:4, 2:4] = False
    assert np.ptp(gray[outside]) == 0 and np.allclose(gray[2:4, 2:4], 250 / 255, atol=1e-3)


def test_a_camera_depth_in_a_16_bit_file_reads_as_its_own_depth():
    from karyopipe.io import effective_bit_depth

    eight = RNG.integers(0, 256, (9, 9), dtype=np.uint8)
    for bits in (10, 12, 14):
        counts = (eight.astype(np.uint16) << (bits - 8)) | np.uint16(2 ** (bits - 8) - 1)
        assert effective_bit_depth(counts) == bits
        assert np.allclose(to_gray(counts), to_gray(eight), atol=1 / 255)
    full = RNG.integers(0, 65536, (9, 9), dtype=np.uint16)
    full[0, 0] = 65535
    assert effective_bit_depth(full) == 16 and to_gray(full).max() == pytest.approx(1.0)
    # An alpha channel keeps the file's range: opaque stays opaque whatever the colour depth.
    rgba = np.zeros((4, 4, 4), np.uint16)
    rgba[..., :3], rgba[..., 3] = 4095, 65535
    assert effective_bit_depth(rgba) == 12 and np.allclose(to_gray(rgba), 1.0)


def test_a_background_above_the_ceiling_is_brought_to_it_and_nothing_else_moves():
    from karyopipe.io import BACKGROUND_CEILING, background_level, standardize_background

    lit = np.full((40, 40), 0.05, np.float32)
    lit[10:30, 18:22] = 0.7
    assert standardize_background(lit) is not None and np.array_equal(standardize_background(lit), lit)
    # Half the lamp: canonical = 1 - 0.5 * (1 - lit); the background returns to the ceiling, objects stay above it.
    dim = (1 - 0.5 * (1 - lit)).astype(np.float32)
    out = standardize_background(dim)
    assert background_level(out) == pytest.approx(BACKGROUND_CEILING, abs=1e-6)
    assert out[20, 20] > out[0, 0] + 0.3 and out.max() <= 1.0 and out.min() >= 0.0
    assert np.array_equal(standardize_background(out), out)  # a second call leaves it
    # Continuous at the ceiling: just above it, the image barely moves.
    edge = (lit - 0.05 + BACKGROUND_CEILING + 1e-3).astype(np.float32)
    assert np.abs(standardize_background(edge) - edge).max() < 2e-3
    assert np.all(np.isfinite(standardize_background(np.ones((5, 5), np.float32))))
