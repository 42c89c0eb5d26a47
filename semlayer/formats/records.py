"""A scene as plain records and back: the one codec of `CompactScenes`' records and of the workspace's saved
scene states (``scenes/NNNNN.json``, `semlayer.workspace`).

A scene's *state* is its instance ids (source order), their ranks and one JSON-ready record an instance, masks
as COCO RLE::

    {"ids": [3, 1], "ranks": [2, 1], "instances": {"3": {"name": ..., "amodal": {"size": ..., "counts": ...}}}}

The workspace writes exactly this to its files; `CompactScenes` keeps it pickled, with the occlusion the source
file states (``stated=True``), which the workspace's files have never held.
"""

from __future__ import annotations

from typing import Any, Callable, cast

import numpy as np

from ..errors import FormatError
from ..scene import AmodalScene, Instance, InstanceFacts
from ._base import join
from .masks import decode_rle, encode_rle

# Instance fields besides the masks and the cluster, with the JSON types a saved state may give them.
INSTANCE_FIELDS = {
    "name": (str,),
    "category": (int, type(None)),
    "is_stuff": (bool,),
    "score": (int, float, type(None)),
    "polygons": (list, type(None)),
    "extra": (dict,),
}
# What a source file states about occlusion (`Instance.stated_visible`): kept in memory, not in the workspace.
STATED_FIELDS = ("stated_visible", "stated_occlude_rate")


class MaskEncoder:
    """Encodes an instance's masks as JSON-ready COCO RLE (`masks.encode_rle`)."""

    def amodal(self, inst: Instance) -> dict[str, Any]:
        return encode_rle(inst.amodal)

    def external(self, inst: Instance) -> dict[str, Any] | None:
        return None if inst.external is None else encode_rle(inst.external)


class RleCache(MaskEncoder):
    """RLE per instance id, re-encoded only when the instance's mask crop changed: an edit replaces the crops
    it changes (never writes into one), so a state taken after each edit encodes only those."""

    def __init__(self) -> None:
        self._amodal: dict[int, tuple[np.ndarray, dict]] = {}
        self._external: dict[int, tuple[np.ndarray, dict]] = {}

    @staticmethod
    def _get(table: dict, key: int, crop: np.ndarray, frame: Callable[[], np.ndarray]) -> dict:
        hit = table.get(key)
        if hit is not None and hit[0] is crop:
            return hit[1]
        rle = encode_rle(frame())
        # Keep a reference to the crop so its identity cannot be reused by a new one.
        table[key] = (crop, rle)
        return rle

    def amodal(self, inst: Instance) -> dict[str, Any]:
        return self._get(self._amodal, inst.id, inst.amodal_crop, lambda: inst.amodal)

    def external(self, inst: Instance) -> dict[str, Any] | None:
        crop = inst.external_crop
        return (
            None if crop is None else self._get(self._external, inst.id, crop, lambda: cast(np.ndarray, inst.external))
        )


def instance_state(inst: Instance, masks: MaskEncoder | None = None, stated: bool = False) -> dict[str, Any]:
    """Everything about an instance except its id and rank, JSON-ready (masks as RLE); ``stated`` adds the
    occlusion its source file states."""
    masks = masks or MaskEncoder()
    state = {
        "name": inst.name,
        "category": inst.category,
        "is_stuff": bool(inst.is_stuff),
        "score": inst.score,
        "amodal": masks.amodal(inst),
        "external": masks.external(inst),
        "polygons": inst.polygons,
        "extra": inst.extra,
        # KINS 2020's (oco_id, ico_id) as read: the KINS export writes it back while the order agrees with it.
        "cluster": None if inst.cluster is None else [int(v) for v in inst.cluster],
    }
    if stated:
        state.update((name, getattr(inst, name)) for name in STATED_FIELDS)
    return state


def scene_state(scene: AmodalScene, masks: MaskEncoder | None = None, stated: bool = False) -> dict[str, Any]:
    """The state of a scene: instance ids (source order), their ranks and per-instance states."""
    masks = masks or MaskEncoder()
    return {
        "ids": [inst.id for inst in scene.instances],
        "ranks": [inst.rank for inst in scene.instances],
        "instances": {str(inst.id): instance_state(inst, masks, stated) for inst in scene.instances},
    }


