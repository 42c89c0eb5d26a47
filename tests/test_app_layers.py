"""The layer list (issue 19) through its handlers: hide, solo, lock, reorder by a new order, the forward /
backward messages, the list's rows and HTML."""

import json

import numpy as np
import pytest

from app import assists
from app import handlers as h
from app import layers
from app import render as r
from app.layout import table_value
from app.tab import Source
from semlayer import viz
from semlayer.workspace import EditSession
from tests import test_app_handlers as handler_tests
from tests.test_app_handlers import scenes

# The handler tests' fixtures: a tab on two small scenes (and one with a fake model).
cfg, images, tab, model_tab = handler_tests.cfg, handler_tests.images, handler_tests.tab, handler_tests.model_tab


def tinted(pixel, instance_id, alpha=0.5):
    p = pixel.astype(np.float32)
    color = np.array(viz.instance_color(instance_id), np.float32)
    return np.clip(np.rint(p + (color - p) * np.float32(alpha)), 0, 255).astype(np.uint8)


def test_hide_and_solo_change_what_is_drawn_and_clicked(tab):
    """Scene 1: a (#2, front) inside b (#1) inside c (#3)."""
    tab.view = "visible"
    image = tab.current_image()
    assert tab.shown_ids(Source.ANNOTATION) is None
    assert layers.toggle_hidden(tab, 2) is True
    assert tab.shown_ids(Source.ANNOTATION) == {1, 3}
    view = r.render_view(tab)
    np.testing.assert_array_equal(view[20, 20], image[20, 20])  # a's pixels: a hidden, b and c hidden under it
    np.testing.assert_array_equal(view[27, 27], tinted(image[27, 27], 1))  # b as before (its label is elsewhere)
    assert h.select_at(tab, 20, 20)["id"] == 1  # a hidden object is clicked through
    assert layers.toggle_solo(tab, 3) is True
    assert tab.shown_ids(Source.ANNOTATION) == {3}
    view = r.render_view(tab)
    np.testing.assert_array_equal(view[12, 12], image[12, 12])
    np.testing.assert_array_equal(view[32, 45], tinted(image[32, 45], 3))
    assert h.select_at(tab, 12, 12)["id"] == 3
    assert [(row["id"], row["hidden"], row["solo"]) for row in layers.rows(tab)] == [
        (2, True, False), (1, True, False), (3, False, True),
    ]  # fmt: skip
    assert layers.toggle_solo(tab, 3) is False and tab.shown_ids(Source.ANNOTATION) == {1, 3}
    assert layers.toggle_hidden(tab, 2) is False and tab.shown_ids(Source.ANNOTATION) is None
    with pytest.raises(h.UserError, match="has no instance 9"):
        layers.toggle_hidden(tab, 9)


def test_layer_state_is_per_image_and_kept_in_the_workspace(tab, cfg, images, tmp_path):
    layers.toggle_hidden(tab, 1)
    layers.toggle_lock(tab, 3)
    saved = json.loads((tab.session.folder / h.VIEW_SETTINGS).read_text())
    assert saved["layers"] == {"annotation:1": {"hidden": [1], "solo": None, "locked": [3]}}
    h.go_to(tab, 1)  # another image: its own state
    assert tab.shown_ids(Source.ANNOTATION) is None and tab.layer_state().locked == set()
    again = h.Tab(session=EditSession(tmp_path / "ws" / "set", scenes(), images), cfg=cfg)
    h.load_view_settings(again)
    assert again.session.current == 1 and again.shown_ids(Source.ANNOTATION) is None
    h.go_to(again, 0)
    assert again.shown_ids(Source.ANNOTATION) == {2, 3} and again.layer_state().locked == {3}


def test_a_locked_object_refuses_every_edit_until_unlocked(tab):
    assert layers.toggle_lock(tab, 2) is True
    h.select_instance(tab, 2)
    message = r"#2 is locked: unlock it in the layer list"
    for edit in (
        lambda: h.reorder(tab, "back"),
        lambda: h.reorder(tab, "back", 2),  # the API names the object
        lambda: h.put_in_front(tab, 3),
        lambda: h.set_attributes(tab, "renamed", None, False),
        lambda: h.delete_selected(tab),
        lambda: h.apply_editor_mask(tab, {"layers": [np.full((40, 60, 4), 255, np.uint8)]}),
        lambda: layers.reorder_to(tab, [1, 3, 2]),  # dragging it to the back
        lambda: assists.complete(tab, "hull"),
        lambda: assists.hidden_polygon(tab, [[0, 0], [30, 0], [30, 30]], instance_id=2),  # as the API names it
    ):
        with pytest.raises(h.UserError, match=message):
            edit()
    assert tab.session.history() == ([], []) and tab.session.scene.order_ids() == [2, 1, 3]
    h.reorder(tab, "back", 1)  # the others still move
    assert tab.session.scene.order_ids() == [2, 3, 1]
    assert layers.toggle_lock(tab, 2) is False
    h.reorder(tab, "back")
    assert tab.session.scene.order_ids() == [3, 1, 2]


