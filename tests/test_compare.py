"""The paired bootstrap (`semlayer.evaluate.paired_bootstrap`, `python -m semlayer compare`) on hand-made
scenes: its full-set numbers are `evaluate`'s, a resample scores exactly as the test set it stands for, and
its intervals and shares are what the draws give."""

import copy
import json

import numpy as np
import pytest

from semlayer import evaluate as ev
from semlayer import formats
from semlayer.cli import main
from semlayer.errors import ConfigError
from semlayer.evaluate import (
    BOOTSTRAP_METRICS,
    _prepare_units,
    _ResampledAP,
    _ResampledMatched,
    evaluate,
    paired_bootstrap,
)
from semlayer.scene import AnnotationSet
from test_evaluate import A, B, SPOT, scene

TWO = [(A, 1, {}), (B, 2, {})]


def make_set():
    """Three images of A over B: the predictions find both on image 1, only A on image 2 (plus a false
    positive), and both, in the wrong order, on image 3."""
    gt = AnnotationSet([scene(i, TWO) for i in (1, 2, 3)])
    pred = AnnotationSet(
        [
            scene(1, [(A, 1, {"score": 0.9}), (B, 2, {"score": 0.8})]),
            scene(2, [(A, 1, {"score": 0.7}), (SPOT, 2, {"score": 0.95})]),
            scene(3, [(A, 2, {"score": 0.6}), (B, 1, {"score": 0.5})]),
        ]
    )
    return gt, pred


def duplicated(aset, order):
    """The scenes of ``aset`` in image order ``order`` (positions, repeats allowed) as images 1, 2, ..."""
    out = []
    for new_id, k in enumerate(order, start=1):
        s = copy.deepcopy(aset.scenes_for_image(k + 1)[0]) if aset.scenes_for_image(k + 1) else None
        if s is None:
            continue
        s.image["id"] = new_id
        s.image["file_name"] = f"copy{new_id}.png"
        out.append(s)
    return AnnotationSet(out)


@pytest.mark.parametrize("order", [[0, 0, 0], [1, 1, 2], [2, 0, 1], [0, 2, 2]])
def test_a_resample_scores_exactly_as_the_test_set_it_stands_for(order):
    gt, pred = make_set()
    prep = _prepare_units(gt, pred, "gt", "pred", False, None)
    idx = np.array(order)
    resampled = {
        **_ResampledAP(prep.units, prep.cat_ids, prep.per_category)(idx),
        **_ResampledMatched(prep.units, 0.5, prep.per_category)(idx),
    }
    m = evaluate(duplicated(gt, order), duplicated(pred, order))
    assert {k: resampled[k] for k in BOOTSTRAP_METRICS} == {k: m[k] for k in BOOTSTRAP_METRICS}


def test_full_set_numbers_are_evaluates_and_identical_predictions_differ_by_nothing():
    gt, pred = make_set()
    r = paired_bootstrap(gt, pred, pred, resamples=50)
    m = evaluate(gt, pred)
    assert list(r) == list(BOOTSTRAP_METRICS)
    for key, row in r.items():
        assert row == {"pred": m[key], "baseline": m[key], "diff": 0.0, "low": 0.0, "high": 0.0, "share_ahead": 0.0}


def test_the_ground_truth_is_prepared_once_for_both_sides(monkeypatch):
    calls = []
    real = ev._prepare

    def counting(scene, group, per_category, file, is_pred):
        calls.append(is_pred)
        return real(scene, group, per_category, file, is_pred)

    monkeypatch.setattr(ev, "_prepare", counting)
    gt, pred = make_set()
    worse = copy.deepcopy(pred)
    r = paired_bootstrap(gt, pred, worse, resamples=5)
    assert calls.count(False) == len(gt) == 3 and calls.count(True) == 6
    assert r["amodal_AP"]["pred"] == r["amodal_AP"]["baseline"] == evaluate(gt, pred)["amodal_AP"]


def test_a_better_model_is_ahead_in_exactly_the_draws_that_show_it():
    # The baseline misses image 3 entirely; elsewhere both are the same. A draw of 3 images without image 3
    # (prob. (2/3)^3 = 8/27) cannot tell them apart; every other draw sees the baseline miss two objects.
    gt, pred = make_set()
    baseline = AnnotationSet([s for s in pred.scenes if s.image_id != 3])
    r = paired_bootstrap(gt, pred, baseline, resamples=600, seed=3)
    assert r["amodal_AR100"]["diff"] == pytest.approx(2 / 6)  # 5 of 6 found against 3 of 6
    assert r["amodal_AR100"]["share_ahead"] == pytest.approx(1 - 8 / 27, abs=0.05)  # 2.6 standard errors
    assert r["amodal_AR100"]["low"] == 0.0 and r["amodal_AR100"]["high"] > 0.3
    # Image 3's pair is ordered wrongly by both, so order accuracy never differs.
    assert r["order_acc"]["diff"] == 0.0 and r["order_acc"]["share_ahead"] == 0.0
    # The same seed, the same draws; another seed, others.
    assert paired_bootstrap(gt, pred, baseline, resamples=600, seed=3) == r
    assert (
        paired_bootstrap(gt, pred, baseline, resamples=600, seed=4)["amodal_AR100"]["share_ahead"]
        != r["amodal_AR100"]["share_ahead"]
    )


def test_bad_arguments_are_config_errors():
    gt, pred = make_set()
    with pytest.raises(ConfigError, match="resamples"):
        paired_bootstrap(gt, pred, pred, resamples=0)
    with pytest.raises(ConfigError, match="confidence"):
        paired_bootstrap(gt, pred, pred, confidence=1.0)
    with pytest.raises(ConfigError, match="visible_AP"):
        paired_bootstrap(gt, pred, pred, metrics=("visible_AP",))


def test_compare_from_the_command_line(tmp_path, capsys):
    gt, pred = make_set()
    baseline = AnnotationSet([s for s in pred.scenes if s.image_id != 3])
    paths = {}
    for name, aset in (("gt", gt), ("pred", pred), ("base", baseline)):
        paths[name] = tmp_path / f"{name}.json"
        formats.save(aset, paths[name], "cocoa")
    out = tmp_path / "cmp.json"
    argv = [
        "compare",
        "--gt",
        str(paths["gt"]),
        "--pred",
        str(paths["pred"]),
        "--baseline",
        str(paths["base"]),
        "--resamples",
        "200",
        "--seed",
        "3",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "200 resamples (seed 3)" in text and "amodal_AR100" in text and "95% interval" in text
    saved = json.loads(out.read_text())
    assert saved == paired_bootstrap(
        formats.load(paths["gt"]), formats.load(paths["pred"]), formats.load(paths["base"]), resamples=200, seed=3
    )
    assert main(argv[:-2] + ["--resamples", "0"]) == 2
    assert "resamples must be a positive integer" in capsys.readouterr().err
