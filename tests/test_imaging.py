"""server.imaging against real files written with Pillow: every accepted format and mode comes
out as upright 8-bit RGB, and every kind of bad file is refused with a reason a person can act
on. The import tests (test_importer.py) check the same files end to end."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from server.dataset.imaging import ImageRejected, check_image, load_rgb, render_copy

LIMIT = 10_000_000  # max_pixels for files that should pass


def gradient(width: int, height: int) -> np.ndarray:
    """An RGB test card whose every pixel differs from its mirror images, so a wrong flip or
    rotation cannot go unnoticed."""
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None]
    card = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1)
    return card.astype(np.uint8)


def exif_with(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def damaged_exif(orientation: int) -> bytes:
    """EXIF whose ResolutionUnit tag (0x0128, a SHORT) holds ASCII text. Pillow reads it,
    but ImageOps.exif_transpose raises struct.error writing it back after rotating, which
    used to end the whole import."""
    exif = Image.Exif()
    exif[0x010F] = "Maker"  # an ASCII tag, retagged below
    exif[0x0112] = orientation
    raw = exif.tobytes()
    assert raw.count(b"\x01\x0f\x00\x02") == 1
    return raw.replace(b"\x01\x0f\x00\x02", b"\x01\x28\x00\x02")


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR that claim width x height 1-bit pixels, with a tiny IDAT:
    a decompression bomb's header in a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def save(path: Path, img: Image.Image, **options) -> Path:
    img.save(path, **options)
    return path


def rejected(path: Path, max_pixels: int = LIMIT) -> str:
    with pytest.raises(ImageRejected) as caught:
        check_image(path, max_pixels)
    return str(caught.value)


# --- accepted formats and modes ------------------------------------------------------------

def _transparent_gif(path: Path) -> Path:
    img = Image.new("P", (12, 10), 0)
    img.putpalette([200, 0, 0, 0, 0, 200] + [0] * 762)
    img.paste(1, (0, 0, 6, 10))  # left half: index 1, declared transparent
    return save(path, img, transparency=1)


def _sixteen_bit(path: Path) -> Path:
    return save(path, Image.fromarray(np.full((10, 12), 40_000, dtype=np.uint16)))


FILES = {
    # name: (writer, expected format, expected source mode, expected RGB at (1, 1))
    "rgb.jpg": (lambda p: save(p, Image.new("RGB", (12, 10), (250, 10, 10)), quality=95),
                "JPEG", "RGB", None),
    "cmyk.jpg": (lambda p: save(p, Image.new("CMYK", (12, 10), (255, 0, 0, 0)), quality=100),
                 "JPEG", "CMYK", (0, 255, 255)),
    "grey16.png": (_sixteen_bit, "PNG", "I;16", (155, 155, 155)),
    "palette.gif": (_transparent_gif, "GIF", "P", (255, 255, 255)),
    "rgba.png": (lambda p: save(p, Image.new("RGBA", (12, 10), (0, 0, 0, 0))),
                 "PNG", "RGBA", (255, 255, 255)),
    "la.png": (lambda p: save(p, Image.new("LA", (12, 10), (0, 255))), "PNG", "LA", (0, 0, 0)),
    "rgba.webp": (lambda p: save(p, Image.new("RGBA", (12, 10), (0, 0, 255, 0)), lossless=True),
                  "WEBP", "RGBA", (255, 255, 255)),
    "rgb.webp": (lambda p: save(p, Image.new("RGB", (12, 10), (0, 0, 255)), lossless=True),
                 "WEBP", "RGB", (0, 0, 255)),
    "bilevel.bmp": (lambda p: save(p, Image.new("1", (12, 10), 1)), "BMP", "1", (255, 255, 255)),
    "rgb.bmp": (lambda p: save(p, Image.new("RGB", (12, 10), (1, 2, 3))), "BMP", "RGB", (1, 2, 3)),
    "cmyk.tif": (lambda p: save(p, Image.new("CMYK", (12, 10), (0, 0, 0, 255))),
                 "TIFF", "CMYK", (0, 0, 0)),
    "grey16.tiff": (_sixteen_bit, "TIFF", "I;16", (155, 155, 155)),
    "float.tif": (lambda p: save(p, Image.fromarray(gradient(12, 10)[..., 0].astype(np.float32))),
                  "TIFF", "F", None),
    "lab.tif": (lambda p: save(p, Image.new("LAB", (12, 10), (50, 0, 0))), "TIFF", "LAB", None),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_format_and_mode_loads_as_rgb(tmp_path, name):
    writer, fmt, mode, pixel = FILES[name]
    path = writer(tmp_path / name)
    rgb, facts = load_rgb(path, LIMIT)
    assert rgb.mode == "RGB"
    assert facts == {
        "format": fmt, "mode": mode, "width": 12, "height": 10, "bytes": path.stat().st_size
    }
    if pixel is not None:
        assert rgb.getpixel((1, 1)) == pixel
    assert check_image(path, LIMIT) == facts


def test_palette_gif_keeps_opaque_colour_beside_transparency(tmp_path):
    rgb, _ = load_rgb(_transparent_gif(tmp_path / "t.gif"), LIMIT)
    assert rgb.getpixel((2, 5)) == (255, 255, 255)  # transparent half: laid on white
    assert rgb.getpixel((9, 5)) == (200, 0, 0)  # opaque half keeps its palette colour


def test_sixteen_bit_png_scales_the_full_range(tmp_path):
    ramp = np.linspace(0, 65535, 12 * 10).astype(np.uint16).reshape(10, 12)
    path = save(tmp_path / "ramp.png", Image.fromarray(ramp))
    rgb, facts = load_rgb(path, LIMIT)
    grey = np.asarray(rgb)[..., 0]
    assert facts["mode"] == "I;16"
    assert grey.min() == 0 and grey.max() == 255
    assert np.all(np.diff(grey.ravel().astype(int)) >= 0)  # still a ramp, nothing wrapped


def test_multi_frame_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (12, 10), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as img:
        assert img.n_frames == 2
    rgb, facts = load_rgb(path, LIMIT)
    assert facts["format"] == "GIF"
    assert rgb.getpixel((5, 5)) == (255, 0, 0)


# --- EXIF orientation -----------------------------------------------------------------------

def test_jpeg_orientation_6_is_turned_upright(tmp_path):
    """Orientation 6: the camera was turned; the stored 40x20 picture shows as 20x40, its left
    edge on top (rotated 90 degrees clockwise)."""
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, 20:] = 255  # left half black, right half white
    path = save(tmp_path / "turned.jpg", Image.fromarray(pixels), exif=exif_with(6), quality=95)
    rgb, facts = load_rgb(path, LIMIT)
    assert (facts["width"], facts["height"]) == (20, 40)
    upright = np.asarray(rgb.convert("L")).astype(int)
    assert upright[:15].mean() < 30  # the black left half is now the top
    assert upright[25:].mean() > 225


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillows_exif_transpose(tmp_path, orientation):
    source = Image.fromarray(gradient(16, 9))
    path = save(tmp_path / f"o{orientation}.png", source, exif=exif_with(orientation))
    rgb, facts = load_rgb(path, LIMIT)
    with Image.open(path) as img:
        expected = ImageOps.exif_transpose(img).convert("RGB")
    assert np.array_equal(np.asarray(rgb), np.asarray(expected))
    turned = orientation >= 5
    assert (facts["width"], facts["height"]) == ((9, 16) if turned else (16, 9))


def test_damaged_exif_still_turns_and_loads(tmp_path):
    path = save(tmp_path / "odd-exif.jpg", Image.fromarray(gradient(40, 20)),
                exif=damaged_exif(6), quality=95)
    facts = check_image(path, LIMIT)
    assert (facts["width"], facts["height"]) == (20, 40)


# --- refused files --------------------------------------------------------------------------

def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert rejected(path) == "empty file (0 bytes)"


@pytest.mark.parametrize("name, keep", [("cut.png", 0.5), ("cut.jpg", 0.5), ("cut2.png", 0.9)])
def test_truncated_files(tmp_path, name, keep):
    whole = tmp_path / f"whole{Path(name).suffix}"
    save(whole, Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3),
                                                                   dtype=np.uint8)))
    data = whole.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * keep)])
    assert rejected(path).startswith("corrupt or truncated image")


def test_png_with_a_bad_checksum(tmp_path):
    path = save(tmp_path / "crc.png", Image.fromarray(gradient(16, 16)))
    data = bytearray(path.read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 8] ^= 0xFF  # a byte of compressed data: the chunk's CRC no longer matches
    path.write_bytes(bytes(data))
    assert rejected(path).startswith("corrupt or truncated image")


def test_text_file_named_like_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: eggs, milk\n", encoding="utf-8")
    assert rejected(path) == "not a recognised image file"


def test_over_the_projects_pixel_limit(tmp_path):
    path = save(tmp_path / "big.png", Image.new("L", (100, 60)))
    assert rejected(path, max_pixels=5_000) == "too many pixels: 100x60 = 6,000 (limit 5,000)"
    assert check_image(path, max_pixels=6_000)["width"] == 100  # the limit is inclusive


@pytest.mark.parametrize("side", [10_000, 20_000])
def test_over_pillows_own_limit(tmp_path, side):
    """10,000^2 is over Image.MAX_IMAGE_PIXELS (Pillow warns), 20,000^2 over twice it (Pillow
    refuses); both are refused even when the project's own limit would allow them."""
    assert side * side > Image.MAX_IMAGE_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(side, side))
    assert path.stat().st_size < 200
    reason = rejected(path, max_pixels=10**12)
    assert reason.startswith("too many pixels (decompression bomb guard)")