def instance_from_state(inst_id: int, rank: int, state: dict[str, Any]) -> Instance:
    cluster = state.get("cluster")
    return Instance(
        id=int(inst_id),
        amodal=decode_rle(state["amodal"]),
        rank=int(rank),
        name=state["name"],
        category=state["category"],
        is_stuff=bool(state["is_stuff"]),
        score=state["score"],
        external=None if state["external"] is None else decode_rle(state["external"]),
        polygons=state["polygons"],
        extra=state["extra"],
        cluster=None if cluster is None else (int(cluster[0]), int(cluster[1])),
        stated_visible=state.get("stated_visible"),
        stated_occlude_rate=state.get("stated_occlude_rate"),
    )


def scene_from_state(base: AmodalScene, state: dict[str, Any]) -> AmodalScene:
    """A new scene with ``base``'s image and annotation records and the instances of ``state``."""
    instances = [
        instance_from_state(inst_id, rank, state["instances"][str(inst_id)])
        for inst_id, rank in zip(state["ids"], state["ranks"])
    ]
    return AmodalScene(image=base.image, instances=instances, annotation=base.annotation)


def state_facts(state: dict[str, Any]) -> tuple[InstanceFacts, ...]:
    """The ids, categories and names of a state's instances (what the writers number by), nothing decoded."""
    instances = state["instances"]
    return tuple(InstanceFacts(i, instances[str(i)]["category"], instances[str(i)]["name"]) for i in state["ids"])


# ----- checking a state read from a file -------------------------------------------------------------


def _check_rle(value: Any, file: str, path: str, shape: tuple[int, int] | None) -> tuple[int, int]:
    if not (
        isinstance(value, dict)
        and isinstance(value.get("counts"), str)
        and isinstance(value.get("size"), list)
        and len(value["size"]) == 2
        and all(isinstance(v, int) and v > 0 for v in value["size"])
    ):
        raise FormatError(file, path, "a COCO RLE {size: [h, w], counts: str}")
    size = (value["size"][0], value["size"][1])
    if shape is not None and size != tuple(shape):
        raise FormatError(file, join(path, "size"), f"{list(shape)} (the image's height and width), got {list(size)}")
    return size


def check_state(state: Any, file: str, path: str, shape: tuple[int, int] | None, patch: bool = False) -> None:
    """A scene state (or, ``patch``, an undo/redo patch: only changed instances) as `scene_state` writes it;
    raises FormatError naming the JSON path of the first problem."""
    if not isinstance(state, dict):
        raise FormatError(file, path, "an object with ids, ranks and instances")
    ids, ranks, instances = state.get("ids"), state.get("ranks"), state.get("instances")
    if not (isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
        raise FormatError(file, join(path, "ids"), "a list of integer instance ids")
    if not (isinstance(ranks, list) and len(ranks) == len(ids) and all(isinstance(r, int) for r in ranks)):
        raise FormatError(file, join(path, "ranks"), f"a list of {len(ids)} integer ranks")
    if not isinstance(instances, dict):
        raise FormatError(file, join(path, "instances"), "an object of instance states by id")
    for key, inst in instances.items():
        where = join(join(path, "instances"), key)
        if not patch and key not in {str(i) for i in ids}:
            raise FormatError(file, where, f"one of the ids {ids}")
        if not isinstance(inst, dict):
            raise FormatError(file, where, "an instance state object")
        for name, types in INSTANCE_FIELDS.items():
            if not isinstance(inst.get(name), types):
                raise FormatError(file, join(where, name), f"one of {', '.join(t.__name__ for t in types)}")
        size = _check_rle(inst.get("amodal"), file, join(where, "amodal"), shape)
        if inst.get("external") is not None:
            _check_rle(inst["external"], file, join(where, "external"), size)
    if not patch:
        missing = [i for i in ids if str(i) not in instances]
        if missing:
            raise FormatError(file, join(path, "instances"), f"a state for every id; missing {missing}")
