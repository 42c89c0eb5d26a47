"""Reading images the way every part of the project expects them: RGB uint8, EXIF orientation applied."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import FormatError

# Refuse decompression bombs with a clear message instead of PIL's warning-then-crash. The one pixel cap:
# annotation files may declare no larger image (semlayer.formats), since each instance holds a mask this size.
MAX_PIXELS = 8192 * 8192


class ImageReadError(FormatError):
    """An image file that is missing, not an image, too large, or not the size its annotation says."""

    def __init__(self, path: str | os.PathLike, expected: str):
        super().__init__(str(path), "", expected)


def image_name_problem(name: object) -> str | None:
    """Why an annotation's ``file_name`` may not name a file, None when it may: an image name stays inside
    its images folder (no absolute path, no ``..``) and names no hidden file (a part starting with a dot)."""
    if not isinstance(name, str) or not name:
        return "a non-empty image file name"
    if "\x00" in name:
        return "an image file name without NUL characters"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"a file name relative to the images folder, got the absolute path {name[:80]!r}"
    if any(part.startswith(".") for part in parts):
        return f"a file name inside the images folder without '..' or hidden (dot) parts, got {name[:80]!r}"
    return None


def image_file(folder: str | os.PathLike, name: object) -> Path:
    """``folder / name`` for an image name from an annotation file, refused (`ImageReadError`) unless it
    stays inside ``folder`` (see `image_name_problem`): a file's content never chooses what is read."""
    problem = image_name_problem(name)
    if problem is not None:
        raise ImageReadError(f"image {str(name)[:80]!r}", problem)
    return Path(folder) / str(name)


def read_image(
    path: str | os.PathLike, expected_hw: tuple[int, int] | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """The image at ``path`` as a writable HxWx3 uint8 RGB array (grey, palette, RGBA and 16-bit converted;
    EXIF orientation applied).

    When ``expected_hw`` is given and only the raw (un-rotated) pixel grid matches it, the raw grid is used:
    annotation tools disagree on whether EXIF rotation applies, and the annotation's size is what counts.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "an image file (not found)")
    try:
        with Image.open(path) as im:
            if im.width * im.height > max_pixels:
                raise ImageReadError(path, f"an image of at most {max_pixels} pixels, got {im.width} x {im.height}")
            im.load()
            # Turned only when the EXIF orientation says so: exif_transpose copies even an upright image.
            upright = im.getexif().get(ExifTags.Base.Orientation, 1) not in range(2, 9)
            raw, turned = im, im if upright else ImageOps.exif_transpose(im)
            chosen = turned
            if expected_hw is not None and (turned.height, turned.width) != tuple(expected_hw):
                if (raw.height, raw.width) != tuple(expected_hw):
                    raise ImageReadError(
                        path,
                        f"an image of height x width {expected_hw[0]} x {expected_hw[1]} as the annotation says, "
                        f"got {turned.height} x {turned.width}",
                    )
                chosen = raw
            return to_rgb(chosen)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(path, f"not a readable image ({exc.__class__.__name__}: {exc})") from None


def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """Any PIL image or array (HxW, HxWx1, HxWx3, HxWx4; uint8, 16-bit or float in [0, 1]) as HxWx3 uint8 RGB."""
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            image = np.asarray(image)
        else:
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                # Composite transparency over white, as an image viewer shows it.
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            # An RGB image is copied once, not converted to a copy first.
            return np.array(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        values = arr.astype(np.float64)
        peak = values.max(initial=0)
        # Floats in [0, 1] scale by 255; deeper integer images scale their peak to white instead of clipping.
        scale = 255.0 if peak <= 1.0 else (255.0 / peak if np.issubdtype(arr.dtype, np.integer) and peak > 255 else 1.0)
        arr = np.clip(values * scale, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageReadError("<array>", f"an HxW, HxWx3 or HxWx4 image array, got shape {arr.shape}")
    if arr.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if arr.shape[2] == 4:
        return to_rgb(Image.fromarray(np.ascontiguousarray(arr), "RGBA"))
    return np.array(arr, dtype=np.uint8)


def encode_png(image: np.ndarray, level: int = 1) -> bytes:
    """PNG bytes of an RGB uint8 image, fast. ``level`` 1: zlib's fastest compression with the 'up'
    filter (enlarged images repeat every row, which 'up' turns into zeros), about PIL's size at a fraction
    of its time; 0: stored, no compression, faster again."""
    if level not in (0, 1):
        raise ValueError(f"PNG level must be 0 (stored) or 1 (fast), got {level}")
    flt = cv2.IMWRITE_PNG_FILTER_UP if level else cv2.IMWRITE_PNG_FILTER_NONE
    params = [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_FILTER, flt]
    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} image as PNG")
    return data.tobytes()
