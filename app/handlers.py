"""What the page does, as small functions over a `Tab` (one browser tab's or API client's state).

No Gradio here: layout.py wires these to components, and tests call them directly. Errors meant for the
user are `UserError` (or `SemlayerError` from the library); layout.py shows them in the page.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
from PIL import Image

from semlayer import semdist, viz
from semlayer.config import load_config
from semlayer.errors import SemlayerError
from semlayer.images import read_image
from semlayer.io_utils import atomic_write_json
from semlayer.scene import MOVES, AmodalScene, Instance

from .finetune import FineTuneJob, Progress, class_agnostic_checkpoint, finetune_config, next_run_dir, train_command
from .model import Model, load_model
from semlayer.workspace import ConflictError, EditSession, editable_copy, op_rename, op_set_category, op_set_stuff

log = logging.getLogger(__name__)

VIEWS = ("visible", "occluded", "amodal")
SHOWS = ("annotation", "prediction", "both")
PANES = ("overlay", "levels", "global")  # the tabs over the image; only the open one is drawn
# Uploads larger than this are refused with a message (CPU inference on them would take minutes).
MAX_UPLOAD_PIXELS = 4096 * 4096


class UserError(SemlayerError):
    """Something the user asked for that cannot be done; the message says why and what to do."""


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
    """About how many bytes a cached value holds: its arrays (a picture: its pixels and its PNG, about as
    large again), a small constant for anything else."""
    if isinstance(value, Picture):
        return 2 * value.pixels.nbytes
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, AmodalScene):
        return sum(i.amodal.nbytes + (0 if i.external is None else i.external.nbytes) for i in value.instances)
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (list, tuple)):
        return 64 + 32 * len(value)
    return 64


class FigureCache:
    """Figures (and facts) of one tab by everything they depend on, least recently used dropped first once
    they hold more than ``max_bytes`` (the newest is always kept), so nothing that did not change is drawn,
    encoded or counted again. Values are held by reference. Safe to fill from a second thread."""

    def __init__(self, max_bytes: int = 128 * 2**20, png_level: int = 1) -> None:
        self._items: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.png_level = png_level

    @property
    def nbytes(self) -> int:
        """Bytes held (as `held_bytes` counts them)."""
        return self._bytes

    def value(self, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = compute()  # outside the lock: another thread may compute the same value meanwhile
        self._put(key, value)
        return value

    def _put(self, key: tuple, value: Any, size: int | None = None) -> None:
        size = held_bytes(value) if size is None else size
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes += size - (0 if old is None else old[1])
            self._items[key] = (value, size)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                self._bytes -= self._items.popitem(last=False)[1][1]

    def get(self, key: tuple, render: Callable[[], np.ndarray]) -> Picture:
        """The picture under ``key``, rendered by ``render`` when missing."""
        return self.value(key, lambda: Picture(render(), self.png_level))

    def only(self, slot: str, key: tuple, render: Callable[[], np.ndarray]) -> Picture:
        """Like `get`, but ``slot`` holds one picture at a time: a new ``key`` replaces the last one (e.g. the
        view with the selection outlined, which every click on another instance changes)."""
        with self._lock:
            held = self._items.get((slot,))
        if held is not None and held[0][0] == key:
            return held[0][1]
        picture = Picture(render(), self.png_level)
        self._put((slot,), (key, picture), held_bytes(picture))
        return picture

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


@dataclass
class Tab:
    """One browser tab (or API client): its editing session and what it shows and has selected."""

    session: EditSession
    checkpoint: str | None = None
    view: str = "amodal"
    opacity: float = 0.5
    show: str = "annotation"
    selected: int | None = None
    selected_in: str = "annotation"  # which scene the selection belongs to: annotation | prediction
    last_click: tuple[str, int, int] | None = None
    cycle: int = 0
    last_export: Path | None = None
    pane: str = "overlay"  # the open tab over the image (level sets and G are drawn only while open)
    surface: bool = False  # draw the 3-D surface (only while its tab is open: it is the slow figure)
    figures: FigureCache = field(default_factory=FigureCache)
    # What the mask editor on the page shows (see `editor_key`); strokes apply only to that object.
    editor_shows: tuple | None = None
    assist: Any = None  # the assists' clicks and pending proposal on the current image (app.assists)
    # Held by each event of this tab from its action through its render (app.layout.Tabs.use).
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def job(self) -> FineTuneJob | None:
        """The fine-tune of this tab's dataset: shared by its tabs, so a page reload finds it running."""
        return _JOBS.get(self.session.folder)


# Fine-tune jobs by dataset workspace folder (process-wide, like the models).
_JOBS: dict[Path, FineTuneJob] = {}
_JOBS_LOCK = threading.Lock()


# ----- opening data ----------------------------------------------------------------------------


VIEW_SETTINGS = "view.json"  # the workspace folder's last show / view / opacity


