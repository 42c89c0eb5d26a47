"""A detection file's stated occlusion (visible mask, occlude rate) is what the evaluator reads; the
painter's rule only fills in where a file states nothing, and an edit drops what no longer holds."""

import numpy as np

from semlayer import formats
from semlayer.evaluate import evaluate
from semlayer.formats.masks import encode_rle
from semlayer.scene import AmodalScene, AnnotationSet, Instance

H, W = 20, 30


def rect(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


A, B = rect(0, 0, 12, 10), rect(8, 0, 20, 10)  # overlap 4 x 10: B is 1/3 hidden when behind A


def gt():
    image = {"id": 1, "height": H, "width": W, "file_name": "a.png"}
    return AnnotationSet([AmodalScene(image, [Instance(1, A, rank=1), Instance(2, B, rank=2)])])


def results(b_visible, b_rate):
    """Both detections right; A (.9) says it is unoccluded, B (.8) states ``b_visible`` / ``b_rate``."""
    recs = [
        {
            "image_id": 1,
            "category_id": 1,
            "segmentation": encode_rle(A),
            "score": 0.9,
            "visible_mask": encode_rle(A),
            "occlude_rate": 0.0,
        }
    ]
    b = {"image_id": 1, "category_id": 1, "segmentation": encode_rle(B), "score": 0.8}
    if b_visible is not None:
        b["visible_mask"] = encode_rle(b_visible)
    if b_rate is not None:
        b["occlude_rate"] = b_rate
    return formats.from_dict(recs + [b])


def test_stated_visible_mask_and_rate_are_what_the_evaluator_reads():
    # B claims to be fully visible: both visible masks cover the overlap, which no depth order allows.
    pred = results(B, 0.0)
    inst = pred.scenes[0].instances[1]
    assert inst.stated_occlude_rate == 0.0 and inst.stated_visible is not None
    m = evaluate(gt(), pred)
    assert m["occlusion_recall"] == 0.0  # the ground truth's B is occluded; the file says it is not
    assert m["visible_AP75"] < 1.0  # B's stated visible mask includes the overlap: IoU 2/3 with the truth
    # Dropped (as an edit would), the painter's rule under the inferred order (A in front) decides again.
    for s in pred.scenes:
        for i in s.instances:
            i.drop_stated()
    m = evaluate(gt(), pred)
    assert m["occlusion_recall"] == 1.0 and m["visible_AP75"] > 0.99


def test_nothing_stated_means_the_painters_rule():
    pred = results(None, None)
    assert pred.scenes[0].instances[1].stated_occlude_rate is None
    assert pred.scenes[0].instances[1].stated_visible is None
    assert evaluate(gt(), pred)["occlusion_recall"] == 1.0


def test_a_stated_rate_alone_decides_the_predicted_occlusion():
    pred = results(None, 0.0)  # no visible mask, rate 0: unoccluded as stated, though painted behind A
    assert pred.scenes[0].instances[1].stated_visible is None
    assert evaluate(gt(), pred)["occlusion_recall"] == 0.0


def test_a_consistent_visible_mask_is_not_stored_twice():
    pred = results(B & ~A, 1 / 3)
    assert pred.scenes[0].instances[1].stated_visible is None  # the painter's rule gives exactly it
    assert pred.scenes[0].instances[1].stated_occlude_rate == 1 / 3


def test_edits_drop_the_stated_occlusion_and_compact_scenes_keep_it():
    pred = results(B, 0.0)
    compact = formats.CompactScenes(pred.scenes)
    assert compact[0].instances[1].stated_visible == pred.scenes[0].instances[1].stated_visible
    assert compact[0].instances[1].stated_occlude_rate == 0.0
    scene = compact[0]
    scene.move(2, "front")
    assert all(i.stated_visible is None and i.stated_occlude_rate is None for i in scene.instances)
    scene = compact[0]
    scene.instances[1].set_amodal(B)
    assert scene.instances[1].stated_visible is None and scene.instances[0].stated_occlude_rate == 0.0
