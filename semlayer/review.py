"""A review queue: the images of an annotated dataset ranked by how much the model disagrees with the annotation.

Each image's annotation is matched to the model's prediction for it; the disagreement score is

    score = missed + extra + sum over matched pairs of (1 - amodal IoU) + order contradictions

where ``missed`` counts annotated objects no prediction matches, ``extra`` confident predictions (score >=
``score_thr``; lower ones are ignored) that match no annotated object, and ``order contradictions`` the pairs
of matched objects whose annotated amodal masks overlap and whose depth order the model has the other way
round. Each term counts objects (or pairs), so one missed object weighs as much as a matched one whose mask
shares nothing with the model's. Highest score first; ties in dataset order.

Matching is greedy, the evaluator's rule (`semlayer.evaluate`): predictions by descending score, each takes
the unmatched annotated object with the highest amodal IoU >= 0.5 (pycocotools ``mask.iou`` on RLE). So an
object the queue calls missed is one the evaluation counts as missed too, and each reason names one pair.

Images are scored lazily (`ReviewQueue.score_more`, or as `next_unreviewed` needs them), and predictions are
cached as RLE by image content and model, in a bounded cache; an image's score is recomputed when its
annotation changes. Reviewed marks persist in ``review.json`` in the workspace folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pycocotools import mask as mask_utils

from .errors import FormatError
from .images import read_image
from .io_utils import atomic_write_json
from .predict import Predictor
from .scene import AmodalScene
from .workspace import EditSession

REVIEW_FILE = "review.json"
REVIEW_FORMAT = "semlayer-review"
IOU_MATCH = 0.5
LOW_IOU = 0.75  # matched objects below this amodal IoU are named in the reasons
PREDICTION_CACHE = 64  # predictions kept (as RLE) for images scored again after an edit
BATCH = 8  # images `next_unreviewed` scores at a time while some are unscored


@dataclass(frozen=True)
class Objects:
    """A scene's objects as the queue compares them: ids, amodal RLEs, depth ranks (1 = front), scores."""

    ids: tuple[int, ...]
    rles: tuple[dict[str, Any], ...]
    ranks: tuple[int, ...]
    scores: tuple[float, ...]

    @classmethod
    def of(cls, scene: AmodalScene, score_thr: float | None = None) -> Objects:
        kept = [
            i for i in scene.instances if score_thr is None or (i.score if i.score is not None else 1.0) >= score_thr
        ]
        rles = tuple(mask_utils.encode(np.asfortranarray(i.amodal.astype(np.uint8))) for i in kept)
        scores = tuple(1.0 if i.score is None else float(i.score) for i in kept)
        return cls(tuple(i.id for i in kept), rles, tuple(i.rank for i in kept), scores)

    def digest(self) -> str:
        """A content key: the same objects (masks, ids and order) give the same key."""
        h = hashlib.sha256()
        for obj_id, rle, rank in zip(self.ids, self.rles, self.ranks):
            h.update(f"{obj_id}:{rank}:{rle['size']}:".encode())
            h.update(rle["counts"] if isinstance(rle["counts"], bytes) else str(rle["counts"]).encode())
        return h.hexdigest()


@dataclass
class ImageReview:
    """One image's disagreement: the score (see the module docstring), its terms and reasons in words."""

    index: int
    score: float
    missed: list[int] = field(default_factory=list)  # annotated object ids no prediction matches
    extra: int = 0  # confident predictions matching no annotated object
    matched: list[tuple[int, float]] = field(default_factory=list)  # (annotated id, amodal IoU)
    contradictions: list[tuple[int, int]] = field(default_factory=list)  # (front, behind) as annotated
    reasons: list[str] = field(default_factory=list)


def match(annotated: Objects, predicted: Objects) -> dict[int, tuple[int, float]]:
    """Annotated position -> (predicted position, amodal IoU): greedy, predictions by descending score
    (stable), each taking the unmatched annotated object with the highest IoU >= `IOU_MATCH`."""
    if not annotated.ids or not predicted.ids:
        return {}
    ious = np.asarray(mask_utils.iou(list(predicted.rles), list(annotated.rles), [0] * len(annotated.ids))).reshape(
        len(predicted.ids), len(annotated.ids)
    )
    taken = np.zeros(len(annotated.ids), dtype=bool)
    out: dict[int, tuple[int, float]] = {}
    for p in sorted(range(len(predicted.ids)), key=lambda k: -predicted.scores[k]):
        cand = np.where(taken, -1.0, ious[p])
        a = int(np.argmax(cand))
        if cand[a] >= IOU_MATCH:
            taken[a] = True
            out[a] = (p, float(cand[a]))
    return out