def load_view_settings(tab: Tab) -> None:
    """Show, view and opacity as last chosen on this workspace (kept as they are when none was saved or the
    file holds something else)."""
    try:
        saved = json.loads((tab.session.folder / VIEW_SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(saved, dict):
        return
    if saved.get("show") in SHOWS and (saved["show"] == "annotation" or tab.checkpoint is not None):
        tab.show = saved["show"]
    if saved.get("view") in VIEWS:
        tab.view = saved["view"]
    if isinstance(saved.get("opacity"), (int, float)) and 0 <= saved["opacity"] <= 1:
        tab.opacity = float(saved["opacity"])


def save_view_settings(tab: Tab) -> None:
    """Remember show / view / opacity for this workspace, so a reload or a new tab keeps them."""
    atomic_write_json(tab.session.folder / VIEW_SETTINGS, {"show": tab.show, "view": tab.view, "opacity": tab.opacity})


def set_view_setting(tab: Tab, name: str, value: Any) -> None:
    """Set ``show``, ``view`` or ``opacity`` from the page (checked: it is client input) and remember it."""
    choices = {"show": SHOWS, "view": VIEWS}
    if name in choices and value not in choices[name]:
        raise UserError(f"{name} must be one of {', '.join(choices[name])}, got {value!r}")
    if name == "opacity":
        value = float(value)
        if not 0 <= value <= 1:
            raise UserError(f"opacity must be between 0 and 1, got {value}")
    setattr(tab, name, value)
    save_view_settings(tab)


def new_tab(cfg: AppConfig) -> Tab:
    """A tab on the configured dataset (resuming its saved edits), or on the uploads when there is none.

    A dataset opens on its annotation, or on the model's prediction when its first image has none;
    what was last chosen on this workspace (show, view, opacity) wins."""
    if cfg.data is not None and cfg.images is not None:
        session = EditSession.open(cfg.workspace, cfg.data, cfg.images)
    else:
        session = open_uploads(cfg, cfg.checkpoint)
    unannotated = len(session) > 0 and not len(session.scene)
    show = "prediction" if cfg.checkpoint is not None and session.source is not None and unannotated else "annotation"
    checkpoint = None if cfg.checkpoint is None else str(cfg.checkpoint)
    tab = Tab(session=session, checkpoint=checkpoint, show=show, figures=FigureCache(png_level=cfg.png_level))
    load_view_settings(tab)
    return tab


def open_uploads(cfg: AppConfig, checkpoint: str | os.PathLike | None) -> EditSession:
    """The uploads session. It has no annotation file to take categories from, so it takes the model's:
    exports then name the training data's category ids."""
    session = EditSession.open_uploads(cfg.workspace)
    if checkpoint is not None and not session.annset.categories:
        session.annset.categories = load_model(str(checkpoint)).categories
    return session


def switch_dataset(cfg: AppConfig, tab: Tab, data: str | None, images: str | None) -> None:
    """Open another dataset: ``data`` and ``images`` are names among those listed under ``--data-root``
    (`app.security.dataset_choices`), never paths a client made up."""
    from .security import chosen, dataset_choices, image_folder_choices

    if not data or not images:
        raise UserError("choose both the annotation file and its image folder")
    source = chosen(cfg, data, dataset_choices(cfg), "annotation file")
    folder = chosen(cfg, images, image_folder_choices(cfg), "image folder")
    tab.session = EditSession.open(cfg.workspace, source, folder)
    clear_selection(tab)
    load_view_settings(tab)


def step(tab: Tab, delta: int) -> None:
    """The next (``delta`` 1) or previous (-1) image; at either end a message says so."""
    target = tab.session.current + int(delta)
    if not 0 <= target < len(tab.session):
        where = "last" if delta > 0 else "first"
        raise UserError(f"this is the {where} image ({tab.session.current + 1} of {len(tab.session)})")
    go_to(tab, target)


def go_to(tab: Tab, index: int) -> None:
    try:
        tab.session.go_to(int(index))
    except ValueError as err:
        raise UserError(str(err)) from None
    clear_selection(tab)


def clear_selection(tab: Tab) -> None:
    tab.selected, tab.selected_in, tab.last_click, tab.cycle = None, "annotation", None, 0


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


def current_image(tab: Tab) -> np.ndarray:
    if not len(tab.session):
        raise UserError("no image yet: upload one, or open a dataset (both under 'Load')")
    scene = tab.session.scene
    image = load_image(tab.session.image_path())
    if image.shape[:2] != scene.shape:
        raise UserError(
            f"{scene.file_name} is {image.shape[1]}x{image.shape[0]} but its annotation says "
            f"{scene.width}x{scene.height}"
        )
    return image


# ----- the model -------------------------------------------------------------------------------


def model_for(tab: Tab) -> Model | None:
    return None if tab.checkpoint is None else load_model(tab.checkpoint)


def prediction(cfg: AppConfig, tab: Tab) -> AmodalScene | None:
    """The model's scene for the current image, None without a model. The network runs once per image: the
    model's cache holds the prediction, and this is a reference to it (only looked at, never edited)."""
    model = model_for(tab)
    if model is None:
        return None
    return model.predict(current_image(tab), tab.session.scene.image, cfg.score_thr)


def model_notice(cfg: AppConfig, tab: Tab) -> str:
    """One line about the model: which one and what it finds in this image, or that there is none."""
    if tab.checkpoint is None:
        return (
            "**No model loaded**, so the app shows and edits annotations only (the shipped model was not "
            "found). Start it with `--checkpoint CKPT` to see predictions, predict uploaded images and fine-tune."
        )
    name = Path(tab.checkpoint).name
    if not len(tab.session):
        return f"model `{name}`"
    found = len(prediction(cfg, tab))
    return f"model `{name}` · its prediction of this image: {found} instance(s) with score ≥ {cfg.score_thr:g}"


def predict_upload(cfg: AppConfig, tab: Tab, path: str | os.PathLike) -> dict[str, Any]:
    """Predict an uploaded image and open it, as a new editable scene of the uploads, in this tab."""
    model = model_for(tab)
    if model is None:
        raise UserError("no model is loaded: start the app with --checkpoint CKPT to predict uploaded images")
    image = read_image(path, max_pixels=MAX_UPLOAD_PIXELS)
    uploads = open_uploads(cfg, tab.checkpoint)
    if tab.session.folder == uploads.folder:
        uploads = tab.session  # the tab's own, with its undo history
    index = len(uploads)
    record = {
        "id": index + 1,
        "file_name": f"upload_{index + 1:05d}.png",
        "height": image.shape[0],
        "width": image.shape[1],
    }
    # Predicted before the tab moves to the uploads: a failed prediction leaves the tab where it was. The
    # uploads edit their scene: a copy of the cached prediction, the one place the app copies one.
    scene = model.predict(image, record, cfg.score_thr).copy()
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    uploads.add_scene(scene, buf.getvalue())
    tab.session = uploads
    clear_selection(tab)
    tab.show = "annotation"
    return scene_summary(tab)


# ----- selection -------------------------------------------------------------------------------


def scene_for(cfg: AppConfig, tab: Tab, which: str) -> AmodalScene:
    if which == "prediction":
        pred = prediction(cfg, tab)
        if pred is None:
            raise UserError("no model is loaded, so there is no prediction to show")
        return pred
    return tab.session.scene


def select_at(cfg: AppConfig, tab: Tab, x: int, y: int, which: str | None = None) -> dict[str, Any] | None:
    """Select the front-most instance at pixel (x, y) of the shown image (or, with ``which``, of that
    scene: ``annotation`` or ``prediction``); the same pixel again cycles to the instances behind it.
    Returns the selected instance's summary (None on background)."""
    x, y = int(x), int(y)
    if which is None:
        which = "prediction" if tab.show == "prediction" else "annotation"
        if tab.show == "both" and x >= tab.session.scene.width:
            which, x = "prediction", x - tab.session.scene.width
    elif which not in ("annotation", "prediction"):
        raise UserError(f"select in 'annotation' or 'prediction', got {which!r}")
    scene = scene_for(cfg, tab, which)
    stack = scene.instances_at(x, y)
    click = (which, x, y)
    tab.cycle = tab.cycle + 1 if click == tab.last_click and stack else 0
    tab.last_click = click
    if not stack:
        tab.selected = None
        return None
    tab.selected, tab.selected_in = stack[tab.cycle % len(stack)], which
    return instance_summary(scene, tab.selected, stack, occlude_rates(tab, figure_key(cfg, tab, which), scene))


def select_instance(cfg: AppConfig, tab: Tab, instance_id: int, which: str = "annotation") -> dict[str, Any]:
    """Select an instance by id (a row of the instance table) in the ``which`` scene."""
    scene = scene_for(cfg, tab, which)
    try:
        scene.get(int(instance_id))
    except (KeyError, ValueError):
        raise UserError(f"this {which} has no instance {instance_id}") from None
    tab.selected, tab.selected_in, tab.last_click, tab.cycle = int(instance_id), which, None, 0
    return instance_summary(scene, int(instance_id), rates=occlude_rates(tab, figure_key(cfg, tab, which), scene))


def select_next(cfg: AppConfig, tab: Tab) -> dict[str, Any] | None:
    """Select the next instance, front to back, of the shown scene (the first one when none of it is
    selected; after the last, the first again). Returns its summary, None when the scene is empty."""
    which = shown_scene(tab)
    scene = scene_for(cfg, tab, which)
    order = [scene.instances[i].id for i in scene.front_to_back()]
    if not order:
        return None
    at = order.index(tab.selected) if tab.selected_in == which and tab.selected in order else -1
    return select_instance(cfg, tab, order[(at + 1) % len(order)], which)


def shown_scene(tab: Tab) -> str:
    """The scene the instance table, the level sets and G are of: the prediction when only it is shown,
    else the annotation (the one edited)."""
    return "prediction" if tab.show == "prediction" else "annotation"


def selected_scene(cfg: AppConfig, tab: Tab) -> AmodalScene | None:
    """The scene the selection belongs to, None when nothing (still existing) is selected."""
    if tab.selected is None:
        return None
    scene = scene_for(cfg, tab, tab.selected_in)
    if all(inst.id != tab.selected for inst in scene.instances):
        tab.selected = None
        return None
    return scene


# ----- summaries -------------------------------------------------------------------------------


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 6)


def occlude_rates(tab: Tab, key: tuple, scene: AmodalScene) -> list[float]:
    """``scene.occlude_rates()``, counted once per scene state (``key``: see `figure_key`)."""
    return tab.figures.value(("rates", *key), scene.occlude_rates)


def instance_summary(
    scene: AmodalScene, instance_id: int, stack: list[int] | None = None, rates: list[float] | None = None
) -> dict[str, Any]:
    """Facts about one instance; ``rates``: the scene's occlude rates when already known."""
    i = scene.index_of(instance_id)
    inst = scene.instances[i]
    out = {
        "id": inst.id,
        "name": inst.name,
        "category": inst.category,
        "rank": inst.rank,
        "occlude_rate": _round((scene.occlude_rates() if rates is None else rates)[i]),
        "score": _round(inst.score),
        "bbox": inst.bbox(),
        "is_stuff": bool(inst.is_stuff),
        "occluders": scene.occluders(inst.id),
        "occludees": scene.occludees(inst.id),
    }
    if stack is not None:
        out["stack"] = stack
    return out


def scene_summary(tab: Tab) -> dict[str, Any]:
    """``{"image": {...}, "instances": [{"id", "name", "category", "rank", "occlude_rate", "score", "bbox"}]}``."""
    scene = tab.session.scene
    rates = occlude_rates(tab, annotation_key(tab), scene)
    instances = [
        {
            "id": inst.id,
            "name": inst.name,
            "category": inst.category,
            "rank": inst.rank,
            "occlude_rate": _round(rate),
            "score": _round(inst.score),
            "bbox": inst.bbox(),
        }
        for inst, rate in zip(scene.instances, rates)
    ]
    image = {k: scene.image[k] for k in ("id", "file_name", "height", "width")}
    image.update(index=tab.session.current, count=len(tab.session))
    return {"image": image, "instances": sorted(instances, key=lambda d: d["rank"])}


# Rank leads: it is the number the image's labels and legend show, and the table is in rank order.
TABLE_HEADERS = ["rank", "id", "name", "occlude rate", "score"]
TABLE_ID_COLUMN = TABLE_HEADERS.index("id")


def instance_rows(scene: AmodalScene, rates: list[float] | None = None) -> list[list[Any]]:
    """One row per instance, front-most first (``rates``: the scene's occlude rates when already known)."""
    rates = scene.occlude_rates() if rates is None else rates
    rows = []
    for i in scene.front_to_back():
        inst = scene.instances[i]
        score = "" if inst.score is None else f"{inst.score:.2f}"
        rows.append([inst.rank, inst.id, inst.name, f"{rates[i]:.3f}", score])
    return rows


# ----- rendering -------------------------------------------------------------------------------
# Every figure is cached per tab by what it depends on (see `figure_key`): a click redraws the view
# and the clicked instance's panels once; clicking it again, or back, redraws nothing.

# Longer side of the inspector's panels: the instance panel and the layer map sit side by side in the
# column, and the page shows the heat map below them at about that size too.
PANEL_SIZE = 256
HEAT_SIZE = 256


def encode_png(image: np.ndarray, level: int = 1) -> bytes:
    """PNG bytes of an RGB uint8 image, fast. ``level`` 1: zlib's fastest compression with the 'up'
    filter (the page's enlarged images repeat every row, which 'up' turns into zeros), several times
    faster than PIL's defaults at about the same size; 0: stored, no compression, ten times faster again."""
    if level not in (0, 1):
        raise ValueError(f"PNG level must be 0 (stored) or 1 (fast), got {level}")
    flt = cv2.IMWRITE_PNG_FILTER_UP if level else cv2.IMWRITE_PNG_FILTER_NONE
    params = [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_FILTER, flt]
    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} image as PNG")
    return data.tobytes()


