"""The review queue: images ranked by disagreement between model and annotation, exact scores and reasons."""

import json

import numpy as np
import pytest

from semlayer.images import read_image
from semlayer.predict import DEFAULT_CHECKPOINT, Predictor
from semlayer.review import ReviewQueue, disagreement, Objects, session_queue
from semlayer.scene import AmodalScene, Instance
from semlayer.workspace import EditSession
from semlayer.resources import ROOT

SIZE = 20


def box(r0, r1, c0, c1):
    mask = np.zeros((SIZE, SIZE), bool)
    mask[r0:r1, c0:c1] = True
    return mask


def scene(image_id, *objects):
    """objects: (id, mask, rank, score)"""
    instances = [Instance(id=i, amodal=m, rank=r, score=s) for i, m, r, s in objects]
    return AmodalScene({"id": image_id, "height": SIZE, "width": SIZE, "file_name": f"{image_id}.png"}, instances)


# Image 2: #3 missed, one confident extra, #1 and #2 matched (IoU 1.0 and 0.9) in the other depth order.
ANNOTATED_A = [(1, box(0, 10, 0, 10), 1, None), (2, box(5, 15, 5, 15), 2, None), (3, box(15, 20, 0, 4), 3, None)]
PREDICTED_A = [
    (11, box(0, 10, 0, 10), 2, 0.9),
    (12, box(5, 15, 5, 14), 1, 0.8),
    (13, box(15, 20, 15, 20), 3, 0.7),
    (14, box(15, 20, 0, 4), 4, 0.3),  # below score_thr: ignored, so #3 stays missed
]
# Image 1: one object whose mask the model draws narrower (IoU 60 / 100).
ANNOTATED_B = [(1, box(0, 10, 0, 10), 1, None)]
PREDICTED_B = [(5, box(0, 10, 0, 6), 1, 0.95)]
# Image 0: model and annotation agree.
ANNOTATED_C = [(1, box(2, 8, 2, 8), 1, None)]
PREDICTED_C = [(7, box(2, 8, 2, 8), 1, 0.99)]


class Dataset:
    def __init__(self):
        self.annotated = [scene(10, *ANNOTATED_C), scene(11, *ANNOTATED_B), scene(12, *ANNOTATED_A)]
        self.predicted = [scene(10, *PREDICTED_C), scene(11, *PREDICTED_B), scene(12, *PREDICTED_A)]
        self.predict_calls = []

    def predict(self, index):
        self.predict_calls.append(index)
        return self.predicted[index]

    def queue(self, folder):
        return ReviewQueue(folder, 3, self.annotated.__getitem__, self.predict, lambda i: f"image-{i}", model_key="m")


def test_the_score_counts_missed_extra_iou_and_order_and_says_why():
    review = disagreement(2, Objects.of(scene(12, *ANNOTATED_A)), Objects.of(scene(12, *PREDICTED_A), 0.5))
    assert review.missed == [3] and review.extra == 1
    assert review.matched == [(1, 1.0), (2, pytest.approx(0.9))]
    assert review.contradictions == [(1, 2)]
    assert review.score == pytest.approx(1 + 1 + (0.0 + 0.1) + 1)
    assert review.reasons == [
        "1 annotated object the model does not find (#3)",
        "1 object the model finds is not annotated",
        "#1 is in front of #2 in the annotation; the model puts it behind",
    ]
    low = disagreement(1, Objects.of(scene(11, *ANNOTATED_B)), Objects.of(scene(11, *PREDICTED_B), 0.5))
    assert low.score == pytest.approx(0.4)
    assert low.reasons == ["1 mask differs from the model's (amodal IoU #1 0.60)"]
    agree = disagreement(0, Objects.of(scene(10, *ANNOTATED_C)), Objects.of(scene(10, *PREDICTED_C), 0.5))
    assert (agree.score, agree.reasons) == (0.0, [])


