"""The one in-memory model of an annotated (or predicted) image: `AmodalScene` and `Instance`.

Depth is a total order of ranks (1 = front-most, like COCOA's ``order``). Each instance stores its
amodal mask and an *external occlusion* mask ``E_i`` (pixels hidden by something that is not an annotated
instance). The visible mask is never stored; it is derived by the painter's rule::

    visible_i = amodal_i \\ (union of amodal_j for every j in front of i) \\ E_i

so a reorder changes exactly the pixels it should, and a file's visible masks survive a round trip.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from .boxes import box_xywh, mask_box

MOVES = ("forward", "backward", "front", "back")


def _as_mask(mask: np.ndarray, height: int, width: int, what: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.shape != (height, width):
        raise ValueError(f"{what}: expected a mask of shape {(height, width)}, got {arr.shape}")
    return arr.astype(bool, copy=False)


@dataclass(eq=False)
class Instance:
    """One object of a scene.

    ``amodal`` is the whole extent (bool HxW). ``polygons`` are source polygons (flat ``[x1, y1, ...]``
    lists, absolute pixels) that rasterise exactly to ``amodal``; they are dropped as soon as the mask is
    edited, so a writer can keep them only while they are still true. ``extra`` holds the fields of the
    source record this project does not interpret; writers put them back unchanged. ``cluster`` is KINS
    2020's annotated ``(oco_id, ico_id)`` as read (the evaluator's depth-order pairs); edits do not update
    it; the KINS writer writes it back while the scene's order still agrees with it, and the other writers
    state depth by their own fields.
    """

    id: int
    amodal: np.ndarray
    rank: int = 1
    name: str = ""
    category: int | None = None
    is_stuff: bool = False
    score: float | None = None
    external: np.ndarray | None = None
    polygons: list[list[float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    cluster: tuple[int, int] | None = None
    # A prediction attaches the network's map here: a `semdist.SemDistMap`, a crop of the instance's box (so
    # its memory follows the box, not the image), whose layers follow the scene's visible mask.
    semdist: Any = None
    # The occlusion the source record states, where it is not what the painter's rule gives (overlapping
    # detections need not agree with any one depth order): ``stated_visible`` as COCO RLE, inside the amodal
    # mask; ``stated_occlude_rate`` as the file has it. None when unstated. An edit of the order, of the
    # visibility or of this mask drops them: they describe the file, not the edited scene.
    stated_visible: dict[str, Any] | None = None
    stated_occlude_rate: float | None = None

    def __post_init__(self) -> None:
        self.amodal = np.asarray(self.amodal, dtype=bool)
        if self.amodal.ndim != 2:
            raise ValueError(f"instance {self.id}: amodal mask must be 2-D, got shape {self.amodal.shape}")
        if self.external is not None:
            h, w = self.amodal.shape
            self.external = _as_mask(self.external, h, w, f"instance {self.id} external mask")
            self.external = self.external & self.amodal
            if not self.external.any():
                self.external = None

    @property
    def layers(self) -> np.ndarray | None:
        """The predicted per-pixel layer over ``semdist.box`` (int8 crop, -1 outside), None without a map."""
        return None if self.semdist is None else self.semdist.layer_crop()

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.amodal))

    def bbox(self) -> list[float]:
        """Amodal box as COCO ``[x, y, w, h]`` (pixel-edge coordinates), all zeros when empty."""
        return box_xywh(mask_box(self.amodal))

    def set_amodal(self, mask: np.ndarray) -> None:
        """Replace the amodal mask; source polygons and dense predictions no longer describe it."""
        h, w = self.amodal.shape
        self.amodal = _as_mask(mask, h, w, f"instance {self.id} amodal mask").copy()
        self.polygons = None
        self.semdist = None
        self.drop_stated()
        if self.external is not None:
            self.external = self.external & self.amodal
            if not self.external.any():
                self.external = None

    def drop_stated(self) -> None:
        self.stated_visible = None
        self.stated_occlude_rate = None


@dataclass(eq=False)
class AmodalScene:
    """An image and its instances with a total depth order.

    ``instances`` keeps the source order (the order records had in the file); depth lives in each
    instance's ``rank``, a permutation of ``1..N``. ``image`` holds the image record's fields (``id``,
    ``file_name``, ``height``, ``width`` and whatever else the file had); ``annotation`` holds the fields of
    a COCOA annotation record (``id``, ``author``, ...) that are not regions.
    """

    image: dict[str, Any]
    instances: list[Instance] = field(default_factory=list)
    annotation: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("id", "height", "width"):
            if key not in self.image:
                raise ValueError(f"scene image record needs '{key}'")
        self.image.setdefault("file_name", "")
        for inst in self.instances:
            if inst.amodal.shape != self.shape:
                raise ValueError(
                    f"instance {inst.id}: mask shape {inst.amodal.shape} does not match image {self.shape}"
                )
        if self.instances:
            self.check_ranks()

    # ----- basic facts -------------------------------------------------------------------------
    @property
    def image_id(self) -> int:
        return int(self.image["id"])

    @property
    def height(self) -> int:
        return int(self.image["height"])

    @property
    def width(self) -> int:
        return int(self.image["width"])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def file_name(self) -> str:
        return str(self.image.get("file_name", ""))

    def __len__(self) -> int:
        return len(self.instances)

    def index_of(self, instance_id: int) -> int:
        for i, inst in enumerate(self.instances):
            if inst.id == instance_id:
                return i
        raise KeyError(f"scene {self.image_id} has no instance with id {instance_id}")

    def get(self, instance_id: int) -> Instance:
        return self.instances[self.index_of(instance_id)]

    def next_instance_id(self) -> int:
        return max((inst.id for inst in self.instances), default=0) + 1

    def copy(self) -> AmodalScene:
        return copy.deepcopy(self)

    # ----- depth order -------------------------------------------------------------------------
    def ranks(self) -> list[int]:
        return [inst.rank for inst in self.instances]

    def check_ranks(self) -> None:
        ranks = sorted(self.ranks())
        if ranks != list(range(1, len(ranks) + 1)):
            raise ValueError(f"scene {self.image_id}: ranks must be a permutation of 1..{len(ranks)}, got {ranks}")

    def front_to_back(self) -> list[int]:
        """Indices into ``instances`` sorted front-most first."""
        return sorted(range(len(self.instances)), key=lambda i: self.instances[i].rank)

    def set_order(self, front_to_back_ids: Sequence[int]) -> None:
        """Assign ranks 1..N following the given instance ids, front-most first."""
        ids = [inst.id for inst in self.instances]
        if sorted(front_to_back_ids) != sorted(ids):
            raise ValueError(f"order {list(front_to_back_ids)} must name every instance {ids} once")
        for rank, inst_id in enumerate(front_to_back_ids, start=1):
            self.get(inst_id).rank = rank
        for inst in self.instances:
            inst.drop_stated()

    def order_ids(self) -> list[int]:
        """Instance ids front-most first."""
        return [self.instances[i].id for i in self.front_to_back()]

    def move(self, instance_id: int, where: str) -> None:
        """Reorder one instance: ``forward``/``backward`` past the nearest instance in front of / behind it that
        overlaps it (`step_past`; stepping past one it does not touch would change nothing visible; none:
        no change), or to the ``front``/``back``."""
        if where not in MOVES:
            raise ValueError(f"move must be one of {MOVES}, got {where!r}")
        order = self.order_ids()
        pos = order.index(self.get(instance_id).id)
        if where in ("forward", "backward"):
            other = self.step_past(instance_id, where)
            if other is None:
                return
            order.pop(pos)
            at = order.index(other)
            order.insert(at if where == "forward" else at + 1, instance_id)
        else:
            order.pop(pos)
            order.insert(0 if where == "front" else len(order), instance_id)
        self.set_order(order)

    def step_past(self, instance_id: int, where: str) -> int | None:
        """The id of the instance a ``forward`` (``backward``) move passes: the nearest one in front of (behind)
        the given one whose amodal mask overlaps it; None when there is none that way."""
        if where not in ("forward", "backward"):
            raise ValueError(f"a step is forward or backward, got {where!r}")
        candidates = self.occluders(instance_id) if where == "forward" else self.occludees(instance_id)
        if not candidates:
            return None
        ranks = [self.get(i).rank for i in candidates]
        return candidates[ranks.index(max(ranks) if where == "forward" else min(ranks))]

    def put_in_front(self, front_id: int, behind_id: int) -> None:
        """Move ``front_id`` to just before ``behind_id`` when it is behind it; no change otherwise."""
        if front_id == behind_id:
            raise ValueError("an instance cannot be put in front of itself")
        order = self.order_ids()
        if order.index(front_id) < order.index(behind_id):
            return
        order.remove(front_id)
        order.insert(order.index(behind_id), front_id)
        self.set_order(order)

    # ----- derived masks -----------------------------------------------------------------------
    def _empty_mask(self) -> np.ndarray:
        """An all-False frame in the masks' memory order: masks decoded from RLE are Fortran-ordered, and
        mixing orders makes every operation strided (and the RLE encoder copy its input)."""
        fortran = bool(self.instances) and not self.instances[0].amodal.flags.c_contiguous
        return np.zeros(self.shape, dtype=bool, order="F" if fortran else "C")

    def visible_masks(self) -> list[np.ndarray]:
        """Visible mask of every instance (source order), by the painter's rule."""
        out: list[np.ndarray] = [np.zeros(0, bool)] * len(self.instances)
        covered = self._empty_mask()
        for i in self.front_to_back():
            inst = self.instances[i]
            vis = inst.amodal & ~covered
            if inst.external is not None:
                vis &= ~inst.external
            out[i] = vis
            covered |= inst.amodal
        return out

    def visible(self, instance_id: int) -> np.ndarray:
        inst = self.get(instance_id)
        vis = inst.amodal & ~self.front_union(instance_id)
        if inst.external is not None:
            vis &= ~inst.external
        return vis

    def occluded(self, instance_id: int) -> np.ndarray:
        inst = self.get(instance_id)
        return inst.amodal & ~self.visible(instance_id)

    def front_union(self, instance_id: int) -> np.ndarray:
        """Union of the amodal masks of every instance in front of the given one."""
        rank = self.get(instance_id).rank
        covered = self._empty_mask()
        for inst in self.instances:
            if inst.rank < rank:
                covered |= inst.amodal
        return covered

    def occlude_rates(self) -> list[float]:
        """|occluded| / |amodal| per instance (0.0 for an empty mask). Counted in each instance's box with
        one running union, so it holds one frame, not a visible mask per instance."""
        rates = [0.0] * len(self.instances)
        covered = self._empty_mask()
        for i in self.front_to_back():
            inst = self.instances[i]
            x0, y0, x1, y1 = mask_box(inst.amodal)
            box = (slice(y0, y1), slice(x0, x1))
            amodal = inst.amodal[box]
            hidden = amodal & covered[box]
            if inst.external is not None:
                hidden |= inst.external[box]
            area = int(np.count_nonzero(amodal))
            rates[i] = float(np.count_nonzero(hidden) / area) if area else 0.0
            covered[box] |= amodal
        return rates

    def occluders(self, instance_id: int) -> list[int]:
        """Ids of the instances in front of the given one whose amodal mask overlaps it."""
        inst = self.get(instance_id)
        return [o.id for o in self.instances if o.rank < inst.rank and (o.amodal & inst.amodal).any()]

    def occludees(self, instance_id: int) -> list[int]:
        """Ids of the instances behind the given one whose amodal mask overlaps it."""
        inst = self.get(instance_id)
        return [o.id for o in self.instances if o.rank > inst.rank and (o.amodal & inst.amodal).any()]

    def summary(self, rates: Sequence[float] | None = None) -> dict[str, Any]:
        """``{"image": {"id", "file_name", "height", "width"}, "instances": [{"id", "name", "category", "rank",
        "occlude_rate", "score", "bbox"}]}``, front first (``rates``: `occlude_rates` when already known)."""
        rates = self.occlude_rates() if rates is None else rates
        facts = [_instance_facts(inst, rate) for inst, rate in zip(self.instances, rates)]
        image = {k: self.image[k] for k in ("id", "file_name", "height", "width")}
        return {"image": image, "instances": sorted(facts, key=lambda d: d["rank"])}

    def instance_summary(self, instance_id: int, rates: Sequence[float] | None = None) -> dict[str, Any]:
        """One instance's entry of `summary`, plus ``is_stuff`` and who hides it and whom it hides."""
        i = self.index_of(instance_id)
        inst = self.instances[i]
        rate = (self.occlude_rates() if rates is None else rates)[i]
        return {**_instance_facts(inst, rate), "is_stuff": bool(inst.is_stuff),
                "occluders": self.occluders(inst.id), "occludees": self.occludees(inst.id)}  # fmt: skip

    def instances_at(self, x: int, y: int) -> list[int]:
        """Ids of the instances whose amodal mask covers pixel (x, y), front-most first."""
        if not (0 <= y < self.height and 0 <= x < self.width):
            return []
        return [self.instances[i].id for i in self.front_to_back() if self.instances[i].amodal[y, x]]

    # ----- editing -----------------------------------------------------------------------------
    def add(self, instance: Instance, rank: int | None = None) -> Instance:
        """Add an instance at ``rank`` (default: at the back); the others shift back."""
        if instance.amodal.shape != self.shape:
            raise ValueError(f"instance mask shape {instance.amodal.shape} does not match image {self.shape}")
        if any(inst.id == instance.id for inst in self.instances):
            raise ValueError(f"scene {self.image_id} already has an instance with id {instance.id}")
        order = self.order_ids()
        pos = len(order) if rank is None else min(max(rank - 1, 0), len(order))
        self.instances.append(instance)
        order.insert(pos, instance.id)
        self.set_order(order)
        return instance

    def remove(self, instance_id: int) -> Instance:
        inst = self.instances.pop(self.index_of(instance_id))
        self.set_order([i for i in self.order_ids()])
        return inst

    def set_visible(self, visible: Sequence[np.ndarray]) -> None:
        """Set each instance's external occlusion so that the painter's rule yields ``visible``.

        ``E_i = amodal_i \\ visible_i \\ union(front amodal)``. Visible pixels outside the amodal mask or
        under a front instance cannot be represented and are ignored (``validate`` reports them).
        """
        if len(visible) != len(self.instances):
            raise ValueError(f"expected {len(self.instances)} visible masks, got {len(visible)}")
        for inst in self.instances:
            inst.drop_stated()
        covered = self._empty_mask()
        for i in self.front_to_back():
            inst = self.instances[i]
            vis = _as_mask(visible[i], *self.shape, f"instance {inst.id} visible mask")
            # In the amodal mask's box: E is inside it, and whole-frame operations cost the image per instance.
            x0, y0, x1, y1 = mask_box(inst.amodal)
            box = (slice(y0, y1), slice(x0, x1))
            ext = inst.amodal[box] & ~vis[box] & ~covered[box]
            inst.external = None
            if ext.any():
                inst.external = np.zeros(self.shape, bool, order="F" if covered.flags.f_contiguous else "C")
                inst.external[box] = ext
            covered[box] |= inst.amodal[box]


