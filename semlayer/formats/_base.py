"""What every reader shares: the error context, typed field access, mask parsing and scene building.

Readers parse a file into `Group`s (one future scene each: an image, the annotation header and its
`Region`s with the masks *as the file states them*). `build_scene` turns a group into an `AmodalScene`;
`semlayer.formats.validate` checks the same groups for consistency, so readers and validator share one
parser and cannot disagree on what a file means.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NoReturn, Sequence, TypeVar

import numpy as np

from ..boxes import Box, crop_over, crop_to_box, paste_crop
from ..errors import FormatError
from ..images import MAX_PIXELS
from ..order import Constraint, constraints_from_clusters, constraints_from_overlap, ranks_from_constraints
from ..scene import AmodalScene, Instance, renumber_ranks
from .masks import (
    encode_rle,
    mask_to_rle,
    polygons_to_rle,
    pycoco_rle,
    rle_and,
    rle_area,
    rle_counts,
    rle_or,
    rle_to_mask,
)

T = TypeVar("T")

POLYGON = "a flat list of an even number (>= 6) of numbers"
# Masks are held as dense boolean arrays: refuse sizes no image has rather than exhaust memory.
MAX_SIDE = 65535
SIDE = f"an integer from 1 to {MAX_SIDE}"
# A declared size is a promise of memory (a mask per instance): at most what the image reader accepts
# (`semlayer.images.MAX_PIXELS`, the one setting for both), and at most this many instances per image.
MAX_INSTANCES = 4096


def check_instance_count(ctx: Context, count: int, path: str) -> bool:
    if count > MAX_INSTANCES:
        ctx.fail(path, f"at most {MAX_INSTANCES} instances per image, got {count}")
    return True


@dataclass(frozen=True)
class Violation:
    """One problem found by `validate`: where (a JSON path) and what was expected there."""

    json_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.json_path}: {self.message}" if self.json_path else self.message


@dataclass(frozen=True)
class Repair:
    """Something a reader changed to read a valid file, counted at the JSON path that states it:
    ``kind`` "padded" (a mask larger than its image, cropped; ``detail`` its size), "outside" (stated visible
    pixels outside the amodal mask) or "under" (stated visible pixels under an instance in front); ``px``
    the pixels dropped."""

    kind: str
    json_path: str
    px: int
    detail: str = ""


class Context:
    """Names the source in errors. With ``violations`` set (validation), a bad record is recorded and
    skipped instead of ending the read, so one pass reports every problem. ``repairs`` collects what
    the readers changed to read the file (reported on loading and by `validate`)."""

    def __init__(self, source: str, violations: list[Violation] | None = None):
        self.source = source
        self.violations = violations
        self.repairs: list[Repair] = []

    def fail(self, path: str, expected: str) -> NoReturn:
        raise FormatError(self.source, path, expected)

    def attempt(self, parse: Callable[..., T], *args: Any) -> T | None:
        """``parse(*args)``; when validating, a FormatError becomes a violation and the result is None."""
        if self.violations is None:
            return parse(*args)
        try:
            return parse(*args)
        except FormatError as err:
            self.violations.append(Violation(err.json_path, err.expected))
            return None

    def error(self, path: str, expected: str) -> None:
        """Fail when reading; when validating, record the problem and go on."""
        self.attempt(self.fail, path, expected)

    def report(self, path: str, message: str) -> None:
        """A consistency problem: only validation looks for these."""
        if self.violations is not None:
            self.violations.append(Violation(path, message))


# ----- JSON values ------------------------------------------------------------------------------
def kind(value: Any) -> str:
    """How a JSON value reads in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite JSON number (Python ints are always finite, and may be too big for a float)."""
    return is_int(value) or (isinstance(value, float) and math.isfinite(value))


def is_flag(value: Any) -> bool:
    """COCOA's 0/1 flags (``isStuff``, ``iscrowd``); D2SA writes booleans."""
    return isinstance(value, bool) or (is_int(value) and value in (0, 1))


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def take(
    ctx: Context, rec: dict, key: str, path: str, ok: Callable[[Any], bool], expected: str, default: Any = ...
) -> Any:
    """``rec[key]`` checked by ``ok``; missing keys get ``default`` or fail when there is none."""
    if key not in rec:
        if default is ...:
            ctx.fail(join(path, key), f"{expected} (the key is missing)")
        return default
    value = rec[key]
    if not ok(value):
        ctx.fail(join(path, key), f"{expected}, got {kind(value)}")
    return value


