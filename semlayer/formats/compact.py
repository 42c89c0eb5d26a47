"""Scenes stored compactly (masks as COCO RLE) and decoded one at a time: a whole real dataset in memory.

`AmodalScene` keeps full-frame boolean masks, which is right for editing one image but not for holding a
dataset: KINS train (7,474 images of 1242 x 375, ~95k instances) would need over 40 GB for the amodal masks
alone. `CompactScenes` keeps each scene as one pickled record whose masks are COCO RLE (`records.scene_state`,
the codec the workspace saves with), packed into a single byte array with offsets (as detectron2 serialises
its dataset lists), so

* memory is roughly the RLE size (a few hundred bytes an instance instead of H x W);
* DataLoader workers forked from the training process share the array: a list of Python objects would be
  copied page by page as reference counts are touched, once per worker.

Indexing decodes that scene afresh (masks, polygons, unknown fields, ranks and external occlusion exactly as
`formats.load` gives them); the decoded scene is the caller's to change.
"""

from __future__ import annotations

import copy
import itertools
import pickle
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from ..scene import AmodalScene, InstanceFacts, instance_facts
from .records import scene_from_state, scene_state, state_facts


def compact_record(scene: AmodalScene) -> bytes:
    """One scene as `CompactScenes` holds it (its image and annotation records and its `records.scene_state`,
    with the stated occlusion, pickled): small enough to keep or send."""
    record = {"image": scene.image, "annotation": scene.annotation, "state": scene_state(scene, stated=True)}
    return pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)


def _scene(data: bytes) -> AmodalScene:
    record = pickle.loads(data)
    return scene_from_state(AmodalScene(record["image"], annotation=record["annotation"]), record["state"])


class SceneSequence(Sequence[AmodalScene]):
    """A read-only sequence of scenes decoded one at a time, on access: a subclass gives ``__len__`` and
    ``_scene_at`` (an index in ``0..len-1``)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def _scene_at(self, index: int) -> AmodalScene:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> AmodalScene: ...

    @overload
    def __getitem__(self, index: slice) -> list[AmodalScene]: ...

    def __getitem__(self, index: int | slice) -> AmodalScene | list[AmodalScene]:
        if isinstance(index, slice):
            return [self._scene_at(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"scene index {index} out of range for {n} scenes")
        return self._scene_at(index % n)

    def __iter__(self) -> Iterator[AmodalScene]:
        for i in range(len(self)):
            yield self._scene_at(i)


class CompactScenes(SceneSequence):
    """A read-only sequence of scenes held as RLE records; ``scenes[i]`` decodes scene ``i``.

    Built from any iterable of scenes, consumed one at a time, so a reader that yields scenes lazily never
    holds more than one decoded scene."""

    def __init__(self, scenes: Iterable[AmodalScene] = ()):
        self._fill((compact_record(scene), scene.image, scene.annotation, instance_facts(scene)) for scene in scenes)

    @classmethod
    def from_records(cls, records: Iterable[bytes], image_ids: Iterable[int] | None = None) -> CompactScenes:
        """Scenes from `compact_record`s (e.g. made in other processes), with new image ids when given;
        no mask is decoded."""

        def items() -> Iterator[tuple[bytes, dict[str, Any], dict[str, Any], tuple[InstanceFacts, ...]]]:
            ids: Iterable[int | None] = image_ids if image_ids is not None else itertools.repeat(None)
            for data, image_id in zip(records, ids):
                rec = pickle.loads(data)
                if image_id is not None:
                    rec["image"]["id"] = int(image_id)
                    data = pickle.dumps(rec, protocol=pickle.HIGHEST_PROTOCOL)
                yield data, rec["image"], rec["annotation"], state_facts(rec["state"])

        out = cls.__new__(cls)
        out._fill(items())
        return out

    def _fill(self, items: Iterable[tuple[bytes, dict[str, Any], dict[str, Any], tuple[InstanceFacts, ...]]]) -> None:
        records = []
        # Image records, annotation headers and instance ids, categories and names on their own too: file
        # names, ids, sizes, instance counts, categories and what the writers number by are looked up
        # without decoding any mask.
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.instance_facts: list[tuple[InstanceFacts, ...]] = []
        for record, image, annotation, facts in items:
            records.append(record)
            self.images.append(copy.deepcopy(image))
            self.annotations.append(copy.deepcopy(annotation))
            self.instance_facts.append(facts)
        self._offsets = np.cumsum([0] + [len(r) for r in records], dtype=np.int64)
        self._buffer = np.frombuffer(b"".join(records), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _scene_at(self, index: int) -> AmodalScene:
        start, stop = int(self._offsets[index]), int(self._offsets[index + 1])
        return _scene(self._buffer[start:stop].tobytes())

    @property
    def nbytes(self) -> int:
        """Bytes held (records and offsets)."""
        return int(self._buffer.nbytes + self._offsets.nbytes)


__all__ = ["CompactScenes"]
