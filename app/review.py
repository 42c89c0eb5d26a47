"""The review queue behind the page: one `semlayer.review.ReviewQueue` per editing session and model, its
predictions through the app's model (its lock and its per-image cache)."""

from __future__ import annotations

import weakref

from semlayer.review import ReviewQueue, file_key
from semlayer.scene import AmodalScene
from semlayer.workspace import EditSession

from .tab import Tab, UserError, load_image

_QUEUES: weakref.WeakKeyDictionary[EditSession, dict[str, ReviewQueue]] = weakref.WeakKeyDictionary()


def review_queue(tab: Tab) -> ReviewQueue:
    """The tab's queue (shared by the tabs of one session and model); the page shows its `order`, its
    `done_text` and each image's reasons, and "next unreviewed" is `next_unreviewed(current)`."""
    model, cfg = tab.model, tab.cfg
    if model is None:
        raise UserError("no model is loaded: the review queue ranks images by how much the model disagrees")
    session = tab.session
    queues = _QUEUES.setdefault(session, {})
    if model.checkpoint not in queues:

        def predict(index: int) -> AmodalScene:
            record = session.scene_at(index).image
            return model.predict(load_image(session.image_path(index)), record, cfg.score_thr)

        queues[model.checkpoint] = ReviewQueue(
            session.folder, len(session), session.scene_at, predict,
            lambda index: file_key(session.image_path(index)), model.checkpoint, cfg.score_thr,
        )  # fmt: skip
    return queues[model.checkpoint]
