"""The predictor behind the app, behind one small adapter.

Models are loaded once per process (module-level cache keyed by checkpoint path), never stored in Gradio
session state. Predictions are cached per image content, so the network runs once per image and clicks,
toggles and table selection reuse the result.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from semlayer.engine import categories_from_names
from semlayer.errors import ConfigError
from semlayer.scene import AmodalScene


class PredictorLike(Protocol):
    """What the app needs from `semlayer.predict.Predictor`."""

    class_names: list[str]

    def set_image(self, image: np.ndarray) -> None: ...

    def scene(self, score_thr: float = 0.5) -> AmodalScene: ...


class Model:
    """A predictor plus a small per-image cache of its scenes (and global layering maps)."""

    def __init__(self, predictor: PredictorLike, checkpoint: str = "", cache_size: int = 16) -> None:
        self.predictor = predictor
        self.checkpoint = checkpoint
        self._cache: OrderedDict[tuple[str, float], tuple[AmodalScene, np.ndarray | None]] = OrderedDict()
        self._cache_size = cache_size
        # One predictor serves every tab; the network call itself is not re-entrant.
        self._lock = threading.Lock()

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

    def _entry(self, image: np.ndarray, score_thr: float) -> tuple[AmodalScene, np.ndarray | None]:
        key = (hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape), float(score_thr))
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                self.predictor.set_image(np.array(image))  # a writable copy: app images are read-only
                scene = self.predictor.scene(score_thr=score_thr)
                # The SLN's global layering module predicts G itself; other models have none.
                has_global = getattr(self.predictor, "has_layers", False) and hasattr(self.predictor, "global_layers")
                entry = self._cache[key] = (scene, self.predictor.global_layers() if has_global else None)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
        return entry

    def predict(self, image: np.ndarray, image_record: dict[str, Any], score_thr: float = 0.5) -> AmodalScene:
        """The predicted scene of ``image`` (a copy; callers may edit it), cached by image content."""
        out = self._entry(image, score_thr)[0].copy()
        out.image = {**out.image, **image_record}
        return out

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
            from semlayer.predict import Predictor

            _MODELS[path] = Model(Predictor(path, device="cpu"), checkpoint=path)
        return _MODELS[path]


def register_model(checkpoint: str, model: Model) -> None:
    """Put an already built model in the process cache (e.g. one trained in this process)."""
    with _MODELS_LOCK:
        _MODELS[str(Path(checkpoint).resolve())] = model
