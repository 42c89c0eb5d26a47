"""COCOA native ("regions") format: ``COCO_amodal_*.json``, ``BSDS_amodal_*.json``.

One scene per annotation record (BSDS has several annotators per image). A region's ``segmentation`` is
ONE flat polygon; a region whose mask one polygon cannot describe exactly (several parts, holes) also
carries the exact mask as RLE under ``amodal_mask``, which this reader prefers (docs/formats.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..boxes import paste_crop
from ..order import format_depth_constraint, overlapping_pairs
from ..scene import AmodalScene, AnnotationSet

# The parse's data types, what reads a file's structure, and what reads one field.
from ._base import POLYGON, Context, Group, LazyMask, Parsed, Region
from ._base import annotation_image, check_instance_count, check_unique_ids, image_index, parse_categories
from ._base import is_flag, is_int, is_number, join, parse_polygon, parse_rle, record, records, split_known, take
from .masks import as_json_rle, mask_to_polygon, mask_to_rle, polygons_to_mask, polygons_to_rle
from .masks import rle_or, rle_same, rle_to_mask
from .stream import Streamed, materialize

REGION_KEYS = frozenset(
    {
        "segmentation",
        "amodal_mask",
        "name",
        "area",
        "isStuff",
        "occlude_rate",
        "order",
        "visible_mask",
        "invisible_mask",
        "score",
        "category_id",
    }
)
ORDER = "an integer >= 1 (the depth rank, 1 = front-most)"
RLE = "a COCO RLE {size, counts}"


def _is_rle(value: Any) -> bool:
    return isinstance(value, dict)


def parse_region(ctx: Context, value: Any, path: str, shape: tuple[int, int], index: int) -> Region:
    rec = record(ctx, value, path)
    if "amodal_mask" in rec:
        amodal = parse_rle(ctx, take(ctx, rec, "amodal_mask", path, _is_rle, RLE), join(path, "amodal_mask"), shape)
        seg = take(ctx, rec, "segmentation", path, lambda v: isinstance(v, list), POLYGON)
        polygons = None
        if seg:  # the largest part's outline; it describes the mask only when it rasterises to it exactly
            parse_polygon(ctx, seg, join(path, "segmentation"), shape)
            if rle_same(polygons_to_rle([seg], *shape), amodal.rle):
                polygons = [seg]
    else:
        seg = parse_polygon(
            ctx, take(ctx, rec, "segmentation", path, lambda v: True, POLYGON), join(path, "segmentation"), shape
        )
        polygons = [seg]
        amodal = LazyMask(polygons_to_rle(polygons, *shape))
    order = take(ctx, rec, "order", path, lambda v: is_int(v) and v >= 1, ORDER)
    name = take(ctx, rec, "name", path, lambda v: isinstance(v, str), "a string", "")
    is_stuff = take(ctx, rec, "isStuff", path, is_flag, "0 or 1", 0)
    take(ctx, rec, "area", path, is_number, "a number", None)
    rate = take(ctx, rec, "occlude_rate", path, lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]", None)
    masks = {}
    for key in ("visible_mask", "invisible_mask"):
        if key in rec:
            masks[key] = parse_rle(ctx, take(ctx, rec, key, path, _is_rle, RLE), join(path, key), shape)
    return Region(
        path=path,
        id=index + 1,
        amodal_mask=amodal,
        polygons=polygons,
        visible_mask=masks.get("visible_mask"),
        invisible_mask=masks.get("invisible_mask"),
        occlude_rate=rate,
        order=order,
        order_path=join(path, "order"),
        name=name,
        category=take(ctx, rec, "category_id", path, is_int, "an integer category id", None),
        is_stuff=bool(is_stuff),
        score=take(ctx, rec, "score", path, is_number, "a number", None),
        extra=copy.deepcopy(split_known(rec, REGION_KEYS)),
    )


def parse_annotation(
    ctx: Context, value: Any, path: str, images: dict[int, dict], wanted: Callable[[int], bool]
) -> Group | None:
    rec = record(ctx, value, path)
    image_id = annotation_image(ctx, rec, path, images, wanted)
    if image_id is None:
        return None
    take(ctx, rec, "id", path, is_int, "an integer annotation id")
    take(ctx, rec, "depth_constraint", path, lambda v: isinstance(v, str), 'a string like "1-2,1-5"', "")
    regions = take(ctx, rec, "regions", path, lambda v: isinstance(v, list), "a list of region objects")
    check_instance_count(ctx, len(regions), join(path, "regions"))
    image = images[image_id]
    shape = (image["height"], image["width"])
    parsed = [ctx.attempt(parse_region, ctx, r, f"{path}.regions[{j}]", shape, j) for j, r in enumerate(regions)]
    if any(r is None for r in parsed):
        return None  # validating: the region's problem is recorded; its group cannot be checked further
    annotation = copy.deepcopy({k: v for k, v in rec.items() if k != "regions"})
    return Group(path, image, parsed, annotation, order_kind="explicit")


def parse(ctx: Context, obj: dict, wanted: Callable[[int], bool]) -> Parsed:
    images = image_index(ctx, records(ctx, obj, "images"))
    anns = records(ctx, obj, "annotations")
    categories = parse_categories(ctx, obj)
    check_unique_ids(ctx, anns, "annotations")
    used = {a["image_id"] for a in anns if isinstance(a, dict) and is_int(a.get("image_id"))}

    def groups():
        for i, a in enumerate(anns):
            group = ctx.attempt(parse_annotation, ctx, a, f"annotations[{i}]", images, wanted)
            if group is not None:
                yield group

    return Parsed(
        "cocoa",
        groups(),
        copy.deepcopy(categories),
        copy.deepcopy(split_known(obj, {"images", "annotations", "categories"})),
        [rec for iid, rec in images.items() if rec is not None and iid not in used and wanted(iid)],
    )


# ----- writing ----------------------------------------------------------------------------------
def annotation_header(scene: AmodalScene, annotation_id: int | None) -> dict[str, Any]:
    """The scene's COCOA annotation record without regions: its kept fields, with ``image_id``, ``size``
    and ``depth_constraint`` (every overlapping pair, as orders "front-back") brought up to date."""
    rec = copy.deepcopy(scene.annotation)
    if annotation_id is not None:
        rec["id"] = annotation_id
    rec["image_id"] = scene.image_id
    rec["size"] = len(scene)
    ranks = scene.ranks()
    pairs = overlapping_pairs(ranks, [i.amodal_crop for i in scene.instances], [i.box for i in scene.instances])
    rec["depth_constraint"] = format_depth_constraint((ranks[a], ranks[b]) for a, b in pairs)
    return rec


def annotation_ids(annotations: list[dict[str, Any]]) -> list[int]:
    """Each scene's annotation id (from its annotation header): its own when it has a unique one, else a
    fresh one."""
    own = [a.get("id") for a in annotations]
    counts: dict[int, int] = {}
    for aid in own:
        if is_int(aid):
            counts[aid] = counts.get(aid, 0) + 1
    next_id = max(counts, default=0) + 1
    out = []
    for aid in own:
        if is_int(aid) and counts[aid] == 1:
            out.append(aid)
        else:
            out.append(next_id)
            next_id += 1
    return out


def single_polygon(
    inst_polygons: list | None, amodal: np.ndarray, amodal_rle: dict[str, Any] | None = None
) -> tuple[list, bool]:
    """COCOA's one flat polygon for a mask, and whether it rasterises back to the mask exactly (compared as
    RLE: ``amodal_rle``, the mask's pycocotools RLE when the caller has it)."""
    if inst_polygons is not None and len(inst_polygons) == 1:
        polygon = inst_polygons[0]
    else:
        polygon = mask_to_polygon(amodal)
    if polygon is None:
        # No outline to give (an empty mask, or specks): a zero-area flat polygon still loads in the public
        # COCOA loaders, which reject an empty list; ``amodal_mask`` then carries any pixels.
        return [0.0] * 6, not amodal.any()
    if amodal_rle is None:
        amodal_rle = mask_to_rle(amodal)
    return list(polygon), rle_same(polygons_to_rle([polygon], *amodal.shape), amodal_rle)


