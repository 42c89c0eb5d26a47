"""The model helps (issue 19): adopt a predicted object into the annotation, and a new object proposed from a
box by the model's RoI heads, each placed in depth by the library's rule (semlayer.assist.depth_rank)."""

import cv2
import numpy as np
import pytest

from app import assists as a
from app import handlers as h
from app import render as r
from app.model import Model, register_model
from app.tab import Source
from semlayer import assist
from semlayer.scene import AmodalScene, AnnotationSet, Instance
from semlayer.workspace import EditSession

H, W = 60, 80
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 2, "name": "box"}]


def rect(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


FRONT, BACK = rect(0, 0, 40, 30), rect(20, 10, 70, 50)
NEW, LONE = rect(30, 20, 60, 40), rect(0, 50, 10, 60)


class Predictor:
    """The model's view: the two annotated objects, a box between them (behind the front one, in front of
    the back one) that the annotation misses, and a lone widget it misses too."""

    categories = [{"id": 17, "name": "box"}, {"id": 18, "name": "widget"}]
    model = None  # a network, as far as the app's check for one goes (the test's completer stands in for it)

    def set_image(self, image):
        pass

    def scene(self, score_thr=0.5):
        return AmodalScene(
            {"id": 0, "height": H, "width": W},
            [
                Instance(1, FRONT, rank=1, name="person", category=17, score=0.95),
                Instance(2, BACK, rank=4, name="box", category=17, score=0.9),
                Instance(3, NEW, rank=2, name="box", category=17, score=0.8),
                Instance(4, LONE, rank=3, name="widget", category=18, score=0.6),
            ],
        )


@pytest.fixture
def tab(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "one.png"), np.full((H, W, 3), 90, np.uint8))
    scene = AmodalScene(
        {"id": 1, "file_name": "one.png", "height": H, "width": W},
        [Instance(1, FRONT, rank=1, name="person", category=1), Instance(2, BACK, rank=2, name="box", category=2)],
    )
    annset = AnnotationSet(scenes=[scene], categories=CATEGORIES)
    ckpt = tmp_path / "fake.pt"
    ckpt.write_bytes(b"fake")
    register_model(str(ckpt), Model(Predictor(), str(ckpt)))
    tab = h.Tab(session=EditSession(tmp_path / "ws" / "set", annset, folder), cfg=h.AppConfig(workspace=tmp_path))
    tab.checkpoint = str(ckpt)
    return tab


def test_adopt_the_selected_prediction_between_the_objects_the_prediction_has_around_it(tab):
    tab.show = Source.PREDICTION
    h.select_instance(tab, 3, "prediction")
    out = a.adopt(tab)
    scene = tab.session.scene
    new = scene.get(out["added"][0])
    assert np.array_equal(new.amodal, NEW) and (new.name, new.category) == ("box", 2) and out["notes"] == []
    # The prediction has it behind the front object's match and in front of the back one's: rank 2 of 3.
    assert scene.order_ids() == [1, new.id, 2] and new.rank == 2
    assert (tab.selected, tab.selected_in, tab.show) == (new.id, Source.ANNOTATION, Source.BOTH)
    assert tab.session.history()[0][-1] == "adopt predicted 'box' (#3)"
    h.undo(tab)
    assert [(i.id, i.rank) for i in tab.session.scene.instances] == [(1, 1), (2, 2)]


def test_adopt_needs_a_selected_prediction_and_says_when_the_category_is_a_guess(tab):
    with pytest.raises(h.UserError, match="select an object of the prediction first"):
        a.adopt(tab)
    out = a.adopt(tab, 4)
    new = tab.session.scene.get(out["added"][0])
    # No "widget" among the dataset's categories: its first one, and the page says so.
    assert (new.category, new.name, new.rank) == (1, "person", 1)  # overlaps nothing: at the front
    assert out["notes"] == ["this dataset has no category 'widget': set to its first, 'person'; correct it if wrong"]
    assert a.state(tab).note == out["notes"][0]
    with pytest.raises(h.UserError, match="the prediction has no object 9"):
        a.adopt(tab, 9)


def test_adopt_all_missing_is_one_undo_step(tab):
    assert assist.missing_predictions(tab.session.scene, tab.prediction()) == [3, 4]
    out = a.adopt_missing(tab)
    scene = tab.session.scene
    box, widget = out["added"]
    assert np.array_equal(scene.get(box).amodal, NEW) and np.array_equal(scene.get(widget).amodal, LONE)
    assert scene.order_ids() == [widget, 1, box, 2]
    assert len(tab.session.history()[0]) == 1
    with pytest.raises(h.UserError, match="nothing missing to adopt"):
        a.adopt_missing(tab)
    h.undo(tab)
    assert [i.id for i in tab.session.scene.instances] == [1, 2]


def test_depth_rank_contradicts_the_fewest_judgements_and_prefers_the_front():
    scene = AmodalScene(
        {"id": 1, "height": H, "width": W},
        [Instance(i, rect(0, 0, 10 * i, 10), rank=i) for i in (1, 2, 3)],
    )
    assert assist.depth_rank(scene, {}) == 1
    assert assist.depth_rank(scene, {2: False}) == 3
    assert assist.depth_rank(scene, {2: True, 3: True}) == 1
    assert assist.depth_rank(scene, {1: False, 3: True}) == 2
    assert assist.depth_rank(scene, {1: True, 3: False}) == 1  # contradictory: one either way, the front wins
    # Unknown order: in front where the new object is visible on at least half of the overlap.
    amodal = rect(0, 0, 30, 10)
    assert assist.depth_judgements(scene, amodal, rect(5, 0, 30, 10)) == {1: True, 2: True, 3: True}
    assert assist.depth_judgements(scene, amodal, rect(6, 0, 30, 10)) == {1: False, 2: True, 3: True}


