"""One evaluator for every amodal protocol: COCO AP/AR on amodal and visible masks, COCOA's occlusion
buckets, amodal completion mIoU, pairwise depth-order accuracy and occlusion classification.

AP/AR come from pycocotools' ``COCOeval`` (iouType ``segm``) on COCO objects built in memory. The other
metrics use one greedy matching per ground-truth scene (descending score, amodal IoU >= ``iou_match``, each
ground-truth instance at most once). A value of -1 means "no data" (pycocotools' convention): the ground
truth holds nothing that metric could measure. See docs/evaluation.md for every definition.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from .errors import ConfigError, FormatError
from .formats._base import Context, Group, Region, Repair, group_ranks, repair_lines, stated_occlusion, stated_repairs
from .formats.api import detect, parse, read_json
from .formats.compact import SceneSequence
from .formats.masks import decode_rle, encode_rle, pycoco_rle, rle_and, rle_input, rle_minus, rle_or
from .order import cluster_pairs, parse_depth_constraint
from .scene import AmodalScene, AnnotationSet, Instance, InstanceFacts

log = logging.getLogger(__name__)

NO_DATA = -1.0
# AP needs the low-score tail: predictions whose lowest score is above this were likely thresholded.
THRESHOLDED_SCORE = 0.2
# COCOA's occlusion buckets over the ground-truth occlude rate: none [0, 1e-5], partial (1e-5, 0.25],
# heavy (0.25, 1]. pycocotools' area ranges are closed, so the open ends start at the next float.
OCCLUSION_BUCKETS: dict[str, tuple[float, float]] = {
    "none": (0.0, 1e-5),
    "partial": (math.nextafter(1e-5, math.inf), 0.25),
    "heavy": (math.nextafter(0.25, math.inf), 1.0),
    # KINS / D2SA "occluded AP": objects with at least 15 % occlusion.
    "occluded": (0.15, 1.0),
}
STUFF_BUCKETS: dict[str, tuple[float, float]] = {"things": (0.0, 0.0), "stuff": (1.0, 1.0)}
COCO_AREAS: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e10),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e10),
}
ALL_AREAS: dict[str, tuple[float, float]] = {"all": COCO_AREAS["all"]}
# Class-agnostic evaluation still needs one category id on every record for pycocotools' indexes.
AGNOSTIC_CATEGORY = 1


@dataclass
class _Obj:
    """One ground-truth or predicted instance, prepared once for every metric. Masks are kept as RLE only:
    a whole real test set (and its predictions) as full-frame masks would not fit in memory."""

    amodal_rle: dict[str, Any]
    visible_rle: dict[str, Any]
    occlude_rate: float
    rank: int
    category: int
    is_stuff: bool
    score: float
    group: int  # index of the source scene: ranks are only comparable inside one scene


@dataclass
class _Unit:
    """One ground-truth scene (or a ground-truth image without any) against its image's predictions."""

    eval_id: int
    image_id: int
    shape: tuple[int, int]
    gts: list[_Obj]
    preds: list[_Obj]
    order_pairs: list[tuple[int, int]] = field(default_factory=list)


# ----- scenes as RLE ------------------------------------------------------------------------------
@dataclass
class _InstanceRles:
    """What the metrics read of one instance, masks as pycocotools RLE (bytes counts): the amodal mask,
    the visible mask by the painter's rule (external occlusion included) and the visible mask its file
    states where the painter's rule hides some of it (`Instance.stated_visible`)."""

    id: int
    rank: int
    category: int | None
    name: str
    is_stuff: bool
    score: float | None
    cluster: tuple[int, int] | None
    amodal: dict[str, Any]
    visible: dict[str, Any]
    stated_visible: dict[str, Any] | None
    stated_occlude_rate: float | None


@dataclass
class _SceneRles:
    """A scene as the metrics read it: its image and annotation records and its instances as RLE."""

    image: dict[str, Any]
    annotation: dict[str, Any]
    instances: list[_InstanceRles]

    @property
    def image_id(self) -> int:
        return int(self.image["id"])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.image["height"]), int(self.image["width"])


def _scene_rles(scene: AmodalScene) -> _SceneRles:
    """An in-memory scene as the metrics read it (its masks encoded)."""
    amodal, visible = _rles([inst.amodal for inst in scene.instances]), _rles(scene.visible_masks())
    instances = [
        _InstanceRles(
            inst.id,
            inst.rank,
            inst.category,
            inst.name,
            bool(inst.is_stuff),
            inst.score,
            inst.cluster,
            amodal[k],
            visible[k],
            None if inst.stated_visible is None else pycoco_rle(inst.stated_visible),
            inst.stated_occlude_rate,
        )
        for k, inst in enumerate(scene.instances)
    ]
    return _SceneRles(scene.image, scene.annotation, instances)


def _group_rles(group: Group, repairs: list[Repair]) -> _SceneRles:
    """A file's scene as the metrics read it, from the RLEs its reader keeps: the scene `formats.load`
    builds (ranks, the painter's rule, the stated visible masks it keeps), without decoding a frame where
    the ranks are stated."""
    regions, ranks = group.regions, group_ranks(group)
    counts = stated_occlusion(regions, ranks)
    visible: list[dict[str, Any]] = [{}] * len(regions)
    front: dict[str, Any] | None = None  # union of the amodal masks in front
    for i in sorted(range(len(regions)), key=ranks.__getitem__):
        visible[i] = _painted(regions[i], front, *counts[i])
        amodal = regions[i].amodal_mask.rle
        front = amodal if front is None else rle_or(front, amodal)
    instances = []
    for r, rank, (under, _), vis in zip(regions, ranks, counts, visible):
        stated = r.visible_mask is not None or r.invisible_mask is not None
        if stated:
            repairs += stated_repairs(r, under)
        amodal = r.amodal_mask.rle
        instances.append(
            _InstanceRles(
                r.id,
                rank,
                r.category,
                r.name,
                r.is_stuff,
                r.score,
                r.cluster,
                amodal,
                vis,
                rle_and(_stated_shown(r), amodal) if stated and under else None,
                None if r.occlude_rate is None else float(r.occlude_rate),
            )
        )
    return _SceneRles(group.image, group.annotation, instances)


