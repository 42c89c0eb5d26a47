"""COCO-style amodal instances (COCOA-cls, COCOA "detectron", D2SA) and KINS 2019 / 2020: read; COCO-style:
write. All annotations of an image form one scene (split by ``amodal_base.id`` when the file has one, so
the several annotators of a BSDS image written by `to_coco` stay apart)."""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable, Iterator

import numpy as np

from ..boxes import box_xywh, mask_box
from ..errors import ConfigError
from ..order import overlapping_pairs
from ..scene import AnnotationSet, AmodalScene

# The parse's data types, what reads a file's structure, and what reads one field.
from ._base import Context, Group, Parsed, Region
from ._base import annotation_image, check_instance_count, check_unique_ids, image_index, parse_categories, parse_mask
from ._base import is_flag, is_int, is_number, join, record, records, split_known, take
from .cocoa import ORDER, annotation_header
from .masks import as_json_rle, encode_rle, mask_to_rle, polygons_to_rle, rle_or, rle_same
from .stream import Streamed, materialize

MASK = "a COCO RLE {size, counts} or a list of polygons"
COCO_KEYS = frozenset(
    {
        "id",
        "image_id",
        "category_id",
        "segmentation",
        "area",
        "bbox",
        "visible_mask",
        "invisible_mask",
        "occlude_rate",
        "amodal_region",
        "amodal_base",
        "score",
    }
)
KINS2019_KEYS = frozenset(
    {
        "id",
        "image_id",
        "category_id",
        "segmentation",
        "bbox",
        "area",
        "inmodal_seg",
        "inmodal_bbox",
    }
)
KINS2020_KEYS = frozenset(
    {
        "id",
        "image_id",
        "category_id",
        "a_segm",
        "a_bbox",
        "a_area",
        "i_segm",
        "i_bbox",
        "i_area",
        "oco_id",
        "ico_id",
        # copies of the a_* fields that some scripts add for pycocotools
        "segmentation",
        "bbox",
        "area",
    }
)
# Each KINS version's amodal and visible mask keys and the fields it defines.
KINS_FIELDS = {2019: ("segmentation", "inmodal_seg", KINS2019_KEYS), 2020: ("a_segm", "i_segm", KINS2020_KEYS)}
REGION_KEYS = frozenset({"name", "area", "isStuff", "bbox", "order"})
# `to_coco`'s category for class-agnostic data; read back as "no category" so COCOA -> COCO -> COCOA is exact.
AGNOSTIC = {"id": 1, "name": "object"}


class _Categories:
    def __init__(self, categories: list[dict]):
        self.agnostic = categories == [AGNOSTIC]
        self.names = {c["id"]: c.get("name", "") for c in categories}

    def category(self, ctx: Context, rec: dict, path: str) -> int | None:
        cid = take(ctx, rec, "category_id", path, is_int, "an integer category id")
        if self.names and cid not in self.names:
            ctx.fail(join(path, "category_id"), f"the id of an entry in categories; there is no category with id {cid}")
        return None if self.agnostic else cid

    def name(self, cid: int | None) -> str:
        return str(self.names.get(cid, "")) if cid is not None else ""


def _mask(ctx: Context, rec: dict, key: str, path: str, shape: tuple[int, int], required: bool = True):
    # D2SA pads the masks of objects that overflow the frame: an RLE larger than the image is cropped to it.
    if not required and key not in rec:
        return None, None
    return parse_mask(ctx, take(ctx, rec, key, path, lambda v: True, MASK), join(path, key), shape, padded_ok=True)


def _known(rec: dict, keys: frozenset[str], ctx: Context, path: str) -> frozenset[str]:
    """``iscrowd`` 0/false is the default and written back as 0; any other value stays an unknown field."""
    crowd = take(ctx, rec, "iscrowd", path, is_flag, "0 or 1 (or a boolean)", 0)
    return keys | {"iscrowd"} if not crowd else keys


