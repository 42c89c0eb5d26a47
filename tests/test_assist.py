"""The annotation assists (semlayer.assist) on hand-made scenes with known answers."""

import cv2
import numpy as np
import pytest

from semlayer import assist
from semlayer.scene import AmodalScene, Instance

H, W = 80, 96


def scene_of(*masks_front_first):
    instances = [Instance(i + 1, m, rank=i + 1) for i, m in enumerate(masks_front_first)]
    return AmodalScene({"id": 1, "height": H, "width": W}, instances)


def rect(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def symmetric_blob():
    """A shape exactly symmetric about the column x = 40: a triangle joined to its own mirror image."""
    half = np.zeros((H, W), np.uint8)
    cv2.fillPoly(half, [np.array([[40, 10], [40, 70], [15, 60], [22, 25]])], 1)
    half = half.astype(bool)
    mirrored = np.zeros_like(half)
    mirrored[:, :81] = half[:, 80::-1]  # x -> 80 - x
    return half | mirrored


def test_grabcut_on_a_two_colour_image_recovers_the_object():
    obj = np.zeros((H, W), np.uint8)
    cv2.ellipse(obj, (45, 40), (22, 14), 30, 0, 360, 1, -1)
    obj = obj.astype(bool)
    image = np.zeros((H, W, 3), np.uint8)
    image[:] = (40, 130, 60)
    image[obj] = (210, 60, 70)
    ys, xs = np.nonzero(obj)
    box = [xs.min() - 3, ys.min() - 3, xs.max() + 3, ys.max() + 3]
    assert np.array_equal(assist.grabcut(image, box), obj)
    # A background click inside the object removes what it marks; a foreground click keeps it.
    negative = assist.clicks_mask((H, W), [(45, 40)])
    assert not assist.grabcut(image, box, background=negative)[negative].any()
    with pytest.raises(ValueError, match="has no area inside"):
        assist.grabcut(image, [200, 200, 300, 300])


def test_grabcut_foreground_outside_the_box_widens_it():
    image = np.zeros((H, W, 3), np.uint8)
    image[20:50, 20:60] = 255
    obj = rect(20, 20, 60, 50)
    click = assist.clicks_mask((H, W), [(58, 35)])  # reaches 2 px past the object: hard labels stay
    got = assist.grabcut(image, [20, 20, 39, 49], foreground=click)
    assert np.array_equal(got, obj | click)


def test_superpixels_are_cached_once_per_image_and_the_stroke_takes_whole_pieces():
    image = np.zeros((H, W, 3), np.uint8)
    image[:, 48:] = 255
    cache = assist.SuperpixelCache(size=2, area=400)
    labels = cache.labels(image)
    assert cache.labels(image.copy()) is labels and len(cache) == 1  # by content, computed once
    for k in range(3):
        other = image.copy()
        other[0, 0] = k + 1
        cache.labels(other)
    assert len(cache) == 2  # bounded
    stroke = assist.disk((H, W), 10, 10, 1)
    painted = assist.superpixel_stroke(labels, stroke)
    assert set(np.unique(labels[painted])) == set(np.unique(labels[stroke]))
    assert not painted[:, 48:].any()  # the pieces follow the colour edge


def test_clipped_brush_never_changes_pixels_outside_the_occluders():
    front = rect(40, 0, 70, H)
    back = rect(10, 20, 50, 60)
    scene = scene_of(front, back)
    stroke = np.zeros((H, W), bool)
    stroke[10:75, 0:90] = True  # everywhere around, over the visible part and the background too
    added = assist.paint_hidden(scene, 2, stroke, "add")
    assert np.array_equal(added & ~front, back & ~front)  # outside the occluder: exactly as before
    assert np.array_equal(added & front, (back | stroke) & front)
    removed = assist.paint_hidden(scene, 2, stroke, "remove")
    assert np.array_equal(removed, back & ~front)  # only the hidden part goes
    # The front object has nothing in front of it: its strokes change nothing.
    assert np.array_equal(assist.paint_hidden(scene, 1, stroke, "add"), front)


def test_hull_proposal_is_the_hull_limited_to_the_occluders():
    # An L-shaped visible part; the occluder covers the missing corner and more.
    amodal = rect(10, 10, 50, 50)
    occ = rect(30, 30, 90, 70)
    scene = scene_of(occ, amodal)
    visible = scene.visible(2)
    got = assist.hull_proposal(scene, 2)
    hull = np.zeros((H, W), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero(visible.astype(np.uint8))), 1)
    assert np.array_equal(got, visible | (hull.astype(bool) & occ))
    assert not (got & ~(visible | occ)).any()
    assert got.sum() < amodal.sum()  # the hull of an L misses part of the square's corner