def _painted(region: Region, front: dict[str, Any] | None, under: int, hidden: int) -> dict[str, Any]:
    """A region's visible mask by the painter's rule, as `formats.load`'s scene holds it: its amodal mask
    less ``front`` (the amodal masks in front) and, where its file hides more (``hidden``, `stated_occlusion`),
    less what the stated visible mask hides."""
    amodal = region.amodal_mask.rle
    if region.visible_mask is not None and not under:
        # No stated visible pixel lies in front, and every amodal pixel in front is hidden: the stated
        # visible pixels are exactly the painted ones.
        return rle_and(amodal, region.visible_mask.rle)
    if region.visible_mask is None and region.invisible_mask is None and not under:
        return amodal  # nothing stated, and nothing in front overlaps it
    shown = amodal if front is None else rle_minus(amodal, front)
    return rle_and(shown, _stated_shown(region)) if hidden else shown


def _stated_shown(region: Region) -> dict[str, Any]:
    """A region's visible mask as its file states it (`Region.visible_or_amodal`), as RLE."""
    if region.visible_mask is not None:
        return region.visible_mask.rle
    if region.invisible_mask is not None:
        return rle_minus(region.amodal_mask.rle, region.invisible_mask.rle)
    return region.amodal_mask.rle


class RleScenes(SceneSequence):
    """A file's scenes as the evaluator reads them, masks as the RLEs the file states (`load_for_evaluation`).

    Indexing builds a scene (masks, ranks and occlusion as `formats.load` gives them; no polygons or unknown
    fields): the evaluator itself reads the RLEs and never builds one."""

    def __init__(self, scenes: list[_SceneRles]):
        self.rles = scenes
        self.images = [s.image for s in scenes]
        self.annotations = [s.annotation for s in scenes]
        self.instance_facts = [tuple(InstanceFacts(i.id, i.category, i.name) for i in s.instances) for s in scenes]

    def __len__(self) -> int:
        return len(self.rles)

    def _scene_at(self, index: int) -> AmodalScene:
        rles = self.rles[index]
        instances = [
            Instance(
                id=i.id,
                amodal=decode_rle(i.amodal),
                rank=i.rank,
                name=i.name,
                category=i.category,
                is_stuff=i.is_stuff,
                score=i.score,
                cluster=i.cluster,
            )
            for i in rles.instances
        ]
        scene = AmodalScene(rles.image, instances, rles.annotation)
        scene.set_visible([decode_rle(i.visible) for i in rles.instances])
        for inst, i in zip(scene.instances, rles.instances):
            inst.stated_occlude_rate = i.stated_occlude_rate
            inst.stated_visible = None if i.stated_visible is None else encode_rle(decode_rle(i.stated_visible))
        return scene


def load_for_evaluation(path: str | os.PathLike, progress: bool = False) -> AnnotationSet:
    """Read an annotation or results file for `evaluate` / `official_cocoa_evaluate`: every record checked
    as `formats.load` checks it, the scenes kept as the RLEs the file states (`RleScenes`), so that scoring
    gives `formats.load`'s numbers without decoding a frame (where the file states the depth order)."""
    source = str(path)
    obj = read_json(path)
    fmt = detect(obj, source)
    ctx = Context(source)
    parsed = parse(ctx, obj, fmt)
    groups = tqdm(parsed.groups, desc=f"reading {os.path.basename(source)}", unit="scene", disable=not progress)
    scenes = RleScenes([_group_rles(group, ctx.repairs) for group in groups])
    for line in repair_lines(ctx.repairs):
        log.warning("%s: %s", source, line)
    annset = AnnotationSet(scenes, parsed.categories, fmt, parsed.extra, parsed.unannotated)
    log.info("read %s: %s, %d scenes, %d instances", path, annset.format, len(annset), annset.num_instances())
    return annset


def load_all_for_evaluation(*paths: str | os.PathLike) -> list[AnnotationSet]:
    """`load_for_evaluation` of each path, a file named twice (ground truth scored against itself) read once
    and shared: the evaluator only reads its sets."""
    read: dict[Path, AnnotationSet] = {}
    out = []
    for path in paths:
        key = Path(path).resolve()
        if key not in read:
            read[key] = load_for_evaluation(path)
        out.append(read[key])
    return out


def _rles_at(annset: AnnotationSet, index: int) -> _SceneRles:
    """Scene ``index`` of a set as the metrics read it: kept as read (`RleScenes`), else encoded."""
    if isinstance(annset.scenes, RleScenes):
        return annset.scenes.rles[index]
    return _scene_rles(annset.scenes[index])


def _order_pairs(scene: _SceneRles) -> list[tuple[int, int]]:
    """The ground-truth pairs whose depth order is scored (docs/formats.md, "Evaluation protocols in use"), as ``(front, back)``
    indices: inside KINS 2020's annotated clusters when the scene has them; else the pairs that the scene's
    COCOA ``depth_constraint`` names, when it has one that names only its own orders; else every pair of
    overlapping amodal masks."""
    clusters = [inst.cluster for inst in scene.instances]
    if any(c is not None for c in clusters):
        return cluster_pairs(clusters)
    ranks = [inst.rank for inst in scene.instances]
    stated = _stated_pairs(scene.annotation.get("depth_constraint"), ranks)
    if stated is not None:
        return stated
    return _overlapping_pairs([inst.amodal for inst in scene.instances], ranks)


def _overlapping_pairs(rles: list[dict[str, Any]], ranks: list[int]) -> list[tuple[int, int]]:
    """`order.overlapping_pairs` on RLE: every pair of masks that share a pixel (a positive IoU) as
    ``(front_index, back_index)``, sorted by the front's then the back's rank."""
    n = len(rles)
    if n < 2:
        return []
    ious = np.asarray(mask_utils.iou(rles, rles, [0] * n)).reshape(n, n)
    pairs = [(i, j) if ranks[i] < ranks[j] else (j, i) for i in range(n) for j in range(i + 1, n) if ious[i, j] > 0]
    pairs.sort(key=lambda p: (ranks[p[0]], ranks[p[1]]))
    return pairs


def _stated_pairs(text: Any, ranks: list[int]) -> list[tuple[int, int]] | None:
    """COCOA's ``depth_constraint`` ("front-back" by region order, which a COCOA scene's ranks are) as the
    set of pairs it names, each oriented by the scene's current ranks (an edit after reading may have
    reordered it), in ``overlapping_pairs``' order; None when there is none or it names an order the
    scene does not have (then the masks say which pairs overlap)."""
    if not isinstance(text, str):
        return None
    try:
        stated = parse_depth_constraint(text)
    except ValueError:
        return None
    index = {rank: i for i, rank in enumerate(ranks)}
    if any(a not in index or b not in index or a == b for a, b in stated):
        return None
    pairs = {tuple(sorted((index[a], index[b]), key=lambda i: ranks[i])) for a, b in stated}
    return sorted(pairs, key=lambda p: (ranks[p[0]], ranks[p[1]]))