def test_bomb_over_both_limits_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(50_000, 50_000))
    assert "too many pixels" in rejected(path, max_pixels=40_000_000)


def test_missing_file(tmp_path):
    assert rejected(tmp_path / "gone.png") == "cannot read: No such file or directory"


# --- rendered copies ------------------------------------------------------------------------

def test_render_copy_is_a_bounded_upright_jpeg(tmp_path):
    path = save(tmp_path / "turned.jpg", Image.fromarray(gradient(400, 200)), exif=exif_with(6))
    target = render_copy(path, tmp_path / "cache" / "display" / "1.jpg", 100, LIMIT)
    with Image.open(target) as copy:
        assert copy.format == "JPEG" and copy.mode == "RGB"
        assert copy.size == (50, 100)
    assert [p.name for p in target.parent.iterdir()] == ["1.jpg"]  # no temporary left


def test_render_copy_does_not_enlarge_and_reads_a_closed_file(tmp_path):
    """An RGB PNG with no orientation is returned as decoded (no copy): the copy must still
    render after load_rgb closed the file."""
    path = save(tmp_path / "small.png", Image.fromarray(gradient(30, 20)))
    target = render_copy(path, tmp_path / "out.jpg", 160, LIMIT)
    with Image.open(target) as copy:
        assert copy.size == (30, 20)