@pytest.mark.parametrize("occluder", [rect(52, 0, 96, 80), rect(47, 30, 96, 80), rect(0, 0, 30, 80)])
def test_mirror_proposal_of_a_symmetric_shape_is_exact(occluder):
    shape = symmetric_blob()
    scene = scene_of(occluder, shape)
    assert not np.array_equal(scene.visible(2), shape)
    proposal, axis = assist.mirror_proposal(scene, 2)
    assert (axis.angle, axis.offset) == (0.0, 40.0)
    assert np.array_equal(proposal, shape)


def test_mirror_needs_a_hidden_part_to_reach():
    scene = scene_of(rect(0, 0, 5, 5), symmetric_blob())
    with pytest.raises(ValueError, match="no symmetry axis"):
        assist.mirror_proposal(scene, 2)


def test_set_visible_part_keeps_the_hidden_part():
    front = rect(40, 0, 70, H)
    back = rect(10, 20, 50, 60)
    scene = scene_of(front, back)
    new_visible = rect(5, 20, 40, 50)
    assist.set_visible_part(scene, 2, new_visible)
    assert np.array_equal(scene.visible(2), new_visible)
    assert np.array_equal(scene.occluded(2), back & front)


def test_a_new_visible_instance_goes_in_front_of_what_it_overlaps_only():
    front = rect(60, 0, 90, H)
    back = rect(10, 20, 50, 60)
    scene = scene_of(front, back)
    visible = rect(30, 30, 45, 45)  # on the back object only
    new_id = assist.add_visible_instance(scene, visible, "cup")
    assert scene.order_ids() == [1, new_id, 2]
    assert np.array_equal(scene.visible(new_id), visible)
    assert scene.get(new_id).name == "cup"


def test_simulated_click_rule_on_a_known_error_map():
    target = np.zeros((30, 30), bool)
    target[5:25, 5:25] = True  # 20 x 20
    # Empty prediction: the first click is the target's interior point farthest from its boundary; the
    # four centre pixels tie, the first in row-major order wins.
    assert assist.simulated_click(target, np.zeros_like(target)) == assist.Click(14, 14, True)
    # A 6 x 6 hole (false negative, 36 px) and a 4 x 12 spill along the image's top edge (false positive,
    # 48 px): the larger region is the false positive, so a negative click at its centre. The frame counts
    # as boundary, so rows 1 and 2 are 2 px from it, as are columns 11..20: the first of those wins.
    current = target.copy()
    current[8:14, 8:14] = False
    current[0:4, 10:22] = True
    click = assist.simulated_click(target, current)
    assert click == assist.Click(11, 1, False)
    # Image-frame edge counts as boundary: with the spill gone, the hole's centre.
    current[0:4, 10:22] = False
    assert assist.simulated_click(target, current) == assist.Click(10, 10, True)
    assert assist.simulated_click(target, target) is None


def test_iou_and_masks():
    assert assist.iou(rect(0, 0, 10, 10), rect(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert assist.iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    assert assist.disk((9, 9), 4, 4, 2).sum() == 13
    assert assist.polygon_mask((10, 10), [(1, 1), (4, 1), (4, 4), (1, 4)]).sum() == 16
    with pytest.raises(ValueError, match="at least 3 points"):
        assist.polygon_mask((10, 10), [(1, 1), (2, 2)])