def test_reorder_by_a_new_order_is_one_undo_step_with_exact_ranks(tab):
    scene = tab.session.scene
    assert scene.order_ids() == [2, 1, 3]
    assert layers.reorder_to(tab, [3, 2, 1]) == "put 3 in front of 2"  # c dragged to the top
    scene = tab.session.scene
    assert {inst.id: inst.rank for inst in scene.instances} == {3: 1, 2: 2, 1: 3}
    assert np.array_equal(scene.visible(3), scene.get(3).amodal)  # c in front: all of it visible
    assert scene.visible(1).sum() == 0  # b is inside c
    assert tab.session.history() == (["put 3 in front of 2"], [])
    assert h.undo(tab) == "put 3 in front of 2"
    assert tab.session.scene.order_ids() == [2, 1, 3] and tab.session.history() == ([], ["put 3 in front of 2"])
    assert layers.reorder_to(tab, [1, 3, 2]) == "put 2 behind 3"  # a dragged to the bottom
    assert tab.session.scene.order_ids() == [1, 3, 2]
    assert layers.reorder_to(tab, [1, 3, 2]) is None and len(tab.session.history()[0]) == 1  # unchanged
    layers.act(tab, "order", 3, order=json.dumps([3, 1, 2]))  # as the page sends it: c dragged up one row
    assert tab.session.scene.order_ids() == [3, 1, 2] and tab.session.history()[0][-1] == "put 3 in front of 1"
    assert layers.reorder_to(tab, [1, 3, 2]) == "put 3 behind 1"  # neighbours swapped, no row named: the first
    for bad, message in (([3, 1], "out of date"), ([3, 1, 2, 2], "out of date"), ("3,1,2", "list of instance ids")):
        with pytest.raises(h.UserError, match=message):
            layers.reorder_to(tab, bad)
    with pytest.raises(h.UserError, match="could not be read"):
        layers.act(tab, "order", order="[3, 1")


def test_neighbours_swapped_move_the_unlocked_one_and_many_moves_wait_for_no_locks(tab):
    layers.toggle_lock(tab, 2)
    assert layers.reorder_to(tab, [1, 2, 3]) == "put 1 in front of 2"  # a or b moved: a is locked, so b
    with pytest.raises(h.UserError, match="one object at a time while objects are locked"):
        layers.reorder_to(tab, [3, 2, 1])  # reversed: no single move does it
    layers.toggle_lock(tab, 2)
    assert layers.reorder_to(tab, [3, 2, 1]) == "reorder" and tab.session.scene.order_ids() == [3, 2, 1]


def test_the_prediction_is_listed_but_not_locked_or_reordered(model_tab):
    tab = model_tab
    h.set_view_setting(tab, "show", "prediction")
    assert [row["id"] for row in layers.rows(tab)] == [1, 2]
    assert layers.toggle_hidden(tab, 2) is True and tab.shown_ids(Source.PREDICTION) == {1}
    assert tab.shown_ids(Source.ANNOTATION) is None  # the annotation's own state
    with pytest.raises(h.UserError, match="nothing to lock"):
        layers.toggle_lock(tab, 1)
    with pytest.raises(h.UserError, match="show the annotation to reorder"):
        layers.reorder_to(tab, [2, 1])
    assert 'draggable="false"' in layers.list_html(tab)


def test_forward_and_backward_say_when_nothing_that_way_overlaps(tab):
    apart = np.zeros((40, 60), bool)
    apart[2:8, 52:58] = True  # right of c: touches nobody
    h.select_instance(tab, tab.session.add_instance(apart, "apart"))  # #4, at the front
    assert tab.session.scene.order_ids() == [4, 2, 1, 3]
    with pytest.raises(h.UserError, match="#4 is already at the front"):
        h.reorder(tab, "forward")
    with pytest.raises(h.UserError, match=r"nothing behind #4 overlaps it, so a step backward would change nothing "
                                          r"you can see \(use 'to back' to move it anyway\)"):  # fmt: skip
        h.reorder(tab, "backward")
    h.select_instance(tab, 3)  # c, at the back
    with pytest.raises(h.UserError, match="#3 is already at the back"):
        h.reorder(tab, "backward")
    h.reorder(tab, "forward")  # past b, which it overlaps
    assert tab.session.scene.order_ids() == [4, 2, 3, 1]
    h.reorder(tab, "forward")  # past a
    assert tab.session.scene.order_ids() == [4, 3, 2, 1]
    with pytest.raises(h.UserError, match=r"nothing in front of #3 overlaps it"):
        h.reorder(tab, "forward")


def test_rows_and_html_front_first_in_each_objects_colour(tab):
    tab.session.scene.get(1).name = "<b>b & co</b>"
    h.select_instance(tab, 1)
    assert layers.rows(tab) == [
        {"id": 2, "rank": 1, "name": "a", "color": "#ff7f0e", "hidden": False, "solo": False, "locked": False,
         "selected": False},
        {"id": 1, "rank": 2, "name": "<b>b & co</b>", "color": "#1f77b4", "hidden": False, "solo": False,
         "locked": False, "selected": True},
        {"id": 3, "rank": 3, "name": "c", "color": "#2ca02c", "hidden": False, "solo": False, "locked": False,
         "selected": False},
    ]  # fmt: skip
    text = layers.list_html(tab)
    assert "&lt;b&gt;b &amp; co&lt;/b&gt;" in text and "<b>b" not in text
    assert [int(part.split('"')[0]) for part in text.split('data-id="')[1:]] == [2, 1, 3]
    assert 'class="layer-row selected" draggable="true" data-id="1"' in text
    assert 'style="background:#1f77b4;color:rgb(255, 255, 255)">2<' in text
    layers.act(tab, "select", 3)
    assert tab.selected == 3
    with pytest.raises(h.UserError, match="a layer action is one of"):
        layers.act(tab, "paint", 3)


def test_the_table_colours_each_rank_cell_as_its_object(tab):
    rows = r.instance_rows(tab.session.scene)
    value = table_value(rows)
    assert value["data"] == rows and value["headers"] == r.TABLE_HEADERS
    assert [row[0] for row in value["metadata"]["styling"]] == [
        "background-color: #ff7f0e; color: rgb(0, 0, 0)",
        "background-color: #1f77b4; color: rgb(255, 255, 255)",
        "background-color: #2ca02c; color: rgb(255, 255, 255)",
    ]
    assert all(cell == "" for row in value["metadata"]["styling"] for cell in row[1:])