def test_plural_reasons():
    annotated = scene(1, (1, box(0, 4, 0, 4), 1, None), (2, box(10, 14, 10, 14), 2, None))
    predicted = scene(1, (1, box(0, 4, 10, 14), 1, 0.9), (2, box(10, 14, 0, 4), 2, 0.9))
    review = disagreement(0, Objects.of(annotated), Objects.of(predicted, 0.5))
    assert review.score == 4.0
    assert review.reasons == [
        "2 annotated objects the model does not find (#1, #2)",
        "2 objects the model finds are not annotated",
    ]


def test_matching_is_greedy_by_prediction_score():
    # The higher-scored prediction takes #1 (IoU 0.8) although the other overlaps #1 more (IoU 1.0).
    annotated = scene(1, (1, box(0, 10, 0, 10), 1, None))
    predicted = scene(1, (1, box(0, 10, 0, 8), 1, 0.9), (2, box(0, 10, 0, 10), 2, 0.6))
    review = disagreement(0, Objects.of(annotated), Objects.of(predicted, 0.5))
    assert review.matched == [(1, pytest.approx(0.8))] and review.extra == 1
    assert review.score == pytest.approx(1.2)


def test_the_queue_ranks_lazily_caches_predictions_and_keeps_reviewed_marks(tmp_path):
    data = Dataset()
    queue = data.queue(tmp_path)
    assert queue.score_more(1) == 2 and data.predict_calls == [0]
    assert [r.index for r in queue.ranking()] == [0] and queue.order() == [0, 1, 2]
    assert queue.next_unreviewed() == 2  # scores the rest first
    assert [r.index for r in queue.ranking()] == [2, 1, 0]
    assert [r.score for r in queue.ranking()] == [pytest.approx(3.1), pytest.approx(0.4), 0.0]
    assert data.predict_calls == [0, 1, 2]
    queue.mark_reviewed(2)
    assert queue.done() == (1, 3) and queue.done_text() == "1 of 3 done"
    assert queue.next_unreviewed(2) == 1 and queue.next_unreviewed(1) == 0 and queue.next_unreviewed(0) == 1
    assert json.loads((tmp_path / "review.json").read_text()) == {
        "format": "semlayer-review",
        "version": 1,
        "reviewed": [2],
    }
    again = data.queue(tmp_path)
    assert again.reviewed == {2} and again.done_text() == "1 of 3 done"
    for index in (0, 1):
        queue.mark_reviewed(index)
    assert queue.next_unreviewed(0) is None and queue.done_text() == "3 of 3 done"
    queue.mark_reviewed(1, False)
    assert queue.next_unreviewed() == 1


def test_an_edit_rescores_the_image_without_predicting_it_again(tmp_path):
    data = Dataset()
    queue = data.queue(tmp_path)
    queue.score_more()
    assert queue.review(2).score == pytest.approx(3.1) and data.predict_calls == [0, 1, 2]
    data.annotated[2].remove(3)  # the annotator deletes the object the model does not find
    data.annotated[2].set_order([2, 1])  # and agrees with the model's order
    review = queue.review(2)
    assert review.score == pytest.approx(1.1) and review.reasons == ["1 object the model finds is not annotated"]
    assert data.predict_calls == [0, 1, 2]
    assert [r.index for r in queue.ranking()] == [2, 1, 0]


def test_a_session_queue_scores_the_model_against_the_workspace(tmp_path):
    demo = ROOT / "assets" / "demo"
    session = EditSession.open(tmp_path / "ws", demo / "annotations.json", demo / "images")
    predictor = Predictor(DEFAULT_CHECKPOINT, semdist=False)
    queue = session_queue(session, predictor, str(DEFAULT_CHECKPOINT))
    assert queue.score_more(2) == len(session) - 2
    predictor.set_image(read_image(session.image_path(1)))
    expected = disagreement(1, Objects.of(session.scene_at(1)), Objects.of(predictor.scene(0.5), 0.5))
    got = queue.review(1)
    assert (got.score, got.reasons) == (pytest.approx(expected.score), expected.reasons)
    assert (session.folder / "review.json").exists() is False  # written on the first mark only
    queue.mark_reviewed(1)
    assert json.loads((session.folder / "review.json").read_text())["reviewed"] == [1]