def records(ctx: Context, obj: dict, key: str) -> list:
    """A top-level list of records (``images``, ``annotations``, ``categories``)."""
    return take(ctx, obj, key, "", lambda v: isinstance(v, list), "a list of objects")


def record(ctx: Context, value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        ctx.fail(path, f"an object, got {kind(value)}")
    return value


# ----- masks ------------------------------------------------------------------------------------
class LazyMask:
    """A mask as the file states it: pycocotools RLE, decoded to a boolean frame only when something needs
    its pixels (a scene, or a check that pixel counts on the RLE cannot answer)."""

    __slots__ = ("rle", "_frame")

    def __init__(self, rle: dict[str, Any], frame: np.ndarray | None = None):
        self.rle = rle
        self._frame = frame

    @classmethod
    def of_frame(cls, frame: np.ndarray) -> LazyMask:
        return cls(mask_to_rle(frame), frame)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.rle["size"][0]), int(self.rle["size"][1])

    @property
    def frame(self) -> np.ndarray:
        if self._frame is None:
            self._frame = rle_to_mask(self.rle)
        return self._frame

    @property
    def area(self) -> int:
        return rle_area(self.rle)

    def crop(self) -> tuple[np.ndarray, Box]:
        """The mask as ``(crop, box)`` in its tight box; a frame decoded for it is not kept, so a region's
        memory follows its box."""
        frame = self._frame if self._frame is not None else rle_to_mask(self.rle)
        return crop_to_box(frame)


def _numbers(value: Any) -> bool:
    # exact type test: this runs on every polygon coordinate of a dataset (bool is no number here)
    return isinstance(value, list) and all(type(v) is float or type(v) is int for v in value)


def parse_polygon(ctx: Context, value: Any, path: str, shape: tuple[int, int], min_numbers: int = 6) -> list:
    if not _numbers(value) or len(value) < min_numbers or len(value) % 2:
        if _numbers(value):
            ctx.fail(path, f"{POLYGON}, got a list of {len(value)} numbers")
        ctx.fail(path, f"{POLYGON}, got {kind(value)}")
    # pycocotools turns every edge into points at 5x resolution (and crashes on huge values): a polygon
    # must stay within one image size of the image.
    h, w = shape
    inside = all(-w <= x <= 2 * w for x in value[0::2]) and all(-h <= y <= 2 * h for y in value[1::2])
    if not inside:  # also catches NaN and infinities
        ctx.fail(
            path,
            f"polygon points with x in [{-w}, {2 * w}] and y in [{-h}, {2 * h}] (the {h} x {w} image "
            "and one image size around it)",
        )
    return value


def parse_rle(ctx: Context, value: dict, path: str, shape: tuple[int, int] | None, padded_ok: bool = False) -> LazyMask:
    """Check a COCO RLE against the image size (``shape``; None: take the RLE's own size).

    ``padded_ok``: a mask up to twice the image's height and width, as D2SA pads masks of objects that
    overflow the frame, is cropped to the image (top-left, as pycocotools users index it) and recorded as a
    `Repair`."""
    size = value.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(is_int(v) and 0 < v <= MAX_SIDE for v in size)):
        ctx.fail(join(path, "size"), f"[height, width], each {SIDE}, got {kind(size)}")
    padded = shape is not None and tuple(size) != shape and padded_ok and size[0] >= shape[0] and size[1] >= shape[1]
    if padded and (size[0] > 2 * shape[0] or size[1] > 2 * shape[1]):
        ctx.fail(
            join(path, "size"),
            f"[{shape[0]}, {shape[1]}] (the image's height and width), or a mask padded "
            f"to at most [{2 * shape[0]}, {2 * shape[1]}], got {size}",
        )
    if shape is not None and tuple(size) != shape and not padded:
        ctx.fail(join(path, "size"), f"[{shape[0]}, {shape[1]}] (the image's height and width), got {size}")
    h, w = size
    if shape is None and h * w > MAX_PIXELS:  # (with an image record, its checked size bounds this one)
        ctx.fail(join(path, "size"), f"at most {MAX_PIXELS} pixels (height x width), got {h} x {w}")
    counts = value.get("counts")
    if isinstance(counts, str):
        runs = rle_counts(counts)
        if runs is None:
            ctx.fail(join(path, "counts"), "a COCO compressed RLE string")
    elif isinstance(counts, list) and all(is_int(v) and 0 <= v <= h * w for v in counts):
        runs = np.asarray(counts, np.int64)
    else:
        ctx.fail(
            join(path, "counts"),
            f"a COCO RLE string or a list of run lengths (integers from 0 to {h * w}), got {kind(counts)}",
        )
    if int(runs.sum()) != h * w:
        ctx.fail(join(path, "counts"), f"runs that add up to {h} x {w} = {h * w} pixels, got {int(runs.sum())}")
    rle = pycoco_rle({"size": [h, w], "counts": counts})
    if padded:
        mask = rle_to_mask(rle)
        inside = np.asfortranarray(mask[: shape[0], : shape[1]])  # decoded masks are Fortran-ordered; stay so
        ctx.repairs.append(Repair("padded", path, int(mask.sum()) - int(inside.sum()), f"{h} x {w}"))
        return LazyMask.of_frame(inside)
    return LazyMask(rle)


