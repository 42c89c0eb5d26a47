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
from typing import Any, Mapping

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from .errors import ConfigError, FormatError
from .formats.masks import rle_input
from .order import cluster_pairs, overlapping_pairs, parse_depth_constraint
from .scene import AmodalScene, AnnotationSet

log = logging.getLogger(__name__)

NO_DATA = -1.0
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


def _order_pairs(scene: AmodalScene) -> list[tuple[int, int]]:
    """The ground-truth pairs whose depth order is scored (FORMATS.md section 5), as ``(front, back)``
    indices: inside KINS 2020's annotated clusters when the scene has them; else the pairs that the scene's
    COCOA ``depth_constraint`` names, when it has one that names only its own orders; else every pair of
    overlapping amodal masks."""
    clusters = [inst.cluster for inst in scene.instances]
    if any(c is not None for c in clusters):
        return cluster_pairs(clusters)
    ranks = scene.ranks()
    stated = _stated_pairs(scene.annotation.get("depth_constraint"), ranks)
    if stated is not None:
        return stated
    return overlapping_pairs(ranks, [inst.amodal for inst in scene.instances])


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


class _SharedIoUEval(COCOeval):
    """``COCOeval`` that reuses IoU matrices across runs over the same segmentations.

    The amodal runs (COCO areas, occlusion buckets, things/stuff) differ only in the ``area`` field that
    pycocotools' area ranges read, so the IoUs, the expensive part, are computed once.
    """

    def __init__(self, coco_gt: COCO, coco_dt: COCO, cache: dict[tuple[int, int], Any]):
        super().__init__(coco_gt, coco_dt, iouType="segm")
        self._iou_cache = cache

    def computeIoU(self, imgId: int, catId: int):  # noqa: N802, N803 (pycocotools' names)
        key = (imgId, catId)
        if key not in self._iou_cache:
            self._iou_cache[key] = super().computeIoU(imgId, catId)
        return self._iou_cache[key]


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
    if isinstance(iou_match, bool) or not isinstance(iou_match, (int, float)) or not 0.0 < iou_match <= 1.0:
        raise ConfigError(f"iou_match must be a number in (0, 1], got {iou_match!r}")
    if class_agnostic is None:
        class_agnostic = not gt.categories or all(i.category is None for s in pred.scenes for i in s.instances)
    per_category = not class_agnostic
    records = gt.image_records()
    # Scene indices per image, not scenes: a compactly loaded set (load(compact=True)) decodes a scene each
    # time it is indexed, and only one image's scenes are decoded at a time.
    gt_scenes: dict[int, list[int]] = {}
    for k, image in enumerate(gt.scene_images()):
        gt_scenes.setdefault(int(image["id"]), []).append(k)
    pred_scenes, unmatched_images = _assign_predictions(records, pred, gt_file)

    if unmatched_images:
        log.warning("%s: ignored predictions for %d images that are not in the ground truth", pred_file,
                    unmatched_images)

    units: list[_Unit] = []
    num_pred = 0
    for record in tqdm(records, desc="evaluate: preparing", unit="image", disable=not progress):
        image_id = _image_id(record, gt_file)
        shape = _shape(record, gt_file)
        preds: list[_Obj] = []
        for group, k in enumerate(pred_scenes.get(image_id, [])):
            scene = pred.scenes[k]
            _check_shape(scene, shape, pred_file)
            preds += _prepare(scene, group, per_category, pred_file, is_pred=True)
        num_pred += len(preds)
        for k in gt_scenes.get(image_id) or [None]:
            unit = _Unit(len(units) + 1, image_id, shape, [], preds)
            if k is not None:
                scene = gt.scenes[k]
                _check_shape(scene, shape, gt_file)
                unit.gts = _prepare(scene, 0, per_category, gt_file, is_pred=False)
                unit.order_pairs = _order_pairs(scene)
            units.append(unit)

    if per_category:
        cat_ids = sorted({int(c["id"]) for c in gt.categories} | {g.category for u in units for g in u.gts})
    else:
        cat_ids = [AGNOSTIC_CATEGORY]
    metrics: dict[str, float | int] = {}
    metrics.update(_coco_metrics(units, cat_ids, per_category))
    metrics.update(_matched_metrics(units, float(iou_match), per_category))
    metrics["num_images"] = len(records)
    metrics["num_gt"] = sum(len(u.gts) for u in units)
    metrics["num_pred"] = num_pred
    metrics["num_pred_unmatched_images"] = unmatched_images
    return metrics


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


