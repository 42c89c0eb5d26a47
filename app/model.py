"""The predictor behind the app, behind one small adapter.

Models are loaded once per process (module-level cache keyed by checkpoint path), never stored in Gradio
session state. Predictions are cached per image content, so the network runs once per image and clicks,
toggles and table selection reuse the result. This is the one cache of predictions: it holds them by
reference, bounded by their bytes, and hands out read-only references, never copies.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from semlayer.cache import BoundedCache
from semlayer.errors import ConfigError
from semlayer.model.checkpoint import categories_from_names
from semlayer.predict import Predictor
from semlayer.scene import AmodalScene


class PredictorLike(Protocol):
    """What the app needs from `semlayer.predict.Predictor`."""

    class_names: list[str]

    def set_image(self, image: np.ndarray) -> None: ...

    def scene(self, score_thr: float = 0.5) -> AmodalScene: ...


def scene_nbytes(scene: AmodalScene) -> int:
    """Bytes held by a scene's arrays: masks and attached maps (a view counts as its own size)."""
    total = 0
    for inst in scene.instances:
        total += inst.amodal.nbytes
        total += 0 if inst.external is None else inst.external.nbytes
        total += 0 if inst.semdist is None else int(getattr(inst.semdist, "nbytes", 0))
    return total


class Model:
    """A predictor plus a per-image cache of its scenes (and global layering maps), least recently used
    dropped first once they hold more than ``cache_bytes`` (the newest is always kept)."""

    def __init__(self, predictor: PredictorLike, checkpoint: str = "", cache_bytes: int = 512 * 2**20) -> None:
        self.predictor = predictor
        self.checkpoint = checkpoint
        self._cache = BoundedCache(cache_bytes, sizeof=lambda entry: entry[2])
        # Image digests by array identity: hashing a 6000 x 4000 photo costs more than a click.
        self._digests: dict[int, tuple[weakref.ref, str]] = {}
        # One predictor serves every tab; the network call itself is not re-entrant.
        self._lock = threading.Lock()

    @property
    def cache_bytes(self) -> int:
        return self._cache.max_bytes

    @cache_bytes.setter
    def cache_bytes(self, value: int) -> None:
        self._cache.max_bytes = value

    @property
    def cached_bytes(self) -> int:
        return self._cache.nbytes

    def _digest(self, image: np.ndarray) -> str:
        hit = self._digests.get(id(image))
        if hit is not None and hit[0]() is image:
            return hit[1]
        digest = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape)
        if not image.flags.writeable:  # a writable array may change under the same identity
            self._digests = {k: v for k, v in self._digests.items() if v[0]() is not None}
            self._digests[id(image)] = (weakref.ref(image), digest)
        return digest

    @property
    def class_names(self) -> list[str]:
        return list(getattr(self.predictor, "class_names", []) or [])

    @property
    def categories(self) -> list[dict[str, Any]]:
        """The model's categories (``{"id", "name"}``, the training data's ids); ids 1..C from the names
        when the predictor does not say."""
        cats = getattr(self.predictor, "categories", None)
        return [dict(c) for c in cats] if cats else categories_from_names(self.class_names)

    @property
    def K(self) -> int | None:
        """Depth levels of the model's layer maps (None when the predictor does not say)."""
        return getattr(self.predictor, "K", None)

    def _entry(self, image: np.ndarray, score_thr: float) -> tuple[AmodalScene, np.ndarray | None, int]:
        key = (self._digest(image), float(score_thr))
        with self._lock:  # held while predicting: a second tab asking for the same image waits for this one
            entry = self._cache.get(key)
            if entry is None:
                self.predictor.set_image(np.array(image))  # a writable copy: app images are read-only
                scene = self.predictor.scene(score_thr=score_thr)
                # The SLN's global layering module predicts G itself; other models have none.
                has_global = getattr(self.predictor, "has_layers", False) and hasattr(self.predictor, "global_layers")
                G = self.predictor.global_layers() if has_global else None
                entry = (scene, G, scene_nbytes(scene) + (0 if G is None else G.nbytes))
                self._cache.put(key, entry)
        return entry

    def predict(self, image: np.ndarray, image_record: dict[str, Any], score_thr: float = 0.5) -> AmodalScene:
        """The predicted scene of ``image``, cached by image content: a new scene object with the given image
        record around the cached instances themselves (no copy), so it is only to be read; copy it
        (`AmodalScene.copy`) to edit it."""
        cached = self._entry(image, score_thr)[0]
        return AmodalScene({**cached.image, **image_record}, list(cached.instances), cached.annotation)

    def global_layers(self, image: np.ndarray, score_thr: float = 0.5) -> np.ndarray | None:
        """The network's global layering map of ``image`` (cached with its scene), None if it has none."""
        return self._entry(image, score_thr)[1]


_MODELS: dict[str, Model] = {}
_MODELS_LOCK = threading.Lock()


def load_model(checkpoint: str | Path) -> Model:
    """The model of ``checkpoint``, loaded on first use and kept for the life of the process."""
    path = str(Path(checkpoint).resolve())
    with _MODELS_LOCK:
        if path not in _MODELS:
            if not Path(path).is_file():
                raise ConfigError(f"checkpoint {path} does not exist")
            _MODELS[path] = Model(Predictor(path, device="cpu"), checkpoint=path)
        return _MODELS[path]


def register_model(checkpoint: str, model: Model) -> None:
    """Put an already built model in the process cache (e.g. one trained in this process)."""
    with _MODELS_LOCK:
        _MODELS[str(Path(checkpoint).resolve())] = model