def parse_mask(
    ctx: Context, value: Any, path: str, shape: tuple[int, int], flat_ok: bool = True, padded_ok: bool = False
) -> tuple[LazyMask, list | None]:
    """A COCO mask: RLE, polygons ``[[...], ...]`` or (``flat_ok``) one flat polygon.
    Returns the mask and the polygons it came from (None for RLE). ``padded_ok``: see `parse_rle`."""
    if isinstance(value, dict):
        return parse_rle(ctx, value, path, shape, padded_ok), None
    if isinstance(value, list) and value and all(isinstance(p, list) for p in value):
        # Inside a list, degenerate polygons (fewer than 3 points: no area) occur in real COCO-style files.
        # They are kept for writing back; polygons_to_rle skips them.
        polygons = [parse_polygon(ctx, p, join(path, i), shape, min_numbers=0) for i, p in enumerate(value)]
        if not any(len(p) >= 6 for p in polygons):
            ctx.fail(path, f"at least one polygon of 3 or more points ({POLYGON})")
        return LazyMask(polygons_to_rle(polygons, *shape)), polygons
    if flat_ok and value and _numbers(value):
        polygon = parse_polygon(ctx, value, path, shape)
        return LazyMask(polygons_to_rle([polygon], *shape)), [polygon]
    ctx.fail(path, f"a COCO RLE {{size, counts}} or a non-empty list of polygons ({POLYGON} each), got {kind(value)}")


def parse_image(ctx: Context, value: Any, path: str) -> dict:
    rec = record(ctx, value, path)
    take(ctx, rec, "id", path, is_int, "an integer image id")
    for key in ("height", "width"):
        take(ctx, rec, key, path, lambda v: is_int(v) and 0 < v <= MAX_SIDE, SIDE)
    if rec["height"] * rec["width"] > MAX_PIXELS:
        ctx.fail(
            path,
            f"an image of at most {MAX_PIXELS} pixels (height x width), the image reader's limit; "
            f"got {rec['height']} x {rec['width']}",
        )
    return rec


def image_index(ctx: Context, images: list, path: str = "images") -> dict[int, dict | None]:
    """Image records by id. When validating, a bad record maps to None: its annotations are skipped
    without a second report."""
    out: dict[int, dict | None] = {}
    where: dict[int, int] = {}
    for i, value in enumerate(images):
        rec = ctx.attempt(parse_image, ctx, value, join(path, i))
        if rec is None:
            rid = value.get("id") if isinstance(value, dict) else None
            if is_int(rid) and rid not in out:
                out[rid], where[rid] = None, i
            continue
        if rec["id"] in out:
            rid = rec["id"]
            ctx.error(join(join(path, i), "id"), f"a unique image id; {path}[{where[rid]}] has id {rid} too")
            continue
        out[rec["id"]] = copy.deepcopy(rec)  # scenes own their image record; the caller's JSON stays untouched
        where[rec["id"]] = i
    return out


def check_unique_ids(ctx: Context, recs: list, path: str) -> None:
    """Duplicate ``id``s in a list of records (annotations, categories)."""
    seen: dict[int, int] = {}
    for i, rec in enumerate(recs):
        rid = rec.get("id") if isinstance(rec, dict) else None
        if not is_int(rid):
            continue
        if rid in seen:
            ctx.error(join(join(path, i), "id"), f"a unique id; {path}[{seen[rid]}] has id {rid} too")
        else:
            seen[rid] = i


