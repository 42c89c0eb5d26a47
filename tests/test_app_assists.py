"""The page's assists (app.assists) over a tab, and the model's RoI heads on a user's box."""

import cv2
import numpy as np
import pytest

from app import assists as a
from app import handlers as h
from app import render as r
from semlayer.workspace import EditSession
from semlayer import assist
from semlayer.scene import AmodalScene, AnnotationSet, Instance

H, W = 60, 80


def rect(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture
def tab(tmp_path):
    """A red square on green, partly under an annotated front box (instance 1); the square is instance 2."""
    folder = tmp_path / "images"
    folder.mkdir()
    image = np.zeros((H, W, 3), np.uint8)
    image[:] = (40, 140, 60)
    image[15:45, 10:40] = (220, 40, 50)
    image[10:50, 30:60] = (30, 30, 200)  # the front box, drawn over the square
    cv2.imwrite(str(folder / "one.png"), image[:, :, ::-1])
    scene = AmodalScene(
        {"id": 1, "file_name": "one.png", "height": H, "width": W},
        [
            Instance(1, rect(30, 10, 60, 50), rank=1, name="front"),
            Instance(2, rect(10, 15, 40, 45), rank=2, name="square"),
        ],
    )
    return h.Tab(
        session=EditSession(tmp_path / "ws" / "set", AnnotationSet(scenes=[scene]), folder),
        cfg=h.AppConfig(workspace=tmp_path / "ws"),
    )


def test_grabcut_clicks_then_accept_as_a_new_instance_is_one_undoable_edit(tab):
    a.click(tab, 8, 13, "grabcut", "box")
    assert a.state(tab).corner == (8, 13) and a.state(tab).proposal is None
    a.click(tab, 29, 47, "grabcut", "box")  # the red part only: the front box is another colour
    assert a.state(tab).box == [8, 13, 29, 47]
    assert np.array_equal(a.state(tab).proposal, rect(10, 15, 30, 45))
    picture = a.canvas(tab, "grabcut")
    scale = r.display_scale((H, W))
    assert picture.shape == (H * scale, W * scale, 3)
    a.accept(tab, "new", "red")
    scene = tab.session.scene
    new = scene.get(tab.selected)
    assert new.name == "red" and np.array_equal(scene.visible(new.id), rect(10, 15, 30, 45))
    assert scene.order_ids() == [1, new.id, 2]  # in front of the square it overlaps, behind the front box
    assert a.state(tab).proposal is None  # accepted: the assist starts afresh
    assert tab.session.history()[0][-1].startswith("GrabCut")
    h.undo(tab)
    assert [inst.id for inst in tab.session.scene.instances] == [1, 2]


def test_grabcut_needs_a_box_first(tab):
    with pytest.raises(h.UserError, match="draw a box around the object first"):
        a.click(tab, 20, 20, "grabcut", "positive")


def test_hidden_brush_and_polygon_only_paint_under_the_front_object(tab):
    h.select_instance(tab, 2)
    a.click(tab, 45, 30, "hidden_brush", "positive", radius=30)  # a huge dab over everything
    proposal = a.state(tab).proposal
    front = rect(30, 10, 60, 50)
    assert np.array_equal(proposal & ~front, rect(10, 15, 40, 45) & ~front)
    assert proposal[10:50, 30:60].all() or proposal[front].sum() > rect(10, 15, 40, 45)[front].sum()
    a.clear(tab)
    for x, y in ((0, 0), (79, 0), (79, 59)):
        a.click(tab, x, y, "hidden_polygon", "positive")
    a.close_polygon(tab)
    tri = assist.polygon_mask((H, W), [(0, 0), (79, 0), (79, 59)])
    assert np.array_equal(a.state(tab).proposal, rect(10, 15, 40, 45) | (tri & front))
    a.accept(tab)
    assert np.array_equal(tab.session.scene.get(2).amodal, rect(10, 15, 40, 45) | (tri & front))
    assert np.array_equal(tab.session.scene.visible(2), rect(10, 15, 30, 45))  # untouched


def test_auto_sized_dab_reaches_the_mask(tab):
    h.select_instance(tab, 2)
    # Remove the hidden part first, then a dab sized by the click at 10 px from the mask refills up to it.
    tab.session.set_amodal(2, rect(10, 15, 30, 45))
    a.hidden_brush(tab, [[50, 30]], radius=0, mode="add")
    assert assist.auto_radius(rect(10, 15, 30, 45), 50, 30, True) == pytest.approx(21.0)
    assert np.array_equal(
        a.state(tab).proposal, rect(10, 15, 30, 45) | (assist.disk((H, W), 50, 30, 21) & rect(30, 10, 60, 50))
    )
    with pytest.raises(h.UserError, match="for a single dab"):
        a.hidden_brush(tab, [[50, 30], [52, 30]], radius=0)


def test_completions_and_accept_rules(tab):
    tab.session.set_amodal(2, rect(10, 15, 30, 45))
    with pytest.raises(h.UserError, match="select an instance first"):
        a.complete(tab, "hull")
    summary = a.complete(tab, "mirror", instance_id=2)
    assert summary["kind"] == "amodal" and summary["instance"] == 2
    # A rectangle's hidden length is anyone's guess: the proposal keeps the visible part and adds a strip
    # of the same height under the front box, from the visible edge on.
    proposal = a.state(tab).proposal
    extra = proposal & ~rect(10, 15, 30, 45)
    assert np.array_equal(proposal & rect(10, 15, 30, 45), rect(10, 15, 30, 45))
    assert extra.any() and not (extra & ~rect(30, 10, 60, 50)).any()
    ys, xs = np.nonzero(extra)
    assert (ys.min(), ys.max(), xs.min()) == (15, 44, 30)
    with pytest.raises(h.UserError, match="cannot be accepted as 'visible'"):
        a.accept(tab, "visible")
    with pytest.raises(h.UserError, match="no model is loaded"):
        a.complete(tab, "model", instance_id=2)
    a.run_superpixels(tab, [[20, 30]])
    assert a.state(tab).kind == "visible"
    with pytest.raises(h.UserError, match="select an instance first"):
        a.accept(tab, "visible")


def test_the_models_roi_heads_on_its_own_box_give_its_own_mask():
    """On a detection's own box and class, the RoI heads run by hand give the mask the predictor pasted."""
    from semlayer import formats
    from semlayer.figures import DEMO_ANNOTATIONS, DEMO_IMAGES
    from semlayer.images import read_image
    from semlayer.predict import DEFAULT_CHECKPOINT, Predictor

    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip("the shipped checkpoint is not in this checkout")
    predictor = Predictor(DEFAULT_CHECKPOINT, device="cpu")
    scene = formats.load(DEMO_ANNOTATIONS).scenes[0]
    image = read_image(DEMO_IMAGES / scene.file_name)
    predictor.set_image(image)
    completer = assist.BoxCompleter(predictor)
    found = predictor.scene(0.5)
    assert len(found) >= 1
    for inst in found.instances:
        maps = predictor.instance_maps(inst.id)
        mask, category = completer.amodal_in_frame(image, maps.box, maps.category)
        assert category == maps.category
        assert assist.iou(mask, maps.amodal) > 0.99
    # With no category the box head chooses one of the model's.
    _, chosen = completer.amodal(image, [10, 10, 60, 60])
    assert chosen in [c["id"] for c in predictor.categories]


def test_model_completion_in_the_app_is_the_librarys_on_the_same_box(tmp_path):
    from app.model import load_model
    from semlayer.figures import DEMO_ANNOTATIONS, DEMO_IMAGES
    from semlayer.predict import DEFAULT_CHECKPOINT

    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip("the shipped checkpoint is not in this checkout")
    cfg = h.AppConfig(
        workspace=tmp_path / "ws", data=DEMO_ANNOTATIONS, images=DEMO_IMAGES, checkpoint=DEFAULT_CHECKPOINT
    )
    tab = h.new_tab(cfg)
    scene = tab.session.scene
    occluded = [inst.id for inst in scene.instances if scene.occluded(inst.id).any()]
    target = occluded[0] if occluded else scene.instances[0].id
    box = [5, 5, 60, 70]
    got = a.complete(tab, "model", instance_id=target, box=box)
    completer = assist.BoxCompleter(load_model(DEFAULT_CHECKPOINT).predictor)
    want = assist.model_proposal(completer, tab.current_image(), scene, target, box)
    assert got["kind"] == "amodal" and np.array_equal(a.state(tab).proposal, want)
    assert np.array_equal(want & scene.visible(target), scene.visible(target))  # the visible part stays
    assert not (want & ~scene.visible(target) & ~scene.front_union(target)).any()  # added only under occluders
