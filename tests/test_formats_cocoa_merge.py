"""formats.cocoa.merge_into: scenes' COCOA records written into an original file's JSON, the rest untouched."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from semlayer import formats
from semlayer.formats.cocoa import merge_into
from semlayer.formats.masks import encode_rle
from semlayer.scene import AmodalScene, Instance

DATA = Path(__file__).parent / "data"


def box(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """An 8 x 10 mask, True on rows y0..y1-1 and columns x0..x1-1."""
    m = np.zeros((8, 10), bool)
    m[y0:y1, x0:x1] = True
    return m


def original() -> dict:
    """The toy COCOA file plus a second image with its own record, and a field the writers do not know."""
    obj = json.loads((DATA / "cocoa_toy.json").read_text())
    other = copy.deepcopy(obj["annotations"][0])
    other.update(id=5, image_id=8)
    obj["images"].append({**obj["images"][0], "id": 8, "file_name": "toy_000008.jpg"})
    obj["annotations"].append(other)
    obj["info"] = {"kept": True}
    return obj


def test_an_edited_scene_replaces_its_own_record_and_nothing_else():
    orig = original()
    before = copy.deepcopy(orig)
    scene = formats.from_dict(orig).scenes[0]  # image 7, annotation 1: "box" in front of "board"
    scene.move(scene.order_ids()[0], "back")

    merged = merge_into(orig, [scene])

    assert orig == before  # the original is not changed
    assert list(merged) == ["images", "annotations", "info"]
    assert merged["images"] is not orig["images"] and merged["images"] == orig["images"]
    assert merged["info"] is orig["info"]
    assert merged["annotations"][1] is orig["annotations"][1]  # image 8's record: the very object
    board, small = box(3, 3, 7, 9), box(1, 1, 5, 5)
    assert merged["annotations"][0] == {
        **before["annotations"][0],  # its header as the file has it: id 1, image 7, size 2, "1-2", ...
        "regions": [
            {
                "order": 1,
                "name": "board",
                "isStuff": 0,
                "area": 24,
                "occlude_rate": 0,
                "segmentation": [3.0, 3.0, 9.0, 3.0, 9.0, 7.0, 3.0, 7.0],
            },
            {
                "order": 2,
                "name": "box",
                "isStuff": 0,
                "area": 16,
                "occlude_rate": 0.25,
                "segmentation": [1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0],
                "visible_mask": encode_rle(small & ~board),
                "invisible_mask": encode_rle(small & board),
            },
        ],
    }


def test_a_new_scene_is_appended_with_its_image_record():
    orig = original()
    image = {"id": 9, "file_name": "upload_00009.png", "height": 8, "width": 10}
    added = AmodalScene(image=image, instances=[Instance(id=1, amodal=box(0, 0, 2, 3), name="new")])

    merged = merge_into(orig, [added])

    assert merged["images"] == [*orig["images"], image]
    assert merged["annotations"][:2] == orig["annotations"]
    assert merged["annotations"][2] == {
        "id": 6,  # its own id (1, the first free among the merged scenes') is image 7's: numbered after all
        "image_id": 9,
        "size": 1,
        "depth_constraint": "",
        "regions": [
            {
                "order": 1,
                "name": "new",
                "isStuff": 0,
                "area": 6,
                "occlude_rate": 0,
                "segmentation": [0.0, 0.0, 0.0, 2.0, 3.0, 2.0, 3.0, 0.0],  # traced from the mask
            }
        ],
    }


def test_a_new_scene_keeps_its_own_annotation_id_when_no_other_record_has_it():
    orig = original()
    image = {"id": 9, "file_name": "upload_00009.png", "height": 8, "width": 10}
    added = AmodalScene(image=image, instances=[Instance(id=1, amodal=box(0, 0, 2, 3))], annotation={"id": 3})
    assert [a["id"] for a in merge_into(orig, [added])["annotations"]] == [1, 5, 3]


def test_merging_no_scenes_gives_the_original_back():
    orig = original()
    assert merge_into(orig, []) == orig
    assert merge_into({"info": 1}, []) == {"info": 1, "images": [], "annotations": []}
