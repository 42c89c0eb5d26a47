"""COCOA's official amodal protocol: the numbers of Zhu et al.'s amodalAPI (``pycocotools/amodaleval.py``,
run twelve times by ``batchEval.py``), reimplemented on pycocotools' ``COCOeval``.

What makes it differ from semlayer's default protocol (`semlayer.evaluate`), rule by rule:

* class-agnostic (every ground truth and detection is category 1);
* only the first annotation record of an image is ground truth (BSDS has one record per annotator);
* a ground truth's occlusion is its ``occlude_rate`` as the file states it (the painter's rule only where a
  file states none); a detection's occlusion is never read;
* a bucket (occlusion none [0, 1e-5], partial [1e-5, 0.25], heavy [0.25, 1], all closed; things; stuff) only
  marks the ground truth outside it as ignored: a detection matched to such a ground truth is ignored, and
  an unmatched detection is a false positive in every bucket;
* AP with up to ``max_dets`` (1000) detections per image; AR at 1, 10, 100 (and 1000) detections.

Each of the twelve runs (both / things / stuff, times all / none / partial / heavy) is one ``COCOeval`` whose
ground-truth ignore flags are the bucket's filter; the IoUs are computed once and shared.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from .errors import ConfigError
from .evaluate import (
    NO_DATA,
    _area,
    _assign_predictions,
    _check_shape,
    _coco,
    _EvalCache,
    _image_id,
    _rles_at,
    _SceneRles,
    _shape,
    _SharedIoUEval,
    _summary,
    warn_if_thresholded,
)
from .scene import AnnotationSet

log = logging.getLogger(__name__)

# amodalAPI's occRng per bucket, both ends included.
OCCLUSION_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1.0),
    "none": (0.0, 0.00001),
    "partial": (0.00001, 0.25),
    "heavy": (0.25, 1.0),
}
# amodalAPI's onlyThings: 0 both, 1 things only (stuff ignored), 2 stuff only (things ignored).
SUBSETS: dict[str, bool | None] = {"both": None, "things": False, "stuff": True}
MAX_DETS = (100, 1000)
_CATEGORY = 1


@dataclass
class _Gt:
    rle: dict[str, Any]
    occlude_rate: float
    is_stuff: bool


@dataclass
class _Image:
    eval_id: int
    shape: tuple[int, int]
    gts: list[_Gt]
    dets: list[tuple[dict[str, Any], float]]  # (amodal RLE, score), file order


class _BucketEval(_SharedIoUEval):
    """``COCOeval`` whose ground-truth ignore flag is a bucket's filter (amodalAPI's ``_ignore``), with the
    IoU matrices shared between the buckets' runs."""

    def __init__(self, coco_gt: COCO, coco_dt: COCO, keep: Callable[[dict[str, Any]], bool], cache: _EvalCache):
        super().__init__(coco_gt, coco_dt, cache)
        self._keep = keep

    def _prepare(self) -> None:
        super()._prepare()
        for gts in self._gts.values():
            for g in gts:
                g["ignore"] = int(not self._keep(g))


def _gts(scene: _SceneRles) -> list[_Gt]:
    """Ground truth as amodalAPI reads it: the amodal mask, the stated occlude rate (else the painter's
    rule's, as `AmodalScene.occlude_rates` counts it), ``isStuff``."""
    out: list[_Gt] = []
    for inst in scene.instances:
        rate = inst.stated_occlude_rate
        if rate is None:
            area = _area(inst.amodal)
            rate = (area - _area(inst.visible)) / area if area else 0.0
        out.append(_Gt(inst.amodal, float(rate), bool(inst.is_stuff)))
    return out


