"""semlayer.formats.indexed: a file opened index first gives exactly the scenes `formats.load` gives,
decodes only the scenes that are used, and names a bad record by its path in the whole file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semlayer import formats
from semlayer.errors import FormatError
from semlayer.formats import indexed
from semlayer.formats.indexed import IndexedScenes, load_indexed
from semlayer.formats.records import scene_state
from semlayer.scene import AnnotationSet
from semlayer.synth import sample_layout

DATA = Path(__file__).parent / "data"
FILES = sorted(DATA.glob("*_toy.json")) + [Path(__file__).parents[1] / "assets" / "demo" / "annotations.json"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_indexed_scenes_are_the_loaded_ones(path):
    full, lazy = formats.load(path), load_indexed(path)
    assert isinstance(lazy.scenes, IndexedScenes)
    assert (lazy.format, lazy.categories, lazy.extra, lazy.images) == (
        full.format,
        full.categories,
        full.extra,
        full.images,
    )
    assert len(lazy) == len(full) and lazy.scene_images() == full.scene_images()
    for a, b in zip(full.scenes, lazy.scenes):
        assert (a.image, a.annotation) == (b.image, b.annotation)
        assert scene_state(a) == scene_state(b)  # ids, ranks, names, categories, masks, polygons, fields


def many(tmp_path: Path, n: int = 40) -> tuple[Path, list]:
    rng = np.random.default_rng(5)
    scenes = []
    for k in range(n):
        scene = sample_layout(rng, 96, 4).to_scene(k + 1)
        scene.image["file_name"] = f"{k + 1:04d}.png"
        scenes.append(scene)
    path = tmp_path / "many.json"
    formats.save(AnnotationSet(scenes), path, format="cocoa")
    return path, scenes


def test_only_the_scene_used_is_decoded(tmp_path, monkeypatch):
    path, scenes = many(tmp_path)
    built = []
    original = indexed.build_scene
    monkeypatch.setattr(indexed, "build_scene", lambda group: built.append(group) or original(group))
    annset = load_indexed(path)
    assert len(annset) == 40 and built == []  # opened: nothing decoded
    assert [im["file_name"] for im in annset.scene_images()] == [s.file_name for s in scenes]
    scene = annset.scenes[17]
    assert len(built) == 1 and scene.image_id == scenes[17].image_id
    assert len(built[0].regions) == len(scenes[17])


def test_a_bad_record_is_named_by_its_path_in_the_whole_file(tmp_path):
    path, _ = many(tmp_path, 5)
    obj = json.loads(path.read_text())
    last = len(obj["annotations"]) - 1
    obj["annotations"][last]["regions"][0]["order"] = "front"
    path.write_text(json.dumps(obj))
    with pytest.raises(FormatError) as strict:
        formats.load(path)
    annset = load_indexed(path)  # opens: the bad record belongs to the last scene
    annset.scenes[0]
    with pytest.raises(FormatError) as lazy:
        annset.scenes[last]
    assert str(lazy.value) == str(strict.value)
    assert lazy.value.json_path.startswith(f"annotations[{last}].regions[0]")
