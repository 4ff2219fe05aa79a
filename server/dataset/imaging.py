"""Reading image files safely with Pillow, and the resized copies the browser is shown.

`load_rgb` is the one way a file becomes pixels: the importer checks every file with it
(`check_image`), the image cache renders copies with it, so what was accepted on import is
what renders later.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})

# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Pillow's parsers signal damaged files with more than OSError: struct.error, TypeError and
# friends come out of corrupt EXIF and headers. All of them mean "this file is broken".
_DAMAGED = (OSError, SyntaxError, ValueError, EOFError, struct.error, TypeError, KeyError,
            IndexError)


class ImageRejected(Exception):
    """A file that is not a usable image; the message says why, for the import report."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16-bit and float scaled down, alpha laid on white."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        pixels = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            pixels = pixels / 257.0
        else:
            low, high = float(pixels.min()), float(pixels.max())
            pixels = (pixels - low) * (255.0 / (high - low)) if high > low else pixels * 0
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


@contextlib.contextmanager
def import_warnings() -> Iterator[None]:
    """The import's policy for Pillow's warnings. Its bomb guard warns before it refuses:
    make the warning an error, so both mean 'over the limit'. Its warnings about damaged
    metadata (corrupt EXIF, short tags) in files whose pixels decode fine are dropped: the
    file is no less usable. catch_warnings swaps process-wide state, which is safe in the
    import (one thread per process) but not in the web server's rendering threads, so only
    the import uses it; rendering reads files the import already accepted."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
        yield


def _check_header(path: Path, max_pixels: int) -> None:
    """Refuse too many pixels before anything is decoded, then let Pillow verify the file's
    structure (checksums for PNG). verify() spends the handle, hence a separate open."""
    with Image.open(path) as probe:  # reads the header only; Pillow's bomb guard runs here
        _refuse_too_many_pixels(probe, max_pixels)
        probe.verify()


def _refuse_too_many_pixels(img: Image.Image, max_pixels: int) -> None:
    pixels = img.width * img.height
    if pixels > max_pixels:
        raise ImageRejected(
            f"too many pixels: {img.width}x{img.height} = {pixels:,} (limit {max_pixels:,})"
        )


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation. Not ImageOps.exif_transpose: that also rewrites the EXIF
    block, which raises struct.error/TypeError on damaged tags of a file whose pixels are
    fine; the RGB copy carries no EXIF, so only the transpose is needed."""
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return img.transpose(method) if method is not None else img


def _file_size(path: Path) -> int:
    """The file's size; an empty file is refused here, before Pillow guesses at it."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageRejected(f"cannot read: {exc.strerror or exc}") from exc
    if size == 0:
        raise ImageRejected("empty file (0 bytes)")
    return size


def load_rgb(path: str | Path, max_pixels: int, verify: bool = True,
             at_least: int | None = None, gray_ok: bool = False) -> tuple[Image.Image, dict]:
    """Open, verify and fully decode an image, upright (EXIF orientation) and in RGB.
    Returns the image and facts about the file (format, mode, width, height, bytes).
    Raises ImageRejected with a reason a person can act on. `verify=False` skips Pillow's
    structure check (a second open of the file) for files checked on import: the pixel
    limit still applies before decoding, and damaged pixel data still fails the decode.
    `at_least`: the caller shrinks the image to that many pixels a side anyway, so a JPEG
    may be decoded at 1/2, 1/4 or 1/8 scale while both sides stay at least that long (a
    12-megapixel photo decodes many times faster); width and height are then the decoded
    image's. `gray_ok`: an 8-bit grayscale image stays one channel ("L"), for a caller that
    spreads it over three itself after shrinking it (a third of the resizing work)."""
    path = Path(path)
    size = _file_size(path)
    try:
        if verify:
            _check_header(path, max_pixels)
        with Image.open(path) as img:
            if not verify:
                _refuse_too_many_pixels(img, max_pixels)
            facts = {"format": img.format, "mode": img.mode}
            if at_least:
                img.draft("RGB", (at_least, at_least))
            img.load()
            upright = _upright(img)
            rgb = upright if gray_ok and upright.mode == "L" else _to_rgb(upright)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"too many pixels (decompression bomb guard): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected("not a recognised image file") from exc
    except PermissionError as exc:
        raise ImageRejected(f"cannot read: {exc.strerror}") from exc
    except _DAMAGED as exc:
        raise ImageRejected(f"corrupt or truncated image: {exc}") from exc
    facts.update(width=rgb.width, height=rgb.height, bytes=size)
    return rgb, facts


def check_image(path: str | Path, max_pixels: int) -> dict:
    """The import's check of one file: a full load_rgb under the import's warning policy.
    Returns the facts (format, mode, width, height, bytes); raises ImageRejected."""
    with import_warnings():
        _, facts = load_rgb(path, max_pixels)
    return facts


def render_copy(source: str | Path, target: Path, longest_side: int, max_pixels: int) -> Path:
    """Write a JPEG copy of `source` no larger than `longest_side` to `target`, atomically.
    Small images are not enlarged: the page scales them with CSS."""
    img, _ = load_rgb(source, max_pixels, at_least=longest_side)
    img.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            img.save(out, format="JPEG", quality=90)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def copy_path(cache_dir: Path, size: str, image_id: int) -> Path:
    """Where the resized copy of an image is cached (size: display | thumb)."""
    return Path(cache_dir) / size / str(image_id // 1000) / f"{image_id}.jpg"


class _Rendering:
    """One lock per copy being rendered, so parallel requests for one uncached image (the
    card and its prefetch, a grid reloaded) decode a 25-megapixel file once: the first
    renders, the others wait for it and then read the file it wrote."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[Path, list] = {}  # target -> [lock, how many hold or wait]

    @contextlib.contextmanager
    def of(self, target: Path) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(target, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[target]


_rendering = _Rendering()
renders = 0  # copies rendered by this process (the bench and tests read it)


def cached_copy(cache_dir: Path, size: str, image_id: int, source: str | Path,
                longest_side: int, max_pixels: int) -> Path:
    """The cached copy of an image, rendered first if it is not on disk yet (once, however
    many requests ask at the same time). Raises ImageRejected when the source cannot be
    read."""
    global renders
    target = copy_path(cache_dir, size, image_id)
    if target.is_file():
        return target
    with _rendering.of(target):
        if not target.is_file():  # rendered by the request this one waited for
            render_copy(source, target, longest_side, max_pixels)
            renders += 1
    return target