def _contradictions(
    annotated: Objects, predicted: Objects, pairs: dict[int, tuple[int, float]]
) -> list[tuple[int, int]]:
    """(front id, behind id) as annotated, for matched objects whose annotated masks overlap and whose
    predicted counterparts are in the other order."""
    out = []
    positions = sorted(pairs)
    for n, a in enumerate(positions):
        for b in positions[n + 1 :]:
            overlap = mask_utils.area(mask_utils.merge([annotated.rles[a], annotated.rles[b]], intersect=True))
            if not overlap:
                continue
            annotated_front = annotated.ranks[a] < annotated.ranks[b]
            predicted_front = predicted.ranks[pairs[a][0]] < predicted.ranks[pairs[b][0]]
            if annotated_front != predicted_front:
                front, behind = (a, b) if annotated_front else (b, a)
                out.append((annotated.ids[front], annotated.ids[behind]))
    return out


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _reasons(review: ImageReview) -> list[str]:
    out = []
    if review.missed:
        ids = ", ".join(f"#{i}" for i in review.missed)
        what = _plural(len(review.missed), "annotated object", "annotated objects")
        out.append(f"{what} the model does not find ({ids})")
    if review.extra:
        out.append(
            _plural(
                review.extra, "object the model finds is not annotated", "objects the model finds are not annotated"
            )
        )
    low = [(i, iou) for i, iou in review.matched if iou < LOW_IOU]
    if low:
        ious = ", ".join(f"#{i} {iou:.2f}" for i, iou in low)
        out.append(f"{_plural(len(low), 'mask differs', 'masks differ')} from the model's (amodal IoU {ious})")
    for front, behind in review.contradictions:
        out.append(f"#{front} is in front of #{behind} in the annotation; the model puts it behind")
    return out


def disagreement(index: int, annotated: Objects, predicted: Objects) -> ImageReview:
    """The image's score and reasons (the formula is in the module docstring)."""
    pairs = match(annotated, predicted)
    matched_predictions = {p for p, _ in pairs.values()}
    review = ImageReview(index, 0.0)
    review.missed = [annotated.ids[a] for a in range(len(annotated.ids)) if a not in pairs]
    review.extra = len(predicted.ids) - len(matched_predictions)
    review.matched = [(annotated.ids[a], iou) for a, (_, iou) in sorted(pairs.items())]
    review.contradictions = _contradictions(annotated, predicted, pairs)
    review.score = (
        len(review.missed) + review.extra + sum(1.0 - iou for _, iou in review.matched) + len(review.contradictions)
    )
    review.reasons = _reasons(review)
    return review


