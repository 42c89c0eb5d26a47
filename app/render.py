"""What the page shows for a tab's state: the view, the panes over it, the inspector, the instance table and
the mask editor's picture, part by part (`render`). No Gradio here, and no user actions (app.handlers).

Every figure is cached per tab by what it depends on (`Tab.figure_key`): a click redraws the view and the
clicked instance's panels once; clicking it again, or back, redraws nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from semlayer import semdist, viz
from semlayer.scene import AmodalScene, Instance
from semlayer.workspace import editable_copy

from .tab import AppConfig, Picture, Source, Tab, UserError

log = logging.getLogger(__name__)

PANES = ("overlay", "levels", "global")  # the tabs over the image; only the open one is drawn
EDITOR_COLOR = (255, 0, 255)

# Rank leads: it is the number the image's labels and the layer list show, and the table is in rank order.
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


# Longer side of the inspector's panels: the instance panel and the layer map sit side by side in the
# column, and the page shows the heat map below them at about that size too.
PANEL_SIZE = 256
HEAT_SIZE = 256


def render_view(tab: Tab) -> np.ndarray:
    """The image with each instance in its own colour, labelled with its depth rank (annotation, prediction,
    or both side by side), at the display's resolution before enlargement (a large photo reduced: see
    `Display`). The selection is not in it: `view_picture` outlines it on top."""
    display = display_for(tab.session.scene.shape)
    image = display_image(tab, display)

    def draw(which: Source) -> np.ndarray:
        scene = display_scene(tab, which, display)
        # The layer list beside the image is the key (no legend drawn in); hidden objects are not drawn.
        return viz.overlay_by_rank(
            image, scene, view=tab.view, alpha=tab.opacity, legend=False, shown=tab.shown_ids(which)
        )

    if tab.show == Source.BOTH:
        return np.concatenate([draw(Source.ANNOTATION), draw(Source.PREDICTION)], axis=1)
    return draw(tab.listed)


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
    image = tab.current_image()
    if display.down == 1:
        return image
    h, w = display.reduced
    return tab.figures.value(
        ("display image", str(tab.session.image_path())),
        lambda: cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA),
    )


def display_scene(tab: Tab, which: Source, display: Display) -> AmodalScene:
    """The ``which`` scene at the display's reduced resolution (its masks sampled as `Display.sample`
    says; the painter's rule commutes with sampling, so visible parts are sampled exactly too). Not kept:
    it is drawn into the cached view once, and sampling a few masks costs less than holding them."""
    scene = tab.scene_for(which)
    if display.down == 1:
        return scene
    h, w = display.reduced
    instances = [
        Instance(inst.id, display.sample(inst.amodal), rank=inst.rank, name=inst.name, category=inst.category,
                 is_stuff=inst.is_stuff, score=inst.score,
                 external=None if inst.external is None else display.sample(inst.external))
        for inst in scene.instances
    ]  # fmt: skip
    return AmodalScene({**scene.image, "height": h, "width": w}, instances)


def view_picture(tab: Tab) -> Picture:
    """The view as the page shows it: `render_view` enlarged (small images), the selected instance
    outlined. A click only outlines another instance on the cached view: it never draws the view again,
    and the tab keeps one outlined view at a time."""
    shown = (Source.ANNOTATION, Source.PREDICTION) if tab.show == Source.BOTH else (tab.listed,)
    key = ("view", tab.show, tab.view, tab.opacity, *((tab.figure_key(w), tab.shown_ids(w)) for w in shown))
    display = display_for(tab.session.scene.shape)
    view = tab.figures.picture(key, lambda: enlarge(render_view(tab), display.up))
    if tab.selected is None or tab.selected_in not in shown:
        return view
    selected_in, selected = tab.selected_in, tab.selected

    def outline() -> np.ndarray:
        # In "both" the prediction is the right half: the library draws on the part showing its scene.
        width = display.reduced[1] * display.up
        x0 = width if selected_in == Source.PREDICTION and tab.show == Source.BOTH else 0
        out = view.pixels.copy()
        part = view.pixels[:, x0 : x0 + width]
        out[:, x0 : x0 + width] = viz.selection_outline(part, display_scene(tab, selected_in, display), selected)
        return out

    return tab.figures.only("outlined view", (*key, selected_in, selected), outline)


def click_to_pixel(tab: Tab, dx: int, dy: int) -> tuple[int, int]:
    """A click on the page's view (display pixels) as a pixel of the shown image; in "both", a click on
    the right half is offset by the image's width, as `select_at` expects."""
    display = display_for(tab.session.scene.shape)
    half = display.reduced[1] * display.up
    right = tab.show == Source.BOTH and dx >= half
    x, y = display.to_image(dx - half if right else dx, dy)
    return (x + display.width if right else x), y


def _shown(tab: Tab) -> AmodalScene:
    return tab.scene_for(tab.listed)


