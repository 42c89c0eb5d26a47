"""EditSession: exact masks after each edit, undo/redo, autosave/resume, kill-and-restart, conflicts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from semlayer.formats.masks import decode_rle, encode_rle
from semlayer.workspace import ConflictError, EditSession
from semlayer.scene import AmodalScene, AnnotationSet, Instance

ROOT = Path(__file__).resolve().parents[1]


def rect(x0, y0, x1, y1, h=8, w=10):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def toy_set():
    """docs/formats.md's toy scene (box 1 in front of board 2), plus a second scene with one instance."""
    s1 = AmodalScene(
        {"id": 7, "height": 8, "width": 10, "file_name": "toy.png"},
        [
            Instance(1, rect(1, 1, 5, 5), rank=1, name="box"),
            Instance(2, rect(3, 3, 9, 7), rank=2, name="board", external=rect(8, 6, 9, 7)),
        ],
        annotation={"id": 70, "author": "tool"},
    )
    s2 = AmodalScene(
        {"id": 8, "height": 8, "width": 10, "file_name": "b.png"}, [Instance(1, rect(0, 0, 2, 2), name="dot")]
    )
    return AnnotationSet(scenes=[s1, s2])


def masks(session):
    scene = session.scene
    return {inst.id: (inst.rank, inst.amodal.copy(), scene.visible(inst.id)) for inst in scene.instances}


def same(a, b):
    return a.keys() == b.keys() and all(
        a[k][0] == b[k][0] and np.array_equal(a[k][1], b[k][1]) and np.array_equal(a[k][2], b[k][2]) for k in a
    )


@pytest.fixture
def session(tmp_path):
    return EditSession(tmp_path / "ws", toy_set(), tmp_path)


def test_rle_round_trip():
    m = rect(3, 3, 9, 7)
    assert encode_rle(m) == {"size": [8, 10], "counts": "k0440000000005"}  # docs/formats.md's string
    assert np.array_equal(decode_rle(encode_rle(m)), m)


def test_move_updates_visible_masks_by_painters_rule_keeping_external(session):
    session.move(2, "front")
    assert session.scene.order_ids() == [2, 1]
    # Board in front: whole board visible except its external occlusion (x 8, y 6).
    assert np.array_equal(session.scene.visible(2), rect(3, 3, 9, 7) & ~rect(8, 6, 9, 7))
    assert np.array_equal(session.scene.visible(1), rect(1, 1, 5, 5) & ~rect(3, 3, 5, 5))
    session.move(2, "backward")
    assert session.scene.order_ids() == [1, 2]
    assert np.array_equal(session.scene.visible(2), rect(3, 3, 9, 7) & ~rect(3, 3, 5, 5) & ~rect(8, 6, 9, 7))
    session.put_in_front(2, 1)
    assert session.scene.order_ids() == [2, 1]
    assert session.history()[0] == ["move 2 front", "move 2 backward", "put 2 in front of 1"]


def test_set_amodal_add_delete_and_attributes_exact(session):
    session.set_amodal(1, rect(0, 0, 4, 4))
    assert np.array_equal(session.scene.get(1).amodal, rect(0, 0, 4, 4))
    assert np.array_equal(session.scene.visible(2), rect(3, 3, 9, 7) & ~rect(3, 3, 4, 4) & ~rect(8, 6, 9, 7))
    new_id = session.add_instance(rect(6, 0, 10, 4), "cup", category=3)
    assert new_id == 3
    assert session.scene.order_ids() == [3, 1, 2]
    # Board hidden by the box (x 3, y 3), the cup (x 6..8, y 3) and its external occlusion (x 8, y 6).
    assert session.scene.occlude_rates()[1] == (1 + 3 + 1) / 24
    session.delete_instance(1)
    assert session.scene.order_ids() == [3, 2]
    assert session.scene.ranks() == [2, 1]
    session.rename(2, "table")
    session.set_category(2, 5)
    session.set_stuff(2, True)
    inst = session.scene.get(2)
    assert (inst.name, inst.category, inst.is_stuff) == ("table", 5, True)


def test_bad_edits_are_refused_and_change_nothing(session):
    before = masks(session)
    with pytest.raises(ValueError, match="has no instance 9"):
        session.move(9, "front")
    with pytest.raises(ValueError, match="move must be one of"):
        session.move(1, "up")
    with pytest.raises(ValueError, match="expected a 8x10 mask"):
        session.set_amodal(1, np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="mask is empty"):
        session.add_instance(np.zeros((8, 10), bool), "ghost")
    with pytest.raises(ValueError, match="in front of itself"):
        session.put_in_front(1, 1)
    assert same(masks(session), before)
    assert session.history() == ([], [])
    assert session.revision == 0
    session.move(1, "front")  # already in front: no edit, nothing saved
    assert session.history() == ([], []) and session.revision == 0


