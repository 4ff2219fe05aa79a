"""Reading image files safely with Pillow, and the resized copies the browser is shown.

`load_rgb` is the one way a file becomes pixels: the importer uses it to check every file,
the image cache to render copies, so what was accepted on import is what renders later.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


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


def load_rgb(path: str | Path, max_pixels: int) -> tuple[Image.Image, dict]:
    """Open, verify and fully decode an image, upright (EXIF orientation) and in RGB.
    Returns the image and facts about the file (format, mode, width, height).
    Raises ImageRejected with a reason a person can act on."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageRejected(f"cannot read: {exc.strerror}") from exc
    if size == 0:
        raise ImageRejected("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard warns before it refuses; treat both as over the limit.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as probe:
                pixels = probe.width * probe.height
                if pixels > max_pixels:
                    raise ImageRejected(
                        f"too many pixels: {probe.width}x{probe.height} = {pixels:,}"
                        f" (limit {max_pixels:,})"
                    )
                probe.verify()
            with Image.open(path) as img:
                img.load()
                facts = {"format": img.format, "mode": img.mode}
                upright = ImageOps.exif_transpose(img)
                rgb = _to_rgb(upright)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"too many pixels (decompression bomb guard): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected("not a recognised image file") from exc
    except PermissionError as exc:
        raise ImageRejected(f"cannot read: {exc.strerror}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt data as OSError/SyntaxError/ValueError.
        raise ImageRejected(f"corrupt or truncated image: {exc}") from exc
    facts.update(width=rgb.width, height=rgb.height, bytes=size)
    return rgb, facts


def render_copy(source: str | Path, target: Path, longest_side: int, max_pixels: int) -> Path:
    """Write a JPEG copy of `source` no larger than `longest_side` to `target`, atomically.
    Small images are not enlarged: the page scales them with CSS."""
    img, _ = load_rgb(source, max_pixels)
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
