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
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from .boxes import EMPTY_BOX, Box, box_xywh, crop_over, crop_to_box, in_box, mask_box, meet_box, paste_crop

MOVES = ("forward", "backward", "front", "back")


def _as_mask(mask: np.ndarray, height: int, width: int, what: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.shape != (height, width):
        raise ValueError(f"{what}: expected a mask of shape {(height, width)}, got {arr.shape}")
    return arr.astype(bool, copy=False)


class Instance:
    """One object of a scene.

    The amodal mask is stored as a crop (``amodal_crop``, bool) in its tight box (``box``, `boxes.Box`) of a
    frame of ``shape``, so an instance's memory follows its box, not the image; ``amodal`` is the full-frame
    mask, built afresh on each access (a caller's copy: writing to it changes nothing), and assigning a
    full-frame mask to it crops it. The *external occlusion* mask lives in the same box (``external_crop``,
    or the full-frame ``external``, None when empty). ``polygons`` are source polygons (flat ``[x1, y1, ...]``
    lists, absolute pixels) that rasterise exactly to the amodal mask; they are dropped as soon as the mask
    is edited, so a writer can keep them only while they are still true. ``extra`` holds the fields of the
    source record this project does not interpret; writers put them back unchanged. ``cluster`` is KINS
    2020's annotated ``(oco_id, ico_id)`` as read (the evaluator's depth-order pairs); edits do not update
    it; the KINS writer writes it back while the scene's order still agrees with it, and the other writers
    state depth by their own fields.

    ``semdist``: a prediction attaches the network's map here, a `semdist.SemDistMap` crop of the
    instance's box, whose layers follow the scene's visible mask. ``stated_visible`` /
    ``stated_occlude_rate``: the occlusion the source record states, where it is not what the painter's
    rule gives (overlapping detections need not agree with any one depth order): the visible mask as COCO
    RLE, inside the amodal mask, and the rate as the file has it; None when unstated. An edit of the order,
    of the visibility or of this mask drops them: they describe the file, not the edited scene.

    Build it from a full-frame mask (``Instance(id, mask, ...)``) or from a crop (`Instance.from_crop`).
    """

    def __init__(
        self,
        id: int,
        amodal: np.ndarray,
        rank: int = 1,
        name: str = "",
        category: int | None = None,
        is_stuff: bool = False,
        score: float | None = None,
        external: np.ndarray | None = None,
        polygons: list[list[float]] | None = None,
        extra: dict[str, Any] | None = None,
        cluster: tuple[int, int] | None = None,
        semdist: Any = None,
        stated_visible: dict[str, Any] | None = None,
        stated_occlude_rate: float | None = None,
    ) -> None:
        self.id = id
        self.rank = rank
        self.name = name
        self.category = category
        self.is_stuff = is_stuff
        self.score = score
        self.polygons = polygons
        self.extra = {} if extra is None else extra
        self.cluster = cluster
        self.semdist = semdist
        self.stated_visible = stated_visible
        self.stated_occlude_rate = stated_occlude_rate
        mask = np.asarray(amodal, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"instance {self.id}: amodal mask must be 2-D, got shape {mask.shape}")
        self.shape: tuple[int, int] = (int(mask.shape[0]), int(mask.shape[1]))
        self.amodal_crop, self.box = crop_to_box(mask)
        self.external_crop: np.ndarray | None = None
        self.external = external

    @classmethod
    def from_crop(
        cls, id: int, crop: np.ndarray, box: Sequence[int], shape: tuple[int, int], **fields: Any
    ) -> Instance:
        """An instance whose amodal mask is ``crop`` placed at ``box`` (x0, y0, x1, y1) in a frame of
        ``shape``, without building that frame; ``external`` (keyword) may be a crop in the same box."""
        external = fields.pop("external", None)
        inst = cls(id, np.zeros((0, 0), bool), **fields)
        inst.shape = (int(shape[0]), int(shape[1]))
        inst.set_amodal_crop(crop, box)
        inst.set_external_crop(external)
        return inst

    def __repr__(self) -> str:
        return f"Instance(id={self.id}, rank={self.rank}, name={self.name!r}, box={self.box}, shape={self.shape})"

    # ----- masks -------------------------------------------------------------------------------
    @property
    def amodal(self) -> np.ndarray:
        """The full-frame amodal mask (a fresh array)."""
        return paste_crop(self.amodal_crop, self.box, self.shape)

    @amodal.setter
    def amodal(self, mask: np.ndarray) -> None:
        external = self.external
        self.amodal_crop, self.box = crop_to_box(_as_mask(mask, *self.shape, f"instance {self.id} amodal mask"))
        self.external = external

    @property
    def external(self) -> np.ndarray | None:
        """The full-frame external occlusion mask (a fresh array), None when there is none."""
        return None if self.external_crop is None else paste_crop(self.external_crop, self.box, self.shape)

    @external.setter
    def external(self, mask: np.ndarray | None) -> None:
        if mask is None:
            self.external_crop = None
            return
        x0, y0, x1, y1 = self.box
        self.set_external_crop(_as_mask(mask, *self.shape, f"instance {self.id} external mask")[y0:y1, x0:x1])

    def set_amodal_crop(self, crop: np.ndarray, box: Sequence[int]) -> None:
        """Store ``crop`` (placed at ``box`` in the frame) as the amodal mask, cut to its tight box; an
        external mask is kept where it stays inside. Polygons and predictions are not touched (`set_amodal`
        drops them)."""
        crop = np.asarray(crop, dtype=bool)
        bx0, by0, bx1, by1 = (int(v) for v in box)
        if crop.shape != (by1 - by0, bx1 - bx0) or bx0 < 0 or by0 < 0 or bx1 > self.shape[1] or by1 > self.shape[0]:
            raise ValueError(f"instance {self.id}: a crop of shape {crop.shape} does not fit box {tuple(box)}")
        external = self.external_crop
        old_box = self.box
        x0, y0, x1, y1 = tight = mask_box(crop)
        self.box = EMPTY_BOX if tight == EMPTY_BOX else (bx0 + x0, by0 + y0, bx0 + x1, by0 + y1)
        self.amodal_crop = crop[y0:y1, x0:x1].copy(order="K")  # owned: callers may keep and edit theirs
        if external is None:
            return
        self.external_crop = None
        self.set_external_crop(crop_over(external, old_box, self.box))

    def set_external_crop(self, crop: np.ndarray | None) -> None:
        """Store the external mask from a crop in ``box`` (kept inside the amodal mask; None when empty)."""
        if crop is None:
            self.external_crop = None
            return
        ext = np.asarray(crop, dtype=bool) & self.amodal_crop
        self.external_crop = ext if ext.any() else None

    @property
    def nbytes(self) -> int:
        """Bytes of the mask arrays this instance keeps (the amodal and external crops)."""
        ext = 0 if self.external_crop is None else self.external_crop.nbytes
        return int(self.amodal_crop.nbytes) + ext

    @property
    def layers(self) -> np.ndarray | None:
        """The predicted per-pixel layer over ``semdist.box`` (int8 crop, -1 outside), None without a map."""
        return None if self.semdist is None else self.semdist.layer_crop()

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.amodal_crop))

    def bbox(self) -> list[float]:
        """Amodal box as COCO ``[x, y, w, h]`` (pixel-edge coordinates), all zeros when empty."""
        return box_xywh(self.box)

    def set_amodal(self, mask: np.ndarray) -> None:
        """Replace the amodal mask; source polygons and dense predictions no longer describe it."""
        self.amodal = _as_mask(mask, *self.shape, f"instance {self.id} amodal mask")
        self.polygons = None
        self.semdist = None
        self.drop_stated()

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
            if inst.shape != self.shape:
                raise ValueError(f"instance {inst.id}: mask shape {inst.shape} does not match image {self.shape}")
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
        crop = self.instances[0].amodal_crop if self.instances else None
        fortran = crop is not None and crop.flags.f_contiguous and not crop.flags.c_contiguous
        return np.zeros(self.shape, dtype=bool, order="F" if fortran else "C")

    def visible_crops(self) -> list[np.ndarray]:
        """Visible mask of every instance (source order) by the painter's rule, each as a crop in its
        instance's ``box``: one running union of the frame, no frame per instance."""
        out: list[np.ndarray] = [np.zeros((0, 0), bool)] * len(self.instances)
        covered = self._empty_mask()
        for i in self.front_to_back():
            inst = self.instances[i]
            x0, y0, x1, y1 = inst.box
            vis = inst.amodal_crop & ~covered[y0:y1, x0:x1]
            if inst.external_crop is not None:
                vis &= ~inst.external_crop
            out[i] = vis
            covered[y0:y1, x0:x1] |= inst.amodal_crop
        return out

    def iter_visible_masks(self) -> Iterator[np.ndarray]:
        """`visible_masks` one frame at a time (source order): a writer holds one frame, not one per instance."""
        for inst, vis in zip(self.instances, self.visible_crops()):
            yield paste_crop(vis, inst.box, self.shape)

    def visible_masks(self) -> list[np.ndarray]:
        """Visible mask of every instance (source order), by the painter's rule, as full frames (hot paths
        use `visible_crops`)."""
        return [paste_crop(vis, inst.box, self.shape) for inst, vis in zip(self.instances, self.visible_crops())]

    def _front_union_in(self, rank: int, box: Box) -> np.ndarray:
        """Union of the amodal masks of the instances ranked before ``rank``, cut to ``box``."""
        x0, y0, x1, y1 = box
        covered = np.zeros((y1 - y0, x1 - x0), bool)
        for other in self.instances:
            window = meet_box(other.box, box) if other.rank < rank else None
            if window is not None:
                covered[window[1] - y0 : window[3] - y0, window[0] - x0 : window[2] - x0] |= in_box(
                    other.amodal_crop, other.box, window
                )
        return covered

    def visible_crop(self, instance_id: int) -> np.ndarray:
        """The visible mask of one instance as a crop in its ``box``."""
        inst = self.get(instance_id)
        vis = inst.amodal_crop & ~self._front_union_in(inst.rank, inst.box)
        if inst.external_crop is not None:
            vis &= ~inst.external_crop
        return vis

    def visible(self, instance_id: int) -> np.ndarray:
        return paste_crop(self.visible_crop(instance_id), self.get(instance_id).box, self.shape)

    def occluded(self, instance_id: int) -> np.ndarray:
        inst = self.get(instance_id)
        return paste_crop(inst.amodal_crop & ~self.visible_crop(instance_id), inst.box, self.shape)

    def front_union(self, instance_id: int) -> np.ndarray:
        """Union of the amodal masks of every instance in front of the given one."""
        rank = self.get(instance_id).rank
        covered = self._empty_mask()
        for inst in self.instances:
            if inst.rank < rank:
                x0, y0, x1, y1 = inst.box
                covered[y0:y1, x0:x1] |= inst.amodal_crop
        return covered

    def occlude_rates(self) -> list[float]:
        """|occluded| / |amodal| per instance (0.0 for an empty mask), with one running union of the frame."""
        rates = [0.0] * len(self.instances)
        for i, (inst, vis) in enumerate(zip(self.instances, self.visible_crops())):
            area = inst.area
            rates[i] = float((area - np.count_nonzero(vis)) / area) if area else 0.0
        return rates

    def _overlaps(self, a: Instance, b: Instance) -> bool:
        window = meet_box(a.box, b.box)
        return window is not None and bool(
            (in_box(a.amodal_crop, a.box, window) & in_box(b.amodal_crop, b.box, window)).any()
        )

    def occluders(self, instance_id: int) -> list[int]:
        """Ids of the instances in front of the given one whose amodal mask overlaps it."""
        inst = self.get(instance_id)
        return [o.id for o in self.instances if o.rank < inst.rank and self._overlaps(o, inst)]

    def occludees(self, instance_id: int) -> list[int]:
        """Ids of the instances behind the given one whose amodal mask overlaps it."""
        inst = self.get(instance_id)
        return [o.id for o in self.instances if o.rank > inst.rank and self._overlaps(o, inst)]

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
        hits = []
        for i in self.front_to_back():
            inst = self.instances[i]
            x0, y0, x1, y1 = inst.box
            if x0 <= x < x1 and y0 <= y < y1 and inst.amodal_crop[y - y0, x - x0]:
                hits.append(inst.id)
        return hits

    # ----- editing -----------------------------------------------------------------------------
    def add(self, instance: Instance, rank: int | None = None) -> Instance:
        """Add an instance at ``rank`` (default: at the back); the others shift back."""
        if instance.shape != self.shape:
            raise ValueError(f"instance mask shape {instance.shape} does not match image {self.shape}")
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

        def in_instance_box(i: int, inst: Instance) -> np.ndarray:
            x0, y0, x1, y1 = inst.box
            return _as_mask(visible[i], *self.shape, f"instance {inst.id} visible mask")[y0:y1, x0:x1]

        self._set_external(len(visible), in_instance_box)

    def set_visible_crops(self, crops: Sequence[np.ndarray], boxes: Sequence[Sequence[int]]) -> None:
        """`set_visible` from visible masks given as crops placed at ``boxes``, without building frames."""
        self._set_external(len(crops), lambda i, inst: crop_over(np.asarray(crops[i], bool), boxes[i], inst.box))

    def _set_external(self, count: int, visible_in_box: Callable[[int, Instance], np.ndarray]) -> None:
        """`set_visible` given each instance's visible mask cut to its box (``visible_in_box(i, inst)``)."""
        if count != len(self.instances):
            raise ValueError(f"expected {len(self.instances)} visible masks, got {count}")
        for inst in self.instances:
            inst.drop_stated()
        covered = self._empty_mask()
        for i in self.front_to_back():
            inst = self.instances[i]
            vis = visible_in_box(i, inst)
            # In the amodal mask's box: E is inside it, and whole-frame operations cost the image per instance.
            x0, y0, x1, y1 = inst.box
            inst.set_external_crop(~vis & ~covered[y0:y1, x0:x1])
            covered[y0:y1, x0:x1] |= inst.amodal_crop


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