# ----- groups and scenes ------------------------------------------------------------------------
@dataclass(eq=False)
class Region:
    """One instance as its record states it (masks as stated, decoded on first use; nothing derived yet)."""

    path: str
    id: int
    amodal_mask: LazyMask
    polygons: list | None = None
    visible_mask: LazyMask | None = None
    invisible_mask: LazyMask | None = None
    occlude_rate: float | None = None
    order: float | None = None  # explicit depth key, smaller = more in front
    order_path: str = ""
    occl_depth: float | None = None  # D2SA's; only breaks ties the masks leave (docs/formats.md)
    visible_key: str = "visible_mask"  # the key that states the visible mask, for messages
    name: str = ""
    category: int | None = None
    is_stuff: bool = False
    score: float | None = None
    cluster: tuple[int, int] | None = None  # KINS 2020 (oco_id, ico_id)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def amodal(self) -> np.ndarray:
        return self.amodal_mask.frame

    @property
    def visible(self) -> np.ndarray | None:
        return None if self.visible_mask is None else self.visible_mask.frame

    @property
    def invisible(self) -> np.ndarray | None:
        return None if self.invisible_mask is None else self.invisible_mask.frame

    def amodal_crop(self) -> tuple[np.ndarray, Box]:
        return self.amodal_mask.crop()

    def visible_or_amodal_crop(self) -> tuple[np.ndarray, Box]:
        """`visible_or_amodal` as ``(crop, box)``, decoding no frame that is kept."""
        if self.visible_mask is not None:
            return self.visible_mask.crop()
        amodal, box = self.amodal_crop()
        if self.invisible_mask is None:
            return amodal, box
        return amodal & ~crop_over(*self.invisible_mask.crop(), box), box

    def visible_or_amodal(self) -> np.ndarray:
        """The visible mask as stated (``visible_mask``, else amodal minus ``invisible_mask``)."""
        if self.visible is not None:
            return self.visible
        if self.invisible is not None:
            return self.amodal & ~self.invisible
        return self.amodal


@dataclass
class Group:
    """The records that form one scene."""

    path: str
    image: dict[str, Any]
    regions: list[Region]
    annotation: dict[str, Any] = field(default_factory=dict)
    tie_break: list[float] | None = None  # for orders inferred from the masks (default: record order)
    # "explicit": every region has an authoritative rank; "tied": every region has one, but some are equal
    # (D2SA), and the masks order the tied ones; "inferred": the masks decide
    order_kind: str = "inferred"


@dataclass
class Parsed:
    """A file read up to its groups, which are decoded lazily (one scene's masks at a time)."""

    format: str
    groups: Iterator[Group]
    categories: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    unannotated: list[dict[str, Any]] = field(default_factory=list)


def parse_categories(ctx: Context, obj: dict) -> list[dict]:
    """``categories`` (optional): objects with a unique integer ``id`` and a string ``name``."""
    cats = records(ctx, obj, "categories") if "categories" in obj else []
    out = []
    for i, value in enumerate(cats):
        path = f"categories[{i}]"
        rec = ctx.attempt(record, ctx, value, path)
        if rec is None or ctx.attempt(take, ctx, rec, "id", path, is_int, "an integer category id") is None:
            continue
        if ctx.attempt(take, ctx, rec, "name", path, lambda v: isinstance(v, str), "a string", "") is None:
            continue
        out.append(rec)
    check_unique_ids(ctx, cats, "categories")
    return out