def coco_region(ctx: Context, value: Any, path: str, shape: tuple[int, int], cats: _Categories) -> Region:
    rec = record(ctx, value, path)
    rid = take(ctx, rec, "id", path, is_int, "an integer annotation id")
    cid = cats.category(ctx, rec, path)
    amodal, polygons = _mask(ctx, rec, "segmentation", path, shape)
    visible = _mask(ctx, rec, "visible_mask", path, shape, required=False)[0]
    invisible = _mask(ctx, rec, "invisible_mask", path, shape, required=False)[0]
    rate = take(ctx, rec, "occlude_rate", path, lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]", None)
    extra = split_known(rec, _known(rec, COCO_KEYS, ctx, path))
    region = take(ctx, rec, "amodal_region", path, lambda v: isinstance(v, dict), "an object", {})
    rpath = join(path, "amodal_region")
    order = take(ctx, region, "order", rpath, lambda v: is_int(v) and v >= 1, ORDER, None)
    # order_path marks a stated rank (painter's rule checked); occl_depth only breaks what the masks leave open.
    order_path = join(rpath, "order") if order is not None else ""
    occl_depth = take(ctx, rec, "occl_depth", path, is_number, "a number", None)
    name = take(ctx, region, "name", rpath, lambda v: isinstance(v, str), "a string", None)
    is_stuff = take(ctx, region, "isStuff", rpath, is_flag, "0 or 1", 0)
    if split_known(region, REGION_KEYS):
        extra["amodal_region"] = split_known(region, REGION_KEYS)
    base = take(ctx, rec, "amodal_base", path, lambda v: isinstance(v, dict), "an object", {})
    take(ctx, base, "id", join(path, "amodal_base"), is_int, "an integer annotation id", None)
    return Region(
        path=path,
        id=rid,
        amodal_mask=amodal,
        polygons=polygons,
        visible_mask=visible,
        invisible_mask=invisible,
        occlude_rate=rate,
        order=order,
        order_path=order_path,
        occl_depth=occl_depth,
        name=cats.name(cid) if name is None else name,
        category=cid,
        is_stuff=bool(is_stuff),
        score=take(ctx, rec, "score", path, is_number, "a number", None),
        extra=copy.deepcopy(extra),
    )


def _kins_region(
    ctx: Context, value: Any, path: str, shape: tuple[int, int], cats: _Categories, *, version: int
) -> Region:
    """A KINS annotation: 2019 names its masks ``segmentation``/``inmodal_seg``, 2020 ``a_segm``/``i_segm``
    (the visible one optional) and adds the annotated cluster ``oco_id``/``ico_id``."""
    amodal_key, visible_key, keys = KINS_FIELDS[version]
    rec = record(ctx, value, path)
    rid = take(ctx, rec, "id", path, is_int, "an integer annotation id")
    cid = cats.category(ctx, rec, path)
    amodal, polygons = _mask(ctx, rec, amodal_key, path, shape)
    visible = _mask(ctx, rec, visible_key, path, shape, required=version == 2019)[0]
    cluster = None
    if version == 2020:
        non_negative = lambda v: is_int(v) and v >= 0
        oco = take(ctx, rec, "oco_id", path, non_negative, "an integer >= 0 (0 = overlaps nothing)", 0)
        ico = take(ctx, rec, "ico_id", path, non_negative, "an integer >= 0 (rank in the cluster, 1 = front)", 0)
        cluster = (oco, ico)
    extra = split_known(rec, _known(rec, keys, ctx, path))
    return Region(
        path=path,
        id=rid,
        amodal_mask=amodal,
        polygons=polygons,
        visible_mask=visible,
        name=cats.name(cid),
        category=cid,
        cluster=cluster,
        extra=copy.deepcopy(extra),
        visible_key=visible_key,
    )


REGION_PARSERS: dict[str, Callable[..., Region]] = {
    "coco": coco_region,
    "kins2019": functools.partial(_kins_region, version=2019),
    "kins2020": functools.partial(_kins_region, version=2020),
}


def _group_key(
    ctx: Context, value: Any, path: str, images: dict[int, dict], wanted: Callable[[int], bool]
) -> tuple[int, Any] | None:
    rec = record(ctx, value, path)
    image_id = annotation_image(ctx, rec, path, images, wanted)
    if image_id is None:
        return None
    base = rec.get("amodal_base")
    return image_id, base.get("id") if isinstance(base, dict) and is_int(base.get("id")) else None


