"""Writing annotation files record by record: a document whose long lists are `Streamed` is written
without ever holding those lists, in exactly the bytes ``json.dumps(document, ensure_ascii=False)`` gives
the same document with the lists built (each record is encoded by `json.dumps`, joined as it joins them).

The writers (`to_cocoa`, `to_coco`, ...) describe a file as such a document; `formats.save` streams it, so
converting or predicting a whole dataset holds one scene's masks at a time, not the file's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from ..io_utils import atomic_open

FLUSH_CHARS = 1 << 18  # text gathered before each write


class Streamed:
    """A JSON list whose items are produced one at a time, when the document is written (once)."""

    def __init__(self, items: Iterable[Any]):
        self.items = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)


def materialize(document: Any) -> Any:
    """The document with every `Streamed` list built (a plain JSON value), top level and one level down."""
    if isinstance(document, Streamed):
        return list(document)
    if isinstance(document, dict):
        return {k: list(v) if isinstance(v, Streamed) else v for k, v in document.items()}
    return document


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _pieces(document: Any) -> Iterator[str]:
    """The document's JSON text in pieces, as ``json.dumps`` (default separators) writes it whole."""
    if isinstance(document, Streamed):
        yield "["
        for k, item in enumerate(document):
            yield ", " + _dumps(item) if k else _dumps(item)
        yield "]"
    elif isinstance(document, dict) and any(isinstance(v, Streamed) for v in document.values()):
        yield "{"
        for k, (key, value) in enumerate(document.items()):
            yield (", " if k else "") + _dumps(key) + ": "
            yield from _pieces(value) if isinstance(value, Streamed) else [_dumps(value)]
        yield "}"
    else:
        yield _dumps(document)


def write_json(path: str | os.PathLike, document: Any) -> None:
    """Write ``document`` (its `Streamed` lists item by item) to ``path`` atomically."""
    with atomic_open(path) as f:
        buffer: list[str] = []
        size = 0
        for piece in _pieces(document):
            buffer.append(piece)
            size += len(piece)
            if size >= FLUSH_CHARS:
                f.write("".join(buffer).encode("utf-8"))
                buffer, size = [], 0
        f.write("".join(buffer).encode("utf-8"))
