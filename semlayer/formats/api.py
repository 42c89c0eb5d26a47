"""Reading (format detected from the content) and writing annotation files."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson
from tqdm import tqdm

from ..errors import ConfigError, FormatError
from ..scene import AnnotationSet
from . import coco, cocoa, results
from ._base import Context, Parsed, build_scene, kind, repair_lines
from .compact import CompactScenes
from .coco import coco_document, kins_document
from .cocoa import cocoa_document
from .results import results_document
from .stream import write_json

log = logging.getLogger(__name__)

READ_FORMATS = ("cocoa", "coco", "kins2019", "kins2020", "results")
# Each gives the file as a document whose long lists are `stream.Streamed` (written one scene at a time).
WRITERS: dict[str, Callable[[AnnotationSet], Any]] = {
    "cocoa": cocoa_document,
    "coco": coco_document,
    "kins": kins_document,
    "results": results_document,
}


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; anything that is not a readable JSON document is a FormatError. orjson parses
    (dataset files are large); what it refuses goes to the standard parser, so the values accepted and the
    error messages are the standard ones."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise FormatError(str(path), "", f"a readable file ({err.strerror})") from None
    if not data.strip():
        raise FormatError(str(path), "", "a JSON document, got an empty file")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass  # the standard parser decides: it accepts what it always did (NaN, huge integers) and says where
    try:
        return json.loads(data)
    except UnicodeDecodeError as err:
        raise FormatError(str(path), "", f"UTF-8 encoded JSON ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise FormatError(
            str(path), "", f"complete, valid JSON; {err.msg} at line {err.lineno}, column {err.colno}"
        ) from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise FormatError(str(path), "", f"JSON whose numbers Python can read; {err}") from None
    except RecursionError:
        raise FormatError(str(path), "", "JSON nested less deeply than Python's recursion limit") from None


def detect(obj: Any, source: str = "<memory>") -> str:
    """The format of parsed JSON, from its content.

    A top-level list is a results list. In an object, annotations with ``regions`` mean COCOA native,
    with ``a_segm``/``i_segm`` KINS 2020, with ``inmodal_seg`` KINS 2019, anything else COCO-style; with
    no annotation to look at, a file with ``categories`` is COCO-style and one without is COCOA.
    """
    if isinstance(obj, list):
        return "results"
    if not isinstance(obj, dict):
        raise FormatError(
            source, "", f"a JSON object with images and annotations, or a list of results; got {kind(obj)}"
        )
    anns = obj.get("annotations")
    recs = [a for a in anns if isinstance(a, dict)] if isinstance(anns, list) else []
    for keys, fmt in ((("regions",), "cocoa"), (("a_segm", "i_segm"), "kins2020"), (("inmodal_seg",), "kins2019")):
        if any(k in a for a in recs for k in keys):
            return fmt
    if recs or "categories" in obj:
        return "coco"
    return "cocoa"


def parse(ctx: Context, obj: Any, fmt: str, image_ids: Iterable[int] | None = None) -> Parsed:
    wanted_ids = None if image_ids is None else {int(i) for i in image_ids}

    def wanted(image_id: int) -> bool:
        return wanted_ids is None or image_id in wanted_ids

    if fmt == "results":
        return results.parse(ctx, obj, wanted)
    if fmt == "cocoa":
        return cocoa.parse(ctx, obj, wanted)
    return coco.parse(ctx, obj, wanted, fmt)


def from_dict(
    obj: Any,
    source: str = "<memory>",
    image_ids: Iterable[int] | None = None,
    compact: bool = False,
    progress: bool = False,
) -> AnnotationSet:
    """Scenes from parsed JSON of any supported format; ``source`` names the input in errors.

    ``compact``: the scenes are a `CompactScenes` (RLE, decoded on access), built one scene at a time, so
    a whole dataset fits in memory; ``progress`` shows a bar while the scenes are decoded."""
    fmt = detect(obj, source)
    ctx = Context(source)
    parsed = parse(ctx, obj, fmt, image_ids)
    built = (
        build_scene(group, ctx.repairs)
        for group in tqdm(parsed.groups, desc=f"reading {os.path.basename(source)}", unit="scene", disable=not progress)
    )
    scenes = CompactScenes(built) if compact else list(built)
    for line in repair_lines(ctx.repairs):
        log.warning("%s: %s", source, line)
    return AnnotationSet(scenes, parsed.categories, fmt, parsed.extra, parsed.unannotated)


def load(
    path: str | os.PathLike, image_ids: Iterable[int] | None = None, compact: bool = False, progress: bool = False
) -> AnnotationSet:
    """Read an annotation or results file (format detected from the content); ``image_ids`` limits the
    scenes to those images (the others are not decoded). ``compact`` keeps the masks as RLE and decodes a
    scene each time it is indexed (`CompactScenes`): for whole datasets (training, evaluation); every
    record is still checked while reading."""
    annset = from_dict(read_json(path), str(path), image_ids, compact, progress)
    log.info("read %s: %s, %d scenes, %d instances", path, annset.format, len(annset), annset.num_instances())
    return annset


def save(annset: AnnotationSet, path: str | os.PathLike, format: str = "cocoa") -> None:
    """Write ``annset`` as COCOA native, COCO-style amodal, KINS 2020 or a results list (atomically).

    The file is written record by record as the scenes are read, in the bytes ``json.dumps`` gives `to_cocoa`'s
    (...) dict: with compact scenes (``load(compact=True)``) one scene's masks are held at a time."""
    if format not in WRITERS:
        raise ConfigError(f"format must be one of {', '.join(WRITERS)}, got {format!r}")
    write_json(path, WRITERS[format](annset))
    log.info("wrote %s: %s, %d scenes", path, format, len(annset))