def _K(tab: Tab, which: Source | str) -> int:
    """Depth levels of the ``which`` scene's maps: the model's for a prediction."""
    model = tab.model if which == Source.PREDICTION else None
    return (model.K if model is not None else None) or tab.cfg.K


def render_level_sets(tab: Tab) -> np.ndarray:
    """Sem-dist level sets of the shown scene: a prediction's are the network's own sem-dist maps."""
    scene = _shown(tab)
    maps = None
    if any(inst.semdist is not None for inst in scene.instances):
        maps = [semdist_of(tab.cfg, scene, inst.id) for inst in scene.instances]
    return viz.level_set_figure(tab.current_image(), scene, maps=maps, K=tab.cfg.K, tau=tab.cfg.tau)


def render_global(tab: Tab) -> np.ndarray:
    """Global layering map of the shown scene: a prediction's is the network's own (its GLM output), titled
    with how far it agrees with the predicted instances (a separate head: nothing forces them to agree)."""
    image = tab.current_image()
    if tab.listed == Source.PREDICTION:
        model = tab.model
        G = None if model is None else model.global_layers(image, tab.cfg.score_thr)
        if G is not None:
            K = _K(tab, Source.PREDICTION)
            share = semdist.layering_agreement(G, [inst.amodal for inst in _shown(tab).instances], K)
            note = "the network's own (global layering module)" + (
                "" if share is None else f"\nits instances' overlap count agrees on {share:.0%} of object pixels"
            )
            return viz.global_layering_figure(image, G, K=K, note=note)
    return viz.global_layering_figure(image, _shown(tab), K=tab.cfg.K)


def pane_picture(tab: Tab, pane: str) -> Picture:
    """The figure of a tab over the image: ``levels`` (level sets) or ``global`` (layering map)."""
    render = {"levels": render_level_sets, "global": render_global}[pane]
    key = (pane, tab.listed, tab.figure_key(tab.listed))
    return tab.figures.picture(key, lambda: render(tab))


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


def color_swatch(instance_id: int) -> str:
    """A square in the instance's colour (`viz.instance_color`), as Markdown's inline HTML."""
    return f'<span style="color:{viz.instance_hex(instance_id)}">■</span>'


def row_colors(rows: list[list[Any]]) -> list[str]:
    """The CSS colour of each `instance_rows` row's instance."""
    return [viz.instance_hex(int(row[TABLE_ID_COLUMN])) for row in rows]


@dataclass
class Inspection:
    """Everything the inspector shows for the selected instance."""

    text: str
    panel: Picture
    layers: Picture
    heatmap: Picture
    surface: Picture | None


def inspect(tab: Tab, surface: bool = True) -> Inspection | None:
    """The facts, and panels: visible and occluded parts, layer map, sem-dist heat map, 3-D surface."""
    scene = tab.selected_scene()
    if scene is None:
        return None
    inst = scene.get(tab.selected)
    if not inst.amodal.any():
        raise UserError(f"instance {inst.id} has an empty amodal mask: there is nothing to inspect")
    state = tab.figure_key(tab.selected_in)
    info = scene.instance_summary(inst.id, tab.occlude_rates(tab.selected_in, scene))
    names = {o.id: o.name or f"#{o.id}" for o in scene.instances}

    def who(ids: list[int]) -> str:
        return ", ".join(f"{names[i]} (#{i})" for i in ids) or "none"

    score = "—" if info["score"] is None else f"{info['score']:.3f}"
    category = "—" if info["category"] is None else str(info["category"])
    text = (
        f"### {color_swatch(inst.id)} {inst.name or 'unnamed'} (#{inst.id}) · {tab.selected_in}\n"
        f"rank **{inst.rank}** of {len(scene)} · occlude rate **{info['occlude_rate']:.3f}** · score {score} · "
        f"category {category}{' · stuff' if inst.is_stuff else ''}\n\n"
        f"occluded by: {who(info['occluders'])}  \noccludes: {who(info['occludees'])}"
    )
    image = tab.current_image()
    panel, layers, heatmap = _inspector_pictures(tab, state, scene, inst.id, image)
    return Inspection(
        text=text,
        panel=panel,
        layers=layers,
        heatmap=heatmap,
        surface=tab.figures.picture(("surface", state, inst.id), lambda: viz.semdist_surface(
            _semdist(tab, state, scene, inst.id))) if surface else None,
    )  # fmt: skip


def _semdist(tab: Tab, state: tuple, scene: AmodalScene, instance_id: int) -> semdist.SemDistMap:
    return tab.figures.value(("semdist", state, instance_id), lambda: semdist_of(tab.cfg, scene, instance_id))


