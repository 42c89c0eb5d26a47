"""Reading images the way every part of the project expects them: RGB uint8, EXIF orientation applied."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import SemlayerError

# Refuse decompression bombs with a clear message instead of PIL's warning-then-crash.
MAX_PIXELS = 8192 * 8192


class ImageReadError(SemlayerError):
    """An image file that is missing, not an image, or too large."""


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The image at ``path`` as an HxWx3 uint8 RGB array (grey, palette and RGBA converted; EXIF respected)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            if im.width * im.height > max_pixels:
                raise ImageReadError(f"{path}: {im.width}x{im.height} is larger than the {max_pixels} pixels allowed")
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from exc


def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """Any PIL image or array (HxW, HxWx1, HxWx3, HxWx4; uint8 or float in [0, 1]) as HxWx3 uint8 RGB."""
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            # Composite transparency over white, as a viewer shows it.
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float64) * (255.0 if arr.max(initial=0) <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageReadError(f"expected an HxW, HxWx3 or HxWx4 image array, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        return to_rgb(Image.fromarray(arr, "RGBA"))
    return np.ascontiguousarray(arr)
