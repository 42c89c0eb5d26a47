"""Evaluating files as their RLEs (`load_for_evaluation`) gives exactly the numbers of `formats.load`'s scenes,
and the evaluator's own matching gives exactly pycocotools' per-image results."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from semlayer import evaluate as ev
from semlayer import formats
from semlayer.cli import main
from semlayer.cocoa_eval import official_cocoa_evaluate
from semlayer.evaluate import RleScenes, evaluate, load_all_for_evaluation, load_for_evaluation
from semlayer.formats.masks import mask_to_rle, rle_minus, rle_to_mask
from semlayer.scene import AnnotationSet
from test_evaluate import A, B, C, SPOT, gt_scene, scene

DATA = Path(__file__).parent / "data"
FILES = sorted(DATA.glob("*.json"))


def test_rle_minus_is_the_set_difference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.random((2, 7, 9)) < rng.random()
        assert np.array_equal(rle_to_mask(rle_minus(mask_to_rle(a), mask_to_rle(b))), a & ~b)
    full, empty = np.ones((3, 4), bool), np.zeros((3, 4), bool)
    for a, b in itertools.product((full, empty), repeat=2):
        assert np.array_equal(rle_to_mask(rle_minus(mask_to_rle(a), mask_to_rle(b))), a & ~b)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_scenes_read_as_rle_are_the_scenes_formats_load_builds(path):
    loaded, read = formats.load(path), load_for_evaluation(path)
    assert isinstance(read.scenes, RleScenes)
    assert read.image_records() == loaded.image_records() and read.categories == loaded.categories
    assert read.instance_facts() == loaded.instance_facts()
    for dense, rle in zip(loaded.scenes, read.scenes, strict=True):
        assert rle.ranks() == dense.ranks()
        for a, b in zip(dense.instances, rle.instances, strict=True):
            assert np.array_equal(a.amodal, b.amodal)
            assert (a.stated_visible, a.stated_occlude_rate) == (b.stated_visible, b.stated_occlude_rate)
        assert all(np.array_equal(a, b) for a, b in zip(dense.visible_masks(), rle.visible_masks(), strict=True))


def test_files_read_as_rle_score_exactly_as_loaded_ones():
    loaded = {p: formats.load(p, compact=True) for p in FILES}
    read = {p: load_for_evaluation(p) for p in FILES}
    for gt, pred in itertools.product(FILES, FILES):
        assert evaluate(read[gt], read[pred]) == evaluate(loaded[gt], loaded[pred]), (gt.name, pred.name)
        assert official_cocoa_evaluate(read[gt], read[pred]) == official_cocoa_evaluate(loaded[gt], loaded[pred])


def test_a_file_given_as_ground_truth_and_predictions_is_read_once(tmp_path, monkeypatch):
    path = DATA / "cocoa_toy.json"
    reads = []
    real = ev.read_json
    monkeypatch.setattr(ev, "read_json", lambda p: reads.append(p) or real(p))
    gt, pred = load_all_for_evaluation(path, str(path))
    assert gt is pred and len(reads) == 1
    assert main(["evaluate", "--gt", str(path), "--pred", str(path), "--json", str(tmp_path / "m.json")]) == 0
    assert len(reads) == 2
    expected = evaluate(formats.load(path), formats.load(path))
    assert json.loads((tmp_path / "m.json").read_text()) == expected


def test_the_matching_gives_pycocotools_per_image_results(monkeypatch):
    """Every per-image result the evaluator computes itself equals `COCOeval.evaluateImg`'s: arrays of the same
    dtype, shape and values (partial overlaps, score ties, ignored ground truth, more detections than
    ground truth)."""
    calls = []
    own = ev._SharedIoUEval._match

    def checked(self, img_id, cat_id, area_range, max_det, gt, dt):
        mine = own(self, img_id, cat_id, area_range, max_det, gt, dt)
        theirs = COCOeval.evaluateImg(self, img_id, cat_id, area_range, max_det)
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            if isinstance(value, np.ndarray):
                assert value.dtype == theirs[key].dtype and np.array_equal(value, theirs[key]), key
            else:
                assert value == theirs[key], key
        calls.append(mine)
        return mine

    monkeypatch.setattr(ev._SharedIoUEval, "_match", checked)
    gt = AnnotationSet([gt_scene(), scene(2, [(A, 2, {}), (B, 1, {})])])
    pred = AnnotationSet(
        [
            scene(
                1,
                [
                    ((0, 0, 9, 10), 1, {"score": 0.9}),
                    ((8, 0, 24, 10), 3, {"score": 0.8}),
                    (C, 2, {"score": 0.8}),
                    (SPOT, 4, {"score": 0.3}),
                    ((0, 20, 12, 40), 5, {"score": 0.3}),
                ],
            ),
            scene(2, [(A, 1, {"score": 0.6}), ((10, 0, 28, 10), 2, {"score": 0.6})]),
        ]
    )
    evaluate(gt, pred)
    official_cocoa_evaluate(gt, pred)
    assert any(c["dtMatches"].any() and not c["dtMatches"].all() for c in calls)
    assert any(c["gtIgnore"].any() and not c["gtIgnore"].all() for c in calls)