def parse(ctx: Context, obj: dict, wanted: Callable[[int], bool], fmt: str) -> Parsed:
    images = image_index(ctx, records(ctx, obj, "images"))
    categories = parse_categories(ctx, obj)
    cats = _Categories(categories)
    anns = records(ctx, obj, "annotations")
    check_unique_ids(ctx, anns, "annotations")
    members: dict[tuple[int, Any], list[int]] = {}
    for i, a in enumerate(anns):
        key = ctx.attempt(_group_key, ctx, a, f"annotations[{i}]", images, wanted)
        if key is not None:
            members.setdefault(key, []).append(i)
    parse_region = REGION_PARSERS[fmt]

    def groups():
        for (image_id, _), idx in members.items():
            image = images[image_id]
            shape = (image["height"], image["width"])
            if not ctx.attempt(check_instance_count, ctx, len(idx), f"annotations[{idx[-1]}]"):
                continue  # validating: the count is recorded as a violation
            regions = [ctx.attempt(parse_region, ctx, anns[i], f"annotations[{i}]", shape, cats) for i in idx]
            if any(r is None for r in regions):
                continue
            bases = [anns[i]["amodal_base"] for i in idx if isinstance(anns[i].get("amodal_base"), dict)]
            base = bases[0] if bases and fmt == "coco" else None
            yield Group(
                "",
                image,
                regions,
                copy.deepcopy(base) if isinstance(base, dict) else {},
                order_kind=_order_kind(regions),
            )

    used = {image_id for image_id, _ in members}
    return Parsed(
        fmt,
        groups(),
        [] if cats.agnostic else copy.deepcopy(categories),
        copy.deepcopy(split_known(obj, {"images", "annotations", "categories"})),
        [rec for iid, rec in images.items() if rec is not None and iid not in used and wanted(iid)],
    )


def _order_kind(regions: list[Region]) -> str:
    """COCO-style depth: ``amodal_region.order`` is the rank in the object's COCOA record. Distinct in every
    record of an image, it is the image's order; tied, as in D2SA, where each object is a record of its own
    (``amodal_base.size`` 1, ``order`` 1), it says nothing between objects and the masks order them."""
    if not all(r.order_path for r in regions):
        return "inferred"
    return "explicit" if len({r.order for r in regions}) == len(regions) else "tied"


# ----- writing ----------------------------------------------------------------------------------
def category_table(annset: AnnotationSet) -> tuple[list[dict[str, Any]], int]:
    """Categories to write (every referenced id has an entry) and the id given to instances without a
    category: the single ``{"id": 1, "name": "object"}`` for class-agnostic data."""
    cats = copy.deepcopy(annset.categories)
    known = {c["id"] for c in cats}
    names: dict[int, set[str]] = {}
    for facts in annset.instance_facts():
        for inst in facts:
            names.setdefault(inst.category, set()).add(inst.name)
    for cid in sorted(c for c in names if c is not None and c not in known):
        # An id without an entry (e.g. uploaded predictions) is named after its instances when they agree.
        only = names[cid].pop() if len(names[cid]) == 1 else ""
        cats.append({"id": cid, "name": only or str(cid)})
        known.add(cid)
    used = set(names)
    default = AGNOSTIC["id"] if not known else max(known) + 1
    if None in used or not cats:
        cats.append({"id": default, "name": AGNOSTIC["name"]})
    return cats, default


def _exact_polygons(polygons: list | None, amodal_rle: dict[str, Any]) -> list | None:
    """Copies of the instance's polygons when they rasterise exactly to its mask (``amodal_rle``)."""
    if polygons and rle_same(polygons_to_rle(polygons, *amodal_rle["size"]), amodal_rle):
        return [list(p) for p in polygons]
    return None


def to_coco(annset: AnnotationSet) -> dict[str, Any]:
    """COCO-style amodal JSON (pycocotools-readable); depth, names and the COCOA header survive in
    ``amodal_region`` / ``amodal_base``."""
    return materialize(coco_document(annset))


def coco_document(annset: AnnotationSet) -> dict[str, Any]:
    """`to_coco`'s document with the annotations `Streamed`: one scene decoded at a time."""
    categories, default_cat = category_table(annset)
    return _document(annset, categories, Streamed(_coco_annotations(annset, default_cat, _instance_ids_kept(annset))))


