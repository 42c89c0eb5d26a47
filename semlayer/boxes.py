"""The bounding box of a mask, computed in one place.

A box is ``(x0, y0, x1, y1)`` in pixel indices with exclusive ends, so ``mask[y0:y1, x0:x1]`` is the tight
crop and ``x1 - x0`` the width. An empty mask has the empty box ``(0, 0, 0, 0)``: its crop is empty and it
meets no other box, so most callers need no special case. COCO files want ``[x, y, w, h]``: `box_xywh`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

Box = tuple[int, int, int, int]
EMPTY_BOX: Box = (0, 0, 0, 0)


def mask_box(mask: np.ndarray, margin: int = 0) -> Box:
    """``(x0, y0, x1, y1)`` (exclusive ends) of the pixels set in a 2-D mask, grown by ``margin`` on every
    side and clipped to the mask's frame; `EMPTY_BOX` for an empty mask, whatever the margin."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return EMPTY_BOX
    cols = np.flatnonzero(mask.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return grow_box(box, margin, (int(mask.shape[0]), int(mask.shape[1])))


def grow_box(box: Sequence[int], margin: int, shape: tuple[int, int]) -> Box:
    """A box grown by ``margin`` on every side and clipped to a frame of ``shape``; `EMPTY_BOX` stays empty."""
    if tuple(box) == EMPTY_BOX:
        return EMPTY_BOX
    x0, y0, x1, y1 = box
    h, w = shape
    return (max(int(x0) - margin, 0), max(int(y0) - margin, 0), min(int(x1) + margin, w), min(int(y1) + margin, h))


def box_xywh(box: Sequence[int]) -> list[float]:
    """COCO's ``[x, y, w, h]`` (floats, pixel-edge coordinates) of an ``(x0, y0, x1, y1)`` box; all zeros for
    `EMPTY_BOX`."""
    x0, y0, x1, y1 = box
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


# ----- masks kept as crops ------------------------------------------------------------------------------
# A mask is often kept as ``(crop, box)``: the pixels of its tight box and where that box lies in the frame,
# so that its memory follows the box, not the image.


def crop_to_box(mask: np.ndarray) -> tuple[np.ndarray, Box]:
    """A full-frame mask as ``(crop, box)``: its tight box (`mask_box`) and a copy of the mask in it (in the
    mask's memory order)."""
    box = mask_box(mask)
    x0, y0, x1, y1 = box
    return mask[y0:y1, x0:x1].copy(order="K"), box


def paste_crop(crop: np.ndarray, box: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """A crop placed at ``box`` in an all-False (zero) frame of ``shape``, in the crop's memory order (masks
    decoded from RLE are Fortran-ordered; the RLE encoder copies any other input)."""
    fortran = crop.ndim == 2 and crop.flags.f_contiguous and not crop.flags.c_contiguous
    out = np.zeros(shape, crop.dtype, order="F" if fortran else "C")
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = crop
    return out


def meet_box(a: Sequence[int], b: Sequence[int]) -> Box | None:
    """Where two boxes share pixels, None when they do not."""
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None


def in_box(crop: np.ndarray, box: Sequence[int], window: Sequence[int]) -> np.ndarray:
    """The view of a crop (placed at ``box``) under ``window``, which must lie inside ``box``."""
    return crop[window[1] - box[1] : window[3] - box[1], window[0] - box[0] : window[2] - box[0]]


def crop_over(crop: np.ndarray, box: Sequence[int], window: Sequence[int]) -> np.ndarray:
    """A crop (placed at ``box``) seen over any ``window``: an array of the window's size, False (zero)
    where the crop does not reach (a view of the crop when the window lies inside its box: read only)."""
    if box[0] <= window[0] and box[1] <= window[1] and window[2] <= box[2] and window[3] <= box[3]:
        return in_box(crop, box, window)
    out = np.zeros((window[3] - window[1], window[2] - window[0]), crop.dtype)
    meet = meet_box(box, window)
    if meet is not None:
        out[meet[1] - window[1] : meet[3] - window[1], meet[0] - window[0] : meet[2] - window[0]] = in_box(
            crop, box, meet
        )
    return out
