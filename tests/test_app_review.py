"""The app's review queue: the tab's model ranks the tab's session, marks persist in the workspace."""

import pytest

from app import handlers as h
from app.review import review_queue
from semlayer.predict import DEFAULT_CHECKPOINT
from semlayer.resources import ROOT
from semlayer.workspace import EditSession

DEMO = ROOT / "assets" / "demo"


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