def _images(
    gt: AnnotationSet, pred: AnnotationSet, gt_file: str, pred_file: str, progress: bool
) -> tuple[list[_Image], list[float]]:
    # By image id, as amodalAPI's image list is sorted: its accumulation breaks score ties between images in
    # that order.
    records = sorted(gt.image_records(), key=lambda r: _image_id(r, gt_file))
    first: dict[int, int] = {}
    for k, image in enumerate(gt.scene_images()):
        first.setdefault(int(image["id"]), k)
    pred_scenes, unmatched = _assign_predictions(records, pred, gt_file)
    if unmatched:
        log.warning("%s: ignored predictions for %d images that are not in the ground truth", pred_file, unmatched)
    images: list[_Image] = []
    scores: list[float] = []
    for record in tqdm(records, desc="evaluate: preparing", unit="image", disable=not progress):
        image_id, shape = _image_id(record, gt_file), _shape(record, gt_file)
        gts: list[_Gt] = []
        if image_id in first:
            scene = _rles_at(gt, first[image_id])
            _check_shape(scene, shape, gt_file)
            gts = _gts(scene)
        dets: list[tuple[dict[str, Any], float]] = []
        for k in pred_scenes.get(image_id, []):
            scene = _rles_at(pred, k)
            _check_shape(scene, shape, pred_file)
            for inst in scene.instances:
                score = 1.0 if inst.score is None else float(inst.score)
                dets.append((inst.amodal, score))
                scores.append(score)
        images.append(_Image(len(images) + 1, shape, gts, dets))
    return images, scores


def _cocos(images: list[_Image]) -> tuple[COCO, COCO]:
    gts: list[dict[str, Any]] = []
    dts: list[dict[str, Any]] = []
    for im in images:
        for g in im.gts:
            # Ids start at 1: pycocotools' match tables use 0 for "unmatched".
            gts.append(
                {
                    "id": len(gts) + 1,
                    "image_id": im.eval_id,
                    "category_id": _CATEGORY,
                    "segmentation": g.rle,
                    "area": float(mask_utils.area(g.rle)),
                    "iscrowd": 0,
                    "occlude_rate": g.occlude_rate,
                    "is_stuff": g.is_stuff,
                }
            )
        for rle, score in im.dets:
            dts.append(
                {
                    "id": len(dts) + 1,
                    "image_id": im.eval_id,
                    "category_id": _CATEGORY,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": 0,
                    "score": score,
                }
            )
    return _coco(images, [_CATEGORY], gts), _coco(images, [_CATEGORY], dts)


def _keep(subset: str, bucket: str) -> Callable[[dict[str, Any]], bool]:
    low, high = OCCLUSION_RANGES[bucket]
    stuff = SUBSETS[subset]

    def keep(g: dict[str, Any]) -> bool:
        return (stuff is None or g["is_stuff"] == stuff) and low <= g["occlude_rate"] <= high

    return keep


def _run(coco_gt: COCO, coco_dt: COCO, subset: str, bucket: str, max_dets: int, cache: _EvalCache) -> COCOeval:
    """One of amodalAPI's runs: one area range (all), one category, the bucket's ignore filter."""
    ev = _BucketEval(coco_gt, coco_dt, _keep(subset, bucket), cache)
    ev.params.catIds = [_CATEGORY]
    ev.params.maxDets = [1, 10, 100] + ([1000] if max_dets == 1000 else [])
    ev.params.areaRng = [[0.0, 1e5**2]]
    ev.params.areaRngLbl = ["all"]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def _key(stem: str, subset: str, bucket: str) -> str:
    """``AP`` / ``AP_none`` / ``AP_things`` / ``AP_things_none``: the subset and bucket a number is over."""
    parts = [stem] + ([subset] if subset != "both" else []) + ([bucket] if bucket != "all" else [])
    return "_".join(parts)