@dataclass
class _EvalCache:
    """What `COCOeval` runs over the same segmentations, ids and scores share: the IoU matrix per (image,
    category), the matching per (image, category, ground-truth ignore flags) and the results built on it."""

    ious: dict[tuple[int, int], Any] = field(default_factory=dict)
    matches: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    # by the matching's key and which detections the area range leaves outside
    results: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    # per mask kind: the ground truth and the detections as COCO objects (`_cocos`)
    cocos: dict[str, tuple[COCO, COCO]] = field(default_factory=dict)


class _SharedIoUEval(COCOeval):
    """``COCOeval`` that reuses IoU matrices and matchings across runs over the same segmentations.

    The amodal runs (COCO areas, occlusion buckets, things/stuff) differ only in the ``area`` field that
    pycocotools' area ranges read, so the IoUs, the expensive part, are computed once; and a matching
    depends on an area range only through the ground truth it ignores, so an (image, category) is matched
    once per set of ignored ground truth, whatever the range or the run.
    """

    def __init__(self, coco_gt: COCO, coco_dt: COCO, cache: _EvalCache):
        super().__init__(coco_gt, coco_dt, iouType="segm")
        self._cache = cache
        self._pairs: dict[tuple[int, int], tuple[list[dict], list[dict], tuple[Any, ...]]] = {}
        self._plain = False  # set by `_prepare`

    def _prepare(self) -> None:
        super()._prepare()
        self._pairs = {}
        # `_match` covers what the records made here hold: no crowd regions, finite scores.
        self._plain = not any(g["iscrowd"] for gts in self._gts.values() for g in gts) and all(
            math.isfinite(d["score"]) for dts in self._dts.values() for d in dts
        )

    def computeIoU(self, imgId: int, catId: int):  # noqa: N802, N803 (pycocotools' names)
        key = (imgId, catId)
        if key not in self._cache.ious:
            self._cache.ious[key] = super().computeIoU(imgId, catId)
        return self._cache.ious[key]

    def _pair(self, imgId: int, catId: int) -> tuple[list[dict], list[dict], tuple[Any, ...]]:  # noqa: N803
        """The ground truth and detections ``evaluateImg`` reads for an (image, category), listed once for
        all area ranges, and what identifies them."""
        pair = self._pairs.get((imgId, catId))
        if pair is None:
            cat_ids = [catId] if self.params.useCats else self.params.catIds
            gt = [g for c in cat_ids for g in self._gts[imgId, c]]
            dt = [d for c in cat_ids for d in self._dts[imgId, c]]
            ids = (imgId, catId, tuple(g["id"] for g in gt), tuple(d["id"] for d in dt))
            pair = self._pairs[imgId, catId] = (gt, dt, ids)
        return pair

    def evaluateImg(self, imgId: int, catId: int, aRng: list[float], maxDet: int):  # noqa: N802, N803
        """``COCOeval.evaluateImg``'s result, its matching reused where an earlier call ignored the same
        ground truth: only which detections the area range ignores is worked out again. Ignoring all the
        ground truth or none gives one matching (pycocotools' stop at the first ignored one never fires)."""
        gt, dt, ids = self._pair(imgId, catId)
        if not gt and not dt:
            return None
        low, high = aRng
        ignored = tuple(bool(g["ignore"] or g["area"] < low or g["area"] > high) for g in gt)
        uniform = len(set(ignored)) <= 1
        all_ignored = uniform and bool(ignored) and ignored[0]
        key = (*ids, maxDet, None if uniform else ignored)
        outside = tuple(d["area"] < low or d["area"] > high for d in dt)
        done = self._cache.results.get((key, all_ignored, outside))
        if done is not None:
            return {**done, "aRng": aRng}
        found = self._cache.matches.get(key)
        if found is None:
            done = self._cache.matches[key] = self._match(imgId, catId, aRng, maxDet, gt, dt)
        else:
            # As pycocotools sets them: a matched detection is ignored with its ground truth, an unmatched
            # one when its own area is outside the range.
            dtm = found["dtMatches"]
            if uniform:
                matched_ignored = np.logical_and(dtm != 0, all_ignored)
                gt_ignore = np.array([int(all_ignored)] * len(gt))
            else:
                matched_ignored = np.logical_and(found["dtIgnore"], dtm != 0)
                gt_ignore = found["gtIgnore"]
            by_id = dict(zip((d["id"] for d in dt), outside))
            a = np.array([by_id[i] for i in found["dtIds"]]).reshape((1, dtm.shape[1]))
            dt_ignore = np.logical_or(matched_ignored, np.logical_and(dtm == 0, np.repeat(a, dtm.shape[0], 0)))
            done = {**found, "aRng": aRng, "gtIgnore": gt_ignore, "dtIgnore": dt_ignore}
        self._cache.results[key, all_ignored, outside] = done
        return done

    def _match(
        self, imgId: int, catId: int, aRng: list[float], maxDet: int, gt: list[dict], dt: list[dict]
    ) -> dict[str, Any]:  # noqa: N803
        """``COCOeval.evaluateImg`` line for line, on Python lists instead of numpy scalars (its cost is
        per element access): the same comparisons of the same values, the same arrays returned."""
        p = self.params
        if not self._plain:
            return super().evaluateImg(imgId, catId, aRng, maxDet)
        gt_ignore = [int(bool(g["ignore"] or g["area"] < aRng[0] or g["area"] > aRng[1])) for g in gt]
        for g, flag in zip(gt, gt_ignore):
            g["_ignore"] = flag
        # Stable sorts, as pycocotools' mergesort: ground truth ignored last, detections by score.
        gtind = sorted(range(len(gt)), key=gt_ignore.__getitem__)
        gt = [gt[i] for i in gtind]
        negated = [-d["score"] for d in dt]
        dtind = sorted(range(len(dt)), key=negated.__getitem__)
        dt = [dt[i] for i in dtind[0:maxDet]]
        gt_ig = [gt_ignore[i] for i in gtind]
        ious = self.ious[imgId, catId]
        rows = [] if len(ious) == 0 else ious.tolist() if gtind == sorted(gtind) else ious[:, gtind].tolist()
        num_t, num_g, num_d = len(p.iouThrs), len(gt), len(dt)
        gtm = [[0] * num_g for _ in range(num_t)]
        dtm = [[0] * num_d for _ in range(num_t)]
        dt_ig = [[0] * num_d for _ in range(num_t)]
        for tind, t in enumerate(p.iouThrs if rows else []):
            for dind, d in enumerate(dt):
                iou, m, row, matched = min([t, 1 - 1e-10]), -1, rows[dind], gtm[tind]
                for gind in range(num_g):
                    if matched[gind] > 0:  # no crowd here
                        continue
                    if m > -1 and gt_ig[m] == 0 and gt_ig[gind] == 1:
                        break
                    if row[gind] < iou:
                        continue
                    iou, m = row[gind], gind
                if m == -1:
                    continue
                dt_ig[tind][dind] = gt_ig[m]
                dtm[tind][dind] = gt[m]["id"]
                matched[m] = d["id"]
        dtm_a = np.array(dtm, dtype=np.float64).reshape(num_t, num_d)
        a = np.array([d["area"] < aRng[0] or d["area"] > aRng[1] for d in dt]).reshape((1, num_d))
        dt_ig_a = np.array(dt_ig, dtype=np.float64).reshape(num_t, num_d)
        return {
            "image_id": imgId,
            "category_id": catId,
            "aRng": aRng,
            "maxDet": maxDet,
            "dtIds": [d["id"] for d in dt],
            "gtIds": [g["id"] for g in gt],
            "dtMatches": dtm_a,
            "gtMatches": np.array(gtm, dtype=np.float64).reshape(num_t, num_g),
            "dtScores": [d["score"] for d in dt],
            "gtIgnore": np.array(gt_ig),
            "dtIgnore": np.logical_or(dt_ig_a, np.logical_and(dtm_a == 0, np.repeat(a, num_t, 0))),
        }