class InstanceFacts(NamedTuple):
    """What the writers number and name instances by, without their masks."""

    id: int
    category: int | None
    name: str


def instance_facts(scene: AmodalScene) -> tuple[InstanceFacts, ...]:
    return tuple(InstanceFacts(inst.id, inst.category, inst.name) for inst in scene.instances)


def renumber_ranks(ranks: Iterable[float]) -> list[int]:
    """Dense ranks 1..N from any sortable keys (ties broken by position), front-most = smallest key."""
    keys = list(ranks)
    order = sorted(range(len(keys)), key=lambda i: (keys[i], i))
    out = [0] * len(keys)
    for r, i in enumerate(order, start=1):
        out[i] = r
    return out


@dataclass(eq=False)
class AnnotationSet:
    """The scenes of one annotation file, plus what the file holds besides them.

    ``format`` names the source format (``cocoa``, ``coco``, ``kins2019``, ``kins2020``). ``categories``
    are COCO category records (empty for class-agnostic COCOA). ``extra`` holds unknown top-level keys
    (``info``, ``licenses``, ...), written back unchanged. ``images`` lists image records that have no
    scene (an image nobody annotated), so they survive a round trip too.
    """

    scenes: Sequence[AmodalScene] = field(default_factory=list)  # a list, or a read-only CompactScenes
    categories: list[dict[str, Any]] = field(default_factory=list)
    format: str = "cocoa"
    extra: dict[str, Any] = field(default_factory=dict)
    images: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scenes)

    def __iter__(self) -> Iterator[AmodalScene]:
        return iter(self.scenes)

    def scenes_for_image(self, image_id: int) -> list[AmodalScene]:
        return [s for s in self.scenes if s.image_id == image_id]

    def category_names(self) -> dict[int, str]:
        return {int(c["id"]): str(c.get("name", c["id"])) for c in self.categories}

    def scene_images(self) -> list[dict[str, Any]]:
        """The image record of each scene (scene order), without decoding the masks of compact scenes."""
        images = getattr(self.scenes, "images", None)  # `formats.CompactScenes` keeps them apart
        return list(images) if images is not None else [s.image for s in self.scenes]

    def scene_annotations(self) -> list[dict[str, Any]]:
        """The annotation header of each scene (scene order), without decoding the masks of compact scenes."""
        headers = getattr(self.scenes, "annotations", None)  # `formats.CompactScenes` keeps them apart
        return list(headers) if headers is not None else [s.annotation for s in self.scenes]

    def instance_facts(self) -> list[tuple[InstanceFacts, ...]]:
        """Each scene's instances' ids, categories and names, without decoding the masks of compact scenes."""
        facts = getattr(self.scenes, "instance_facts", None)
        return list(facts) if facts is not None else [instance_facts(s) for s in self.scenes]

    def num_instances(self) -> int:
        """Instances over all scenes, without decoding the masks of compact scenes."""
        return sum(map(len, self.instance_facts()))

    def has_instance_categories(self) -> bool:
        """Whether any instance has a category, without decoding the masks of compact scenes."""
        return any(f.category is not None for scene in self.instance_facts() for f in scene)

    def image_records(self) -> list[dict[str, Any]]:
        """Every image record once, in first-seen order (scenes first, then images without scenes)."""
        seen: dict[int, dict[str, Any]] = {}
        for image in self.scene_images():
            seen.setdefault(int(image["id"]), image)
        for rec in self.images:
            seen.setdefault(int(rec["id"]), rec)
        return list(seen.values())


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def _instance_facts(inst: Instance, occlude_rate: float) -> dict[str, Any]:
    return {"id": inst.id, "name": inst.name, "category": inst.category, "rank": inst.rank,
            "occlude_rate": _rounded(occlude_rate), "score": _rounded(inst.score), "bbox": inst.bbox()}  # fmt: skip