class ReviewQueue:
    """The images of a dataset in order of disagreement, with reviewed marks kept in ``folder/review.json``.

    ``annotation(i)`` gives image i's annotated scene, ``predict(i)`` the model's scene for it, ``image_key(i)``
    a key of the image's content (with ``model_key``, it keys the prediction cache). Predictions below
    ``score_thr`` are ignored."""

    def __init__(
        self,
        folder: str | os.PathLike,
        count: int,
        annotation: Callable[[int], AmodalScene],
        predict: Callable[[int], AmodalScene],
        image_key: Callable[[int], str],
        model_key: str = "",
        score_thr: float = 0.5,
    ) -> None:
        self.path = Path(folder) / REVIEW_FILE
        self.count = count
        self._annotation, self._predict, self._image_key = annotation, predict, image_key
        self.model_key, self.score_thr = model_key, score_thr
        self._predictions: OrderedDict[str, Objects] = OrderedDict()
        self._scored: dict[int, tuple[str, ImageReview]] = {}  # index -> (content key, review)
        self.reviewed: set[int] = self._load()

    def _load(self) -> set[int]:
        if not self.path.is_file():
            return set()
        try:
            obj = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise FormatError(str(self.path), "", f"readable review marks ({err})") from None
        if not isinstance(obj, dict) or obj.get("format") != REVIEW_FORMAT or not isinstance(obj.get("reviewed"), list):
            raise FormatError(str(self.path), "", f"a {REVIEW_FORMAT} object with a list 'reviewed'")
        return {int(i) for i in obj["reviewed"] if isinstance(i, int) and 0 <= i < self.count}

    def _save(self) -> None:
        atomic_write_json(self.path, {"format": REVIEW_FORMAT, "version": 1, "reviewed": sorted(self.reviewed)})

    def _prediction(self, index: int) -> tuple[str, Objects]:
        key = f"{self.model_key}:{self._image_key(index)}"
        objects = self._predictions.pop(key, None)
        if objects is None:
            objects = Objects.of(self._predict(index), self.score_thr)
        self._predictions[key] = objects  # most recently used last
        while len(self._predictions) > PREDICTION_CACHE:
            self._predictions.popitem(last=False)
        return key, objects

    def review(self, index: int) -> ImageReview:
        """Image ``index``'s review, computed again only when its annotation or image changed."""
        annotated = Objects.of(self._annotation(index))
        key, predicted = self._prediction(index)
        content = f"{key}:{annotated.digest()}"
        cached = self._scored.get(index)
        if cached is None or cached[0] != content:
            cached = (content, disagreement(index, annotated, predicted))
            self._scored[index] = cached
        return cached[1]

    def score_more(self, limit: int | None = None) -> int:
        """Score up to ``limit`` (None: all) images not scored yet, in dataset order; returns how many remain."""
        todo = [i for i in range(self.count) if i not in self._scored]
        for index in todo if limit is None else todo[:limit]:
            self.review(index)
        return self.count - len(self._scored)

    def ranking(self) -> list[ImageReview]:
        """The images scored so far, most disagreement first (ties in dataset order)."""
        return sorted((r for _, r in self._scored.values()), key=lambda r: (-r.score, r.index))

    def order(self) -> list[int]:
        """Queue order: the scored images ranked, then the unscored ones in dataset order."""
        ranked = [r.index for r in self.ranking()]
        return ranked + [i for i in range(self.count) if i not in self._scored]

    def next_unreviewed(self, after: int | None = None) -> int | None:
        """The first unreviewed image after ``after`` in queue order (wrapping round to the start; from the
        start when None); None when every image is reviewed. While some images are unscored it scores up to
        `BATCH` more first, so the queue grows as the annotator works through it."""
        if len(self._scored) < self.count:
            self.score_more(BATCH)
        order = self.order()
        start = order.index(after) + 1 if after in order else 0
        for index in order[start:] + order[:start]:
            if index not in self.reviewed and index != after:
                return index
        return None

    def mark_reviewed(self, index: int, reviewed: bool = True) -> None:
        if not 0 <= index < self.count:
            raise ValueError(f"image index {index} is outside 0..{self.count - 1}")
        (self.reviewed.add if reviewed else self.reviewed.discard)(index)
        self._save()

    def done(self) -> tuple[int, int]:
        """(reviewed images, all images)."""
        return len(self.reviewed), self.count

    def done_text(self) -> str:
        done, total = self.done()
        return f"{done} of {total} done"


def file_key(path: Path) -> str:
    """The sha256 of a file's bytes: the same image under another name is the same image."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def session_queue(session: EditSession, predictor: Predictor, model_key: str, score_thr: float = 0.5) -> ReviewQueue:
    """A queue over an editing session's scenes (edits included) and a predictor's scenes for their images;
    ``model_key`` names the model (e.g. its checkpoint path), so another model's predictions are not reused."""

    def predict(index: int) -> AmodalScene:
        scene = session.scene_at(index)
        predictor.set_image(read_image(session.image_path(index), expected_hw=scene.shape))
        return predictor.scene(score_thr, dict(scene.image))

    def image_key(index: int) -> str:
        return file_key(session.image_path(index))

    return ReviewQueue(session.folder, len(session), session.scene_at, predict, image_key, model_key, score_thr)