def group_ranks(group: Group) -> list[int]:
    """Ranks 1..N: the explicit depth keys when every region has a distinct one, else the order evidence of
    the masks (visible over amodal overlap; only between regions of equal key when every region has one),
    with KINS 2020 clusters taking precedence inside a cluster. What the evidence leaves open goes by key,
    then by D2SA's ``occl_depth`` (larger in front: docs/formats.md), then by ``group.tie_break``."""
    regions = group.regions
    n = len(regions)
    keys = [r.order for r in regions]
    keyed = n > 0 and all(k is not None for k in keys)
    if keyed and len(set(keys)) == n:
        return renumber_ranks(keys)  # (no mask decoded)
    amodal, amodal_boxes = zip(*(r.amodal_crop() for r in regions)) if regions else ((), ())
    # Tied keys (D2SA gives every object order 1): constraints only inside a tie never put an object before
    # one of a smaller key, so the keys still order the pairs that do not tie.
    tied = [(i, j) for i in range(n) for j in range(i + 1, n) if keys[i] == keys[j]] if keyed else None
    visible, visible_boxes = zip(*(r.visible_or_amodal_crop() for r in regions)) if regions else ((), ())
    evidence = constraints_from_overlap(visible, amodal, tied, visible_boxes, amodal_boxes)
    if any(r.cluster is not None for r in regions):
        clusters = [r.cluster or (0, 0) for r in regions]
        same = {(i, j) for i in range(n) for j in range(n) if clusters[i][0] > 0 and clusters[i][0] == clusters[j][0]}
        evidence = [c for c in evidence if (c.front, c.back) not in same]
        # Annotated cluster ranks outweigh any pixel evidence across clusters.
        strong = float(sum(int(np.count_nonzero(m)) for m in amodal) + 1)
        evidence += [
            Constraint(c.front, c.back, strong)
            for c in constraints_from_clusters([c[0] for c in clusters], [c[1] for c in clusters])
        ]
    base = group.tie_break if group.tie_break is not None else list(range(n))
    depth = all(r.occl_depth is not None for r in regions)
    tie_break = [(keys[i] if keyed else 0, -regions[i].occl_depth if depth else 0, base[i]) for i in range(n)]
    return ranks_from_constraints(n, evidence, tie_break=tie_break).ranks


def _copy_polygons(polygons: list | None) -> list | None:
    """A copy of flat polygons (lists of numbers, which are immutable): what deepcopy gives, without its
    per-number bookkeeping."""
    return None if polygons is None else [list(p) for p in polygons]


def build_scene(group: Group, repairs: list[Repair] | None = None) -> AmodalScene:
    """The group's scene. ``repairs``: gets the stated visible pixels the scene cannot hold (outside the
    amodal mask, or under an instance in front), per region that states a visible or invisible mask.

    What the stated masks add to the amodal masks is counted on their RLEs first: a stated visible mask is
    decoded only where it hides pixels that no instance in front covers (external occlusion) or shows
    pixels under one (kept as the instance's ``stated_visible``)."""
    ranks = group_ranks(group)
    shape = (int(group.image["height"]), int(group.image["width"]))
    instances = [
        Instance.from_crop(
            r.id,
            *r.amodal_crop(),
            shape,
            rank=rank,
            name=r.name,
            category=r.category,
            is_stuff=r.is_stuff,
            score=r.score,
            polygons=_copy_polygons(r.polygons),
            extra=r.extra,
            cluster=r.cluster,
        )
        for r, rank in zip(group.regions, ranks)
    ]
    scene = AmodalScene(group.image, instances, group.annotation)
    counts = stated_occlusion(group.regions, ranks)
    # Where nothing is hidden but by instances in front, the amodal mask gives the same scene as the stated one.
    stated = [
        r.visible_or_amodal_crop() if hidden else r.amodal_crop() for r, (_, hidden) in zip(group.regions, counts)
    ]
    scene.set_visible_crops([crop for crop, _ in stated], [box for _, box in stated])
    for inst, r, (under, _) in zip(scene.instances, group.regions, counts):
        inst.stated_occlude_rate = None if r.occlude_rate is None else float(r.occlude_rate)
        if r.visible_mask is None and r.invisible_mask is None:
            continue  # nothing stated: the whole amodal mask is visible unless something is in front
        if under:  # the painter's rule hides stated visible pixels: the file's visible mask is kept too
            visible = crop_over(*r.visible_or_amodal_crop(), inst.box) & inst.amodal_crop
            inst.stated_visible = encode_rle(paste_crop(visible, inst.box, scene.shape))
        if repairs is not None:
            repairs += stated_repairs(r, under)
    return scene


def stated_repairs(region: Region, under: int) -> list[Repair]:
    """What reading a region that states a visible or invisible mask repairs: its stated visible pixels
    outside its amodal mask, and the ``under`` pixels (`stated_occlusion`) under an instance in front."""
    out = []
    if region.visible_mask is not None:
        outside = region.visible_mask.area - rle_area(rle_and(region.visible_mask.rle, region.amodal_mask.rle))
        if outside:
            out.append(Repair("outside", join(region.path, region.visible_key), outside))
    if under:
        out.append(Repair("under", region.path, under))
    return out