def test_render_copy_of_a_bad_file_raises_and_writes_nothing(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"not a png at all")
    with pytest.raises(ImageRejected):
        render_copy(path, tmp_path / "out" / "1.jpg", 160, LIMIT)
    assert not (tmp_path / "out" / "1.jpg").exists()


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_when_only_a_small_copy_is_needed(
        tmp_path, digits):
    # A real digit blown up to a 2400x1600 photo: the learner needs 64 px a side, so the
    # JPEG decodes at 1/8 scale, and the result shrunk to 64 px matches the full decode's.
    digit = (255 - digits.images[7] * 16).clip(0, 255).astype(np.uint8)
    photo = Image.fromarray(digit).resize((2400, 1600), Image.Resampling.BICUBIC).convert("RGB")
    path = tmp_path / "photo.jpg"
    photo.save(path, quality=92, exif=exif_with(6))  # and stored on its side
    full, facts = load_rgb(path, 40_000_000)
    small, _ = load_rgb(path, 40_000_000, verify=False, at_least=64)
    assert full.size == (1600, 2400) and facts["format"] == "JPEG"  # upright
    assert small.size == (200, 300)  # 1/8 scale: both sides still at least 64
    assert min(load_rgb(path, 40_000_000, at_least=1000)[0].size) >= 1000  # 1/1.6 -> 1/1
    shrunk = [np.asarray(ImageOps.fit(i, (64, 64), Image.Resampling.BICUBIC), np.float32)
              for i in (full, small)]
    assert np.abs(shrunk[0] - shrunk[1]).mean() < 2.0  # out of 255
    # PNG has no reduced decode: the same pixels either way.
    png = tmp_path / "photo.png"
    photo.save(png)
    assert load_rgb(png, 40_000_000, at_least=64)[0].size == (2400, 1600)
    # The display copy of the photo is made from the reduced decode too, at its full size.
    with Image.open(render_copy(path, tmp_path / "copy.jpg", 768, 40_000_000)) as copy:
        assert copy.size == (512, 768)