def test_undo_redo_sequences_restore_exact_states(session):
    states = [masks(session)]
    session.move(1, "back")
    states.append(masks(session))
    session.set_amodal(2, rect(2, 2, 6, 6))
    states.append(masks(session))
    session.add_instance(rect(0, 5, 3, 8), "mug")
    states.append(masks(session))
    session.delete_instance(1)
    states.append(masks(session))
    for k in range(4, 0, -1):
        assert session.undo() is not None
        assert same(masks(session), states[k - 1])
    assert session.undo() is None
    assert session.scene.get(2).external is not None  # the external mask came back with the undo
    assert session.redo() == "move 1 back"
    assert session.redo() == "edit mask of 2"
    assert same(masks(session), states[2])
    # A new edit clears the redo stack.
    session.rename(2, "plank")
    assert session.redo() is None
    assert session.history() == (["move 1 back", "edit mask of 2", "rename 2 to 'plank'"], [])
    # Undo is per scene.
    session.go_to(1)
    assert session.undo() is None
    session.go_to(0)
    assert session.undo() == "rename 2 to 'plank'"


def test_every_edit_is_saved_and_restart_resumes(tmp_path):
    ws = tmp_path / "ws"
    s = EditSession(ws, toy_set(), tmp_path)
    s.move(1, "back")
    s.set_amodal(2, rect(2, 2, 6, 6))
    s.undo()
    s.go_to(1)
    s.rename(1, "spot")
    s2 = EditSession(ws, toy_set(), tmp_path)  # a new process would do exactly this
    assert s2.current == 1 and s2.revision == s.revision == 4
    assert s2.scene.get(1).name == "spot"
    s2.go_to(0)
    assert s2.scene.order_ids() == [2, 1]
    assert np.array_equal(s2.scene.get(2).amodal, rect(3, 3, 9, 7))
    assert s2.scene.get(2).external is not None
    assert s2.redo() == "edit mask of 2"
    assert np.array_equal(s2.scene.get(2).amodal, rect(2, 2, 6, 6))
    assert s2.undo() == "edit mask of 2" and s2.undo() == "move 1 back" and s2.undo() is None
    assert s2.edited_indices() == [1]


def test_two_tabs_conflict_instead_of_overwriting(tmp_path):
    ws = tmp_path / "ws"
    tab_a = EditSession(ws, toy_set(), tmp_path)
    tab_b = EditSession(ws, toy_set(), tmp_path)
    tab_a.move(1, "back")
    before_b = masks(tab_b)
    with pytest.raises(ConflictError, match="another tab or process .revision 1, this page has revision 0"):
        tab_b.rename(1, "lid")
    assert same(masks(tab_b), before_b) and tab_b.history() == ([], [])
    with pytest.raises(ConflictError):
        tab_b.move(2, "front")
    tab_b.reload()
    assert tab_b.scene.order_ids() == [2, 1]
    tab_b.rename(1, "lid")
    with pytest.raises(ConflictError):
        tab_a.undo()
    assert tab_a.history() == (["move 1 back"], [])  # the refused undo left tab A's history alone
    fresh = EditSession(ws, toy_set(), tmp_path)
    assert fresh.scene.get(1).name == "lid" and fresh.scene.order_ids() == [2, 1]


def test_added_scene_survives_restart(tmp_path):
    ws = tmp_path / "ws"
    s = EditSession(ws, AnnotationSet(), None)
    scene = AmodalScene({"id": 1, "height": 8, "width": 10}, [Instance(1, rect(1, 1, 4, 4), name="a", score=0.9)])
    assert s.add_scene(scene, b"\x89PNG fake") == 0
    assert s.image_path().read_bytes() == b"\x89PNG fake"
    s.move(1, "back")  # single instance: no change
    s.rename(1, "b")
    s2 = EditSession(ws, AnnotationSet(), None)
    assert len(s2) == 1 and s2.scene.get(1).name == "b" and s2.scene.get(1).score == 0.9
    assert s2.undo() == "rename 1 to 'b'" and s2.scene.get(1).name == "a"
    assert s2.edited_indices() == [0]


def test_broken_workspace_files_are_set_aside_and_named(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "session.json").write_text("{not json")
    s = EditSession(ws, toy_set(), tmp_path)
    assert (ws / "session.json.broken-1").read_text() == "{not json"  # kept, renamed
    assert s.notices == [
        (
            "workspace file ws/session.json.broken-1 was set aside: ws/session.json: a readable JSON "
            "file (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
        )
    ]
    s.move(1, "back")
    scene_file = ws / "scenes" / "00000.json"
    # Valid JSON of the wrong shape (finding 12): refused when read, by name and JSON path, not a KeyError later.
    for broken, where in (
        ({"state": {"ids": [1, 2], "ranks": [1]}, "undo": [], "redo": []}, "state.ranks: a list of 2 integer ranks"),
        ({"state": None, "undo": [], "redo": []}, "state: an object with ids, ranks and instances"),
    ):
        scene_file.write_text(json.dumps(broken))
        again = EditSession(ws, toy_set(), tmp_path)
        assert again.scene.order_ids() == [1, 2] and again.history() == ([], [])  # the file's scene, usable
        assert any(f"scenes/00000.json: {where}" in n for n in again.notices), again.notices
    assert sorted(p.name for p in (ws / "scenes").iterdir()) == ["00000.json.broken-1", "00000.json.broken-2"]
    # A saved state whose masks are not the image's size.
    rec = {"state": EditSession(ws, toy_set(), tmp_path)._state(0), "undo": [], "redo": []}
    rec["state"]["instances"]["1"]["amodal"]["size"] = [3, 3]
    scene_file.write_text(json.dumps(rec))
    assert any(
        "state.instances.1.amodal.size: [8, 10] (the image's height and width), got [3, 3]" in n
        for n in EditSession(ws, toy_set(), tmp_path).notices
    )


