"""One browser tab's (or API client's) state: the `Tab`, the `AppConfig` it was opened with, what it shows.

No Gradio here. Errors meant for the user are `UserError` (or `SemlayerError` from the library).
"""

from __future__ import annotations

import enum
import functools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from semlayer import semdist
from semlayer.cache import BoundedCache, array_bytes
from semlayer.errors import SemlayerError
from semlayer.images import encode_png, read_image
from semlayer.scene import AmodalScene
from semlayer.workspace import EditSession

from semlayer.finetune import FineTuneJob
from .model import Model, load_model

VIEWS = ("visible", "occluded", "amodal")


class UserError(SemlayerError):
    """Something the user asked for that cannot be done; the message says why and what to do."""


class Source(str, enum.Enum):
    """Which scene the page shows: the edited annotation, the model's prediction, or both side by side.
    The values are the page's and the API's words."""

    ANNOTATION = "annotation"
    PREDICTION = "prediction"
    BOTH = "both"

    def __str__(self) -> str:
        return self.value


SHOWS = tuple(s.value for s in Source)


def source(value: Any) -> Source:
    """The `Source` the page's ``show`` names (client input: checked)."""
    if value not in SHOWS:
        raise UserError(f"show must be one of {', '.join(SHOWS)}, got {value!r}")
    return Source(value)


@dataclass
class AppConfig:
    """What the command line chose; shared by every tab."""

    workspace: Path
    data: Path | None = None
    images: Path | None = None
    checkpoint: Path | None = None
    train_config: Path | None = None
    examples: list[Path] = field(default_factory=list)
    score_thr: float = 0.5
    finetune_iters: int = 300
    # zlib level of the figures' PNG files: 0 (stored) when the page is served on this machine, where bytes
    # cost nothing and compressing costs most of a click; main.py sets 1 when it listens wider.
    png_level: int = 0
    K: int = semdist.DEFAULT_K
    tau: float = semdist.DEFAULT_TAU
    # "Open dataset" chooses among the annotation files under this folder (None: only --data is opened).
    data_root: Path | None = None
    # A tab (browser tab or API client) unused this long is forgotten; its edits are on disk.
    tab_idle_s: float = 3600.0


@dataclass(eq=False)
class Picture:
    """A rendered figure: RGB pixels, and its PNG bytes (encoded on first use, then kept)."""

    pixels: np.ndarray
    png_level: int = 1

    @functools.cached_property
    def png(self) -> bytes:
        return encode_png(self.pixels, self.png_level)


def held_bytes(value: Any) -> int:
    """About how many bytes a cached value holds: a picture its pixels and its PNG (about as large again)."""
    return 2 * value.pixels.nbytes if isinstance(value, Picture) else array_bytes(value)


class FigureCache(BoundedCache):
    """Figures (and facts) of one tab by everything they depend on, so nothing that did not change is drawn,
    encoded or counted again."""

    def __init__(self, max_bytes: int = 128 * 2**20, png_level: int = 1) -> None:
        super().__init__(max_bytes, held_bytes)
        self.png_level = png_level

    def picture(self, key: tuple, render: Callable[[], np.ndarray]) -> Picture:
        """The picture under ``key``, rendered by ``render`` when missing."""
        return self.value(key, lambda: Picture(render(), self.png_level))

    def only(self, slot: str, key: tuple, render: Callable[[], np.ndarray]) -> Picture:
        """Like `picture`, but ``slot`` holds one picture at a time: a new ``key`` replaces the last one (e.g.
        the view with the selection outlined, which every click on another instance changes)."""
        held = self.get((slot,))
        if held is not None and held[0] == key:
            return held[1]
        picture = Picture(render(), self.png_level)
        self.put((slot,), (key, picture), held_bytes(picture))
        return picture


def _ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, int) for i in value)


