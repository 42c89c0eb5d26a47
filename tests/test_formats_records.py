"""semlayer.formats.records: the one scene <-> record codec of CompactScenes and the workspace's saved states."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from semlayer import formats
from semlayer.formats.compact import CompactScenes, compact_record
from semlayer.formats.masks import encode_rle
from semlayer.formats.records import RleCache, scene_from_state, scene_state

DATA = Path(__file__).parent / "data"


def toy_scene():
    return formats.load(DATA / "cocoa_toy.json").scenes[0]  # "box" (id 1) in front of "board" (id 2)


def test_a_scene_state_is_the_workspace_file_format():
    scene = toy_scene()
    box, board = (inst.amodal for inst in scene.instances)
    common = {"category": None, "is_stuff": False, "score": None, "external": None, "cluster": None}
    state = scene_state(scene)
    assert json.loads(json.dumps(state)) == state  # JSON-ready as it is
    assert state == {
        "ids": [1, 2],
        "ranks": [1, 2],
        "instances": {
            "1": {
                "name": "box",
                **common,
                "amodal": encode_rle(box),
                "polygons": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]],
                "extra": {},
            },
            "2": {
                "name": "board",
                **common,
                "amodal": encode_rle(board),
                "polygons": [[3.0, 3.0, 9.0, 3.0, 9.0, 7.0, 3.0, 7.0]],
                "extra": {},
            },
        },
    }
    assert list(state["instances"]["1"]) == [
        "name", "category", "is_stuff", "score", "amodal", "external", "polygons", "extra", "cluster",
    ]  # fmt: skip
    again = scene_from_state(scene, state)
    assert scene_state(again) == state and again.image is scene.image


def test_compact_records_keep_the_stated_occlusion_that_workspace_states_leave_out():
    scene = toy_scene()
    board = scene.get(2)
    board.stated_visible, board.stated_occlude_rate = encode_rle(board.amodal), 0.0
    board.cluster = (1, 2)
    assert "stated_visible" not in scene_state(scene)["instances"]["2"]
    (decoded,) = CompactScenes.from_records([compact_record(scene)], image_ids=[11])
    assert decoded.image_id == 11 and decoded.annotation == scene.annotation
    got = decoded.get(2)
    assert (got.stated_visible, got.stated_occlude_rate, got.cluster) == (encode_rle(board.amodal), 0.0, (1, 2))
    assert scene_state(decoded, stated=True) == scene_state(scene, stated=True)


def test_the_rle_cache_encodes_a_mask_again_only_when_it_was_replaced():
    scene = toy_scene()
    box = scene.get(1)
    cache = RleCache()
    first = cache.amodal(box)
    assert cache.amodal(box) is first
    box.set_amodal(np.roll(box.amodal, 1, axis=1))
    assert cache.amodal(box) is not first and cache.amodal(box) == encode_rle(box.amodal)