class Completer:
    """The RoI heads' answer for any box: the missed box, its visible part all but what the front object hides."""

    predictor = Predictor()

    def object_in(self, image, box):
        return NEW, NEW & ~FRONT, 17


def test_a_box_proposes_an_object_at_its_depth_and_accept_adds_it_there(tab, monkeypatch):
    monkeypatch.setitem(a._COMPLETERS, tab.checkpoint, Completer())
    a.draw_boxes_on_image(tab, True)
    assert a.main_image_click(tab, 28, 18) and a.state(tab).proposal is None
    assert a.main_image_click(tab, 61, 41)
    summary = a.proposal_summary(tab)
    assert summary["kind"] == "object" and summary["area"] == int(NEW.sum())
    assert summary["object"] == {"name": "box", "category": 2, "rank": 2, "area": 600, "visible_area": 500,
                                 "in_front_of": [2], "behind": [1], "note": ""}  # fmt: skip
    assert a.state(tab).box == [28, 18, 61, 41]
    view = r.view_picture(tab)
    drawn = a.view_with_proposal(tab, view).pixels
    assert drawn.shape == view.pixels.shape and (drawn != view.pixels).any()  # the proposal over the view
    a.accept(tab)
    scene = tab.session.scene
    new = scene.get(tab.selected)
    assert np.array_equal(new.amodal, NEW) and scene.order_ids() == [1, new.id, 2]
    assert np.array_equal(scene.visible(new.id), NEW & ~FRONT)
    assert a.state(tab).proposal is None and a.state(tab).boxes_on_image  # the box mode stays on
    h.undo(tab)
    assert [i.id for i in tab.session.scene.instances] == [1, 2]


def test_clicks_select_when_no_box_is_drawn_and_a_box_needs_a_model(tab):
    assert not a.main_image_click(tab, 5, 5)
    tab.checkpoint = None
    a.draw_boxes_on_image(tab, True)
    a.main_image_click(tab, 5, 5)
    with pytest.raises(h.UserError, match="no model is loaded"):
        a.main_image_click(tab, 30, 30)
    with pytest.raises(h.UserError, match="no model is loaded"):
        a.adopt(tab, 3)


def test_the_shipped_models_box_proposal_on_a_detections_box_is_that_detection(tmp_path):
    """On the demo, a box around a predicted object: the heads give back its amodal mask and layer-0 visible
    part, and accepting adds it at the proposed rank."""
    from app.model import load_model
    from semlayer.figures import DEMO_ANNOTATIONS, DEMO_IMAGES
    from semlayer.predict import DEFAULT_CHECKPOINT

    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip("the shipped checkpoint is not in this checkout")
    cfg = h.AppConfig(
        workspace=tmp_path / "ws", data=DEMO_ANNOTATIONS, images=DEMO_IMAGES, checkpoint=DEFAULT_CHECKPOINT
    )
    tab = h.new_tab(cfg)
    predicted = tab.prediction()
    target = max(predicted.instances, key=lambda inst: inst.area)
    x, y, w, hgt = target.bbox()
    box = [x, y, x + w - 1, y + hgt - 1]
    summary = a.propose_object(tab, box)
    obj = a.state(tab).new_object
    completer = assist.BoxCompleter(load_model(DEFAULT_CHECKPOINT).predictor)
    amodal, visible, _ = completer.object_in(tab.current_image(), box)
    assert np.array_equal(obj.amodal, amodal) and assist.iou(amodal, target.amodal) > 0.9
    scene = tab.session.scene
    in_front = assist.depth_judgements(scene, amodal, visible)
    assert obj.in_front == in_front and summary["object"]["rank"] == assist.depth_rank(scene, in_front)
    before = scene.order_ids()
    a.accept(tab)
    order = tab.session.scene.order_ids()
    assert order.index(tab.selected) == obj.rank - 1 and [i for i in order if i != tab.selected] == before


def test_undoing_an_adoption_forgets_its_selection_and_the_view_still_draws(tab):
    out = a.adopt(tab, 3)
    assert tab.selected == out["added"][0]
    h.undo(tab)
    assert tab.selected is None
    r.render(tab)  # the view outlines no removed object


def test_an_annotated_object_the_prediction_does_not_match_is_judged_by_the_predicted_visible_part():
    """Annotated: a small object the model does not find, overlapping the missed box where the model's front
    object hides two thirds of that overlap: the adopted box goes behind it."""
    other = rect(30, 15, 40, 35)
    annotation = AmodalScene({"id": 1, "height": H, "width": W}, [Instance(5, other, rank=1, name="post")])
    prediction = Predictor().scene()
    proposal = assist.adoption(annotation, prediction, 3, CATEGORIES)
    assert assist.predicted_order(annotation, prediction, 3) == {}
    assert proposal.in_front == {5: False} and proposal.rank == 2
    assert np.array_equal(proposal.visible, NEW & ~other) and (proposal.name, proposal.category) == ("box", 2)