def stated_occlusion(regions: list[Region], keys: Sequence[float]) -> list[tuple[int, int]]:
    """Per region (record order), counted on the RLEs with the regions of smaller ``keys`` in front: its
    stated visible pixels (in its amodal mask) under a region in front, and its hidden pixels that no
    region in front covers (external occlusion)."""
    by_order = sorted(range(len(regions)), key=lambda i: keys[i])
    out = [(0, 0)] * len(regions)
    front: dict[str, Any] | None = None  # union of the amodal masks of the regions in front
    done = 0  # regions by_order[:done] are in front
    for i in by_order:
        r = regions[i]
        while keys[by_order[done]] < keys[i]:
            amodal = regions[by_order[done]].amodal_mask.rle
            front = amodal if front is None else rle_or(front, amodal)
            done += 1
        amodal = r.amodal_mask.rle
        in_front = 0 if front is None else rle_area(rle_and(amodal, front))
        if r.visible_mask is not None:  # visible: the amodal mask's part of the visible mask
            visible = rle_and(amodal, r.visible_mask.rle)
            under = 0 if front is None else rle_area(rle_and(visible, front))
            seen = rle_area(visible) if front is None else rle_area(rle_and(amodal, rle_or(r.visible_mask.rle, front)))
            out[i] = (under, rle_area(amodal) - seen)
        elif r.invisible_mask is not None:  # visible: the amodal mask minus the invisible mask
            hidden = rle_and(amodal, r.invisible_mask.rle)
            hidden_in_front = 0 if front is None else rle_area(rle_and(hidden, front))
            out[i] = (in_front - hidden_in_front, rle_area(hidden) - hidden_in_front)
        else:  # all of the amodal mask is visible
            out[i] = (in_front, 0)
    return out


def summary(
    items: list[tuple[str, int]], what: str, noun: str = "region", shown: int = 5, labels: list[str] | None = None
) -> str:
    """One line for ``(json path, px)`` items: their number, ``what`` (``{total}`` = the pixels in all),
    then the first ``shown`` paths with their pixels (or ``labels``)."""
    n = len(items)
    labels = labels or [f"{px} px" for _, px in items]
    listed = ", ".join(f"{path} ({label})" for (path, _), label in zip(items[:shown], labels))
    more = f" and {n - shown} more" if n > shown else ""
    total = sum(px for _, px in items)
    return f"{n} {noun}{'s' if n > 1 else ''} {what.format(total=total)}: {listed}{more}"


REPAIRS = {
    "padded": "larger than their image (padded, as D2SA pads objects that overflow the frame), read cropped to "
    "the image; {total} mask px beyond the image dropped",
    "outside": "whose visible mask reaches outside its amodal mask ({total} px in all, dropped: a visible pixel "
    "is part of the amodal mask)",
    "under": "whose visible mask reaches under an instance in front ({total} px in all; read as hidden, by the "
    "painter's rule)",
}


def repair_lines(repairs: list[Repair]) -> list[str]:
    """One line per kind of `Repair`, as `load` logs them and `validate` lists them in its notes."""
    lines = []
    for kind_, what in REPAIRS.items():
        found = [r for r in repairs if r.kind == kind_]
        if found:
            items = [(r.json_path, r.px) for r in found]
            if kind_ == "padded":
                lines.append(summary(items, what, "mask", labels=[f"{r.detail}, {r.px} px beyond" for r in found]))
            else:
                lines.append(summary(items, what))
    return lines


def split_known(rec: dict, known: frozenset[str] | set[str]) -> dict[str, Any]:
    """The fields of a record this project does not interpret (kept and written back)."""
    return {k: v for k, v in rec.items() if k not in known}


def annotation_image(
    ctx: Context, rec: dict, path: str, images: dict[int, dict | None], wanted: Callable[[int], bool]
) -> int | None:
    """The ``image_id`` of an annotation record, checked against the images; None when the image is not
    wanted (``image_ids``) or its record is broken (validating: that problem is reported already)."""
    image_id = take(ctx, rec, "image_id", path, is_int, "an integer image id")
    if not wanted(image_id):
        return None
    if image_id not in images:
        ctx.fail(join(path, "image_id"), f"the id of an entry in images; there is no image with id {image_id}")
    return None if images[image_id] is None else image_id
