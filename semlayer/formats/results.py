"""COCO results lists (detections): ``[{image_id, category_id, segmentation: RLE, score, ...}]``.

A results list has no image records: each image's size is its RLEs' ``size``. Our predictions also carry
``visible_mask``, ``occlude_rate``, ``order`` (the depth rank) and ``area`` = visible fraction, the field
occlusion-split evaluators read (docs/formats.md, "Results lists").
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterator

import numpy as np

from ..scene import AnnotationSet
from ._base import (
    Context,
    Group,
    Parsed,
    check_instance_count,
    Region,
    is_int,
    is_number,
    join,
    parse_mask,
    parse_rle,
    record,
    split_known,
    take,
)
from .coco import MASK, category_table
from .cocoa import ORDER
from .masks import encode_rle
from .stream import Streamed, materialize

KEYS = frozenset(
    {
        "image_id",
        "category_id",
        "segmentation",
        "score",
        "area",
        "bbox",
        "visible_mask",
        "invisible_mask",
        "occlude_rate",
        "order",
        "amodalMask",
        "invisibleMask",
    }
)
# amodalMask / invisibleMask: COCOA's own evaluator's camelCase names (invisible_mask wins when both are there).
RLE = "a COCO RLE {size, counts} (a results list has no image sizes, so masks must be RLE)"


def _region(ctx: Context, value: dict, path: str, index: int, shape: tuple[int, int] | None) -> Region:
    seg = take(ctx, value, "segmentation", path, lambda v: isinstance(v, dict), RLE)
    amodal = parse_rle(ctx, seg, join(path, "segmentation"), shape)
    shape = amodal.shape
    if "amodalMask" in value:  # the amodal mask when given (COCOA's evaluator prefers it to segmentation)
        amodal = parse_rle(
            ctx,
            take(ctx, value, "amodalMask", path, lambda v: isinstance(v, dict), RLE),
            join(path, "amodalMask"),
            shape,
        )
    masks = {}
    for key, names in (("visible_mask", ("visible_mask",)), ("invisible_mask", ("invisible_mask", "invisibleMask"))):
        name = next((n for n in names if n in value), None)
        if name is not None:
            masks[key] = parse_mask(ctx, take(ctx, value, name, path, lambda v: True, MASK), join(path, name), shape)[0]
    rate = take(ctx, value, "occlude_rate", path, lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]", None)
    order = take(ctx, value, "order", path, lambda v: is_int(v) and v >= 1, ORDER, None)
    return Region(
        path=path,
        id=index + 1,
        amodal_mask=amodal,
        visible_mask=masks.get("visible_mask"),
        invisible_mask=masks.get("invisible_mask"),
        occlude_rate=rate,
        order=order,
        order_path=join(path, "order") if order is not None else "",
        category=take(ctx, value, "category_id", path, is_int, "an integer category id", None),
        score=take(ctx, value, "score", path, is_number, "a number (the detection score)"),
        extra=copy.deepcopy(split_known(value, KEYS)),
    )


def parse(ctx: Context, items: list, wanted: Callable[[int], bool]) -> Parsed:
    members: dict[int, list[int]] = {}
    for i, value in enumerate(items):
        path = f"[{i}]"
        rec = ctx.attempt(record, ctx, value, path)
        image_id = None if rec is None else ctx.attempt(take, ctx, rec, "image_id", path, is_int, "an integer image id")
        if image_id is not None and wanted(image_id):
            members.setdefault(image_id, []).append(i)

    def groups():
        for image_id, idx in members.items():
            if not ctx.attempt(check_instance_count, ctx, len(idx), f"[{idx[-1]}]"):
                continue  # validating: the count is recorded as a violation
            regions: list[Region | None] = []
            shape = None
            for i in idx:
                region = ctx.attempt(_region, ctx, items[i], f"[{i}]", i, shape)
                regions.append(region)
                if region is not None and shape is None:
                    shape = region.amodal.shape
            if shape is None or any(r is None for r in regions):
                continue
            # A placeholder (empty mask, score 0: `to_results` writes one for an image with nothing found, as
            # COCOA's evaluator wants a result for every image) is no detection; its image has an empty scene.
            regions = [r for r in regions if r.score != 0 or r.amodal.any()]
            image = {"id": image_id, "height": shape[0], "width": shape[1], "file_name": ""}
            # Detections with no order and no visible masks: the higher score goes in front.
            yield Group("", image, regions, tie_break=[-r.score for r in regions])

    return Parsed("results", groups())


def to_results(annset: AnnotationSet) -> list[dict[str, Any]]:
    """One result per instance: amodal RLE, score (1.0 for ground truth), visible fraction as ``area``,
    visible mask, occlude rate and depth rank. An image without instances (an empty scene, or an image
    record without one) gets a placeholder, an empty mask with score 0: COCOA's evaluator needs a result
    for every image, and reading the list back gives that image an empty scene again."""
    return materialize(results_document(annset))


def results_document(annset: AnnotationSet) -> Streamed:
    """`to_results`' list, `Streamed`: one scene decoded at a time."""
    categories, default_cat = category_table(annset)
    # Any category will do for a placeholder; the first one keeps a read-back list writing the same.
    placeholder_cat = min((int(c["id"]) for c in categories), default=default_cat)
    found = {int(image["id"]) for image, facts in zip(annset.scene_images(), annset.instance_facts()) if facts}
    return Streamed(_results(annset, default_cat, placeholder_cat, found))


def _results(
    annset: AnnotationSet, default_cat: int, placeholder_cat: int, found: set[int]
) -> Iterator[dict[str, Any]]:
    def placeholder(image: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if int(image["id"]) not in found:
            found.add(int(image["id"]))
            empty = np.zeros((int(image["height"]), int(image["width"])), bool)
            yield {
                "image_id": int(image["id"]),
                "category_id": placeholder_cat,
                "segmentation": encode_rle(empty),
                "score": 0.0,
            }

    for scene in annset.scenes:
        yield from placeholder(scene.image)
        for inst, vis in zip(scene.instances, scene.iter_visible_masks()):
            area = inst.area
            shown = int(np.count_nonzero(vis))
            item: dict[str, Any] = {
                "image_id": scene.image_id,
                "category_id": default_cat if inst.category is None else inst.category,
                "segmentation": encode_rle(inst.amodal),
                "score": 1.0 if inst.score is None else float(inst.score),
                "area": shown / area if area else 0.0,
                "visible_mask": encode_rle(vis),
                "occlude_rate": (area - shown) / area if area else 0.0,
                "order": inst.rank,
            }
            for key, value in inst.extra.items():
                item.setdefault(key, copy.deepcopy(value))
            yield item
    for image in annset.images:  # image records without a scene
        yield from placeholder(image)
