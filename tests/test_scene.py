import numpy as np
import pytest
from shapes import rect, toy_scene

from semlayer.boxes import box_xywh, mask_box
from semlayer.scene import (
    AmodalScene,
    AnnotationSet,
    Instance,
    renumber_ranks,
)


def test_painters_rule_on_toy_scene():
    s = toy_scene()
    vis = s.visible_masks()
    assert vis[0].sum() == 16
    assert vis[1].sum() == 20
    assert not (vis[1] & rect(8, 10, 3, 3, 5, 5)).any()
    assert s.occlude_rates() == [0.0, 4 / 24]
    assert s.occluders(2) == [1] and s.occludees(1) == [2]
    assert s.instances_at(4, 4) == [1, 2]
    assert s.instances_at(0, 0) == [] and s.instances_at(-1, 3) == []


def test_move_updates_visible_masks_exactly():
    s = toy_scene()
    s.move(2, "front")
    assert s.ranks() == [2, 1]
    assert s.visible(1).sum() == 12 and s.visible(2).sum() == 24
    s.move(2, "back")
    assert s.ranks() == [1, 2]
    s.move(1, "backward")
    assert s.order_ids() == [2, 1]
    s.move(1, "forward")
    assert s.order_ids() == [1, 2]
    s.move(1, "forward")  # already in front: no change
    assert s.order_ids() == [1, 2]
    with pytest.raises(ValueError, match="move must be one of"):
        s.move(1, "up")
    with pytest.raises(KeyError):
        s.move(9, "front")


def test_put_in_front_and_external_occlusion_kept():
    s = toy_scene()
    ext = rect(8, 10, 7, 5, 9, 7)  # bottom-right corner of region 2 hidden by an unannotated object
    s.set_visible([s.visible_masks()[0], s.visible_masks()[1] & ~ext])
    assert s.instances[1].external.sum() == 4
    s.put_in_front(2, 1)
    assert s.order_ids() == [2, 1]
    assert s.visible(2).sum() == 24 - 4  # external occlusion survives the reorder
    assert s.visible(1).sum() == 12
    s.put_in_front(2, 1)  # already in front: unchanged
    assert s.order_ids() == [2, 1]


def test_add_remove_and_rank_invariants():
    s = toy_scene()
    s.add(Instance(3, rect(8, 10, 0, 0, 2, 2)), rank=1)
    assert s.order_ids() == [3, 1, 2]
    assert s.visible(1).sum() == 16 - 1
    s.remove(1)
    assert s.order_ids() == [3, 2] and sorted(s.ranks()) == [1, 2]
    with pytest.raises(ValueError, match="already has an instance"):
        s.add(Instance(2, rect(8, 10, 0, 0, 1, 1)))
    with pytest.raises(ValueError, match="permutation"):
        AmodalScene({"id": 1, "height": 8, "width": 10}, [Instance(1, rect(8, 10, 0, 0, 1, 1), rank=2)])
    with pytest.raises(ValueError, match="does not match image"):
        AmodalScene({"id": 1, "height": 4, "width": 4}, [Instance(1, rect(8, 10, 0, 0, 1, 1))])


def test_set_amodal_drops_stale_polygons_and_predictions():
    s = toy_scene()
    inst = s.get(1)
    inst.polygons = [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]
    inst.semdist = np.ones((8, 10), np.float32)
    inst.set_amodal(rect(8, 10, 1, 1, 4, 4))
    assert inst.polygons is None and inst.semdist is None and inst.area == 9
    assert s.occlude_rates()[1] == 1 / 24


def test_helpers():
    assert box_xywh(mask_box(rect(8, 10, 3, 3, 9, 7))) == [3.0, 3.0, 6.0, 4.0]
    assert box_xywh(mask_box(np.zeros((3, 3), bool))) == [0.0, 0.0, 0.0, 0.0]
    assert renumber_ranks([5, 2, 9, 2]) == [3, 1, 4, 2]
    aset = AnnotationSet([toy_scene()], images=[{"id": 9, "height": 2, "width": 2}])
    assert [r["id"] for r in aset.image_records()] == [7, 9]
    assert len(aset.scenes_for_image(7)) == 1


def test_summary_lists_instances_front_first_and_the_instance_summary_adds_who_hides_whom():
    a, b = np.zeros((4, 6), bool), np.zeros((4, 6), bool)
    a[0:2, 0:3] = True
    b[1:3, 1:4] = True
    scene = AmodalScene({"id": 7, "file_name": "x.png", "height": 4, "width": 6}, [Instance(1, b, rank=2, name="b"),
                        Instance(2, a, rank=1, name="a", score=0.25)])  # fmt: skip
    assert scene.summary() == {
        "image": {"id": 7, "file_name": "x.png", "height": 4, "width": 6},
        "instances": [
            {"id": 2, "name": "a", "category": None, "rank": 1, "occlude_rate": 0.0, "score": 0.25,
             "bbox": [0.0, 0.0, 3.0, 2.0]},
            {"id": 1, "name": "b", "category": None, "rank": 2, "occlude_rate": round(2 / 6, 6), "score": None,
             "bbox": [1.0, 1.0, 3.0, 2.0]},
        ],
    }  # fmt: skip
    assert scene.instance_summary(1) == {**scene.summary()["instances"][1], "is_stuff": False,
                                         "occluders": [2], "occludees": []}  # fmt: skip


def test_forward_and_backward_step_past_the_nearest_overlapping_instance():
    """Issue 19: a step passes objects the instance does not touch, which would change nothing visible."""
    h, w = 10, 30
    s = AmodalScene(
        {"id": 1, "height": h, "width": w},
        [
            Instance(1, rect(h, w, 0, 0, 6, 6), rank=1),  # overlaps 3 only
            Instance(2, rect(h, w, 20, 0, 26, 6), rank=2),  # touches nobody
            Instance(3, rect(h, w, 4, 4, 10, 10), rank=3),  # overlaps 1 and 4
            Instance(4, rect(h, w, 8, 0, 12, 6), rank=4),
        ],
    )
    assert s.step_past(4, "forward") == 3 and s.step_past(3, "forward") == 1
    assert s.step_past(1, "backward") == 3 and s.step_past(3, "backward") == 4
    assert s.step_past(2, "forward") is None and s.step_past(2, "backward") is None
    assert s.step_past(1, "forward") is None and s.step_past(4, "backward") is None
    s.move(1, "backward")  # past 2 (untouched) and 3: just behind 3
    assert s.order_ids() == [2, 3, 1, 4]
    s.move(1, "forward")  # back in front of 3, the one it overlaps
    assert s.order_ids() == [2, 1, 3, 4]
    s.move(2, "forward")  # overlaps nothing: no change
    assert s.order_ids() == [2, 1, 3, 4]
    with pytest.raises(ValueError, match="forward or backward"):
        s.step_past(1, "front")