@dataclass
class LayerState:
    """What the layer list sets for one scene (view state, not part of the annotation): the instances
    hidden, the one shown alone (solo), the ones locked against edits. app.layers changes it."""

    hidden: set[int] = field(default_factory=set)
    solo: int | None = None
    locked: set[int] = field(default_factory=set)

    def shown(self, ids: list[int]) -> frozenset[int]:
        """Which of ``ids`` are drawn: the solo one alone, else all but the hidden."""
        if self.solo is not None and self.solo in ids:
            return frozenset([self.solo])
        return frozenset(i for i in ids if i not in self.hidden)

    def saved(self) -> dict[str, Any]:
        return {"hidden": sorted(self.hidden), "solo": self.solo, "locked": sorted(self.locked)}

    @classmethod
    def from_saved(cls, value: Any) -> LayerState | None:
        """The state `saved` wrote; None when ``value`` is something else (a hand-edited file)."""
        if not isinstance(value, dict):
            return None
        hidden, solo, locked = value.get("hidden", []), value.get("solo"), value.get("locked", [])
        if not (_ids(hidden) and _ids(locked) and (solo is None or isinstance(solo, int))):
            return None
        return cls(set(hidden), solo, set(locked))


# Fine-tune jobs by dataset workspace folder (process-wide, like the models).
JOBS: dict[Path, FineTuneJob] = {}
JOBS_LOCK = threading.Lock()