@dataclass(frozen=True)
class PolygonLoss:
    """A region whose ``segmentation`` polygon is not its mask: pixels of the mask the polygon misses, and
    pixels the polygon adds (holes it fills)."""

    image_id: int
    region: int
    area: int
    missed: int
    extra: int


def polygon_losses(obj: dict[str, Any]) -> list[PolygonLoss]:
    """Every region of a COCOA JSON object (as `to_cocoa` writes it) that also carries ``amodal_mask``: the
    mask one flat polygon could not describe, with what the polygon alone loses."""
    out = []
    for ann in obj.get("annotations", []):
        for n, region in enumerate(ann.get("regions", [])):
            if "amodal_mask" not in region:
                continue
            exact = rle_to_mask(region["amodal_mask"]).astype(bool)
            polygon = polygons_to_mask([region["segmentation"]], *exact.shape)
            out.append(PolygonLoss(int(ann["image_id"]), n, int(exact.sum()), int((exact & ~polygon).sum()),
                                   int((polygon & ~exact).sum())))  # fmt: skip
    return out


def to_cocoa(annset: AnnotationSet) -> dict[str, Any]:
    """COCOA native JSON: one annotation record per scene, regions front-most first."""
    return materialize(cocoa_document(annset))


def cocoa_document(annset: AnnotationSet) -> dict[str, Any]:
    """`to_cocoa`'s document with the annotations `Streamed`: one scene decoded at a time."""
    out: dict[str, Any] = {
        "images": copy.deepcopy(annset.image_records()),
        "annotations": Streamed(_cocoa_annotations(annset)),
    }
    if annset.categories:
        out["categories"] = copy.deepcopy(annset.categories)
    for key, value in annset.extra.items():
        out.setdefault(key, copy.deepcopy(value))
    return out