def _check_shape(scene: AmodalScene, shape: tuple[int, int], file: str) -> None:
    if scene.shape != shape:
        raise FormatError(
            file, f"images[id={scene.image_id}]",
            f"height {shape[0]} and width {shape[1]} as the ground-truth image, got {scene.height}x{scene.width}",
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


def _prepare(scene: AmodalScene, group: int, per_category: bool, file: str, is_pred: bool) -> list[_Obj]:
    out = []
    amodal_rles, visible_rles = _rles([inst.amodal for inst in scene.instances]), _rles(scene.visible_masks())
    for k, inst in enumerate(scene.instances):
        if per_category and inst.category is None:
            raise FormatError(
                file, f"annotations[image_id={scene.image_id}, id={inst.id}].category_id",
                "a category id: the ground truth has categories, so every instance needs one",
            )
        category = int(inst.category) if per_category else AGNOSTIC_CATEGORY
        # A prediction without a score (an annotation file used as predictions) ranks as certain.
        score = 1.0 if not is_pred or inst.score is None else float(inst.score)
        # The occlude rate as `AmodalScene.occlude_rates` computes it, from the RLEs' areas.
        area, visible_area = _area(amodal_rles[k]), _area(visible_rles[k])
        rate = (area - visible_area) / area if area else 0.0
        out.append(_Obj(amodal_rles[k], visible_rles[k], float(rate), int(inst.rank), category,
                        bool(inst.is_stuff), score, group))
    return out


def _rles(masks: list[np.ndarray]) -> list[dict[str, Any]]:
    return [mask_utils.encode(rle_input(m)) for m in masks]


# ----- AP / AR (pycocotools) ---------------------------------------------------------------------
def _coco(units: list[_Unit], cat_ids: list[int], anns: list[dict[str, Any]]) -> COCO:
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
    see: ``pixels`` (mask area), ``occlusion`` (occlude rate) or ``stuff`` (0 thing, 1 stuff)."""
    anns = []
    for u in units:
        for o in getattr(u, side):
            rle = o.amodal_rle if mask == "amodal" else o.visible_rle
            if area == "pixels":
                value = float(mask_utils.area(rle))
            elif area == "occlusion":
                value = o.occlude_rate
            else:
                value = float(o.is_stuff)
            # pycocotools uses 0 in its match tables for "unmatched", so ids start at 1.
            ann = {"id": len(anns) + 1, "image_id": u.eval_id, "category_id": o.category, "segmentation": rle,
                   "area": value, "iscrowd": 0}
            if side == "preds":
                ann["score"] = o.score
            anns.append(ann)
    return anns


def _run(
    units: list[_Unit],
    cat_ids: list[int],
    per_category: bool,
    mask: str,
    area: str,
    ranges: Mapping[str, tuple[float, float]],
    cache: dict[tuple[int, int], Any],
) -> COCOeval:
    coco_gt = _coco(units, cat_ids, _records(units, "gts", mask, area))
    coco_dt = _coco(units, cat_ids, _records(units, "preds", mask, area))
    ev = _SharedIoUEval(coco_gt, coco_dt, cache)
    ev.params.useCats = int(per_category)
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
    amodal_ious: dict[tuple[int, int], Any] = {}
    ev = _run(units, cat_ids, per_category, "amodal", "pixels", COCO_AREAS, amodal_ious)
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
    ev = _run(units, cat_ids, per_category, "visible", "pixels", ALL_AREAS, {})
    out.update(visible_AP=_summary(ev, "AP"), visible_AP50=_summary(ev, "AP", iou=0.5),
               visible_AP75=_summary(ev, "AP", iou=0.75))
    # Buckets: GT 'area' := its occlude rate (or stuff flag) and a detection's 'area' := its predicted one, so
    # an unmatched detection is a false positive only in the bucket it claims to belong to.
    ev = _run(units, cat_ids, per_category, "amodal", "occlusion", OCCLUSION_BUCKETS, amodal_ious)
    out.update({f"AP_{name}": _summary(ev, "AP", name) for name in OCCLUSION_BUCKETS})
    ev = _run(units, cat_ids, per_category, "amodal", "stuff", STUFF_BUCKETS, amodal_ious)
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
    inter = (_area(g.amodal_rle, p.amodal_rle) - _area(g.visible_rle, p.amodal_rle)
             - _area(g.amodal_rle, p.visible_rle) + _area(g.visible_rle, p.visible_rle))
    return inter / (g_occ + p_occ - inter)


def _mean(values: list[float], has_gt: bool) -> float:
    """Mean over matched pairs; 0 when there was ground truth to match but nothing matched; -1 when none."""
    if values:
        return float(np.mean(values))
    return 0.0 if has_gt else NO_DATA


def _ratio(num: int, den: int) -> float:
    return num / den if den else NO_DATA


def _matched_metrics(units: list[_Unit], iou_match: float, per_category: bool) -> dict[str, float | int]:
    amodal_ious: list[float] = []
    occluded_ious: list[float] = []
    num_occluded_gt = 0
    order_correct = order_total = order_found = 0
    tp = fp = fn = tn = 0
    for unit in units:
        matches = _greedy_match(unit, iou_match, per_category)
        for gi, (di, iou) in matches.items():
            g, p = unit.gts[gi], unit.preds[di]
            amodal_ious.append(iou)
            occluded_iou = _occluded_iou(g, p)
            if occluded_iou is not None:
                occluded_ious.append(occluded_iou)
            g_flag, p_flag = g.occlude_rate > 0, p.occlude_rate > 0
            tp += g_flag and p_flag
            fp += p_flag and not g_flag
            fn += g_flag and not p_flag
            tn += not g_flag and not p_flag
        num_occluded_gt += sum(1 for g in unit.gts if g.occlude_rate > 0)
        for front, back in unit.order_pairs:
            order_total += 1
            if front in matches and back in matches:
                order_found += 1
                pf, pb = unit.preds[matches[front][0]], unit.preds[matches[back][0]]
                order_correct += pf.group == pb.group and pf.rank < pb.rank
    num_gt = sum(len(u.gts) for u in units)
    matched = tp + fp + fn + tn
    if matched:
        occlusion = {
            "occlusion_acc": (tp + tn) / matched,
            "occlusion_precision": _ratio(tp, tp + fp),
            "occlusion_recall": _ratio(tp, tp + fn),
            "occlusion_f1": _ratio(2 * tp, 2 * tp + fp + fn),
        }
    else:
        empty = 0.0 if num_gt else NO_DATA
        occlusion = {k: empty for k in ("occlusion_acc", "occlusion_precision", "occlusion_recall", "occlusion_f1")}
    return {
        "miou_amodal": _mean(amodal_ious, num_gt > 0),
        "miou_occluded": _mean(occluded_ious, num_occluded_gt > 0),
        "order_acc": _ratio(order_correct, order_total),
        "order_pairs": order_total,
        # Ordering apart from detection: the pairs whose two objects were both matched.
        "order_acc_matched": _ratio(order_correct, order_found),
        "order_pairs_matched": order_found,
        **occlusion,
        "num_matched": matched,
    }


# ----- report ------------------------------------------------------------------------------------
_SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Amodal masks (COCO AP/AR, IoU .50:.95)", [
        ("amodal_AP", "AP"), ("amodal_AP50", "AP50"), ("amodal_AP75", "AP75"), ("amodal_APs", "AP small"),
        ("amodal_APm", "AP medium"), ("amodal_APl", "AP large"), ("amodal_AR1", "AR@1"),
        ("amodal_AR10", "AR@10"), ("amodal_AR100", "AR@100"),
    ]),
    ("Visible masks", [("visible_AP", "AP"), ("visible_AP50", "AP50"), ("visible_AP75", "AP75")]),
    ("Amodal AP by ground-truth occlusion", [
        ("AP_none", "none (<= 1e-5)"), ("AP_partial", "partial (<= 0.25)"), ("AP_heavy", "heavy (> 0.25)"),
        ("AP_occluded", "occluded (>= 0.15)"), ("AP_things", "things"), ("AP_stuff", "stuff"),
    ]),
    ("Matched instances", [
        ("miou_amodal", "mIoU amodal"), ("miou_occluded", "mIoU occluded part"),
        ("order_acc", "depth-order accuracy"), ("order_pairs", "overlapping GT pairs"),
        ("order_acc_matched", "depth-order accuracy, both found"), ("order_pairs_matched", "pairs with both found"),
        ("occlusion_acc", "occlusion accuracy"), ("occlusion_precision", "occlusion precision"),
        ("occlusion_recall", "occlusion recall"), ("occlusion_f1", "occlusion F1"),
    ]),
    ("Counts", [
        ("num_images", "images"), ("num_gt", "GT instances"), ("num_pred", "predicted instances"),
        ("num_matched", "matched pairs"), ("num_pred_unmatched_images", "predicted images not in GT"),
    ]),
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
    sections = [(title, [(label, metrics[key]) for key, label in rows if key in metrics])
                for title, rows in _SECTIONS]
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