def annotation_key(tab: Tab) -> tuple:
    """What every figure of the annotation depends on: its dataset, image, saved revision and edits made (each
    edit, undo and redo counts, saved or not: a save that failed keeps its edit on screen)."""
    return ("annotation", str(tab.session.folder), tab.session.current, tab.session.revision, tab.session.changes)


def figure_key(cfg: AppConfig, tab: Tab, which: str) -> tuple:
    """What every figure of the ``which`` scene depends on (the prediction: the model and the image)."""
    if which == "prediction":
        return ("prediction", tab.checkpoint, cfg.score_thr, str(tab.session.folder), tab.session.current)
    return annotation_key(tab)


def render_view(cfg: AppConfig, tab: Tab) -> np.ndarray:
    """The image with instances coloured by depth rank (annotation, prediction, or both side by side), at
    the display's resolution before enlargement (a large photo reduced: see `Display`). The selection is
    not in it: `view_picture` outlines it on top."""
    display = display_for(tab.session.scene.shape)
    image = display_image(tab, display)

    def draw(which: str) -> np.ndarray:
        scene = display_scene(cfg, tab, which, display)
        return viz.overlay_by_rank(image, scene, view=tab.view, alpha=tab.opacity, legend=True)

    if tab.show == "both":
        return np.concatenate([draw("annotation"), draw("prediction")], axis=1)
    return draw(shown_scene(tab))