def merge_into(original: dict[str, Any], scenes: Iterable[AmodalScene]) -> dict[str, Any]:
    """COCOA JSON ``original`` with the annotation records of ``scenes`` written in: each replaces the record of
    its image and annotation id, or is appended (its image record too, when ``original`` has no such image),
    renumbered when another image's record has its id. Every other record and field is ``original``'s own
    object, so it is written back exactly as it was."""
    fresh = to_cocoa(AnnotationSet(scenes=list(scenes), format="cocoa"))
    annotations = list(original.get("annotations", []))
    positions = {(int(a["image_id"]), a.get("id")): n for n, a in enumerate(annotations)}
    images = list(original.get("images", []))
    image_ids = {int(im["id"]) for im in images}
    for rec in fresh["images"]:
        if int(rec["id"]) not in image_ids:
            images.append(rec)
            image_ids.add(int(rec["id"]))
    used = {a.get("id") for a in annotations}
    next_id = max((i for i in used | {a["id"] for a in fresh["annotations"]} if is_int(i)), default=0) + 1
    for rec in fresh["annotations"]:
        position = positions.get((int(rec["image_id"]), rec["id"]))
        if position is not None:
            annotations[position] = rec
            continue
        if rec["id"] in used:  # another image's record has this id: the merged file keeps ids unique
            rec = {**rec, "id": next_id}
            next_id += 1
        annotations.append(rec)
        used.add(rec["id"])
    return {**original, "images": images, "annotations": annotations}


def _cocoa_annotations(annset: AnnotationSet) -> Iterator[dict[str, Any]]:
    for scene, aid in zip(annset.scenes, annotation_ids(annset.scene_annotations())):
        visible = scene.visible_crops()  # each in its instance's box: frames are made one at a time below
        regions = []
        for i in scene.front_to_back():
            inst, vis = scene.instances[i], visible[i]
            area = inst.area
            amodal = inst.amodal
            n_hidden = area - int(np.count_nonzero(vis))
            # With a hidden part, the amodal RLE is the union of the visible and hidden ones the region states.
            parts = None
            if n_hidden:
                hidden = inst.amodal_crop & ~vis
                parts = (
                    mask_to_rle(paste_crop(vis, inst.box, scene.shape)),
                    mask_to_rle(paste_crop(hidden, inst.box, scene.shape)),
                )
            amodal_rle = mask_to_rle(amodal) if parts is None else rle_or(*parts)
            polygon, exact = single_polygon(inst.polygons, amodal, amodal_rle)
            region: dict[str, Any] = {
                "order": inst.rank,
                "name": inst.name,
                "isStuff": int(inst.is_stuff),
                "area": area,
                "occlude_rate": n_hidden / area if n_hidden else 0,
                "segmentation": polygon,
            }
            if parts is not None:
                region["visible_mask"], region["invisible_mask"] = (as_json_rle(rle) for rle in parts)
            if not exact:
                region["amodal_mask"] = as_json_rle(amodal_rle)
            if inst.category is not None:
                region["category_id"] = inst.category
            if inst.score is not None:
                region["score"] = float(inst.score)
            for key, value in inst.extra.items():
                region.setdefault(key, copy.deepcopy(value))
            regions.append(region)
        yield {**annotation_header(scene, aid), "regions": regions}
