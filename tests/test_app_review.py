"""The app's review queue: the tab's model ranks the tab's session, marks persist in the workspace."""

import gc
import json
import weakref

import cv2
import numpy as np
import pytest

from app import handlers as h
from app.model import Model, register_model
from app.review import _QUEUES, review_mark, review_next, review_queue, review_status, review_text, reviewed_marks
from semlayer.predict import DEFAULT_CHECKPOINT
from semlayer.resources import ROOT
from semlayer.workspace import EditSession
from tests.test_app_handlers import FakePredictor, scenes

DEMO = ROOT / "assets" / "demo"


@pytest.fixture
def fake_tab(tmp_path):
    """test_app_handlers' two scenes, and its fake model (two boxes in every image) when ``model`` is set."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("one.png", "two.png"):
        cv2.imwrite(str(folder / name), np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    return h.Tab(session=EditSession(tmp_path / "ws" / "set", scenes(), folder), cfg=h.AppConfig(workspace=tmp_path))


@pytest.fixture
def fake_model_tab(tmp_path, fake_tab):
    ckpt = tmp_path / "fake.pt"
    ckpt.write_bytes(b"fake")
    register_model(str(ckpt), Model(FakePredictor(), str(ckpt)))
    fake_tab.checkpoint = str(ckpt)
    return fake_tab


def test_the_review_queue_of_a_tab(tmp_path):
    cfg = h.AppConfig(workspace=tmp_path, data=DEMO / "annotations.json", images=DEMO / "images")
    tab = h.Tab(session=EditSession.open(tmp_path, cfg.data, cfg.images), cfg=cfg)
    with pytest.raises(h.UserError, match="no model is loaded"):
        review_queue(tab)
    tab.checkpoint = str(DEFAULT_CHECKPOINT)
    queue = review_queue(tab)
    assert review_queue(tab) is queue and queue.count == len(tab.session) == 12
    first = queue.next_unreviewed()
    ranked = queue.ranking()
    assert len(ranked) == 8 and first == ranked[0].index
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    # The queue's prediction of an image is the page's (the model's cache).
    tab.session.go_to(first)
    assert len(tab.prediction()) == len(ranked[0].matched) + ranked[0].extra
    queue.mark_reviewed(first)
    assert queue.done_text() == "1 of 12 done" and queue.next_unreviewed(first) != first
    other = h.Tab(session=EditSession.open(tmp_path, cfg.data, cfg.images), cfg=cfg, checkpoint=str(DEFAULT_CHECKPOINT))
    assert review_queue(other) is not queue and review_queue(other).reviewed == {first}


def test_review_panel_shows_the_queue_marks_and_goes_to_the_top_unreviewed(fake_model_tab):
    """The fake model finds two boxes in each image that match no annotated object: image 1 (three
    annotated objects) disagrees most, then image 2 (one)."""
    tab = fake_model_tab
    status = review_status(tab)
    assert status == {
        "index": 0, "reviewed": False, "score": 5.0, "done": 0, "total": 2, "queue": [0, 1], "scored": 1,
        "reasons": ["3 annotated objects the model does not find (#1, #2, #3)",
                    "2 objects the model finds are not annotated"],
    }  # fmt: skip
    assert review_text(tab) == (
        "review queue · **0 of 2 done** · this image: not reviewed yet\n"
        "- 3 annotated objects the model does not find (#1, #2, #3)\n"
        "- 2 objects the model finds are not annotated\n\n"
        "queue (most disagreement first; 1 of 2 images scored so far): 1, 2"
    )
    # From an unreviewed image, "next unreviewed" skips it: the next one in queue order.
    assert review_next(tab)["index"] == 1 == tab.session.current
    marked = review_mark(tab)
    assert (marked["done"], marked["reviewed"], marked["scored"]) == (1, True, 2)
    assert marked["reasons"] == [
        "1 annotated object the model does not find (#1)",
        "2 objects the model finds are not annotated",
    ]
    assert reviewed_marks(tab) == {1}
    assert review_text(tab).splitlines()[0] == "review queue · **1 of 2 done** · this image: ✓ reviewed"
    assert review_text(tab).endswith("queue (most disagreement first; 2 of 2 images scored so far): 1, 2 ✓")
    # After marking, "next unreviewed" goes to the top unreviewed image of the queue.
    assert review_next(tab)["index"] == 0 == tab.session.current
    with pytest.raises(h.UserError, match="this is the last unreviewed image: mark it reviewed"):
        review_next(tab)
    assert review_mark(tab)["done"] == 2
    with pytest.raises(h.UserError, match=r"every image is reviewed \(2 of 2 done\)"):
        review_next(tab)
    assert review_mark(tab, reviewed=False)["done"] == 1 and reviewed_marks(tab) == {1}
    # The marks are kept in the workspace.
    assert json.loads((tab.session.folder / "review.json").read_text())["reviewed"] == [1]


def test_without_a_model_the_review_panel_says_why(fake_tab):
    tab = fake_tab
    assert review_text(tab) == (
        "review queue: no model is loaded: the review queue ranks images by how much the model disagrees"
    )
    assert reviewed_marks(tab) == set()
    with pytest.raises(h.UserError, match="no model is loaded"):
        review_next(tab)


def test_a_closed_session_takes_its_queue_with_it(fake_model_tab):
    review_status(fake_model_tab)
    session, queues = weakref.ref(fake_model_tab.session), len(_QUEUES)
    assert session() in _QUEUES
    fake_model_tab.session = None
    gc.collect()
    assert session() is None and len(_QUEUES) == queues - 1


def test_a_session_with_more_images_gets_a_queue_of_them(fake_model_tab):
    tab = fake_model_tab
    queue = review_queue(tab)
    scene = tab.session.scene_at(1).copy()
    tab.session.add_scene(scene, (tab.session.image_dir / "two.png").read_bytes())
    assert review_queue(tab) is not queue and review_queue(tab).count == 3
    assert review_mark(tab)["total"] == 3