def evaluate(
    gt: AnnotationSet,
    pred: AnnotationSet,
    iou_match: float = 0.5,
    *,
    gt_file: str = "ground truth",
    pred_file: str = "predictions",
    progress: bool = False,
    class_agnostic: bool | None = None,
) -> dict[str, float | int]:
    """Score predictions against ground truth; returns a flat dict of numbers (-1 = no data).

    ``iou_match`` is the amodal IoU a prediction needs to be matched for mIoU, order and occlusion
    metrics (AP/AR use COCO's thresholds .50:.95). ``gt_file``/``pred_file`` name the inputs in errors.
    Every ground-truth image counts (missing predictions = misses); predictions for other images are
    ignored and counted in ``num_pred_unmatched_images``. Each ground-truth scene of an image (BSDS has
    several annotators per image) is evaluated against all predictions for that image.
    ``class_agnostic`` (default: when the ground truth has no categories, as COCOA, or no prediction has
    one, as from a class-agnostic model) ignores categories in AP and matching.
    """
    _check_iou_match(iou_match)
    prepared = _prepare_units(gt, pred, gt_file, pred_file, progress, class_agnostic)
    units, cat_ids, per_category = prepared.units, prepared.cat_ids, prepared.per_category
    warn_if_thresholded([p.score for u in units for p in u.preds], pred_file)
    metrics: dict[str, float | int] = {}
    metrics.update(_coco_metrics(units, cat_ids, per_category))
    metrics.update(_reduce_matched([_unit_matched(u, float(iou_match), per_category) for u in units]))
    metrics["num_images"] = prepared.num_images
    metrics["num_gt"] = sum(len(u.gts) for u in units)
    metrics["num_pred"] = prepared.num_pred
    metrics["num_pred_unmatched_images"] = prepared.unmatched_images
    return metrics


def warn_if_thresholded(scores: list[float], pred_file: str) -> bool:
    """Log a warning (and return True) when the lowest score is far above 0.05: AP counts the precision at
    every recall, so a set cut at a score threshold loses its tail and scores lower than it should."""
    # All 1.0 is an annotation file used as predictions (no score stated), not a thresholded detector.
    if not scores or not THRESHOLDED_SCORE <= min(scores) < 1.0:
        return False
    log.warning(
        "%s: the lowest score is %.3f: these predictions look thresholded; AP needs the low-score "
        "detections too (semlayer predict --score-thr 0.05)",
        pred_file,
        min(scores),
    )
    return True


def _check_iou_match(iou_match: Any) -> None:
    if isinstance(iou_match, bool) or not isinstance(iou_match, (int, float)) or not 0.0 < iou_match <= 1.0:
        raise ConfigError(f"iou_match must be a number in (0, 1], got {iou_match!r}")


def _default_class_agnostic(gt: AnnotationSet, preds: list[AnnotationSet]) -> bool:
    """Categories are ignored when the ground truth has none (COCOA) or a prediction set has none."""
    return not gt.categories or any(not p.has_instance_categories() for p in preds)


@dataclass
class _Prepared:
    units: list[_Unit]
    cat_ids: list[int]
    per_category: bool
    num_images: int
    num_pred: int
    unmatched_images: int


def _prepare_units(
    gt: AnnotationSet,
    pred: AnnotationSet,
    gt_file: str,
    pred_file: str,
    progress: bool,
    class_agnostic: bool | None,
    gt_cache: dict[int, tuple[list[_Obj], list[tuple[int, int]]]] | None = None,
) -> _Prepared:
    """Every ground-truth scene as a `_Unit` against its image's predictions, masks as RLE. ``gt_cache``
    (ground-truth scene index -> its prepared objects and order pairs, read-only once made) lets several
    prediction sets against one ground truth (`paired_bootstrap`) encode the ground truth once; share it only
    between calls with the same ``class_agnostic`` (the objects' categories depend on it)."""
    if gt_cache is None:
        gt_cache = {}
    if class_agnostic is None:
        class_agnostic = _default_class_agnostic(gt, [pred])
    per_category = not class_agnostic
    records = gt.image_records()
    # Scene indices per image, not scenes: a compactly loaded set (load(compact=True)) decodes a scene each
    # time it is indexed, and only one image's scenes are decoded at a time.
    gt_scenes: dict[int, list[int]] = {}
    for k, image in enumerate(gt.scene_images()):
        gt_scenes.setdefault(int(image["id"]), []).append(k)
    pred_scenes, unmatched_images = _assign_predictions(records, pred, gt_file)

    if unmatched_images:
        log.warning(
            "%s: ignored predictions for %d images that are not in the ground truth", pred_file, unmatched_images
        )

    units: list[_Unit] = []
    num_pred = 0
    for record in tqdm(records, desc="evaluate: preparing", unit="image", disable=not progress):
        image_id = _image_id(record, gt_file)
        shape = _shape(record, gt_file)
        preds: list[_Obj] = []
        for group, k in enumerate(pred_scenes.get(image_id, [])):
            scene = _rles_at(pred, k)
            _check_shape(scene, shape, pred_file)
            preds += _prepare(scene, group, per_category, pred_file, is_pred=True)
        num_pred += len(preds)
        for k in gt_scenes.get(image_id) or [None]:
            unit = _Unit(len(units) + 1, image_id, shape, [], preds)
            if k is not None:
                if k not in gt_cache:
                    scene = _rles_at(gt, k)
                    _check_shape(scene, shape, gt_file)
                    gt_cache[k] = (_prepare(scene, 0, per_category, gt_file, is_pred=False), _order_pairs(scene))
                unit.gts, unit.order_pairs = gt_cache[k]
            units.append(unit)

    if per_category:
        cat_ids = sorted({int(c["id"]) for c in gt.categories} | {g.category for u in units for g in u.gts})
    else:
        cat_ids = [AGNOSTIC_CATEGORY]
    return _Prepared(units, cat_ids, per_category, len(records), num_pred, unmatched_images)