CHILD = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
from tests.test_app_session import toy_set
from semlayer.workspace import EditSession
s = EditSession(sys.argv[1], toy_set(), None)
for k in range(10_000):
    s.move(1, "back" if k % 2 == 0 else "front")
    print(k, flush=True)
"""


def test_killed_mid_session_loses_nothing(tmp_path):
    ws = tmp_path / "ws"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ws), str(ROOT)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    done = -1
    deadline = time.time() + 30
    while done < 20 and time.time() < deadline:
        done = int(proc.stdout.readline())
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    s = EditSession(ws, toy_set(), None)
    undo, redo = s.history()
    # Every edit that returned is on disk; at most the one in flight when killed is there too.
    assert s.revision == len(undo) and done + 1 <= len(undo) <= done + 2
    assert s.scene.order_ids() == ([2, 1] if len(undo) % 2 else [1, 2])
    assert redo == []


def test_a_save_cut_off_between_its_two_files_is_finished_on_reopen(tmp_path):
    import json

    s = EditSession(tmp_path / "ws", toy_set(), None)
    s.move(1, "back")
    s.move(1, "front")
    meta_path = s.folder / "session.json"
    meta = json.loads(meta_path.read_text())
    meta["revision"] -= 1  # as if killed after the scene file of the second edit, before the session file
    meta_path.write_text(json.dumps(meta))
    again = EditSession(tmp_path / "ws", toy_set(), None)
    assert again.revision == 2 and len(again.history()[0]) == 2
    assert json.loads(meta_path.read_text())["revision"] == 2
    again.move(1, "back")  # saves without a conflict
    assert again.revision == 3 and EditSession(tmp_path / "ws", toy_set(), None).scene.order_ids() == [2, 1]


def test_browsing_keeps_only_recent_editable_copies_and_loses_no_edit(tmp_path):
    from semlayer import workspace as session_mod

    scenes = [
        AmodalScene(
            {"id": i + 1, "height": 8, "width": 10, "file_name": f"s{i}.png"},
            [Instance(1, rect(0, 0, 4, 4), rank=1, name="a"), Instance(2, rect(2, 2, 8, 6), rank=2, name="b")],
        )
        for i in range(3 * session_mod.LIVE_SCENES)
    ]
    s = EditSession(tmp_path / "ws", AnnotationSet(scenes=scenes), tmp_path)
    s.go_to(0)
    s.move(2, "front")
    edited = masks(s)
    for i in range(1, len(scenes)):
        s.go_to(i)
    held = [i for i, slot in enumerate(s._slots) if slot.live is not None]
    assert held == list(range(len(scenes) - session_mod.LIVE_SCENES, len(scenes)))
    assert set(s._caches) <= set(held)
    # Scene 0 comes back as edited, and its undo still works.
    s.go_to(0)
    assert same(masks(s), edited) and s.scene.ranks() == [2, 1]
    assert s.undo() == "move 2 front" and s.scene.ranks() == [1, 2]
    assert s.redo() == "move 2 front" and same(masks(s), edited)


def test_two_tabs_editing_different_images_at_once_lose_nothing(tmp_path):
    """Two sessions (tabs or processes) saving in parallel threads, each on its own image: no conflict, and
    every edit of both is on disk afterwards."""
    import threading

    ws = tmp_path / "ws"
    tab_a, tab_b = EditSession(ws, toy_set(), tmp_path), EditSession(ws, toy_set(), tmp_path)
    tab_b.go_to(1)
    errors = []

    def edit(session, instance_id, times):
        try:
            for k in range(times):
                session.rename(instance_id, f"name {k}")
        except Exception as err:  # noqa: BLE001 (reported by the assertion below)
            errors.append(err)

    threads = [threading.Thread(target=edit, args=(tab_a, 2, 25)), threading.Thread(target=edit, args=(tab_b, 1, 25))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    fresh = EditSession(ws, toy_set(), tmp_path)
    assert fresh.scene_at(0).get(2).name == "name 24" and fresh.scene_at(1).get(1).name == "name 24"
    fresh.go_to(0)
    assert len(fresh.history()[0]) == 25
    fresh.go_to(1)
    assert len(fresh.history()[0]) == 25
    assert fresh.revision == 50  # every save counted once
