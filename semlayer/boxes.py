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
    h, w = mask.shape
    return (
        max(int(cols[0]) - margin, 0),
        max(int(rows[0]) - margin, 0),
        min(int(cols[-1]) + 1 + margin, w),
        min(int(rows[-1]) + 1 + margin, h),
    )


def box_xywh(box: Sequence[int]) -> list[float]:
    """COCO's ``[x, y, w, h]`` (floats, pixel-edge coordinates) of an ``(x0, y0, x1, y1)`` box; all zeros for
    `EMPTY_BOX`."""
    x0, y0, x1, y1 = box
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