# ----- inputs ------------------------------------------------------------------------------------
def _image_id(record: dict[str, Any], file: str) -> int:
    try:
        return int(record["id"])
    except (KeyError, TypeError, ValueError):
        raise FormatError(file, f"images[file_name={record.get('file_name')!r}].id", "an integer image id") from None


def _shape(record: dict[str, Any], file: str) -> tuple[int, int]:
    try:
        return int(record["height"]), int(record["width"])
    except (KeyError, TypeError, ValueError):
        raise FormatError(file, f"images[id={record.get('id')}]", "integer 'height' and 'width'") from None


def _check_shape(scene: _SceneRles, shape: tuple[int, int], file: str) -> None:
    if scene.shape != shape:
        raise FormatError(
            file,
            f"images[id={scene.image_id}]",
            f"height {shape[0]} and width {shape[1]} as the ground-truth image, got {scene.shape[0]}x{scene.shape[1]}",
        )


def _assign_predictions(
    records: list[dict[str, Any]], pred: AnnotationSet, gt_file: str
) -> tuple[dict[int, list[int]], int]:
    """Indices of the prediction scenes per ground-truth image id, and how many predicted images match none.

    A prediction names its image by file name when that base name belongs to exactly one ground-truth
    image (``semlayer predict`` on a folder numbers images itself), else by image id.
    """
    names: dict[str, list[int]] = {}
    by_id: set[int] = set()
    for r in records:
        image_id = _image_id(r, gt_file)
        by_id.add(image_id)
        base = os.path.basename(str(r.get("file_name") or ""))
        if base:
            names.setdefault(base, []).append(image_id)
    assigned: dict[int, list[int]] = {}
    unmatched: set[tuple[int, str]] = set()
    for k, image in enumerate(pred.scene_images()):
        image_id, file_name = int(image["id"]), str(image.get("file_name", ""))
        ids = names.get(os.path.basename(file_name), []) if file_name else []
        if len(ids) == 1:
            assigned.setdefault(ids[0], []).append(k)
        elif image_id in by_id:
            assigned.setdefault(image_id, []).append(k)
        else:
            unmatched.add((image_id, file_name))
    return assigned, len(unmatched)


def _prepare(scene: _SceneRles, group: int, per_category: bool, file: str, is_pred: bool) -> list[_Obj]:
    out = []
    for inst in scene.instances:
        if per_category and inst.category is None:
            raise FormatError(
                file,
                f"annotations[image_id={scene.image_id}, id={inst.id}].category_id",
                "a category id: the ground truth has categories, so every instance needs one",
            )
        category = int(inst.category) if per_category else AGNOSTIC_CATEGORY
        # A prediction without a score (an annotation file used as predictions) ranks as certain.
        score = 1.0 if not is_pred or inst.score is None else float(inst.score)
        # A prediction's occlusion as its file states it, where it does (detections need not agree with any
        # one depth order); else as `AmodalScene.occlude_rates` computes it, from the RLEs' areas.
        visible = inst.stated_visible if is_pred and inst.stated_visible is not None else inst.visible
        area, visible_area = _area(inst.amodal), _area(visible)
        rate = (area - visible_area) / area if area else 0.0
        if is_pred and inst.stated_occlude_rate is not None:
            rate = inst.stated_occlude_rate
        out.append(_Obj(inst.amodal, visible, float(rate), int(inst.rank), category, bool(inst.is_stuff), score, group))
    return out


def _rles(masks: list[np.ndarray]) -> list[dict[str, Any]]:
    return [mask_utils.encode(rle_input(m)) for m in masks]


# ----- AP / AR (pycocotools) ---------------------------------------------------------------------
class _Frame(Protocol):
    """What `_coco` reads of an evaluated image (an `_Unit`, or cocoa_eval's image)."""

    eval_id: int
    shape: tuple[int, int]