def _coco_annotations(annset: AnnotationSet, default_cat: int, keep_ids: bool) -> Iterator[dict[str, Any]]:
    count = 0
    for scene in annset.scenes:
        base = annotation_header(scene, scene.annotation.get("id")) if scene.annotation else None
        for inst, vis in zip(scene.instances, scene.iter_visible_masks()):
            area = inst.area
            hidden = inst.amodal & ~vis
            n_hidden = int(np.count_nonzero(hidden))
            visible_rle = mask_to_rle(vis)
            hidden_rle = mask_to_rle(hidden) if n_hidden else None
            # The visible and hidden parts partition the amodal mask: its RLE is their union, not a third encoding.
            amodal_rle = visible_rle if hidden_rle is None else rle_or(visible_rle, hidden_rle)
            polygons = _exact_polygons(inst.polygons, amodal_rle)
            bbox = inst.bbox()
            count += 1
            ann: dict[str, Any] = {
                "id": inst.id if keep_ids else count,
                "image_id": scene.image_id,
                "category_id": default_cat if inst.category is None else inst.category,
                "iscrowd": inst.extra.get("iscrowd", 0),
                "area": float(area),
                "bbox": bbox,
                "segmentation": polygons if polygons is not None else as_json_rle(amodal_rle),
                "visible_mask": as_json_rle(visible_rle),
            }
            if hidden_rle is not None:
                ann["invisible_mask"] = as_json_rle(hidden_rle)
            ann["occlude_rate"] = n_hidden / area if area else 0.0
            ann["amodal_region"] = {
                "name": inst.name,
                "area": float(area),
                "isStuff": int(inst.is_stuff),
                "bbox": bbox,
                "order": inst.rank,
            }
            if isinstance(inst.extra.get("amodal_region"), dict):
                for key, value in inst.extra["amodal_region"].items():
                    ann["amodal_region"].setdefault(key, copy.deepcopy(value))
            if base is not None:
                ann["amodal_base"] = copy.deepcopy(base)
            if inst.score is not None:
                ann["score"] = float(inst.score)
            for key, value in inst.extra.items():
                ann.setdefault(key, copy.deepcopy(value))
            yield ann


def _instance_ids_kept(annset: AnnotationSet) -> bool:
    """Whether instance ids can be the annotation ids (unique across the file and >= 1); else 1..N."""
    ids = [f.id for facts in annset.instance_facts() for f in facts]
    return len(set(ids)) == len(ids) and all(i >= 1 for i in ids)


def _document(annset: AnnotationSet, categories: list[dict[str, Any]], anns: Streamed) -> dict[str, Any]:
    """The file: images, categories, annotations, and the set's unknown top-level fields."""
    out: dict[str, Any] = {
        "images": copy.deepcopy(annset.image_records()),
        "categories": categories,
        "annotations": anns,
    }
    for key, value in annset.extra.items():
        out.setdefault(key, copy.deepcopy(value))
    return out


def kins_clusters(scene: AmodalScene) -> list[tuple[int, int]]:
    """KINS 2020's ``(oco_id, ico_id)`` per instance, from the scene's amodal masks and depth order.

    ``oco_id``: the instances whose amodal masks overlap, directly or through others, form a cluster,
    numbered 1, 2, ... per image by their front-most member's rank. ``ico_id``: inside a cluster, 1 for an
    instance nothing in front of it overlaps, else 1 + the largest ``ico_id`` of the overlapping instances in
    front of it ("+1 each time occluded"). So of two overlapping instances the front one always has the
    smaller ``ico_id``, which is all the KINS order protocol reads; two that do not overlap may share one (no
    order is claimed between them). An instance that overlaps nothing is ``(0, 0)``: the KINS README labels
    non-overlapping instances 0, and that is how the KINS 2020 files state them."""
    n = len(scene.instances)
    ranks = scene.ranks()
    crops, boxes = [i.amodal_crop for i in scene.instances], [i.box for i in scene.instances]
    pairs = overlapping_pairs(ranks, crops, boxes)  # (front, back), front first
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    in_front: list[list[int]] = [[] for _ in range(n)]
    for front, back in pairs:
        parent[root(back)] = root(front)
        in_front[back].append(front)
    ico = [0] * n
    for i in sorted(range(n), key=lambda k: ranks[k]):  # front to back: the ones in front are numbered first
        ico[i] = 1 + max((ico[f] for f in in_front[i]), default=0)
    clustered = {root(i) for front, back in pairs for i in (front, back)}
    numbers: dict[int, int] = {}
    for i in sorted(range(n), key=lambda k: ranks[k]):
        if root(i) in clustered and root(i) not in numbers:
            numbers[root(i)] = len(numbers) + 1
    return [(numbers[root(i)], ico[i]) if root(i) in numbers else (0, 0) for i in range(n)]


