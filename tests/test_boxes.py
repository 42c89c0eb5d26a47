import numpy as np
from shapes import rect

from semlayer.boxes import EMPTY_BOX, box_xywh, mask_box


def test_mask_box_is_the_tight_crop_with_exclusive_ends():
    mask = rect(8, 10, 3, 2, 9, 7)
    mask[5, 1] = True  # one stray pixel widens the box to the left
    box = mask_box(mask)
    assert box == (1, 2, 9, 7)
    assert all(type(v) is int for v in box)
    x0, y0, x1, y1 = box
    assert np.count_nonzero(mask[y0:y1, x0:x1]) == np.count_nonzero(mask)


def test_mask_box_grows_by_the_margin_and_stays_in_the_frame():
    assert mask_box(rect(8, 10, 3, 2, 9, 7), margin=1) == (2, 1, 10, 8)
    assert mask_box(rect(8, 10, 0, 0, 1, 1), margin=2) == (0, 0, 3, 3)
    assert mask_box(rect(8, 10, 9, 7, 10, 8), margin=2) == (7, 5, 10, 8)


def test_an_empty_mask_has_the_empty_box_whatever_the_margin():
    assert EMPTY_BOX == (0, 0, 0, 0)
    assert mask_box(np.zeros((4, 5), bool)) == EMPTY_BOX
    assert mask_box(np.zeros((4, 5), bool), margin=3) == EMPTY_BOX
    assert mask_box(rect(4, 5, 0, 0, 1, 1)) == (0, 0, 1, 1)  # the top-left pixel is not empty


def test_box_xywh_is_cocos_box():
    assert box_xywh((1, 2, 9, 7)) == [1.0, 2.0, 8.0, 5.0]
    assert box_xywh(EMPTY_BOX) == [0.0, 0.0, 0.0, 0.0]
    assert all(type(v) is float for v in box_xywh(mask_box(rect(8, 10, 3, 2, 9, 7))))
