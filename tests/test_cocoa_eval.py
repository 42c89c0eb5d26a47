"""COCOA's official protocol (`semlayer.cocoa_eval`) on hand-made cases with known answers, against plain
pycocotools where the two must agree, and against a direct transcription of amodalAPI's rules on random
scenes."""

import contextlib
import io
import json
import logging

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from semlayer import formats
from semlayer.cli import main
from semlayer.cocoa_eval import format_official_table, official_cocoa_evaluate
from semlayer.errors import ConfigError
from semlayer.evaluate import evaluate
from semlayer.scene import AmodalScene, AnnotationSet, Instance

H = W = 40
ONE = pytest.approx(1.0, abs=1e-12)


def rect(x0, y0, x1, y1, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def scene(image_id, specs, h=H, w=W):
    """specs: (box, rank, fields) per instance, ids 1..N; ``rate`` in fields is the stated occlude rate."""
    insts = []
    for i, (box, rank, kw) in enumerate(specs):
        kw = dict(kw)
        rate = kw.pop("rate", None)
        inst = Instance(i + 1, rect(*box, h=h, w=w), rank=rank, **kw)
        inst.stated_occlude_rate = rate
        insts.append(inst)
    return AmodalScene({"id": image_id, "height": h, "width": w, "file_name": f"im{image_id}.png"}, insts)


def dets(image_id, boxes_scores, h=H, w=W):
    return scene(image_id, [(b, k + 1, {"score": s}) for k, (b, s) in enumerate(boxes_scores)], h, w)


A, B, C = (0, 0, 10, 10), (12, 0, 22, 10), (0, 20, 10, 30)


def two_gts(rate_a=0.0, rate_b=0.5):
    return AnnotationSet([scene(1, [(A, 1, {"rate": rate_a}), (B, 2, {"rate": rate_b})])])


def test_unmatched_detection_lowers_every_bucket():
    # d3 (score .95) matches nothing: it is the first-ranked false positive in none and in heavy alike.
    pred = AnnotationSet([dets(1, [(A, 0.9), (B, 0.8), (C, 0.95)])])
    m = official_cocoa_evaluate(two_gts(), pred)
    assert m["AP_none"] == pytest.approx(0.5)
    assert m["AP_heavy"] == pytest.approx(0.5)
    assert m["AP"] == pytest.approx(2 / 3)  # FP, TP, TP: precision 2/3 at full recall
    assert m["AR100_none"] == m["AR100_heavy"] == m["AR100"] == 1.0


def test_detection_matched_outside_the_bucket_is_ignored():
    pred = AnnotationSet([dets(1, [(A, 0.9), (B, 0.95)])])
    m = official_cocoa_evaluate(two_gts(), pred)
    # In none, B's detection (the best-scored) matches a heavy ground truth: ignored, not a false positive.
    assert m["AP_none"] == ONE
    assert m["AP_heavy"] == ONE
    assert m["AP_partial"] == m["AR100_partial"] == -1.0


def test_bucket_edges_are_closed():
    rates = [1e-5, 0.25, 0.3, 0.0, float(np.nextafter(1e-5, 1))]
    gts = AnnotationSet([scene(k + 1, [(A, 1, {"rate": r})]) for k, r in enumerate(rates)])
    found = official_cocoa_evaluate(gts, AnnotationSet([dets(1, [(A, 0.9)])]))  # only the 1e-5 object
    assert found["AR100_none"] == pytest.approx(1 / 2)  # 1e-5 and 0.0
    assert found["AR100_partial"] == pytest.approx(1 / 3)  # 1e-5, 0.25 and 1e-5 + ulp
    assert found["AR100_heavy"] == 0.0  # 0.25 and 0.3
    found = official_cocoa_evaluate(gts, AnnotationSet([dets(2, [(A, 0.9)])]))  # only the 0.25 object
    assert (found["AR100_none"], found["AR100_partial"], found["AR100_heavy"]) == (0.0, pytest.approx(1 / 3), 0.5)


def test_no_ground_truth_in_a_bucket_gives_minus_one():
    gts = AnnotationSet([scene(1, [(A, 1, {"rate": 0.0})])])
    m = official_cocoa_evaluate(gts, AnnotationSet([dets(1, [(A, 0.9), (B, 0.5)])]))
    for key in (
        "AP_partial",
        "AR100_partial",
        "AP_heavy",
        "AR100_heavy",
        "AP_stuff",
        "AR100_stuff",
        "AR1000_stuff_none",
    ):
        assert m[key] == -1.0, key
    assert m["AP"] == ONE and m["AP_things"] == ONE


def test_things_and_stuff_ignore_each_other():
    gts = AnnotationSet([scene(1, [(A, 1, {"rate": 0.0}), (B, 2, {"rate": 0.0, "is_stuff": True})])])
    pred = AnnotationSet([dets(1, [(B, 0.9), (C, 0.8), (A, 0.7)])])
    m = official_cocoa_evaluate(gts, pred)
    # things: B's detection ignored (matched to stuff); C a false positive before A: precision 1/2.
    assert m["AP_things"] == pytest.approx(0.5)
    # stuff: B first, a true positive; C and A (matched to a thing: ignored) come after full recall.
    assert m["AP_stuff"] == ONE
    # both: TP, FP, TP: precision 1 up to recall .5 (51 of the 101 recall points), 2/3 above.
    assert m["AP"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_only_the_first_annotation_record_of_an_image_counts():
    first = scene(1, [(A, 1, {"rate": 0.0})])
    second = scene(1, [(A, 1, {"rate": 0.0}), (B, 2, {"rate": 0.0})])  # another annotator saw more
    pred = AnnotationSet([dets(1, [(A, 0.9)])])
    assert official_cocoa_evaluate(AnnotationSet([first, second]), pred)["AR100"] == 1.0
    assert official_cocoa_evaluate(AnnotationSet([second, first]), pred)["AR100"] == 0.5


def test_score_ties_between_images_go_by_image_id():
    # One object per image; image 1's detection misses, image 2's hits, both score .5. In image-id order the
    # miss ranks first: precision .5 up to recall .5. The files list image 2 first.
    gts = AnnotationSet([scene(2, [(A, 1, {"rate": 0.0})]), scene(1, [(A, 1, {"rate": 0.0})])])
    pred = AnnotationSet([dets(2, [(A, 0.5)]), dets(1, [(C, 0.5)])])
    assert official_cocoa_evaluate(gts, pred)["AP"] == pytest.approx(51 * 0.5 / 101)


def test_up_to_1000_detections_per_image_for_ap():
    h = w = 16
    gts = AnnotationSet([scene(1, [((0, 0, 8, 8), 1, {"rate": 0.0})], h, w)])
    # 128 one-pixel false positives, all scored above the one true detection.
    cells = [(x, y) for y in range(8, 16) for x in range(16)]
    boxes = [((x, y, x + 1, y + 1), 1.0 - 0.001 * k) for k, (x, y) in enumerate(cells)]
    pred = AnnotationSet([dets(1, boxes + [((0, 0, 8, 8), 0.5)], h, w)])
    m = official_cocoa_evaluate(gts, pred)
    assert m["AR100"] == 0.0 and m["AR1000"] == 1.0
    assert m["AP"] == pytest.approx(1 / 129)
    m100 = official_cocoa_evaluate(gts, pred, max_dets=100)
    assert m100["AP"] == 0.0 and "AR1000" not in m100
    with pytest.raises(ConfigError, match="max_dets"):
        official_cocoa_evaluate(gts, pred, max_dets=300)


def _plain_cocoeval(gt: AnnotationSet, pred: AnnotationSet) -> COCOeval:
    def anns(scenes, scored):
        out = []
        for s in scenes:
            for inst in s.instances:
                rle = mask_utils.encode(np.asfortranarray(inst.amodal.astype(np.uint8)))
                a = {
                    "id": len(out) + 1,
                    "image_id": s.image_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(inst.area),
                    "iscrowd": 0,
                }
                if scored:
                    a["score"] = inst.score
                out.append(a)
        return out

    def coco(annotations):
        c = COCO()
        c.dataset = {
            "images": [{"id": s.image_id, "height": s.height, "width": s.width} for s in gt.scenes],
            "categories": [{"id": 1}],
            "annotations": annotations,
        }
        with contextlib.redirect_stdout(io.StringIO()):
            c.createIndex()
        return c

    ev = COCOeval(coco(anns(gt.scenes, False)), coco(anns(pred.scenes, True)), "segm")
    ev.params.maxDets = [1, 10, 100, 1000]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def _random_sets(seed, n_images=6):
    """Ground truth with stated occlude rates on and around the bucket edges, a third stuff; detections
    that find most objects (shifted a little) plus three random boxes per image."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for image_id in range(1, n_images + 1):
        n = int(rng.integers(1, 6))
        boxes = [
            (int(x), int(y), int(x + rng.integers(4, 15)), int(y + rng.integers(4, 15)))
            for x, y in rng.integers(0, 26, (n, 2))
        ]
        specs = [
            (b, k + 1, {"rate": float(rng.choice([0.0, 1e-5, 0.1, 0.25, 0.6])), "is_stuff": bool(rng.random() < 0.3)})
            for k, b in enumerate(boxes)
        ]
        gts.append(scene(image_id, specs))
        found = [
            (tuple(max(0, int(v + rng.integers(-2, 3))) for v in b), float(rng.random()))
            for b in boxes
            if rng.random() < 0.7
        ]
        extra = [
            ((int(x), int(y), int(x) + 6, int(y) + 6), float(rng.random())) for x, y in rng.integers(0, 30, (3, 2))
        ]
        preds.append(dets(image_id, found + extra))
    return AnnotationSet(gts), AnnotationSet(preds)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overall_numbers_equal_plain_pycocotools(seed):
    gt, pred = _random_sets(seed)
    m = official_cocoa_evaluate(gt, pred)
    ev = _plain_cocoeval(gt, pred)
    for key, (kind, max_dets) in {
        "AP": ("precision", 1000),
        "AR1": ("recall", 1),
        "AR10": ("recall", 10),
        "AR100": ("recall", 100),
        "AR1000": ("recall", 1000),
    }.items():
        s = ev.eval[kind][..., 0, ev.params.maxDets.index(max_dets)]
        assert m[key] == pytest.approx(float(s[s > -1].mean()), abs=1e-12), key


def _amodalapi_reference(gt: AnnotationSet, pred: AnnotationSet, stuff, low, high, max_det=1000):
    """amodalAPI's evaluateImg / accumulate / summarize (AP over IoU .50:.95, AR at ``max_det``) written out
    directly, image by image, as its loops run."""
    thrs = np.linspace(0.5, 0.95, 10)
    rec_thrs = np.linspace(0.0, 1.0, 101)
    per_image = []
    for g_scene, d_scene in zip(gt.scenes, pred.scenes):
        gts = g_scene.instances
        ignore = [not ((stuff is None or g.is_stuff == stuff) and low <= g.stated_occlude_rate <= high) for g in gts]
        gorder = sorted(range(len(gts)), key=lambda i: ignore[i])
        dts = sorted(d_scene.instances, key=lambda d: -d.score)[:max_det]
        ious = np.array(
            [[(d.amodal & gts[g].amodal).sum() / (d.amodal | gts[g].amodal).sum() for g in gorder] for d in dts]
        ).reshape(len(dts), len(gts))
        gig = np.array([ignore[g] for g in gorder], bool)
        dtm = np.zeros((len(thrs), len(dts)), bool)
        dig = np.zeros((len(thrs), len(dts)), bool)
        for t, thr in enumerate(thrs):
            gtm = np.zeros(len(gts), bool)
            for di in range(len(dts)):
                best, m = min(thr, 1 - 1e-10), -1
                for gi in range(len(gts)):
                    if gtm[gi]:
                        continue
                    if m > -1 and not gig[m] and gig[gi]:
                        break
                    if ious[di, gi] < best:
                        continue
                    best, m = ious[di, gi], gi
                if m > -1:
                    dig[t, di], dtm[t, di], gtm[m] = gig[m], True, True
        per_image.append(([d.score for d in dts], dtm, dig, gig))
    order = np.argsort(-np.concatenate([s for s, *_ in per_image]), kind="mergesort")
    dtm = np.concatenate([m for _, m, _, _ in per_image], axis=1)[:, order]
    dig = np.concatenate([i for _, _, i, _ in per_image], axis=1)[:, order]
    npig = int(sum((~g).sum() for *_, g in per_image))
    if npig == 0:
        return -1.0, -1.0
    aps, ars = [], []
    for t in range(len(thrs)):
        tp = np.cumsum(dtm[t] & ~dig[t]).astype(float)
        fp = np.cumsum(~dtm[t] & ~dig[t]).astype(float)
        rc = tp / npig
        pr = list(tp / (fp + tp + np.spacing(1)))
        ars.append(rc[-1] if len(rc) else 0.0)
        for i in range(len(pr) - 1, 0, -1):
            pr[i - 1] = max(pr[i - 1], pr[i])
        aps.append(np.mean([pr[i] if i < len(pr) else 0.0 for i in np.searchsorted(rc, rec_thrs)]))
    return float(np.mean(aps)), float(np.mean(ars))


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_every_bucket_equals_a_direct_transcription_of_amodalapi(seed):
    gt, pred = _random_sets(seed)
    m = official_cocoa_evaluate(gt, pred)
    for subset, stuff in (("both", None), ("things", False), ("stuff", True)):
        for bucket, (low, high) in (
            ("all", (0, 1)),
            ("none", (0, 1e-5)),
            ("partial", (1e-5, 0.25)),
            ("heavy", (0.25, 1)),
        ):
            ap, ar = _amodalapi_reference(gt, pred, stuff, low, high)
            suffix = "".join(f"_{p}" for p, skip in ((subset, "both"), (bucket, "all")) if p != skip)
            assert m[f"AP{suffix}"] == pytest.approx(ap, abs=1e-12), (subset, bucket)
            assert m[f"AR1000{suffix}"] == pytest.approx(ar, abs=1e-12), (subset, bucket)


def test_stated_occlude_rate_is_read_from_the_file():
    # A COCOA region that states occlude_rate 0.5 though nothing in front covers it: the file's value decides.
    gt = formats.from_dict(
        {
            "images": [{"id": 1, "height": H, "width": W, "file_name": "a.png"}],
            "annotations": [
                {
                    "id": 1,
                    "image_id": 1,
                    "depth_constraint": "",
                    "size": 1,
                    "regions": [
                        {"segmentation": [0, 0, 10, 0, 10, 10, 0, 10], "order": 1, "occlude_rate": 0.5, "isStuff": 0}
                    ],
                }
            ],
        }
    )
    assert gt.scenes[0].instances[0].stated_occlude_rate == 0.5
    m = official_cocoa_evaluate(gt, gt)
    assert m["AR100_heavy"] == 1.0 and m["AR100_none"] == -1.0


def test_thresholded_predictions_warn(caplog):
    gts = two_gts()
    with caplog.at_level(logging.WARNING):
        official_cocoa_evaluate(gts, AnnotationSet([dets(1, [(A, 0.9), (B, 0.6)])]), pred_file="p.json")
    assert "p.json: the lowest score is 0.600" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        official_cocoa_evaluate(gts, AnnotationSet([dets(1, [(A, 0.9), (B, 0.06)])]))
        evaluate(gts, AnnotationSet([dets(1, [(A, 0.9), (B, 0.06)])]))
        official_cocoa_evaluate(gts, gts)  # an annotation file as predictions: every score 1.0
    assert "thresholded" not in caplog.text
    with caplog.at_level(logging.WARNING):
        evaluate(gts, AnnotationSet([dets(1, [(A, 0.9), (B, 0.6)])]), pred_file="q.json")
    assert "q.json: the lowest score is 0.600" in caplog.text


def test_cli_protocol_cocoa_official(tmp_path, capsys):
    gt, pred = _random_sets(7)
    formats.save(gt, tmp_path / "gt.json", "cocoa")
    formats.save(pred, tmp_path / "pred.json", "results")
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                "--gt",
                str(tmp_path / "gt.json"),
                "--pred",
                str(tmp_path / "pred.json"),
                "--protocol",
                "cocoa-official",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    written = json.loads(out.read_text())["cocoa_official"]
    keys = (
        "AP AP50 AP75 AR1 AR10 AR100 AP_none AR100_none AP_partial AR100_partial AP_heavy AR100_heavy "
        "AP_things AR100_things AP_stuff AR100_stuff"
    ).split()
    assert set(keys) <= set(written)
    expected = official_cocoa_evaluate(formats.load(tmp_path / "gt.json"), formats.load(tmp_path / "pred.json"))
    assert written == pytest.approx(expected)
    printed = capsys.readouterr().out
    assert printed.startswith(format_official_table(expected))
    for subset in ("both", "things", "stuff"):
        assert f"\n{subset} " in printed
