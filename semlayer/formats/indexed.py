"""A whole annotation file opened index first: which records form which scene, decoded when a scene is used.

`load` (and `load(compact=True)`) decode every scene while reading, which for a 2,500-image COCOA file costs
most of a minute before anything can be shown. `load_indexed` parses the JSON (orjson), finds
each scene's records by their ids alone, and decodes scene ``i`` when it is indexed, with the format's own
reader run on just those records: the scene is exactly the one `load` gives, and a bad record is reported
with its path in the whole file. Checks that span the file (unique annotation ids) are `validate`'s.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, cast

import orjson

from ..errors import FormatError
from ..scene import AmodalScene, AnnotationSet
from ._base import Context, build_scene, image_index, is_int, parse_categories, split_known
from .api import detect, from_dict, parse, parse_json, read_json
from .coco import AGNOSTIC
from .compact import SceneSequence


class IndexedScenes(SceneSequence):
    """A read-only sequence of a parsed file's scenes; ``scenes[i]`` decodes scene ``i`` from its records.

    ``images`` holds each scene's image record (copies), so file names and sizes are known undecoded (None
    for a results list, whose image sizes only its masks state)."""

    def __init__(self, obj: Any, source: str, fmt: str, members: list[list[int]], image_positions: list[int]):
        self._source, self._fmt = source, fmt
        self._categories = None if fmt == "results" else obj.get("categories")  # shared by every scene's records
        self.images = None if fmt == "results" else [copy.deepcopy(obj["images"][p]) for p in image_positions]
        # Each scene's records as compact JSON text: a parsed file's Python objects take several times its
        # size, so the parsed document is dropped once its scenes' texts are cut out.
        self._records: list[bytes] = []
        self._paths: list[dict[str, list[int]]] = []
        for idx, position in zip(members, image_positions):
            if fmt == "results":
                part: Any = [obj[j] for j in idx]
                self._paths.append({"": idx})
            else:
                part = {"images": [obj["images"][position]], "annotations": [obj["annotations"][j] for j in idx]}
                self._paths.append({"annotations": idx, "images": [position]})
            # orjson writes a non-finite number (which no reader accepts) as null
            self._records.append(orjson.dumps(part))

    def __len__(self) -> int:
        return len(self._records)

    def _scene_at(self, index: int) -> AmodalScene:
        part, paths = parse_json(self._records[index]), self._paths[index]
        if self._categories is not None:
            part["categories"] = self._categories
        try:
            return build_scene(next(iter(parse(Context(self._source), part, self._fmt).groups)))
        except FormatError as err:
            raise FormatError(self._source, _path_in_file(err.json_path, paths), err.expected) from None


def _path_in_file(path: str, positions: dict[str, list[int]]) -> str:
    """A JSON path in the records of one scene as the path in the whole file."""
    match = re.match(r"^(annotations|images|)\[(\d+)\]", path)
    if match is None or match.group(1) not in positions:
        return path
    where = positions[match.group(1)][int(match.group(2))]
    return f"{match.group(1)}[{where}]" + path[match.end() :]


def _index(ctx: Context, obj: Any, fmt: str) -> tuple[list[list[int]], list[int]] | None:
    """Each scene's record positions (scene order as the readers give it) and its image's position; None
    when a record is not what the readers expect (the full reader then says what is wrong)."""
    members: dict[Any, list[int]] = {}
    if fmt == "results":
        for i, rec in enumerate(obj):
            if not isinstance(rec, dict) or not is_int(rec.get("image_id")):
                return None
            members.setdefault(rec["image_id"], []).append(i)
        return list(members.values()), [0] * len(members)
    images, anns = obj.get("images"), obj.get("annotations")
    if not isinstance(images, list) or not isinstance(anns, list):
        return None
    image_index(ctx, images)  # every image record checked, as the full reader checks them
    where: dict[int, int] = {}
    for p, rec in enumerate(images):
        if not isinstance(rec, dict) or not is_int(rec.get("id")) or rec["id"] in where:
            return None
        where[rec["id"]] = p
    keys: list[Any] = []
    for i, rec in enumerate(anns):
        if not isinstance(rec, dict) or not is_int(rec.get("image_id")) or rec["image_id"] not in where:
            return None
        if fmt == "cocoa":
            key: Any = i  # every annotation record is a scene
        else:  # COCO-style: the records of one image (and one amodal base annotation) form a scene
            base = rec.get("amodal_base")
            key = (rec["image_id"], base.get("id") if isinstance(base, dict) and is_int(base.get("id")) else None)
        if key not in members:
            keys.append(key)
        members.setdefault(key, []).append(i)
    groups = [members[k] for k in keys]
    return groups, [where[anns[g[0]]["image_id"]] for g in groups]


def load_indexed(path: str | Path) -> AnnotationSet:
    """An annotation or results file as `formats.load` reads it, but index first: the scenes are an
    `IndexedScenes`, each decoded from its records when used."""
    source = str(path)
    obj = read_json(path)
    fmt = detect(obj, source)
    index = _index(Context(source), obj, fmt)
    if index is None:
        return from_dict(obj, source, compact=True)  # the full reader names the bad record
    members, positions = index
    if fmt == "results":
        return AnnotationSet(cast(list, IndexedScenes(obj, source, fmt, members, positions)), format=fmt)
    ctx = Context(source)
    categories = parse_categories(ctx, obj)
    if fmt != "cocoa" and categories == [AGNOSTIC]:
        categories = []  # as the COCO-style readers read `to_coco`'s class-agnostic category
    used = {obj["images"][p]["id"] for p in positions}
    unannotated = [copy.deepcopy(rec) for rec in obj["images"] if rec["id"] not in used]
    extra = copy.deepcopy(split_known(obj, {"images", "annotations", "categories"}))
    scenes = cast(list, IndexedScenes(obj, source, fmt, members, positions))  # a read-only sequence, as CompactScenes
    return AnnotationSet(scenes, copy.deepcopy(categories), fmt, extra, unannotated)


__all__ = ["IndexedScenes", "load_indexed"]