def _inspector_pictures(
    tab: Tab, state: tuple, scene: AmodalScene, instance_id: int, image: np.ndarray
) -> tuple[Picture, Picture, Picture]:
    """Panel, layer map and heat map of one instance of the scene in ``state`` (see `figure_key`)."""
    inst = scene.get(instance_id)
    K = _K(tab, state[0])
    # The layer map follows the scene's order and masks, as the panel and the occlude rate do (for a
    # prediction: after its order was decided); the heat map is the network's own sem-dist map.
    title = f"{'predicted ' if state[0] == 'prediction' else ''}sem-dist map (K={K}): S = level + distance / tau"
    return (
        tab.figures.picture(("panel", state, inst.id), lambda: viz.instance_panel(image, scene, inst.id, out_size=PANEL_SIZE)),
        tab.figures.picture(("layers", state, inst.id),
                        lambda: viz.layer_map_figure(scene, inst.id, K=K, image=image, out_size=PANEL_SIZE)),
        tab.figures.picture(("heat", state, inst.id), lambda: viz.semdist_heat_panel(
            _semdist(tab, state, scene, inst.id), out_size=HEAT_SIZE, title=title)),
    )  # fmt: skip


# After showing an image, a tab draws its instances' inspector figures in the background, so a first
# click finds them ready: at most this many instances per scene, front-most first.
PREFETCH_MAX = 16


def prefetch(tab: Tab) -> threading.Thread | None:
    """Start drawing (and encoding) the inspector figures of the shown scene's instances in a background
    thread; it stops as soon as that scene changes. Returns the thread, None when all are drawn already."""
    if not len(tab.session):
        return None
    image = tab.current_image()
    jobs = []
    for which in (Source.ANNOTATION, Source.PREDICTION) if tab.show == Source.BOTH else (tab.listed,):
        state = tab.figure_key(which)
        scene = tab.scene_for(which)
        ids = [scene.instances[i].id for i in scene.front_to_back() if scene.instances[i].amodal.any()]
        todo = [i for i in ids[:PREFETCH_MAX] if ("heat", state, i) not in tab.figures]
        if todo:
            # An edit changes the live annotation in place: draw from a copy taken along with its key (sharing
            # its masks, which edits replace rather than write).
            jobs.append((state, editable_copy(scene) if which == Source.ANNOTATION else scene, todo))
    if not jobs:
        return None

    def run() -> None:
        try:
            for state, scene, ids in jobs:
                for instance_id in ids:
                    if tab.figure_key(state[0]) != state:
                        return  # the scene changed: these figures would never be asked for
                    for picture in _inspector_pictures(tab, state, scene, instance_id, image):
                        picture.png  # noqa: B018 (encoded here, off the click's path)
        except Exception:  # best effort: a click draws whatever is missing, and reports its own errors
            log.debug("prefetching inspector figures failed", exc_info=True)

    thread = threading.Thread(target=run, name="semlayer-prefetch", daemon=True)
    thread.start()
    return thread


PARTS = ("view", "panes", "inspector", "table")


def render(tab: Tab, parts: Sequence[str] = PARTS) -> dict[str, Any]:
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
        out["view"] = view_picture(tab)
    if "panes" in parts:
        for pane in PANES[1:]:
            out[pane] = pane_picture(tab, pane) if tab.pane == pane else None
    if "inspector" in parts:
        insp = inspect(tab, surface=tab.surface)
        editable = tab.selected is not None and tab.selected_in == Source.ANNOTATION
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
        listed = tab.listed
        shown = tab.scene_for(listed)
        out.update(
            rows=instance_rows(shown, tab.occlude_rates(listed, shown)),
            table_title=f"{listed}: instances, front first (click a row to select)",
            status=f"{last} · {len(undo_labels)} undo / {len(redo_labels)} redo · "
            f"{len(tab.session.edited_indices())} edited image(s) · every edit is saved"
            + "".join(f"  \n⚠ {n}" for n in tab.session.notices),
            position=f"image {tab.session.current + 1} of {len(tab.session)}: `{scene.file_name}`",
            model=model_notice(tab),
            show=str(tab.show),
            view_choice=tab.view,
            opacity=tab.opacity,
        )
    return out


def model_notice(tab: Tab) -> str:
    """One line about the model: which one and what it finds in this image, or that there is none."""
    if tab.checkpoint is None:
        return (
            "**No model loaded**, so the app shows and edits annotations only (the shipped model was not "
            "found). Start it with `--checkpoint CKPT` to see predictions, predict uploaded images and fine-tune."
        )
    name = Path(tab.checkpoint).name
    if not len(tab.session):
        return f"model `{name}`"
    found = len(tab.prediction())
    return f"model `{name}` · its prediction of this image: {found} instance(s) with score ≥ {tab.cfg.score_thr:g}"


def _editor_target(tab: Tab) -> Any:
    """The annotation instance the editor is for: the selection, when it is an annotated one."""
    if tab.selected is None or tab.selected_in != Source.ANNOTATION:
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
