"""The evaluator on hand-made scenes with known answers (no file formats involved)."""

import json
from pathlib import Path

import numpy as np
import pytest

from semlayer.errors import ConfigError, FormatError
from semlayer.evaluate import evaluate, format_table
from semlayer.scene import AmodalScene, AnnotationSet, Instance
from tests.helpers import HEADLINE_METRICS

H = W = 40
# pycocotools interpolates precision at 101 recall thresholds 0, .01, ..., 1.
R = 101
# pycocotools' precision is tp / (tp + fp + eps), so a perfect single detection scores 1 - 2e-16.
ONE = pytest.approx(1.0, abs=1e-12)


def rect(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def scene(image_id, specs, file_name=None):
    """specs: (box, rank, **instance fields) per instance; ids 1..N in order."""
    insts = [Instance(i + 1, rect(*box), rank=rank, **kw) for i, (box, rank, kw) in enumerate(specs)]
    return AmodalScene({"id": image_id, "height": H, "width": W, "file_name": file_name or f"im{image_id}.png"}, insts)


# A none (front), B partial (2x10 of 20x10 under A: 0.1), C heavy (8x10 of 10x10 under B: 0.8), D stuff, alone.
A, B, C, D = (0, 0, 10, 10), (8, 0, 28, 10), (20, 0, 30, 10), (0, 20, 20, 40)
SPOT = (30, 30, 38, 38)  # empty in the ground truth


def gt_scene():
    return scene(1, [(A, 1, {}), (B, 2, {}), (C, 3, {}), (D, 4, {"is_stuff": True})])


def pred_scene(specs):
    return scene(1, specs)


def test_ground_truth_scene_covers_every_bucket():
    assert gt_scene().occlude_rates() == [0.0, 0.1, 0.8, 0.0]


def test_perfect_predictions_give_one_everywhere():
    pred = pred_scene(
        [
            (A, 1, {"score": 0.9}),
            (B, 2, {"score": 0.8}),
            (C, 3, {"score": 0.7}),
            (D, 4, {"score": 0.6, "is_stuff": True}),
        ]
    )
    m = evaluate(AnnotationSet([gt_scene()]), AnnotationSet([pred]))
    counts = {
        "order_pairs": 2,
        "order_pairs_matched": 2,
        "num_images": 1,
        "num_gt": 4,
        "num_pred": 4,
        "num_matched": 4,
        "num_pred_unmatched_images": 0,
    }
    # 4 objects: one detection per image recovers a quarter; APm/APl have no object of that size.
    special = {"amodal_AR1": 0.25, "amodal_APm": -1.0, "amodal_APl": -1.0}
    assert m == {key: counts.get(key, special.get(key, ONE)) for key in m}
    for key in (*HEADLINE_METRICS, "amodal_AP75", "AP_things", "AP_stuff"):
        assert key in m
    assert all(type(v) in (int, float) for v in m.values())
    assert json.loads(json.dumps(m)) == m


def test_swapping_every_pair_gives_order_accuracy_zero():
    # Reversed depth: C in front, then B, then A. Amodal masks are unchanged, visible ones are not.
    pred = pred_scene(
        [
            (A, 3, {"score": 0.9}),
            (B, 2, {"score": 0.8}),
            (C, 1, {"score": 0.7}),
            (D, 4, {"score": 0.6, "is_stuff": True}),
        ]
    )
    m = evaluate(AnnotationSet([gt_scene()]), AnnotationSet([pred]))
    assert m["order_acc"] == 0.0 and m["order_pairs"] == 2
    assert m["order_acc_matched"] == 0.0 and m["order_pairs_matched"] == 2
    assert m["amodal_AP"] == 1.0 and m["AP_heavy"] == ONE and m["miou_amodal"] == 1.0
    assert m["visible_AP"] < 1.0
    # Predicted occlude rates A 0.2, B 0.4, C 0, D 0 against GT 0, 0.1, 0.8, 0: one of each outcome.
    assert (m["occlusion_acc"], m["occlusion_precision"], m["occlusion_recall"], m["occlusion_f1"]) == (0.5,) * 4
    # B's hidden part is predicted on the wrong side, C's not at all.
    assert m["miou_occluded"] == 0.0


def test_no_predictions_give_zero():
    m = evaluate(AnnotationSet([gt_scene()]), AnnotationSet([]))
    for key in (*HEADLINE_METRICS, "AP_things", "AP_stuff", "occlusion_acc"):
        assert m[key] == 0.0, key
    assert (m["order_pairs"], m["num_gt"], m["num_pred"], m["num_matched"]) == (2, 4, 0, 0)
    assert (m["order_acc_matched"], m["order_pairs_matched"]) == (-1.0, 0)  # no pair was found to be ordered


def test_no_ground_truth_to_measure_gives_minus_one():
    gt = AnnotationSet([scene(1, [(A, 1, {})])], images=[{"id": 2, "height": H, "width": W, "file_name": "e.png"}])
    pred = AnnotationSet([scene(1, [(A, 1, {"score": 0.9})]), scene(2, [(SPOT, 1, {"score": 0.5})])])
    m = evaluate(gt, pred)
    assert m["amodal_AP"] == ONE  # the detection on the empty image scores below the true one
    assert (m["AP_partial"], m["AP_heavy"], m["AP_stuff"], m["miou_occluded"], m["order_acc"]) == (-1.0,) * 5
    assert m["occlusion_f1"] == -1.0 and m["occlusion_acc"] == 1.0 and m["order_pairs"] == 0
    assert (m["num_images"], m["num_gt"], m["num_pred"]) == (2, 1, 2)
    # The same false positive with the higher score costs precision: it counts on a GT image without objects.
    pred.scenes[1].instances[0].score = 0.95
    assert evaluate(gt, pred)["amodal_AP"] == pytest.approx(0.5)  # precision 1/2 at recall 1


def test_image_missing_from_predictions_counts_as_missed():
    two = [(A, 1, {}), (B, 2, {})]
    gt = AnnotationSet([scene(1, two), scene(2, two)])
    pred = AnnotationSet([scene(1, [(A, 1, {"score": 0.9}), (B, 2, {"score": 0.8})])])
    m = evaluate(gt, pred)
    # 2 of 4 objects found at precision 1: recall thresholds 0 .. 0.50 (51 of 101) score 1.
    assert m["amodal_AP"] == pytest.approx(51 / R) and m["amodal_AP50"] == pytest.approx(51 / R)
    assert m["amodal_AR100"] == 0.5
    assert m["order_acc"] == 0.5 and m["order_pairs"] == 2
    # The pair of the missing image is wrong in order_acc but not part of order_acc_matched.
    assert m["order_acc_matched"] == 1.0 and m["order_pairs_matched"] == 1
    assert m["miou_amodal"] == 1.0 and m["miou_occluded"] == 1.0 and m["occlusion_f1"] == 1.0
    assert (m["num_images"], m["num_gt"], m["num_pred"], m["num_matched"]) == (2, 4, 2, 2)


def test_occlusion_buckets_follow_ground_truth_and_predicted_occlusion():
    # A false positive (predicted unoccluded, so in bucket "none") above A and B; C and D missed.
    pred = pred_scene([(SPOT, 1, {"score": 0.9}), (A, 2, {"score": 0.8}), (B, 3, {"score": 0.7})])
    m = evaluate(AnnotationSet([gt_scene()]), AnnotationSet([pred]))
    # none: GT A, D; detections FP then A: precision 1/2 up to recall 1/2.
    assert m["AP_none"] == pytest.approx(51 * 0.5 / R)
    # partial: GT B; the FP (bucket none) and A (matched to an ignored GT) are ignored.
    assert m["AP_partial"] == ONE
    assert m["AP_heavy"] == 0.0 and m["AP_occluded"] == 0.0
    # things: GT A, B, C; FP, A, B: precision 2/3 up to recall 2/3 (67 thresholds). stuff: D missed.
    assert m["AP_things"] == pytest.approx(67 * (2 / 3) / R)
    assert m["AP_stuff"] == 0.0
    # all: precision 2/3 up to recall 1/2.
    assert m["amodal_AP"] == pytest.approx(51 * (2 / 3) / R)


def test_per_category_evaluation():
    cats = [{"id": 1, "name": "cup"}, {"id": 2, "name": "box"}]
    x, y, z = (0, 0, 10, 10), (20, 0, 30, 10), (0, 20, 10, 30)
    gt_specs = [(x, 1, {"category": 1}), (y, 2, {"category": 1}), (z, 3, {"category": 2})]
    # z's mask is found but labelled as a cup.
    pred_specs = [
        (x, 1, {"category": 1, "score": 0.9}),
        (y, 2, {"category": 1, "score": 0.8}),
        (z, 3, {"category": 1, "score": 0.7}),
    ]
    pred = AnnotationSet([scene(1, pred_specs)], categories=cats)
    m = evaluate(AnnotationSet([scene(1, gt_specs)], categories=cats), pred)
    assert m["amodal_AP"] == 0.5  # cup 1.0, box 0.0
    assert m["num_matched"] == 2 and m["miou_amodal"] == 1.0
    agnostic = evaluate(AnnotationSet([scene(1, gt_specs)]), pred)
    assert agnostic["amodal_AP"] == 1.0 and agnostic["num_matched"] == 3
    forced = evaluate(AnnotationSet([scene(1, gt_specs)], categories=cats), pred, class_agnostic=True)
    assert forced["amodal_AP"] == 1.0
    # A class-agnostic model (no category on any prediction) is scored class-agnostically.
    no_cats = AnnotationSet([scene(1, [(b, r, {"score": 0.9}) for b, r, _ in pred_specs])])
    assert evaluate(AnnotationSet([scene(1, gt_specs)], categories=cats), no_cats)["amodal_AP"] == 1.0


def test_prediction_without_category_against_categories_is_a_format_error():
    cats = [{"id": 1, "name": "cup"}]
    gt = AnnotationSet([scene(1, [(A, 1, {"category": 1})])], categories=cats)
    with pytest.raises(FormatError) as err:
        evaluate(
            gt,
            AnnotationSet([scene(1, [(A, 1, {"score": 0.9}), (A, 2, {"score": 0.5, "category": 1})])]),
            pred_file="pred.json",
        )
    assert err.value.file == "pred.json"
    assert err.value.json_path == "annotations[image_id=1, id=1].category_id"


def test_matching_is_greedy_by_score_and_uses_each_ground_truth_once():
    gt = AnnotationSet([scene(1, [(A, 1, {})])])
    # The higher-scored, looser mask (IoU 0.8) takes the object; the exact one stays unmatched.
    pred = AnnotationSet([scene(1, [((0, 0, 10, 10), 1, {"score": 0.6}), ((0, 0, 10, 8), 2, {"score": 0.9})])])
    m = evaluate(gt, pred)
    assert m["miou_amodal"] == pytest.approx(0.8) and m["num_matched"] == 1
    # Above the loose mask's IoU only the exact one can match.
    strict = evaluate(gt, pred, iou_match=0.9)
    assert strict["miou_amodal"] == 1.0 and strict["num_matched"] == 1


def test_several_ground_truth_scenes_per_image_and_image_assignment():
    # Two annotators of image 1 (BSDS): one drew A and B, the other only A.
    gt = AnnotationSet([scene(1, [(A, 1, {}), (B, 2, {})]), scene(1, [(A, 1, {})])])
    pred = AnnotationSet(
        [
            # Named by file: the id 99 is the predictor's own numbering.
            scene(99, [(A, 1, {"score": 0.9}), (B, 2, {"score": 0.95})], file_name="/elsewhere/im1.png"),
            scene(5, [(SPOT, 1, {"score": 0.5})], file_name="other.png"),
        ]
    )
    m = evaluate(gt, pred)
    # Both scenes see both predictions: B (TP), B (FP for the second annotator), A, A.
    assert m["amodal_AP"] == pytest.approx((34 + 67 * 0.75) / R)
    assert (m["num_images"], m["num_gt"], m["num_pred"], m["num_matched"]) == (1, 3, 2, 3)
    assert m["num_pred_unmatched_images"] == 1
    assert m["order_acc"] == 1.0 and m["order_pairs"] == 1


def test_prediction_of_another_size_is_a_format_error():
    gt = AnnotationSet([scene(1, [(A, 1, {})])])
    small = AmodalScene({"id": 1, "height": 20, "width": 40}, [Instance(1, np.ones((20, 40), bool), score=0.5)])
    with pytest.raises(FormatError) as err:
        evaluate(gt, AnnotationSet([small]), pred_file="pred.json")
    assert (
        err.value.json_path == "images[id=1]"
        and err.value.expected == "height 40 and width 40 as the ground-truth image, got 20x40"
    )


@pytest.mark.parametrize("bad", [0, 1.5, "0.5"])
def test_iou_match_must_be_in_unit_interval(bad):
    with pytest.raises(ConfigError):
        evaluate(AnnotationSet([]), AnnotationSet([]), iou_match=bad)


def test_format_table():
    text = format_table({"amodal_AP": 0.5, "AP_heavy": -1.0, "order_pairs": 3, "extra_key": 0.25})
    assert text == "\n".join(
        [
            "Amodal masks (COCO AP/AR, IoU .50:.95)",
            "  AP                      0.500",
            "",
            "Amodal AP by ground-truth occlusion",
            "  heavy (> 0.25)            n/a",
            "",
            "Matched instances",
            "  overlapping GT pairs        3",
            "",
            "Other",
            "  extra_key               0.250",
        ]
    )


def test_ground_truth_image_without_size_is_a_format_error():
    gt = AnnotationSet(images=[{"id": 3, "file_name": "x.png"}])
    with pytest.raises(FormatError) as err:
        evaluate(gt, AnnotationSet([]), gt_file="gt.json")
    assert (err.value.file, err.value.json_path) == ("gt.json", "images[id=3]")


def test_occluded_iou_of_a_partly_right_completion():
    # GT: A in front of B hides B's columns 8-9 (20 px). The predicted A ends one column early, so the
    # prediction hides only column 8 of B: occluded IoU 10 / 20. A's amodal IoU is 90 / 100.
    gt = AnnotationSet([scene(1, [(A, 1, {}), (B, 2, {})])])
    pred = AnnotationSet([scene(1, [((0, 0, 9, 10), 1, {"score": 0.9}), (B, 2, {"score": 0.8})])])
    m = evaluate(gt, pred)
    assert m["miou_occluded"] == 0.5
    assert m["miou_amodal"] == pytest.approx((0.9 + 1.0) / 2)
    assert m["order_acc"] == 1.0 and m["order_pairs"] == 1


def test_compactly_loaded_files_score_exactly_as_loaded_ones(tmp_path):
    from semlayer import formats

    gt = AnnotationSet([gt_scene(), scene(2, [(A, 2, {}), (B, 1, {})])])
    pred = AnnotationSet(
        [
            pred_scene(
                [
                    ((0, 0, 9, 10), 1, {"score": 0.9}),
                    (B, 3, {"score": 0.8}),
                    (C, 2, {"score": 0.7}),
                    (SPOT, 4, {"score": 0.3}),
                ]
            ),
            scene(2, [(A, 1, {"score": 0.6}), (B, 2, {"score": 0.5})]),
        ]
    )
    formats.save(gt, tmp_path / "gt.json", format="cocoa")
    formats.save(pred, tmp_path / "pred.json", format="results")
    dense = evaluate(formats.load(tmp_path / "gt.json"), formats.load(tmp_path / "pred.json"))
    compact_gt, compact_pred = (formats.load(tmp_path / name, compact=True) for name in ("gt.json", "pred.json"))
    assert isinstance(compact_gt.scenes, formats.CompactScenes)
    assert evaluate(compact_gt, compact_pred) == dense
    assert 0 < dense["miou_occluded"] < 1 and 0 < dense["order_acc"] < 1


def test_kins2020_clusters_decide_which_pairs_are_scored():
    # Cluster 1 holds A, B and C (ico 1, 2, 3): its 3 pairs count, A-C too although A and C do not overlap;
    # D overlaps nothing. Predicted depth C, A, B: only A before B is right.
    gt = AnnotationSet(
        [
            scene(
                1,
                [
                    (A, 1, {"cluster": (1, 1)}),
                    (B, 2, {"cluster": (1, 2)}),
                    (C, 3, {"cluster": (1, 3)}),
                    (D, 4, {"cluster": (0, 0)}),
                ],
            )
        ]
    )
    pred = AnnotationSet(
        [scene(1, [(A, 2, {"score": 0.9}), (B, 3, {"score": 0.8}), (C, 1, {"score": 0.7}), (D, 4, {"score": 0.6})])]
    )
    m = evaluate(gt, pred)
    assert m["order_pairs"] == 3 and m["order_acc"] == pytest.approx(1 / 3)
    # Without clusters the same scene scores its 2 overlapping pairs (A-B right, B-C wrong).
    for inst in gt.scenes[0].instances:
        inst.cluster = None
    m = evaluate(gt, pred)
    assert m["order_pairs"] == 2 and m["order_acc"] == 0.5


def test_kins2020_file_clusters_reach_the_evaluator(tmp_path):
    from semlayer import formats

    obj = json.loads((Path(__file__).parent / "data" / "kins2020_toy.json").read_text())
    # The two cars overlap but sit in different clusters: KINS 2020 scores no pair for them.
    obj["annotations"][1]["oco_id"] = 2
    (tmp_path / "gt.json").write_text(json.dumps(obj))
    for compact in (False, True):
        gt = formats.load(tmp_path / "gt.json", compact=compact)
        assert [i.cluster for i in gt.scenes[0].instances] == [(1, 1), (2, 2)]
        m = evaluate(gt, gt)
        assert m["order_pairs"] == 0 and m["order_acc"] == -1.0
    obj["annotations"][1]["oco_id"] = 1
    (tmp_path / "gt.json").write_text(json.dumps(obj))
    m = evaluate(formats.load(tmp_path / "gt.json"), formats.load(tmp_path / "gt.json"))
    assert m["order_pairs"] == 1 and m["order_acc"] == 1.0


def test_cocoa_depth_constraint_names_the_pairs_that_are_scored():
    # A-B and B-C overlap; the annotation states only "1-2" (A before B): one pair is scored, and right.
    gt_a = gt_scene()
    pred = pred_scene(
        [
            (A, 1, {"score": 0.9}),
            (B, 3, {"score": 0.8}),
            (C, 2, {"score": 0.7}),
            (D, 4, {"score": 0.6, "is_stuff": True}),
        ]
    )  # B-C wrong
    gt_a.annotation = {"depth_constraint": "1-2"}
    m = evaluate(AnnotationSet([gt_a]), AnnotationSet([pred]))
    assert m["order_pairs"] == 1 and m["order_acc"] == 1.0
    # Stated as "2-1", the pair is the same; the scene's ranks say which is in front.
    gt_a.annotation = {"depth_constraint": "2-1"}
    assert evaluate(AnnotationSet([gt_a]), AnnotationSet([pred]))["order_acc"] == 1.0
    # An empty statement scores no pair; one naming an order the scene lacks falls back to the masks.
    gt_a.annotation = {"depth_constraint": ""}
    assert evaluate(AnnotationSet([gt_a]), AnnotationSet([pred]))["order_pairs"] == 0
    for text in ("1-9", "1-2,garbage"):
        gt_a.annotation = {"depth_constraint": text}
        m = evaluate(AnnotationSet([gt_a]), AnnotationSet([pred]))
        assert m["order_pairs"] == 2 and m["order_acc"] == 0.5, text


def test_cocoa_file_depth_constraint_reaches_the_evaluator():
    from semlayer import formats

    gt = formats.load(Path(__file__).parent / "data" / "cocoa_toy.json")
    assert gt.scenes[0].annotation["depth_constraint"] == "1-2"
    m = evaluate(gt, gt)
    assert m["order_pairs"] == 1 and m["order_acc"] == 1.0