def _coco(units: Sequence[_Frame], cat_ids: list[int], anns: list[dict[str, Any]]) -> COCO:
    coco = COCO()
    coco.dataset = {
        "images": [{"id": u.eval_id, "height": u.shape[0], "width": u.shape[1]} for u in units],
        "categories": [{"id": c} for c in cat_ids],
        "annotations": anns,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _records(units: list[_Unit], side: str, mask: str, area: str) -> list[dict[str, Any]]:
    """COCO annotation (``side='gts'``) or detection records; ``area`` picks what pycocotools' area ranges
    see (`_area_value`)."""
    anns = []
    for u in units:
        for o in getattr(u, side):
            rle = o.amodal_rle if mask == "amodal" else o.visible_rle
            # pycocotools uses 0 in its match tables for "unmatched", so ids start at 1.
            ann = {
                "id": len(anns) + 1,
                "image_id": u.eval_id,
                "category_id": o.category,
                "segmentation": rle,
                "area": _area_value(o, rle, area),
                "iscrowd": 0,
            }
            if side == "preds":
                ann["score"] = o.score
            anns.append(ann)
    return anns


def _area_value(o: _Obj, rle: dict[str, Any], area: str) -> float:
    """What pycocotools' area ranges see of an instance: ``pixels`` (its mask's area), ``occlusion`` (its
    occlude rate) or ``stuff`` (0 thing, 1 stuff)."""
    if area == "pixels":
        return float(mask_utils.area(rle))
    return o.occlude_rate if area == "occlusion" else float(o.is_stuff)


def _cocos(units: list[_Unit], cat_ids: list[int], mask: str, area: str, cache: _EvalCache) -> tuple[COCO, COCO]:
    """The ground truth and detections as COCO objects: made once per mask kind and cache, and given the
    ``area`` values of this run in place (runs over one cache run one after another)."""
    if mask not in cache.cocos:
        cache.cocos[mask] = (
            _coco(units, cat_ids, _records(units, "gts", mask, area)),
            _coco(units, cat_ids, _records(units, "preds", mask, area)),
        )
        return cache.cocos[mask]
    for coco, side in zip(cache.cocos[mask], ("gts", "preds")):
        objs = (o for u in units for o in getattr(u, side))
        for ann, o in zip(coco.dataset["annotations"], objs):
            ann["area"] = _area_value(o, ann["segmentation"], area)
    return cache.cocos[mask]


def _run(
    units: list[_Unit],
    cat_ids: list[int],
    per_category: bool,
    mask: str,
    area: str,
    ranges: Mapping[str, tuple[float, float]],
    cache: _EvalCache,
    max_dets: Sequence[int] = (1, 10, 100),
) -> COCOeval:
    """One pycocotools evaluation; ``max_dets``: the detection limits accumulated (each on its own, so a
    run read only at 100 needs no other)."""
    coco_gt, coco_dt = _cocos(units, cat_ids, mask, area, cache)
    ev = _SharedIoUEval(coco_gt, coco_dt, cache)
    ev.params.useCats = int(per_category)
    ev.params.maxDets = list(max_dets)
    ev.params.areaRng = [list(r) for r in ranges.values()]
    ev.params.areaRngLbl = list(ranges)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def _summary(ev: COCOeval, kind: str, area: str = "all", iou: float | None = None, max_dets: int = 100) -> float:
    """One number from ``ev.eval`` the way ``COCOeval.summarize`` computes it (mean over valid cells)."""
    p = ev.params
    a = p.areaRngLbl.index(area)
    m = p.maxDets.index(max_dets)
    if kind == "AP":
        s = ev.eval["precision"]  # [T, R, K, A, M]
        if iou is not None:
            s = s[np.isclose(p.iouThrs, iou)]
        s = s[:, :, :, a, m]
    else:
        s = ev.eval["recall"][:, :, a, m]  # [T, K, A, M]
    valid = s[s > -1]
    return float(valid.mean()) if valid.size else NO_DATA


def _coco_metrics(units: list[_Unit], cat_ids: list[int], per_category: bool) -> dict[str, float]:
    amodal_cache = _EvalCache()
    ev = _run(units, cat_ids, per_category, "amodal", "pixels", COCO_AREAS, amodal_cache)
    out = {
        "amodal_AP": _summary(ev, "AP"),
        "amodal_AP50": _summary(ev, "AP", iou=0.5),
        "amodal_AP75": _summary(ev, "AP", iou=0.75),
        "amodal_APs": _summary(ev, "AP", "small"),
        "amodal_APm": _summary(ev, "AP", "medium"),
        "amodal_APl": _summary(ev, "AP", "large"),
        "amodal_AR1": _summary(ev, "AR", max_dets=1),
        "amodal_AR10": _summary(ev, "AR", max_dets=10),
        "amodal_AR100": _summary(ev, "AR"),
    }
    ev = _run(units, cat_ids, per_category, "visible", "pixels", ALL_AREAS, _EvalCache(), [100])
    out.update(
        visible_AP=_summary(ev, "AP"),
        visible_AP50=_summary(ev, "AP", iou=0.5),
        visible_AP75=_summary(ev, "AP", iou=0.75),
    )
    # Buckets: GT 'area' := its occlude rate (or stuff flag) and a detection's 'area' := its predicted one, so
    # an unmatched detection is a false positive only in the bucket it claims to belong to.
    ev = _run(units, cat_ids, per_category, "amodal", "occlusion", OCCLUSION_BUCKETS, amodal_cache, [100])
    out.update({f"AP_{name}": _summary(ev, "AP", name) for name in OCCLUSION_BUCKETS})
    ev = _run(units, cat_ids, per_category, "amodal", "stuff", STUFF_BUCKETS, amodal_cache, [100])
    out.update({f"AP_{name}": _summary(ev, "AP", name) for name in STUFF_BUCKETS})
    return out


# ----- matched-pair metrics ----------------------------------------------------------------------
def _greedy_match(unit: _Unit, iou_match: float, per_category: bool) -> dict[int, tuple[int, float]]:
    """GT index -> (prediction index, amodal IoU): predictions by descending score (stable), each takes
    the unmatched GT (same category when per category) with the highest IoU >= ``iou_match``."""
    if not unit.gts or not unit.preds:
        return {}
    ious = np.asarray(
        mask_utils.iou([p.amodal_rle for p in unit.preds], [g.amodal_rle for g in unit.gts], [0] * len(unit.gts))
    ).reshape(len(unit.preds), len(unit.gts))
    gt_cats = np.array([g.category for g in unit.gts])
    taken = np.zeros(len(unit.gts), dtype=bool)
    matches: dict[int, tuple[int, float]] = {}
    for d in sorted(range(len(unit.preds)), key=lambda i: -unit.preds[i].score):
        cand = np.where(taken, -1.0, ious[d])
        if per_category:
            cand[gt_cats != unit.preds[d].category] = -1.0
        g = int(np.argmax(cand))
        if cand[g] >= iou_match:
            taken[g] = True
            matches[g] = (d, float(cand[g]))
    return matches


def _area(a: dict[str, Any], b: dict[str, Any] | None = None) -> int:
    """Pixels of RLE ``a`` (and of ``b``: of their intersection)."""
    return int(mask_utils.area(a if b is None else mask_utils.merge([a, b], intersect=True)))


def _occluded_iou(g: _Obj, p: _Obj) -> float | None:
    """IoU of the occluded parts (amodal minus visible) of a matched pair, from RLEs; None when the
    ground truth has no occluded part. Visible masks lie inside their amodal masks (the painter's rule),
    so |occ_g & occ_p| = |gA & pA| - |gV & pA| - |gA & pV| + |gV & pV|."""
    g_occ = _area(g.amodal_rle) - _area(g.visible_rle)
    if g_occ == 0:
        return None
    p_occ = _area(p.amodal_rle) - _area(p.visible_rle)
    inter = (
        _area(g.amodal_rle, p.amodal_rle)
        - _area(g.visible_rle, p.amodal_rle)
        - _area(g.amodal_rle, p.visible_rle)
        + _area(g.visible_rle, p.visible_rle)
    )
    return inter / (g_occ + p_occ - inter)


def _ratio(num: int, den: int) -> float:
    return num / den if den else NO_DATA


@dataclass
class _MatchedStats:
    """One unit's share of the matched-pair metrics: sums and counts, so that any multiset of units (the
    whole test set, or a bootstrap resample) reduces to its metrics by adding them up."""

    amodal_iou_sum: float = 0.0
    amodal_iou_count: int = 0
    occluded_iou_sum: float = 0.0
    occluded_iou_count: int = 0
    num_gt: int = 0
    num_occluded_gt: int = 0
    order_correct: int = 0
    order_total: int = 0
    order_found: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0


_MATCHED_FIELDS = [f for f in _MatchedStats.__dataclass_fields__]


def _unit_matched(unit: _Unit, iou_match: float, per_category: bool) -> _MatchedStats:
    st = _MatchedStats(num_gt=len(unit.gts), num_occluded_gt=sum(1 for g in unit.gts if g.occlude_rate > 0))
    matches = _greedy_match(unit, iou_match, per_category)
    for gi, (di, iou) in matches.items():
        g, p = unit.gts[gi], unit.preds[di]
        st.amodal_iou_sum += iou
        st.amodal_iou_count += 1
        occluded_iou = _occluded_iou(g, p)
        if occluded_iou is not None:
            st.occluded_iou_sum += occluded_iou
            st.occluded_iou_count += 1
        g_flag, p_flag = g.occlude_rate > 0, p.occlude_rate > 0
        st.tp += g_flag and p_flag
        st.fp += p_flag and not g_flag
        st.fn += g_flag and not p_flag
        st.tn += not g_flag and not p_flag
    for front, back in unit.order_pairs:
        st.order_total += 1
        if front in matches and back in matches:
            st.order_found += 1
            pf, pb = unit.preds[matches[front][0]], unit.preds[matches[back][0]]
            st.order_correct += pf.group == pb.group and pf.rank < pb.rank
    return st


def _mean_of(total: float, count: int, has_gt: bool) -> float:
    """Mean over matched pairs; 0 when there was ground truth to match but nothing matched; -1 when none."""
    if count:
        return total / count
    return 0.0 if has_gt else NO_DATA


def _reduce_matched(stats: list[_MatchedStats]) -> dict[str, float | int]:
    return _matched_from_totals(_MatchedStats(**{f: sum(getattr(s, f) for s in stats) for f in _MATCHED_FIELDS}))


def _matched_from_totals(t: _MatchedStats) -> dict[str, float | int]:
    matched = t.tp + t.fp + t.fn + t.tn
    if matched:
        occlusion = {
            "occlusion_acc": (t.tp + t.tn) / matched,
            "occlusion_precision": _ratio(t.tp, t.tp + t.fp),
            "occlusion_recall": _ratio(t.tp, t.tp + t.fn),
            "occlusion_f1": _ratio(2 * t.tp, 2 * t.tp + t.fp + t.fn),
        }
    else:
        empty = 0.0 if t.num_gt else NO_DATA
        occlusion = {k: empty for k in ("occlusion_acc", "occlusion_precision", "occlusion_recall", "occlusion_f1")}
    return {
        "miou_amodal": _mean_of(t.amodal_iou_sum, t.amodal_iou_count, t.num_gt > 0),
        "miou_occluded": _mean_of(t.occluded_iou_sum, t.occluded_iou_count, t.num_occluded_gt > 0),
        "order_acc": _ratio(t.order_correct, t.order_total),
        "order_pairs": t.order_total,
        # Ordering apart from detection: the pairs whose two objects were both matched.
        "order_acc_matched": _ratio(t.order_correct, t.order_found),
        "order_pairs_matched": t.order_found,
        **occlusion,
        "num_matched": matched,
    }


# ----- paired bootstrap ------------------------------------------------------------------------
# The metrics `paired_bootstrap` resamples: the amodal AP/AR family (from one pycocotools evaluation per
# model, resampled at the per-image level) and every matched-pair rate.
BOOTSTRAP_METRICS: tuple[str, ...] = (
    "amodal_AP",
    "amodal_AP50",
    "amodal_AP75",
    "amodal_AR100",
    "miou_amodal",
    "miou_occluded",
    "order_acc",
    "order_acc_matched",
    "occlusion_f1",
)
_BOOTSTRAP_AP = {
    "amodal_AP": ("AP", None, 100),
    "amodal_AP50": ("AP", 0.5, 100),
    "amodal_AP75": ("AP", 0.75, 100),
    "amodal_AR100": ("AR", None, 100),
}


class _ResampledAP:
    """Amodal AP/AR of any multiset of a test set's units without re-matching: pycocotools matches each
    (image, category) on its own (``evaluateImg``), so a resample's evaluation is the gathered per-image
    results, accumulated. The full set in its own order gives exactly `evaluate`'s numbers."""

    def __init__(self, units: list[_Unit], cat_ids: list[int], per_category: bool):
        self.ev = _run(units, cat_ids, per_category, "amodal", "pixels", ALL_AREAS, _EvalCache())
        self.num_units = len(self.ev.params.imgIds)
        self.evals = list(self.ev.evalImgs)  # [category][area][image], images in unit order (ids 1..n)
        self.full = self._summaries()  # the test set itself, accumulated as `evaluate` does

    def _summaries(self) -> dict[str, float]:
        return {k: _summary(self.ev, kind, iou=iou, max_dets=m) for k, (kind, iou, m) in _BOOTSTRAP_AP.items()}

    def __call__(self, idx: np.ndarray) -> dict[str, float]:
        ev, n = self.ev, self.num_units
        blocks = len(self.evals) // n if n else 0
        ev.evalImgs = [self.evals[b * n + int(i)] for b in range(blocks) for i in idx]
        ids = list(range(1, len(idx) + 1))  # a unit drawn twice is two images
        ev.params.imgIds = ids
        ev._paramsEval.imgIds = ids
        with contextlib.redirect_stdout(io.StringIO()):
            ev.accumulate()
        return self._summaries()


class _ResampledMatched:
    """The matched-pair metrics of any multiset of units: their per-unit sums and counts, weighted."""

    def __init__(self, units: list[_Unit], iou_match: float, per_category: bool):
        stats = [_unit_matched(u, iou_match, per_category) for u in units]
        self.full = _reduce_matched(stats)  # the test set itself, summed as `evaluate` sums it
        self.table = np.array([[getattr(st, f) for f in _MATCHED_FIELDS] for st in stats], np.float64).reshape(
            len(stats), len(_MATCHED_FIELDS)
        )
        self.types = [type(getattr(_MatchedStats(), f)) for f in _MATCHED_FIELDS]

    def __call__(self, idx: np.ndarray) -> dict[str, float | int]:
        totals = np.bincount(idx, minlength=len(self.table)).astype(np.float64) @ self.table
        return _matched_from_totals(
            _MatchedStats(
                **{
                    f: kind(round(v)) if kind is int else float(v)
                    for f, kind, v in zip(_MATCHED_FIELDS, self.types, totals)
                }
            )
        )


def paired_bootstrap(
    gt: AnnotationSet,
    pred: AnnotationSet,
    baseline: AnnotationSet,
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    iou_match: float = 0.5,
    metrics: tuple[str, ...] = BOOTSTRAP_METRICS,
    gt_file: str = "ground truth",
    pred_file: str = "predictions",
    baseline_file: str = "baseline",
    class_agnostic: bool | None = None,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """How sure is "``pred`` beats ``baseline``" on this test set: a paired bootstrap over its images.

    Each resample draws as many ground-truth units (scenes) as the test set has, with replacement, and
    scores both prediction sets on the same draw. Per metric: ``pred`` and ``baseline`` (the full test set,
    as `evaluate` gives them), ``diff`` = pred - baseline, the central ``confidence`` interval of the
    resampled differences (``low``, ``high``; percentile bootstrap), and ``share_ahead``, the share of
    resamples in which ``pred`` scores higher. It measures test-set sampling only: two training runs of
    one recipe differ as well (docs/results.md).
    """
    _check_iou_match(iou_match)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ConfigError(f"resamples must be a positive integer, got {resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    unknown = [m for m in metrics if m not in BOOTSTRAP_METRICS]
    if unknown:
        raise ConfigError(f"metrics: {unknown} cannot be resampled; expected some of {list(BOOTSTRAP_METRICS)}")
    if class_agnostic is None:  # one rule for both sides, or their numbers would not be comparable
        class_agnostic = _default_class_agnostic(gt, [pred, baseline])
    sides, gt_cache = [], {}  # both sides read the same prepared ground truth
    for p, name in ((pred, pred_file), (baseline, baseline_file)):
        prep = _prepare_units(gt, p, gt_file, name, progress, class_agnostic, gt_cache)
        sides.append(
            (
                _ResampledAP(prep.units, prep.cat_ids, prep.per_category),
                _ResampledMatched(prep.units, float(iou_match), prep.per_category),
            )
        )
    n = sides[0][0].num_units

    def score(idx: np.ndarray) -> list[dict[str, float]]:
        return [{**ap(idx), **matched(idx)} for ap, matched in sides]

    full = [{**ap.full, **matched.full} for ap, matched in sides]
    rng = np.random.default_rng(seed)
    diffs = np.empty((resamples, len(metrics)))
    valid = np.ones((resamples, len(metrics)), bool)
    for r in tqdm(range(resamples), desc="bootstrap", unit="resample", disable=not progress):
        a, b = score(rng.integers(0, n, n))
        for c, m in enumerate(metrics):
            diffs[r, c] = a[m] - b[m]
            valid[r, c] = a[m] != NO_DATA and b[m] != NO_DATA
    tail = (1.0 - confidence) / 2.0 * 100.0
    out = {}
    for c, m in enumerate(metrics):
        d = diffs[valid[:, c], c]
        a, b = full[0][m], full[1][m]
        low, high = np.percentile(d, [tail, 100.0 - tail]) if d.size else (NO_DATA, NO_DATA)
        out[m] = {
            "pred": float(a),
            "baseline": float(b),
            "diff": float(a - b),
            "low": float(low),
            "high": float(high),
            "share_ahead": float(np.mean(d > 0)) if d.size else NO_DATA,
        }
    return out


def format_comparison(result: Mapping[str, Mapping[str, float]], confidence: float = 0.95) -> str:
    """A `paired_bootstrap` result as a text table."""
    head = f"{'metric':<20} {'pred':>7} {'baseline':>8} {'diff':>7}  {f'{confidence:.0%} interval':>18}  {'ahead':>6}"
    lines = [head, "-" * len(head)]
    for m, r in result.items():
        lines.append(
            f"{m:<20} {r['pred']:>7.3f} {r['baseline']:>8.3f} {r['diff']:>+7.3f}  "
            f"[{r['low']:>+7.3f}, {r['high']:>+7.3f}]  {r['share_ahead']:>6.1%}"
        )
    return "\n".join(lines)


# ----- report ------------------------------------------------------------------------------------
_SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Amodal masks (COCO AP/AR, IoU .50:.95)",
        [
            ("amodal_AP", "AP"),
            ("amodal_AP50", "AP50"),
            ("amodal_AP75", "AP75"),
            ("amodal_APs", "AP small"),
            ("amodal_APm", "AP medium"),
            ("amodal_APl", "AP large"),
            ("amodal_AR1", "AR@1"),
            ("amodal_AR10", "AR@10"),
            ("amodal_AR100", "AR@100"),
        ],
    ),
    ("Visible masks", [("visible_AP", "AP"), ("visible_AP50", "AP50"), ("visible_AP75", "AP75")]),
    (
        "Amodal AP by ground-truth occlusion",
        [
            ("AP_none", "none (<= 1e-5)"),
            ("AP_partial", "partial (<= 0.25)"),
            ("AP_heavy", "heavy (> 0.25)"),
            ("AP_occluded", "occluded (>= 0.15)"),
            ("AP_things", "things"),
            ("AP_stuff", "stuff"),
        ],
    ),
    (
        "Matched instances",
        [
            ("miou_amodal", "mIoU amodal"),
            ("miou_occluded", "mIoU occluded part"),
            ("order_acc", "depth-order accuracy"),
            ("order_pairs", "overlapping GT pairs"),
            ("order_acc_matched", "depth-order accuracy, both found"),
            ("order_pairs_matched", "pairs with both found"),
            ("occlusion_acc", "occlusion accuracy"),
            ("occlusion_precision", "occlusion precision"),
            ("occlusion_recall", "occlusion recall"),
            ("occlusion_f1", "occlusion F1"),
        ],
    ),
    (
        "Counts",
        [
            ("num_images", "images"),
            ("num_gt", "GT instances"),
            ("num_pred", "predicted instances"),
            ("num_matched", "matched pairs"),
            ("num_pred_unmatched_images", "predicted images not in GT"),
        ],
    ),
]


def _cell(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return "n/a" if value == NO_DATA else f"{value:.3f}"


def format_table(metrics: Mapping[str, Any]) -> str:
    """A readable text table of ``evaluate``'s result (-1 shown as ``n/a``); unknown keys are listed last."""
    known = {key for _, rows in _SECTIONS for key, _ in rows}
    sections = [(title, [(label, metrics[key]) for key, label in rows if key in metrics]) for title, rows in _SECTIONS]
    sections.append(("Other", [(key, value) for key, value in metrics.items() if key not in known]))
    sections = [(title, rows) for title, rows in sections if rows]
    width = max((len(label) for _, rows in sections for label, _ in rows), default=0)
    lines: list[str] = []
    for title, rows in sections:
        if lines:
            lines.append("")
        lines.append(title)
        lines.extend(f"  {label:<{width}}  {_cell(value):>7}" for label, value in rows)
    return "\n".join(lines)