@dataclass
class Tab:
    """One browser tab (or API client): its config, editing session, and what it shows and has selected."""

    session: EditSession
    cfg: AppConfig
    checkpoint: str | None = None
    view: str = "amodal"
    opacity: float = 0.5
    show: Source = Source.ANNOTATION
    selected: int | None = None
    selected_in: Source = Source.ANNOTATION  # which scene the selection belongs to
    last_click: tuple[Source, int, int] | None = None
    cycle: int = 0
    last_export: Path | None = None
    pane: str = "overlay"  # the open tab over the image (level sets and G are drawn only while open)
    surface: bool = False  # draw the 3-D surface (only while its tab is open: it is the slow figure)
    figures: FigureCache = field(default=None)  # type: ignore[assignment]  # set in __post_init__
    # What the mask editor on the page shows (see `render.editor_key`); strokes apply only to that object.
    editor_shows: tuple | None = None
    assist: Any = None  # the assists' clicks and pending proposal on the current image (app.assists)
    # The layer list's state per scene: key `layer_key` (which scene of which image).
    layers: dict[str, LayerState] = field(default_factory=dict)
    # Held by each event of this tab from its action through its render (app.layout.Tabs.use).
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.figures is None:
            self.figures = FigureCache(png_level=self.cfg.png_level)

    @property
    def job(self) -> FineTuneJob | None:
        """The fine-tune of this tab's dataset: shared by its tabs, so a page reload finds it running."""
        return JOBS.get(self.session.folder)

    @property
    def model(self) -> Model | None:
        return None if self.checkpoint is None else load_model(self.checkpoint)

    @property
    def listed(self) -> Source:
        """The scene the instance table, the level sets and G are of: the prediction when only it is shown,
        else the annotation (the one edited)."""
        return Source.PREDICTION if self.show == Source.PREDICTION else Source.ANNOTATION

    @property
    def editable_selection(self) -> int:
        """The selected annotation instance, or a UserError saying what to select."""
        if self.selected is None:
            raise UserError("select an instance first (click it in the image or pick it in the table)")
        if self.selected_in != Source.ANNOTATION:
            raise UserError(
                "that instance is part of the prediction, which is not edited: set 'show' to annotation (or both) "
                "and select the instance in the annotation"
            )
        return self.editable(self.selected)

    def layer_key(self, which: Source | str) -> str:
        """The key of the ``which`` scene of the current image in `layers` (and in the workspace's view.json)."""
        return f"{Source(which).value}:{self.session.scene.image_id}" if len(self.session) else ""

    def layer_state(self, which: Source | str = Source.ANNOTATION) -> LayerState:
        """The layer list's state of the ``which`` scene of the current image (created empty on first use)."""
        return self.layers.setdefault(self.layer_key(which), LayerState())

    def shown_ids(self, which: Source | str) -> frozenset[int] | None:
        """The ids of the ``which`` scene the view draws (the layer list's hide and solo); None: all."""
        state = self.layers.get(self.layer_key(which))
        if state is None or (state.solo is None and not state.hidden):
            return None
        return state.shown(self.scene_for(which).order_ids())

    def editable(self, instance_id: int) -> int:
        """``instance_id`` when that annotation instance may be edited; a UserError when it is locked. Every
        edit of one instance comes through here (or `editable_selection`), so a lock holds everywhere."""
        if int(instance_id) in self.layer_state(Source.ANNOTATION).locked:
            raise UserError(f"#{instance_id} is locked: unlock it in the layer list (🔒) to edit or move it")
        return int(instance_id)

    def clear_selection(self) -> None:
        self.selected, self.selected_in, self.last_click, self.cycle = None, Source.ANNOTATION, None, 0

    def current_image(self) -> np.ndarray:
        if not len(self.session):
            raise UserError("no image yet: upload one, or open a dataset (both under 'Load')")
        scene = self.session.scene
        image = load_image(self.session.image_path())
        if image.shape[:2] != scene.shape:
            raise UserError(
                f"{scene.file_name} is {image.shape[1]}x{image.shape[0]} but its annotation says "
                f"{scene.width}x{scene.height}"
            )
        return image

    def prediction(self) -> AmodalScene | None:
        """The model's scene for the current image, None without a model: a reference to the model's cached
        prediction (only looked at, never edited)."""
        model = self.model
        if model is None:
            return None
        return model.predict(self.current_image(), self.session.scene.image, self.cfg.score_thr)

    def scene_for(self, which: Source | str) -> AmodalScene:
        if which == Source.PREDICTION:
            pred = self.prediction()
            if pred is None:
                raise UserError("no model is loaded, so there is no prediction to show")
            return pred
        return self.session.scene

    def selected_scene(self) -> AmodalScene | None:
        """The scene the selection belongs to, None when nothing (still existing) is selected."""
        if self.selected is None:
            return None
        scene = self.scene_for(self.selected_in)
        if all(inst.id != self.selected for inst in scene.instances):
            self.selected = None
            return None
        return scene

    def figure_key(self, which: Source | str = Source.ANNOTATION) -> tuple:
        """What every figure of the ``which`` scene depends on: for the annotation its dataset, image, saved
        revision and edits made (each edit, undo and redo counts, saved or not: a save that failed keeps its
        edit on screen); for the prediction the model and the image."""
        folder, current = str(self.session.folder), self.session.current
        if which == Source.PREDICTION:
            return (Source.PREDICTION.value, self.checkpoint, self.cfg.score_thr, folder, current)
        return (Source.ANNOTATION.value, folder, current, self.session.revision, self.session.changes)

    def occlude_rates(self, which: Source | str, scene: AmodalScene) -> list[float]:
        """``scene.occlude_rates()``, counted once per scene state."""
        return self.figures.value(("rates", *self.figure_key(which)), scene.occlude_rates)

    def summary(self) -> dict[str, Any]:
        """The edited scene's `AmodalScene.summary`, its image with ``index`` and ``count`` in the dataset."""
        scene = self.session.scene
        out = scene.summary(self.occlude_rates(Source.ANNOTATION, scene))
        out["image"].update(index=self.session.current, count=len(self.session))
        return out


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int) -> np.ndarray:
    image = read_image(path)
    image.setflags(write=False)
    return image


def load_image(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 image, cached while the file is unchanged (read-only array)."""
    path = Path(path)
    try:
        return _read_cached(str(path), path.stat().st_mtime_ns)
    except FileNotFoundError:
        raise UserError(f"image file {path.name} does not exist (is the image folder right?)") from None