# Gradio shows an image at most at its own size; smaller images are sent enlarged so they are easy to click.
DISPLAY_MIN_SIDE = 512
# Larger photos are sent reduced: the page cannot show more pixels, and drawing them would cost memory and
# time in proportion to the photo (a 6000 x 4000 view in float32 alone is 288 MB).
DISPLAY_MAX_SIDE = 1600


def display_scale(shape: tuple[int, int]) -> int:
    """Integer factor the page enlarges an image of this (height, width) by (1 for larger images)."""
    return max(1, DISPLAY_MIN_SIDE // max(shape))


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement, so a displayed pixel maps back to exactly one image pixel."""
    return image if scale == 1 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


@dataclass(frozen=True)
class Display:
    """How the page shows an image of ``height`` x ``width``: enlarged ``up`` times (small images) or reduced
    ``down`` times (large photos), one of the two 1. Reduced, display pixel (dx, dy) stands for the block
    ``[dx * down, (dx + 1) * down)`` of image columns (rows alike) and shows the block's centre pixel, so
    masks are drawn from the very pixels a click maps to, and edits fill whole blocks at full resolution."""

    height: int
    width: int
    up: int = 1
    down: int = 1

    @property
    def reduced(self) -> tuple[int, int]:
        """(height, width) after reduction, before enlargement."""
        return -(-self.height // self.down), -(-self.width // self.down)

    def centres(self, n: int, size: int) -> np.ndarray:
        return np.minimum(np.arange(n) * self.down + self.down // 2, size - 1)

    def to_image(self, dx: int, dy: int) -> tuple[int, int]:
        """The image pixel (x, y) a click on display pixel (dx, dy) means."""
        x, y = int(dx) // self.up, int(dy) // self.up
        if self.down > 1:
            x, y = (
                min(x * self.down + self.down // 2, self.width - 1),
                min(y * self.down + self.down // 2, self.height - 1),
            )
        return x, y

    def sample(self, mask: np.ndarray) -> np.ndarray:
        """A full-resolution mask (or image) at the reduced resolution: each block's centre pixel."""
        if self.down == 1:
            return mask
        h, w = self.reduced
        return mask[np.ix_(self.centres(h, self.height), self.centres(w, self.width))]

    def to_full(self, mask: np.ndarray) -> np.ndarray:
        """A mask painted at the reduced resolution, each pixel filling its block at full resolution."""
        if self.down == 1:
            return mask
        return np.repeat(np.repeat(mask, self.down, axis=0), self.down, axis=1)[: self.height, : self.width]


def display_for(shape: tuple[int, int]) -> Display:
    h, w = shape
    down = max(1, -(-max(h, w) // DISPLAY_MAX_SIDE))
    return Display(h, w, up=display_scale(shape) if down == 1 else 1, down=down)


def display_image(tab: Tab, display: Display) -> np.ndarray:
    """The current image at the display's reduced resolution (area-averaged: a photo, not a mask)."""
    image = current_image(tab)
    if display.down == 1:
        return image
    h, w = display.reduced
    return tab.figures.value(
        ("display image", str(tab.session.image_path())),
        lambda: cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA),
    )


def display_scene(cfg: AppConfig, tab: Tab, which: str, display: Display) -> AmodalScene:
    """The ``which`` scene at the display's reduced resolution (its masks sampled as `Display.sample`
    says; the painter's rule commutes with sampling, so visible parts are sampled exactly too)."""
    scene = scene_for(cfg, tab, which)
    if display.down == 1:
        return scene

    def reduce() -> AmodalScene:
        h, w = display.reduced
        instances = [
            Instance(
                inst.id,
                display.sample(inst.amodal),
                rank=inst.rank,
                name=inst.name,
                category=inst.category,
                is_stuff=inst.is_stuff,
                score=inst.score,
                external=None if inst.external is None else display.sample(inst.external),
            )
            for inst in scene.instances
        ]
        return AmodalScene({**scene.image, "height": h, "width": w}, instances)

    return tab.figures.value(("display scene", *figure_key(cfg, tab, which)), reduce)


def view_picture(cfg: AppConfig, tab: Tab) -> Picture:
    """The view as the page shows it: `render_view` enlarged (small images), the selected instance
    outlined. A click only outlines another instance on the cached view: it never draws the view again,
    and the tab keeps one outlined view at a time."""
    shown = ("annotation", "prediction") if tab.show == "both" else (shown_scene(tab),)
    key = ("view", tab.show, tab.view, tab.opacity, *(figure_key(cfg, tab, which) for which in shown))
    display = display_for(tab.session.scene.shape)
    view = tab.figures.get(key, lambda: enlarge(render_view(cfg, tab), display.up))
    if tab.selected is None or tab.selected_in not in shown:
        return view
    # In "both" the prediction is the right half.
    half = display.reduced[1] * display.up
    offset = (half if tab.selected_in == "prediction" and tab.show == "both" else 0, 0)
    return tab.figures.only(
        "outlined view",
        (*key, tab.selected_in, tab.selected),
        lambda: viz.selection_outline(
            view.pixels, display_scene(cfg, tab, tab.selected_in, display), tab.selected, display.up, offset
        ),
    )


def click_to_pixel(tab: Tab, dx: int, dy: int) -> tuple[int, int]:
    """A click on the page's view (display pixels) as a pixel of the shown image; in "both", a click on
    the right half is offset by the image's width, as `select_at` expects."""
    display = display_for(tab.session.scene.shape)
    half = display.reduced[1] * display.up
    right = tab.show == "both" and dx >= half
    x, y = display.to_image(dx - half if right else dx, dy)
    return (x + display.width if right else x), y


def _shown(cfg: AppConfig, tab: Tab) -> AmodalScene:
    return scene_for(cfg, tab, shown_scene(tab))


def _K(cfg: AppConfig, tab: Tab, which: str) -> int:
    """Depth levels of the ``which`` scene's maps: the model's for a prediction."""
    model = model_for(tab) if which == "prediction" else None
    return (model.K if model is not None else None) or cfg.K


def render_level_sets(cfg: AppConfig, tab: Tab) -> np.ndarray:
    """Sem-dist level sets of the shown scene: a prediction's are the network's own sem-dist maps."""
    scene = _shown(cfg, tab)
    maps = None
    if any(inst.semdist is not None for inst in scene.instances):
        maps = [semdist_of(cfg, scene, inst.id) for inst in scene.instances]
    return viz.level_set_figure(current_image(tab), scene, maps=maps, K=cfg.K, tau=cfg.tau)


def render_global(cfg: AppConfig, tab: Tab) -> np.ndarray:
    """Global layering map of the shown scene: a prediction's is the network's own (its GLM output), titled
    with how far it agrees with the predicted instances (a separate head: nothing forces them to agree)."""
    image = current_image(tab)
    if shown_scene(tab) == "prediction":
        model = model_for(tab)
        G = None if model is None else model.global_layers(image, cfg.score_thr)
        if G is not None:
            K = _K(cfg, tab, "prediction")
            share = semdist.layering_agreement(G, [inst.amodal for inst in _shown(cfg, tab).instances], K)
            note = "the network's own (global layering module)" + (
                "" if share is None else f"\nits instances' overlap count agrees on {share:.0%} of object pixels"
            )
            return viz.global_layering_figure(image, G, K=K, note=note)
    return viz.global_layering_figure(image, _shown(cfg, tab), K=cfg.K)


def pane_picture(cfg: AppConfig, tab: Tab, pane: str) -> Picture:
    """The figure of a tab over the image: ``levels`` (level sets) or ``global`` (layering map)."""
    render = {"levels": render_level_sets, "global": render_global}[pane]
    key = (pane, shown_scene(tab), figure_key(cfg, tab, shown_scene(tab)))
    return tab.figures.get(key, lambda: render(cfg, tab))


def semdist_of(cfg: AppConfig, scene: AmodalScene, instance_id: int) -> semdist.SemDistMap:
    """One instance's sem-dist map: the network's when attached (with the model's levels), else encoded
    from the current masks."""
    i = scene.index_of(instance_id)
    inst = scene.instances[i]
    if inst.semdist is not None:
        return inst.semdist  # a crop of the instance's box, as the predictor made it
    # Only this instance's levels are needed; the layer crops of all instances are cheap counts.
    box, layer = semdist.raw_layer_crop(scene, i)
    return semdist.SemDistMap(semdist.level_sdm(layer, cfg.K, cfg.tau), box, scene.shape, cfg.K)


@dataclass
class Inspection:
    """Everything the inspector shows for the selected instance."""

    text: str
    panel: Picture
    layers: Picture
    heatmap: Picture
    surface: Picture | None


def inspect(cfg: AppConfig, tab: Tab, surface: bool = True) -> Inspection | None:
    """The facts, and panels: visible and occluded parts, layer map, sem-dist heat map, 3-D surface."""
    scene = selected_scene(cfg, tab)
    if scene is None:
        return None
    inst = scene.get(tab.selected)
    if not inst.amodal.any():
        raise UserError(f"instance {inst.id} has an empty amodal mask: there is nothing to inspect")
    state = figure_key(cfg, tab, tab.selected_in)
    info = instance_summary(scene, inst.id, rates=occlude_rates(tab, state, scene))
    names = {o.id: o.name or f"#{o.id}" for o in scene.instances}

    def who(ids: list[int]) -> str:
        return ", ".join(f"{names[i]} (#{i})" for i in ids) or "none"

    score = "—" if info["score"] is None else f"{info['score']:.3f}"
    category = "—" if info["category"] is None else str(info["category"])
    text = (
        f"### {inst.name or 'unnamed'} (#{inst.id}) · {tab.selected_in}\n"
        f"rank **{inst.rank}** of {len(scene)} · occlude rate **{info['occlude_rate']:.3f}** · score {score} · "
        f"category {category}{' · stuff' if inst.is_stuff else ''}\n\n"
        f"occluded by: {who(info['occluders'])}  \noccludes: {who(info['occludees'])}"
    )
    image = current_image(tab)
    panel, layers, heatmap = _inspector_pictures(cfg, tab, state, scene, inst.id, image)
    return Inspection(
        text=text,
        panel=panel,
        layers=layers,
        heatmap=heatmap,
        surface=tab.figures.get(("surface", state, inst.id), lambda: viz.semdist_surface(
            _semdist(cfg, tab, state, scene, inst.id))) if surface else None,
    )  # fmt: skip


def _semdist(cfg: AppConfig, tab: Tab, state: tuple, scene: AmodalScene, instance_id: int) -> semdist.SemDistMap:
    return tab.figures.value(("semdist", state, instance_id), lambda: semdist_of(cfg, scene, instance_id))


def _inspector_pictures(
    cfg: AppConfig, tab: Tab, state: tuple, scene: AmodalScene, instance_id: int, image: np.ndarray
) -> tuple[Picture, Picture, Picture]:
    """Panel, layer map and heat map of one instance of the scene in ``state`` (see `figure_key`)."""
    inst = scene.get(instance_id)
    K = _K(cfg, tab, state[0])
    # The layer map follows the scene's order and masks, as the panel and the occlude rate do (for a
    # prediction: after its order was decided); the heat map is the network's own sem-dist map.
    title = f"{'predicted ' if state[0] == 'prediction' else ''}sem-dist map (K={K}): S = level + distance / tau"
    return (
        tab.figures.get(("panel", state, inst.id), lambda: viz.instance_panel(image, scene, inst.id, out_size=PANEL_SIZE)),
        tab.figures.get(("layers", state, inst.id),
                        lambda: viz.layer_map_figure(scene, inst.id, K=K, image=image, out_size=PANEL_SIZE)),
        tab.figures.get(("heat", state, inst.id), lambda: viz.semdist_heat_panel(
            _semdist(cfg, tab, state, scene, inst.id), out_size=HEAT_SIZE, title=title)),
    )  # fmt: skip


# After showing an image, a tab draws its instances' inspector figures in the background, so a first
# click finds them ready: at most this many instances per scene, front-most first.
PREFETCH_MAX = 16


def prefetch(cfg: AppConfig, tab: Tab) -> threading.Thread | None:
    """Start drawing (and encoding) the inspector figures of the shown scene's instances in a background
    thread; it stops as soon as that scene changes. Returns the thread, None when all are drawn already."""
    if not len(tab.session):
        return None
    image = current_image(tab)
    jobs = []
    for which in ("annotation", "prediction") if tab.show == "both" else (shown_scene(tab),):
        state = figure_key(cfg, tab, which)
        scene = scene_for(cfg, tab, which)
        ids = [scene.instances[i].id for i in scene.front_to_back() if scene.instances[i].amodal.any()]
        todo = [i for i in ids[:PREFETCH_MAX] if ("heat", state, i) not in tab.figures]
        if todo:
            # An edit changes the live annotation in place: draw from a copy taken along with its key (sharing
            # its masks, which edits replace rather than write).
            jobs.append((state, editable_copy(scene) if which == "annotation" else scene, todo))
    if not jobs:
        return None

    def run() -> None:
        try:
            for state, scene, ids in jobs:
                for instance_id in ids:
                    if figure_key(cfg, tab, state[0]) != state:
                        return  # the scene changed: these figures would never be asked for
                    for picture in _inspector_pictures(cfg, tab, state, scene, instance_id, image):
                        picture.png  # noqa: B018 (encoded here, off the click's path)
        except Exception:  # best effort: a click draws whatever is missing, and reports its own errors
            log.debug("prefetching inspector figures failed", exc_info=True)

    thread = threading.Thread(target=run, name="semlayer-prefetch", daemon=True)
    thread.start()
    return thread


PARTS = ("view", "panes", "inspector", "table")


def render(cfg: AppConfig, tab: Tab, parts: Sequence[str] = PARTS) -> dict[str, Any]:
    """What the page shows, for the given parts only (an event renders just what it changes):

    ``view``: the image (`view_picture`); ``panes``: ``levels`` and ``global``, drawn only while their
    tab is open (None otherwise); ``inspector``: ``inspector`` text, ``panel``, ``layers``, ``heat`` and
    ``surface`` pictures (None with nothing selected; ``surface`` only while its tab is open), and the
    selected annotation's ``name``, ``category``, ``stuff`` and the ``others`` to put it in front of;
    ``table``: the instance ``rows`` of the `shown_scene` and a ``table_title``, ``status``,
    ``position``, ``model`` notice, and the ``show``, ``view_choice`` and ``opacity`` settings."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown page parts {sorted(unknown)}; expected some of {PARTS}")
    out: dict[str, Any] = {}
    if "view" in parts:
        out["view"] = view_picture(cfg, tab)
    if "panes" in parts:
        for pane in PANES[1:]:
            out[pane] = pane_picture(cfg, tab, pane) if tab.pane == pane else None
    if "inspector" in parts:
        insp = inspect(cfg, tab, surface=tab.surface)
        editable = tab.selected is not None and tab.selected_in == "annotation"
        inst = tab.session.scene.get(tab.selected) if editable else None
        out.update(
            inspector=insp.text if insp else "Click an instance in the image.",
            panel=insp.panel if insp else None,
            layers=insp.layers if insp else None,
            heat=insp.heatmap if insp else None,
            surface=insp.surface if insp else None,
            name=inst.name if inst else "",
            category=inst.category if inst else None,
            stuff=bool(inst.is_stuff) if inst else False,
            # The instances the selection can be put in front of: every other one.
            others=[
                (f"{i.name or 'unnamed'} (#{i.id})", i.id)
                for i in sorted(tab.session.scene.instances, key=lambda i: i.rank)
                if inst is None or i.id != inst.id
            ],
        )
    if "table" in parts:
        scene = tab.session.scene
        undo_labels, redo_labels = tab.session.history()
        last = f"last edit: {undo_labels[-1]}" if undo_labels else "no edits in this image"
        listed = shown_scene(tab)
        shown = scene_for(cfg, tab, listed)
        out.update(
            rows=instance_rows(shown, occlude_rates(tab, figure_key(cfg, tab, listed), shown)),
            table_title=f"{listed}: instances, front first (click a row to select)",
            status=f"{last} · {len(undo_labels)} undo / {len(redo_labels)} redo · "
            f"{len(tab.session.edited_indices())} edited image(s) · every edit is saved"
            + "".join(f"  \n⚠ {n}" for n in tab.session.notices),
            position=f"image {tab.session.current + 1} of {len(tab.session)}: `{scene.file_name}`",
            model=model_notice(cfg, tab),
            show=tab.show,
            view_choice=tab.view,
            opacity=tab.opacity,
        )
    return out


# ----- editing ---------------------------------------------------------------------------------


def _editable_selection(tab: Tab) -> int:
    if tab.selected is None:
        raise UserError("select an instance first (click it in the image or pick it in the table)")
    if tab.selected_in != "annotation":
        raise UserError(
            "that instance is part of the prediction, which is not edited: set 'show' to annotation (or both) "
            "and select the instance in the annotation"
        )
    return tab.selected


def _edit(tab: Tab, method: str, *args: Any) -> Any:
    """Run one session edit. On a save conflict the tab reloads the saved state, then the error goes on up."""
    try:
        return getattr(tab.session, method)(*args)
    except ConflictError:
        tab.session.reload()
        clear_selection(tab)
        raise
    except ValueError as err:  # bad argument from the page or an API call
        raise UserError(str(err)) from None


def reorder(tab: Tab, where: str, instance_id: int | None = None) -> dict[str, Any]:
    """Move an instance (default: the selected one) forward, backward, to the front or back."""
    if where not in MOVES:
        raise UserError(f"move must be one of {', '.join(MOVES)}, got {where!r}")
    target = _editable_selection(tab) if instance_id is None else int(instance_id)
    _edit(tab, "move", target, where)
    return scene_summary(tab)


def put_in_front(tab: Tab, behind_id: int | None) -> dict[str, Any]:
    front = _editable_selection(tab)
    if behind_id is None:
        raise UserError("choose the instance to put the selected one in front of")
    _edit(tab, "put_in_front", front, int(behind_id))
    return scene_summary(tab)


def undo(tab: Tab) -> str | None:
    """Undo the current scene's last edit; returns its label (None: nothing to undo)."""
    return _edit(tab, "undo")


def redo(tab: Tab) -> str | None:
    return _edit(tab, "redo")


def delete_selected(tab: Tab) -> None:
    _edit(tab, "delete_instance", _editable_selection(tab))
    clear_selection(tab)


def _set_attributes(scene: AmodalScene, instance_id: int, name: str, category: int | None, is_stuff: bool) -> None:
    op_rename(scene, instance_id, name)
    op_set_category(scene, instance_id, category)
    op_set_stuff(scene, instance_id, is_stuff)


def set_attributes(tab: Tab, name: str, category: float | None, is_stuff: bool) -> None:
    """Rename / set category / stuff flag of the selected instance: one edit (one undo step), labelled by
    what changed."""
    inst = tab.session.scene.get(_editable_selection(tab))
    cat = None if category is None or (isinstance(category, float) and np.isnan(category)) else int(category)
    changed = [what for what, differs in (("name", name != inst.name), ("category", cat != inst.category),
                                          ("stuff", bool(is_stuff) != inst.is_stuff)) if differs]  # fmt: skip
    if changed:
        label = f"set {' / '.join(changed)} of {inst.id}"
        _edit(tab, "apply", label, _set_attributes, inst.id, name, cat, bool(is_stuff))


EDITOR_COLOR = (255, 0, 255)
BRUSH_MODES = ("add", "remove")


def _editor_target(tab: Tab) -> Any:
    """The annotation instance the editor is for: the selection, when it is an annotated one."""
    if tab.selected is None or tab.selected_in != "annotation":
        return None
    return next((inst for inst in tab.session.scene.instances if inst.id == tab.selected), None)


def editor_key(tab: Tab) -> tuple:
    """What the editor's picture depends on: the image, and the selected object and its mask."""
    inst = _editor_target(tab)
    mask = None if inst is None else hash(np.packbits(inst.amodal).tobytes())
    return (str(tab.session.folder), tab.session.current, None if inst is None else inst.id, mask)


def editor_label(tab: Tab) -> str:
    """The editor's title: which object the strokes go to."""
    inst = _editor_target(tab)
    if inst is None:
        return "mask editor · nothing selected: strokes can become a new instance"
    return f"mask editor · {inst.name or 'unnamed'} (#{inst.id}), its amodal mask tinted"


def editor_value(tab: Tab) -> dict[str, Any]:
    """ImageEditor value: the image with the selected amodal mask tinted, and no strokes yet. Records what
    it shows (`editor_key`), so strokes are applied to that object only.

    The current mask is shown in the background rather than handed over as a paintable layer: Gradio's
    editor does not reliably load layers given by the server, while the strokes it sends back are exact.
    """
    display = display_for(tab.session.scene.shape)  # a large photo is edited at the reduced resolution
    image = np.array(display_image(tab, display))
    inst = _editor_target(tab)
    if inst is not None:
        mask = display.sample(inst.amodal)
        image[mask] = (0.5 * image[mask] + 0.5 * np.array(EDITOR_COLOR)).astype(np.uint8)
    tab.editor_shows = editor_key(tab)
    return {"background": image, "layers": [], "composite": None}


def mask_from_editor(value: Any, shape: tuple[int, int]) -> np.ndarray:
    """Amodal mask painted in the ImageEditor: any layer pixel with alpha > 0, at the image's size."""
    layers = value.get("layers") if isinstance(value, dict) else None
    if not layers:
        raise UserError("nothing painted in the editor: paint with the brush first")
    mask = np.zeros(shape, bool)
    display = display_for(shape)
    for layer in layers:
        arr = _as_rgba(layer)
        alpha = arr[:, :, 3] > 0
        if display.down > 1 and alpha.shape == display.reduced:
            alpha = display.to_full(alpha)  # painted on the reduced photo: each pixel fills its block
        if alpha.shape != shape:
            # The editor may hand back a scaled canvas; nearest keeps the mask binary.
            alpha = cv2.resize(alpha.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        mask |= alpha
    return mask


def _as_rgba(layer: Any) -> np.ndarray:
    if isinstance(layer, (str, Path)):
        with Image.open(layer) as im:
            return np.asarray(im.convert("RGBA"))
    if isinstance(layer, Image.Image):
        return np.asarray(layer.convert("RGBA"))
    arr = np.asarray(layer)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return arr
    raise UserError(f"the editor layer is not an RGBA image (shape {arr.shape})")


def apply_editor_mask(tab: Tab, value: Any, mode: str = "add") -> None:
    """Brush strokes added to (``add``) or removed from (``remove``) the selected amodal mask."""
    target = _editable_selection(tab)
    if tab.editor_shows is not None and tab.editor_shows[:3] != editor_key(tab)[:3]:
        shown = tab.editor_shows[2]
        raise UserError(
            f"the editor shows {'no object' if shown is None else f'#{shown}'} but #{target} is selected: "
            "paint again on the selected object (the editor now shows it)"
        )
    if mode not in BRUSH_MODES:
        raise UserError(f"brush mode must be one of {', '.join(BRUSH_MODES)}, got {mode!r}")
    current = tab.session.scene.get(target).amodal
    strokes = mask_from_editor(value, current.shape)
    _edit(tab, "set_amodal", target, current | strokes if mode == "add" else current & ~strokes)


def add_from_editor(tab: Tab, value: Any, name: str, category: float | None, is_stuff: bool) -> int:
    """A new instance, at the front, whose amodal mask is the brush strokes."""
    mask = mask_from_editor(value, tab.session.scene.shape)
    cat = None if category is None or (isinstance(category, float) and np.isnan(category)) else int(category)
    new_id = _edit(tab, "add_instance", mask, name or "object", cat, bool(is_stuff))
    tab.selected, tab.selected_in = new_id, "annotation"
    return new_id


# ----- export and fine-tune --------------------------------------------------------------------


def export(tab: Tab, fmt: str) -> Path:
    """The corrected dataset as ``cocoa`` (merged into the original file), ``coco`` or ``kins`` JSON in the
    workspace."""
    fmt = str(fmt).lower()
    try:
        return tab.session.export(fmt)
    except ValueError as err:
        raise UserError(str(err)) from None


def export_notice(path: Path) -> str:
    """What the page says under an exported file: for COCOA, which masks its one-polygon ``segmentation``
    cannot hold (several pieces, holes) and how many pixels it loses; the exact masks are in ``amodal_mask``."""
    from semlayer.formats.cocoa import polygon_losses

    text = f"exported `{Path(path).name}`"
    if not Path(path).name.endswith(".cocoa.json"):
        return text
    losses = polygon_losses(json.loads(Path(path).read_text(encoding="utf-8")))
    if not losses:
        return text + " · every mask is exactly its COCOA polygon"
    missed = sum(loss.missed for loss in losses)
    total = sum(loss.area for loss in losses)
    images = len({loss.image_id for loss in losses})
    return (
        text + f" · **{len(losses)} mask(s) in {images} image(s) are in several pieces or have holes**: COCOA's "
        f"one `segmentation` polygon misses {missed:,} of their {total:,} pixels (and adds "
        f"{sum(loss.extra for loss in losses):,}). The exact masks are in each region's `amodal_mask` "
        "(semlayer reads it; tools that read only `segmentation` get the polygon)."
    )


def training_classes(tab: Tab, model_classes: int) -> tuple[bool, str]:
    """Whether a fine-tune on this dataset trains one class-agnostic "object" class, and why, in words.

    COCOA has no categories: class-agnostic, the per-class model's heads merged into one
    (`class_agnostic_checkpoint`). COCOA-cls, D2SA and KINS name a category per object: trained per
    category, unless the model itself is class-agnostic (its head is kept) or an edited object has none."""
    categories = tab.session.annset.categories
    if not categories:
        return True, "class-agnostic (the data has no categories)"
    edited = [tab.session.scene_at(i) for i in tab.session.edited_indices()]
    if any(inst.category is None for scene in edited for inst in scene.instances):
        return True, "class-agnostic (an edited object has no category)"
    if model_classes == 1:
        return True, "class-agnostic (the model is)"
    return False, f"per category ({len(categories)} categories)"


def start_finetune(cfg: AppConfig, tab: Tab, command: list[str] | None = None) -> FineTuneJob:
    """Export the corrected dataset (COCOA) and start train.py --init on it in the background. One fine-tune
    at a time on the whole server: each takes the machine's cores (and any number of crafted datasets
    would otherwise start as many processes)."""
    with _JOBS_LOCK:
        return _start_finetune(cfg, tab, command)


def _start_finetune(cfg: AppConfig, tab: Tab, command: list[str] | None) -> FineTuneJob:
    if tab.job is not None and tab.job.progress().state == "running":
        raise UserError("a fine-tune is already running in this tab; cancel it first")
    busy = [folder for folder, job in _JOBS.items() if job.progress().state == "running"]
    if busy:
        raise UserError(
            f"a fine-tune of another dataset ({busy[0].name}) is running on this server; one runs at a time: "
            "start this one when it has finished (or cancel it from its page)"
        )
    if tab.checkpoint is None:
        raise UserError("no model is loaded: start the app with --checkpoint CKPT to fine-tune it")
    if cfg.train_config is None:
        raise UserError("no training config: start the app with --train-config CONFIG")
    if not tab.session.edited_indices():
        raise UserError("nothing to fine-tune on: no image of this dataset is corrected yet (fix a mask, an order "
                        "or a name first; the fine-tune learns from the corrections)")  # fmt: skip
    data = export(tab, "cocoa")
    images = tab.session.image_dir or tab.session.folder / "images"
    out = next_run_dir(tab.session.folder)
    note = ""
    if command is None:
        # The architecture is the model's own: --train-config gives the data and schedule around it.
        own = getattr(model_for(tab).predictor, "config", None)
        model_cfg = None if own is None else own["model"]
        classes = int((model_cfg or load_config(cfg.train_config)["model"])["num_classes"])
        agnostic, note = training_classes(tab, classes)
        init = Path(tab.checkpoint)
        if agnostic and classes > 1:
            init = class_agnostic_checkpoint(init, out)
            note += f": the model's {classes} class heads merged into one"
        config = finetune_config(cfg.train_config, model_cfg, out, class_agnostic=agnostic)
        command = train_command(config, init, data, images, out, cfg.finetune_iters)
    _JOBS[tab.session.folder] = FineTuneJob(command, out, total=cfg.finetune_iters, note=note)
    return _JOBS[tab.session.folder]


def finetune_status(tab: Tab) -> Progress | None:
    """Progress of the tab's job; when it has finished, its checkpoint becomes the tab's model."""
    if tab.job is None:
        return None
    progress = tab.job.progress()
    if progress.state == "done" and progress.checkpoint is not None and tab.checkpoint != str(progress.checkpoint):
        load_model(progress.checkpoint)
        tab.checkpoint = str(progress.checkpoint)
    return progress


def cancel_finetune(tab: Tab) -> None:
    if tab.job is None:
        raise UserError("no fine-tune is running")
    tab.job.cancel()