def _stated_clusters(scene: AmodalScene) -> list[tuple[int, int]] | None:
    """The instances' own ``(oco_id, ico_id)`` (as read from a KINS 2020 file) when every instance has one and
    the scene's order still agrees with them (inside a cluster a smaller ``ico_id`` is in front), else None:
    an unedited KINS file keeps its clusters, a reordered or extended scene gets `kins_clusters`."""
    clusters = [inst.cluster for inst in scene.instances]
    if any(c is None for c in clusters):
        return None
    for a, ca in zip(scene.instances, clusters):
        for b, cb in zip(scene.instances, clusters):
            if ca[0] > 0 and ca[0] == cb[0] and ca[1] < cb[1] and a.rank > b.rank:
                return None
    return [(int(c[0]), int(c[1])) for c in clusters]


def to_kins(annset: AnnotationSet) -> dict[str, Any]:
    """KINS 2020 JSON (``update_*_2020.json`` fields: ``a_segm``/``a_bbox``/``a_area`` amodal, ``i_segm``/
    ``i_bbox``/``i_area`` visible, ``oco_id``/``ico_id`` as read while the order still agrees with them,
    else from `kins_clusters`), plus what pycocotools' COCOeval needs: ``iscrowd`` and copies
    ``segmentation``/``bbox``/``area`` of the amodal fields. KINS has no instance names, stuff flags or
    order between instances that do not overlap: those are not kept (names read back as category names)."""
    return materialize(kins_document(annset))


def kins_document(annset: AnnotationSet) -> dict[str, Any]:
    """`to_kins`' document with the annotations `Streamed`: one scene decoded at a time."""
    categories, default_cat = category_table(annset)
    per_image: dict[int, int] = {}
    for image in annset.scene_images():  # records only: a compact set is not decoded twice
        per_image[int(image["id"])] = per_image.get(int(image["id"]), 0) + 1
    several = sorted(i for i, count in per_image.items() if count > 1)
    if several:
        raise ConfigError(
            f"KINS holds one annotation per image, but images {several[:5]} have several "
            "scenes (e.g. BSDS annotators in COCOA): write COCOA or COCO-style instead"
        )
    return _document(annset, categories, Streamed(_kins_annotations(annset, default_cat, _instance_ids_kept(annset))))


def _kins_annotations(annset: AnnotationSet, default_cat: int, keep_ids: bool) -> Iterator[dict[str, Any]]:
    count = 0
    for scene in annset.scenes:
        clusters = _stated_clusters(scene) or kins_clusters(scene)
        for inst, vis, (oco, ico) in zip(scene.instances, scene.iter_visible_masks(), clusters):
            amodal_rle = mask_to_rle(inst.amodal)
            polygons = _exact_polygons(inst.polygons, amodal_rle)
            segm = polygons if polygons is not None else as_json_rle(amodal_rle)
            bbox, area = inst.bbox(), float(inst.area)
            count += 1
            ann: dict[str, Any] = {
                "id": inst.id if keep_ids else count,
                "image_id": scene.image_id,
                "category_id": default_cat if inst.category is None else inst.category,
                "iscrowd": inst.extra.get("iscrowd", 0),  # pycocotools' COCOeval reads it
                "a_segm": segm,
                "a_bbox": bbox,
                "a_area": area,
                "i_segm": encode_rle(vis),
                "i_bbox": box_xywh(mask_box(vis)),
                "i_area": float(np.count_nonzero(vis)),
                "oco_id": oco,
                "ico_id": ico,
                "segmentation": copy.deepcopy(segm),
                "bbox": list(bbox),
                "area": area,
            }
            for key, value in inst.extra.items():
                ann.setdefault(key, copy.deepcopy(value))
            yield ann