def official_cocoa_evaluate(
    gt: AnnotationSet,
    pred: AnnotationSet,
    *,
    max_dets: int = 1000,
    gt_file: str = "ground truth",
    pred_file: str = "predictions",
    progress: bool = False,
) -> dict[str, float | int]:
    """COCOA's official numbers for ``pred`` against ``gt`` (any formats semlayer reads; COCOA and D2SA
    are what the protocol was made for). -1 where a bucket has no ground truth.

    Keys: ``AP AP50 AP75 AR1 AR10 AR100`` (both things and stuff, every occlusion), and for each of the
    twelve runs ``AP_<subset>_<bucket>`` and ``AR100_<subset>_<bucket>`` (subset ``things``/``stuff``, left
    out for both; bucket ``none``/``partial``/``heavy``, left out for all: ``AP_none``, ``AR100_things``,
    ``AP_stuff_heavy``); with ``max_dets`` 1000 also ``AR1000`` and ``AR1000_...``, which is the AR the
    official driver reports per bucket at 1000 proposals. Predictions are matched to images as
    `semlayer.evaluate` matches them; an image with ground truth and no prediction counts as all missed
    (the official code would stop there).
    """
    if max_dets not in MAX_DETS:
        raise ConfigError(f"max_dets must be one of {MAX_DETS} (amodalAPI's maxProp), got {max_dets!r}")
    images, scores = _images(gt, pred, gt_file, pred_file, progress)
    warn_if_thresholded(scores, pred_file)
    coco_gt, coco_dt = _cocos(images)
    cache = _EvalCache()
    out: dict[str, float | int] = {}
    for subset in SUBSETS:
        for bucket in OCCLUSION_RANGES:
            ev = _run(coco_gt, coco_dt, subset, bucket, max_dets, cache)
            # amodalAPI's _summarize: the mean over the cells with ground truth, -1 when none has any.
            out[_key("AP", subset, bucket)] = _summary(ev, "AP", max_dets=max_dets)
            if subset == "both" and bucket == "all":
                out["AP50"] = _summary(ev, "AP", iou=0.5, max_dets=max_dets)
                out["AP75"] = _summary(ev, "AP", iou=0.75, max_dets=max_dets)
                out["AR1"] = _summary(ev, "AR", max_dets=1)
                out["AR10"] = _summary(ev, "AR", max_dets=10)
            out[_key("AR100", subset, bucket)] = _summary(ev, "AR", max_dets=100)
            if max_dets == 1000:
                out[_key("AR1000", subset, bucket)] = _summary(ev, "AR", max_dets=1000)
    out["max_dets"] = max_dets
    out["num_images"] = len(images)
    out["num_gt"] = sum(len(im.gts) for im in images)
    out["num_pred"] = len(scores)
    return out


def format_official_table(metrics: Mapping[str, Any]) -> str:
    """The official driver's twelve runs as a table (subset x occlusion bucket, AP and AR), then the
    overall AP50 / AP75 / AR1 / AR10 / AR100."""
    max_dets = int(metrics.get("max_dets", 100))
    ar = f"AR{max_dets}"

    def cell(value: Any) -> str:
        return "n/a" if value == NO_DATA else f"{value:.3f}"

    head = f"{'COCOA official':<16}" + "".join(f"{b:>16}" for b in OCCLUSION_RANGES)
    lines = [head, f"{'':<16}" + "".join(f"{'AP':>8}{ar:>8}" for _ in OCCLUSION_RANGES), "-" * len(head)]
    for subset in SUBSETS:
        row = "".join(
            f"{cell(metrics[_key('AP', subset, b)]):>8}{cell(metrics[_key(ar, subset, b)]):>8}"
            for b in OCCLUSION_RANGES
        )
        lines.append(f"{subset:<16}{row}")
    lines.append("")
    lines.append("  ".join(f"{k} {cell(metrics[k])}" for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100")))
    lines.append(
        f"images {metrics['num_images']}, GT instances {metrics['num_gt']}, "
        f"predicted instances {metrics['num_pred']}, up to {max_dets} detections per image"
    )
    return "\n".join(lines)


# The object `semlayer evaluate --protocol cocoa-official --json` writes, under "cocoa_official".
JSON_KEY = "cocoa_official"
