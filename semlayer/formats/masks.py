"""Mask codecs shared by every format: COCO RLE and polygons (pycocotools), outline tracing (OpenCV).

pycocotools does not check what it decodes: a compressed ``counts`` string that sums to fewer pixels
than ``h * w`` decodes to uninitialised memory. `rle_counts` checks a string first, vectorised, so a
reader can reject a bad mask with a clear message before pycocotools sees it.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..boxes import EMPTY_BOX, mask_box


def rle_input(mask: np.ndarray) -> np.ndarray:
    """A mask as pycocotools' encoder takes it, (h, w) uint8 in Fortran order. A bool array is viewed as
    uint8 (same bytes), so a Fortran-ordered one, as decoding an RLE gives, is not copied at all."""
    m = np.asarray(mask)
    m = m.view(np.uint8) if m.dtype == bool else m.astype(np.uint8, copy=False)
    return np.asfortranarray(m)


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """pycocotools' compressed RLE of a boolean mask (bytes counts)."""
    return mask_utils.encode(rle_input(mask))


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a boolean mask, ``{"size": [h, w], "counts": str}`` (JSON-ready)."""
    return as_json_rle(mask_to_rle(mask))


def rle_counts(counts: str | bytes) -> np.ndarray | None:
    """Run lengths of a compressed COCO RLE string (pycocotools' LEB128-like code), or None when the
    string is not a valid encoding (characters outside ``0``..``o``, a cut-off number, a negative run)."""
    raw = np.frombuffer(counts.encode("ascii", "replace") if isinstance(counts, str) else counts, np.uint8)
    if raw.size == 0:
        return np.zeros(0, np.int64)
    c = raw.astype(np.int64) - 48
    if c.min() < 0 or c.max() > 63:
        return None
    more = (c & 0x20) != 0
    if more[-1]:
        return None
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    token = np.repeat(np.arange(ends.size), ends - starts + 1)
    k = np.arange(c.size) - starts[token]
    if k.max() > 7:  # more 5-bit groups than a 32-bit run length needs: garbage
        return None
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * (k[ends][negative] + 1))
    # Runs from index 3 on are stored as the difference to the run two places before (pycocotools' rleToString).
    x[1::2] = np.cumsum(x[1::2])
    if x.size > 2:
        x[2::2] = np.cumsum(x[2::2])
    if (x < 0).any():
        return None
    return x


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode a checked COCO RLE (str/bytes counts, or a list of counts) to a boolean mask."""
    return _as_bool(mask_utils.decode(pycoco_rle(rle)))


# `encode_rle`'s inverse, by the name that pairs with it.
decode_rle = rle_to_mask


def _as_bool(decoded: np.ndarray) -> np.ndarray:
    """pycocotools' 0/1 uint8 decode as bool without a copy (same bytes; it stays Fortran-ordered)."""
    return decoded.view(bool)


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise flat polygons (``[x1, y1, x2, y2, ...]``) the way pycocotools does.

    Polygons of fewer than 3 points have no area and are skipped, as detectron2 does (pycocotools would
    read a 4-number polygon as a box)."""
    if not any(len(p) >= 6 for p in polygons):
        return np.zeros((height, width), bool)
    return _as_bool(mask_utils.decode(polygons_to_rle(polygons, height, width)))


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> dict[str, Any]:
    """`polygons_to_mask`'s mask as pycocotools RLE (bytes counts), rasterised without a full frame."""
    polygons = [p for p in polygons if len(p) >= 6]
    if not polygons:
        return mask_to_rle(np.zeros((height, width), bool, order="F"))
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    return rles[0] if len(rles) == 1 else mask_utils.merge(rles)


# ----- arithmetic on RLE (pycocotools): pixel counts without decoding a frame ------------------------
def rle_area(rle: dict[str, Any]) -> int:
    return int(mask_utils.area(rle))


def rle_and(*rles: dict[str, Any]) -> dict[str, Any]:
    """The intersection of same-sized RLE masks."""
    return mask_utils.merge(list(rles), intersect=True)


def rle_or(*rles: dict[str, Any]) -> dict[str, Any]:
    """The union of same-sized RLE masks."""
    return mask_utils.merge(list(rles), intersect=False)


def rle_minus(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The pixels of RLE ``a`` that are not in ``b`` (same size): ``a`` and the complement of ``b``, whose
    runs are ``b``'s with the first (background) run dropped or an empty one put in front."""
    h, w = (int(v) for v in b["size"])
    runs = rle_counts(b["counts"])
    assert runs is not None, "rle_minus takes pycocotools RLE"
    flipped = runs[1:] if runs.size and runs[0] == 0 else np.concatenate(([0], runs))
    return rle_and(a, mask_utils.frPyObjects({"size": [h, w], "counts": flipped.tolist()}, h, w))


def rle_same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two same-sized RLE masks hold the same pixels (however each is encoded)."""
    area = rle_area(a)
    return area == rle_area(b) and area == rle_area(rle_and(a, b))


def pycoco_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """A checked JSON RLE (str counts, or a list of run lengths) as pycocotools takes it (bytes counts)."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    return {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def as_json_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """pycocotools RLE as the files write it, ``{"size": [h, w], "counts": str}``."""
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def mask_to_polygon(mask: np.ndarray) -> list[float] | None:
    """Outline of the largest part of a mask as one flat polygon along pixel edges, None when empty.

    The mask is traced at twice its resolution, so every contour point maps to a pixel corner; for a
    part without holes that is 4-connected the polygon rasterises back (pycocotools) to exactly that part.
    """
    x0, y0, x1, y1 = box = mask_box(mask)
    if box == EMPTY_BOX:
        return None
    crop = mask[y0:y1, x0:x1].astype(np.uint8)
    up = cv2.resize(crop, (2 * crop.shape[1], 2 * crop.shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea)[:, 0, :]
    # doubled-grid pixel 2x -> left/top edge x, 2x+1 -> right/bottom edge x+1; then back to image coordinates
    corners = (contour + 1) // 2 + np.array([x0, y0])
    keep = np.any(corners != np.roll(corners, 1, axis=0), axis=1)
    corners = corners[keep] if keep.any() else corners[:1]
    return [float(v) for v in corners.reshape(-1)]
