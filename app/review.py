"""The review queue behind the page: one `semlayer.review.ReviewQueue` per editing session and model, its
predictions through the app's model (its lock and its per-image cache)."""

from __future__ import annotations

import weakref
from typing import Any

from semlayer.review import ReviewQueue, file_key
from semlayer.scene import AmodalScene
from semlayer.workspace import EditSession

from .handlers import go_to
from .tab import Tab, UserError, load_image

_QUEUES: weakref.WeakKeyDictionary[EditSession, dict[str, ReviewQueue]] = weakref.WeakKeyDictionary()


def review_queue(tab: Tab) -> ReviewQueue:
    """The tab's queue (shared by the tabs of one session and model; made again when the session has more
    images, as uploads do); the page shows its `order`, its `done_text` and each image's reasons, and "next
    unreviewed" is `next_unreviewed(current)`."""
    model, cfg = tab.model, tab.cfg
    if model is None:
        raise UserError("no model is loaded: the review queue ranks images by how much the model disagrees")
    queues = _QUEUES.setdefault(tab.session, {})
    queue = queues.get(model.checkpoint)
    if queue is None or queue.count != len(tab.session):
        # The queue reaches its session by a weak reference: a strong one would keep the session, its key in
        # _QUEUES, alive for the life of the process after its tab is gone.
        session = weakref.ref(tab.session)

        def annotation(index: int) -> AmodalScene:
            return live(session).scene_at(index)

        def predict(index: int) -> AmodalScene:
            record = live(session).scene_at(index).image
            return model.predict(load_image(live(session).image_path(index)), record, cfg.score_thr)

        def image_key(index: int) -> str:
            return file_key(live(session).image_path(index))

        queue = queues[model.checkpoint] = ReviewQueue(
            tab.session.folder, len(tab.session), annotation, predict, image_key, model.checkpoint, cfg.score_thr
        )
    return queue


def live(session: weakref.ref[EditSession]) -> EditSession:
    found = session()
    if found is None:  # only a queue whose tab is gone could ask, and nothing uses that queue
        raise UserError("this review queue's dataset is closed")
    return found


# ----- the review panel: where the tab is in the queue, "next unreviewed", "mark reviewed" -------------
QUEUE_SHOWN = 12  # queue entries the panel lists


def review_status(tab: Tab) -> dict[str, Any]:
    """The current image in the queue: ``index``, ``reviewed``, its ``reasons`` and ``score``; ``done`` and
    ``total`` images reviewed; the ``queue`` order (scored images ranked, then the ``scored``-less rest in
    dataset order)."""
    if not len(tab.session):
        raise UserError("no image yet: the review queue ranks the images of an opened dataset")
    queue = review_queue(tab)
    current = tab.session.current
    review = queue.review(current)
    done, total = queue.done()
    return {
        "index": current, "reviewed": current in queue.reviewed, "reasons": list(review.reasons),
        "score": review.score, "done": done, "total": total, "queue": queue.order(),
        "scored": len(queue.ranking()),
    }  # fmt: skip


def review_next(tab: Tab) -> dict[str, Any]:
    """Go to the next unreviewed image: after marking the current one, the top unreviewed image of the
    queue; from an unreviewed one (skipping it), the next unreviewed one after it in queue order."""
    queue = review_queue(tab)
    current = tab.session.current
    target = queue.next_unreviewed(None if current in queue.reviewed else current)
    if target is None:
        if current in queue.reviewed:
            raise UserError(f"every image is reviewed ({queue.done_text()})")
        raise UserError("this is the last unreviewed image: mark it reviewed when it is right")
    go_to(tab, target)
    return review_status(tab)


def review_mark(tab: Tab, reviewed: bool = True) -> dict[str, Any]:
    """Mark the current image reviewed (``reviewed`` False: not reviewed); the mark is saved at once."""
    if not len(tab.session):
        raise UserError("no image yet: open a dataset to review it")
    review_queue(tab).mark_reviewed(tab.session.current, bool(reviewed))
    return review_status(tab)


def reviewed_marks(tab: Tab) -> set[int]:
    """The images marked reviewed (none without a model: the queue is the model's)."""
    return set() if tab.checkpoint is None or not len(tab.session) else set(review_queue(tab).reviewed)


def review_text(tab: Tab) -> str:
    """The review panel's text: N of M done, this image's reasons, the queue so far."""
    try:
        status = review_status(tab)
    except UserError as err:
        return f"review queue: {err}"
    mark = "✓ reviewed" if status["reviewed"] else "not reviewed yet"
    lines = [f"review queue · **{status['done']} of {status['total']} done** · this image: {mark}"]
    lines += [f"- {reason}" for reason in status["reasons"]] or ["- the model agrees with the annotation"]
    reviewed = reviewed_marks(tab)
    shown = [f"{i + 1}{' ✓' if i in reviewed else ''}" for i in status["queue"][:QUEUE_SHOWN]]
    more = " …" if len(status["queue"]) > QUEUE_SHOWN else ""
    queue = f"queue (most disagreement first; {status['scored']} of {status['total']} images scored so far): "
    return "\n".join(lines) + "\n\n" + queue + ", ".join(shown) + more
