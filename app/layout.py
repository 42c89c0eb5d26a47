"""The Gradio Blocks page and the API endpoints, wired to the handlers.

Each browser tab (and each gradio_client) gets its own `Tab`, keyed by Gradio's session hash; models live
in the process-wide cache of app.model, never in session state.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr
from PIL import Image

from semlayer import viz
from semlayer.errors import SemlayerError
from semlayer.scene import MOVES

from semlayer.workspace import ConflictError, SaveError

from . import assist_layout, assists, layers, render, review, security
from . import handlers as h
from .tab import SHOWS, VIEWS, AppConfig, Picture, Tab, UserError

# Figures are written here once, as PNG, and handed to Gradio as files: its own encoder (PIL, default
# compression) takes several times longer than the whole rest of a click.
_FILES: weakref.WeakKeyDictionary[Picture, str] = weakref.WeakKeyDictionary()


def png_file(picture: Picture | None) -> str | None:
    """A PNG file of the picture in Gradio's cache folder, written once per picture and deleted with it
    (when the tab's figure cache drops it, the tab closes or the app stops)."""
    if picture is None:
        return None
    path = _FILES.get(picture)
    if path is None:
        target = Path(gr.utils.get_upload_folder()) / "semlayer" / f"{uuid.uuid4().hex}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        # A new name, handed out only once written: no reader can see half a file, so no temporary name.
        target.write_bytes(picture.png)
        path = _FILES[picture] = str(target)
        weakref.finalize(picture, target.unlink, missing_ok=True)
    return path


class Tabs:
    """The `Tab` of every open browser tab / API client, created on first use."""

    def __init__(self, cfg: AppConfig) -> None:
        self.cfg = cfg
        self._tabs: dict[str, Tab] = {}
        self._used: dict[str, float] = {}  # last use of each tab (time.monotonic)
        self._lock = threading.Lock()

    def get(self, request: gr.Request | None) -> Tab:
        key = getattr(request, "session_hash", None) or "default"
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            tab = self._tabs.get(key)
            if tab is None:
                tab = self._tabs[key] = h.new_tab(self.cfg)
            self._used[key] = now
            return tab

    def _expire(self, now: float) -> None:
        """Forget tabs unused for ``cfg.tab_idle_s``: API clients never say goodbye, and each tab holds
        figures and scenes (its edits are on disk; coming back opens a fresh tab)."""
        for key in [k for k, used in self._used.items() if now - used > self.cfg.tab_idle_s]:
            self._tabs.pop(key, None)
            self._used.pop(key, None)

    @contextlib.contextmanager
    def use(self, request: gr.Request | None) -> Iterator[Tab]:
        """The request's tab, held for the whole event. Gradio runs the events of one page in parallel
        threads (one queue per listener); unserialised, a render could read a half-switched session, and
        a slow render of the old state could reach the page after the new one and overwrite it."""
        tab = self.get(request)
        with tab.lock:
            yield tab

    def drop(self, request: gr.Request | None) -> None:
        """Forget a closed tab (its edits are on disk; a running fine-tune goes on for the next page)."""
        key = getattr(request, "session_hash", None) or "default"
        with self._lock:
            self._tabs.pop(key, None)
            self._used.pop(key, None)


def user_errors(fn: Callable, cfg: AppConfig) -> Callable:
    """Show library and user errors as a message in the page (no absolute server path in it); the app keeps
    running."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SemlayerError as err:
            raise gr.Error(security.public_text(cfg, str(err)), print_exception=False) from None

    return wrapper


# Keys -> the button (elem_id) they press; the page's own buttons, so a key does exactly what its button does.
SHORTCUTS = {
    "ArrowLeft": ("key-prev", "←", "previous image"), "ArrowRight": ("key-next", "→", "next image"),
    "f": ("key-forward", "F", "forward"), "b": ("key-backward", "B", "backward"),
    "F": ("key-front", "Shift+F", "to front"), "B": ("key-back", "Shift+B", "to back"),
    "n": ("key-cycle", "N", "next object (front to back)"),
    "ctrl+z": ("key-undo", "Ctrl+Z", "undo"), "ctrl+y": ("key-redo", "Ctrl+Y, Ctrl+Shift+Z", "redo"),
}  # fmt: skip
SHORTCUTS.update({
    "u": ("key-review-next", "U", "next unreviewed image (review queue)"),
    "m": ("key-review-mark", "M", "mark this image reviewed"),
})  # fmt: skip
SHORTCUTS_HELP = (
    "| key | does |\n|---|---|\n"
    + "\n".join(f"| {label} | {what} |" for _, label, what in SHORTCUTS.values())
    + "\n\nNot while typing in a box."
)
SHORTCUTS_JS = """() => {
  const keys = %s;
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
    if (e.altKey || e.metaKey) return;
    let key = e.key;
    if (e.ctrlKey) key = "ctrl+" + (e.shiftKey && key.toLowerCase() === "z" ? "y" : key.toLowerCase());
    const id = keys[key];
    const button = id && document.getElementById(id);
    if (!button) return;
    e.preventDefault();
    button.click();
  });
}""" % {k: v[0] for k, v in SHORTCUTS.items()}


def build(cfg: AppConfig) -> gr.Blocks:
    """The whole page plus the /predict, /select, /export, /move, /undo, /redo endpoints."""
    with gr.Blocks(title="semlayer: amodal annotation") as demo:
        page = Page(cfg, Tabs(cfg))
        page.wire(demo)
        _api(page.tabs, cfg)
    return demo


# Figures arrive as PNG files (see png_file); nobody uploads into them.
_figure = functools.partial(gr.Image, type="filepath", format="png", interactive=False,
                            buttons=["download", "fullscreen"])  # fmt: skip


class Page:
    """The page's components, built panel by panel inside a `gr.Blocks`, and their wiring to the handlers
    (actions) and app.render (what each event shows again)."""

    def __init__(self, cfg: AppConfig, tabs: Tabs) -> None:
        self.cfg, self.tabs = cfg, tabs
        gr.Markdown(
            "## semlayer · amodal instances, depth order and semantics-aware distance maps\n"
            "Click an object to inspect it (click again to reach the ones behind). Reorder, correct masks, "
            "undo/redo: every edit is saved to the workspace at once."
        )
        self.model_md = gr.Markdown(elem_id="model-status")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):  # left: the image and its layers
                self._image_panel()
                self.help = assist_layout.model_help(cfg)  # beside the image its boxes are drawn on
                self._review_panel()
                self._load_panel()
            with gr.Column(scale=1, min_width=230):  # beside the image: its objects, front first
                self._layers_panel()
            with gr.Column(scale=2):  # right: inspector, table, edits
                self._inspector_panel()
                self._order_panel()
                self._edit_panel()
                self.assist = assist_layout.controls(cfg)
                self._export_panel()
        self.everything = [
            self.main_img, self.levels_img, self.global_img, self.insp_md, self.panel_img, self.layers_img,
            self.heat_img, self.surf_img, self.table, self.behind_dd, self.status_md, self.name_tb, self.cat_num,
            self.stuff_cb, self.position, self.model_md, self.show, self.view, self.opacity, self.editor,
            self.layer_list,
        ]  # fmt: skip
        self.everything.append(self.help["status"])  # every drawn view updates the model help's words
        # What app.render gives, by part, as component.
        self.components = {
            "view": self.main_img, "levels": self.levels_img, "global": self.global_img, "inspector": self.insp_md,
            "panel": self.panel_img, "layers": self.layers_img, "heat": self.heat_img, "surface": self.surf_img,
            "others": self.behind_dd, "status": self.status_md, "name": self.name_tb, "category": self.cat_num,
            "stuff": self.stuff_cb, "position": self.position, "model": self.model_md, "show": self.show,
            "view_choice": self.view, "opacity": self.opacity,
        }  # fmt: skip
        self.r_view, self.r_panes, self.r_inspector = (
            self.renderer("view"),
            self.renderer("panes"),
            self.renderer("inspector"),
        )
        self.r_selection, self.r_all = self.renderer("view", "inspector"), self.renderer(*render.PARTS)

    # ----- panels ------------------------------------------------------------------------------

    def _image_panel(self) -> None:
        # Level sets and G are matplotlib figures (slow): drawn only while their tab is open.
        with gr.Tabs():
            with gr.Tab("Depth overlay") as self.overlay_tab:
                self.main_img = _figure(
                    label="each object in its own colour, numbered by depth rank (click to select)",
                    elem_id="main-image",
                )
            with gr.Tab("Level sets") as self.levels_tab:
                self.levels_img = _figure(label="sem-dist level sets", elem_id="levels-image")
            with gr.Tab("Global layering") as self.global_tab:
                self.global_img = _figure(label="global layering map", elem_id="global-image")
        with gr.Row():
            self.view = gr.Radio(list(VIEWS), value="amodal", label="view")
            # Prediction views need a model; without one the page shows annotations only.
            self.show = gr.Radio(list(SHOWS), value="annotation", label="show",
                                 visible=self.cfg.checkpoint is not None, elem_id="show")  # fmt: skip
            self.opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="opacity")
        with gr.Row():
            self.prev_btn = gr.Button("◀ previous image", size="sm", elem_id="key-prev")
            self.position = gr.Markdown(elem_id="position")
            self.next_btn = gr.Button("next image ▶", size="sm", elem_id="key-next")

    def _layers_panel(self) -> None:
        gr.Markdown("**Layers** · front first · drag a row to change its depth", elem_id="layers-title")
        self.layer_list = gr.HTML(
            "", js_on_load=layers.LAYERS_JS, css_template=layers.LAYERS_CSS, elem_id="layer-list", max_height=640
        )

    def _load_panel(self) -> None:
        cfg = self.cfg
        with gr.Accordion("Load: upload, examples, dataset", open=False):
            with gr.Row():
                self.upload = gr.File(label="upload an image (it is predicted)", file_types=["image"],
                                      type="filepath", elem_id="upload")  # fmt: skip
                self.examples = gr.Gallery(
                    value=[str(p) for p in cfg.examples], label="examples (click one)", columns=4, height=160,
                    allow_preview=False, format="png", visible=bool(cfg.examples),
                )  # fmt: skip
            # Datasets by name among the files under --data-root (no root: no choice, only --data).
            datasets, folders = security.dataset_choices(cfg), security.image_folder_choices(cfg)
            data_name, images_name = security.relative_name(cfg, cfg.data), security.relative_name(cfg, cfg.images)
            with gr.Row(visible=cfg.data_root is not None):
                self.data_tb = gr.Dropdown(datasets, label="annotation file (COCOA, COCO-style amodal, KINS)",
                                           value=data_name if data_name in datasets else None)  # fmt: skip
                self.images_tb = gr.Dropdown(
                    folders, label="image folder", value=images_name if images_name in folders else None
                )
                self.open_btn = gr.Button("Open dataset")
            self.gallery = gr.Gallery(label="dataset", columns=8, height=180, allow_preview=False, format="png")

    def _inspector_panel(self) -> None:
        self.insp_md = gr.Markdown("Click an instance in the image.", elem_id="inspector")
        with gr.Row():
            self.panel_img = _figure(label="visible + occluded", elem_id="panel-image")
            self.layers_img = _figure(label="layer map", elem_id="layers-image")
        with gr.Tabs():
            with gr.Tab("sem-dist heat map") as self.heat_tab:
                self.heat_img = _figure(show_label=False, elem_id="heat-image")
            with gr.Tab("3-D surface") as self.surf_tab:
                self.surf_img = _figure(show_label=False, elem_id="surface-image")
        self.table = gr.Dataframe(
            headers=render.TABLE_HEADERS, datatype=["number", "number", "str", "str", "str"], interactive=False,
            label="instances (front first; click a row to select)", elem_id="instance-table", max_height=260,
        )  # fmt: skip

    def _order_panel(self) -> None:
        with gr.Row():
            self.move_btns = [
                gr.Button(label, size="sm", elem_id=f"key-{key}")
                for label, key in (("forward", "forward"), ("backward", "backward"), ("to front", "front"),
                                   ("to back", "back"))
            ]  # fmt: skip
        with gr.Row():
            self.behind_dd = gr.Dropdown(label="put the selected one in front of", choices=[], scale=3)
            self.infront_btn = gr.Button("put in front", size="sm", scale=1)
        with gr.Row():
            self.cycle_btn = gr.Button("next object", size="sm", elem_id="key-cycle")
            self.undo_btn = gr.Button("↶ undo", size="sm", elem_id="key-undo")
            self.redo_btn = gr.Button("↷ redo", size="sm", elem_id="key-redo")
        self.status_md = gr.Markdown(elem_id="status")
        with gr.Accordion("Keyboard shortcuts", open=False, elem_id="shortcuts-help"):
            gr.Markdown(SHORTCUTS_HELP)

    def _edit_panel(self) -> None:
        with gr.Accordion("Edit the selected instance", open=False):
            with gr.Row():
                self.name_tb = gr.Textbox(label="name")
                self.cat_num = gr.Number(label="category id", precision=0)
                self.stuff_cb = gr.Checkbox(label="stuff")
            with gr.Row():
                self.attrs_btn = gr.Button("save name / category / stuff", size="sm")
                self.delete_btn = gr.Button("delete instance", size="sm", variant="stop")
            self.editor = gr.ImageEditor(
                label="amodal mask editor (selected mask tinted; the eraser undoes strokes)", type="numpy", format="png",
                brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=8),
                eraser=gr.Eraser(default_size=8), transforms=(), sources=(), layers=False, elem_id="mask-editor",
            )  # fmt: skip
            with gr.Row():
                self.load_mask_btn = gr.Button("clear strokes", size="sm")
                self.brush_mode = gr.Radio(
                    [("strokes add to the mask", "add"), ("strokes remove from the mask", "remove")],
                    value="add", show_label=False,
                )  # fmt: skip
            with gr.Row():
                self.apply_mask_btn = gr.Button("apply strokes to selected", size="sm", variant="primary")
                self.add_btn = gr.Button("strokes as new instance", size="sm")

    def _export_panel(self) -> None:
        with gr.Accordion("Export and fine-tune", open=False):
            with gr.Row():
                self.export_btns = {
                    "cocoa": gr.Button("export COCOA JSON", size="sm"),
                    "coco": gr.Button("export COCO-style JSON", size="sm"),
                    "kins": gr.Button("export KINS JSON", size="sm"),
                }
            self.export_file = gr.File(label="download", interactive=False, height=90)
            self.export_md = gr.Markdown("", elem_id="export-status")
            with gr.Row():
                self.tune_btn = gr.Button("fine-tune on corrected data", size="sm", variant="primary")
                self.cancel_btn = gr.Button("cancel fine-tune", size="sm", variant="stop")
            self.tune_md = gr.Markdown("", elem_id="finetune-status")
            self.timer = gr.Timer(1.0, active=False)
            with gr.Row():
                self.use_new_btn = gr.Button("use new model", size="sm", visible=False, elem_id="use-new-model")
                self.rollback_btn = gr.Button("back to previous model", size="sm", visible=False,
                                              elem_id="rollback-model")  # fmt: skip

    def _review_panel(self) -> None:
        # The queue is the model's disagreement with the annotation: without a model there is none.
        with gr.Group(visible=self.cfg.checkpoint is not None, elem_id="review-panel"):
            self.review_md = gr.Markdown("review queue", elem_id="review-status")
            with gr.Row():
                self.review_next_btn = gr.Button("next unreviewed ▶▶", size="sm", elem_id="key-review-next")
                self.review_mark_btn = gr.Button("mark reviewed ✓", size="sm", elem_id="key-review-mark")

    # ----- what an event shows -----------------------------------------------------------------

    def page_value(self, name: str, value: Any) -> Any:
        if isinstance(value, Picture):
            return png_file(value)
        if name == "others":  # the choices change with the scene; nothing chosen yet
            return gr.Dropdown(choices=value, value=None)
        if name in ("show", "view_choice"):
            return gr.Radio(value=str(value))
        return value

    def editor_value(self, tab: Tab) -> gr.ImageEditor:
        """The editor showing the selected object, named in its label."""
        value = render.editor_value(tab)
        return gr.ImageEditor(value={**value, "background": Image.fromarray(value["background"])},
                              label=render.editor_label(tab))  # fmt: skip

    def renderer(self, *parts: str) -> Callable[[Tab], dict]:
        """Only the parts an event changes are drawn and sent (figures come from the tab's cache)."""

        def draw(tab: Tab) -> dict:
            values = render.render(tab, parts)
            if "view" in values:  # a new object the model proposes is drawn over the view until accepted
                values["view"] = assists.view_with_proposal(tab, values["view"])
            out = {self.components[k]: self.page_value(k, v) for k, v in values.items()
                   if k not in ("rows", "table_title")}  # fmt: skip
            if "rows" in values:
                out[self.table] = gr.Dataframe(value=table_value(values["rows"]), label=values["table_title"])
            if "inspector" in parts or "table" in parts:  # selection and order show in the layer list
                out[self.layer_list] = layers.list_html(tab)
            if "inspector" in parts and render.editor_key(tab) != tab.editor_shows:
                # The editor always shows (and names) the selected object; strokes go to what it shows.
                out[self.editor] = self.editor_value(tab)
            if "view" in parts:
                out[self.help["status"]] = assist_layout.help_status(tab)
            if "panes" in parts:  # say whose: with show "both" they are the annotation's
                out[self.levels_img] = gr.Image(value=out[self.levels_img], label=f"sem-dist level sets: {tab.listed}")
                out[self.global_img] = gr.Image(value=out[self.global_img], label=f"global layering map: {tab.listed}")
            return out

        return draw

    def shown(self, tab: Tab, out: dict) -> dict:
        if self.main_img in out:  # a new image or state on screen: ready its instances for the first click
            render.prefetch(tab)
        return out

    def event(self, draw: Callable[[Tab], dict], action: Callable[..., Any] | None = None, select: bool = False):
        """A Gradio callback: run ``action(tab, [evt,] *inputs)``, then ``draw(tab)``.

        Library and user errors become a message in the page, which stays as it was. After a save
        conflict (another tab saved first) the page shows the saved state with a warning.
        """

        def run(request: gr.Request, args: tuple) -> dict:
            try:
                with self.tabs.use(request) as tab:
                    if action is not None:
                        try:
                            action(tab, *args)
                        except (ConflictError, SaveError) as err:
                            # Reloaded after a conflict, or the edit kept unsaved: show the tab's state.
                            gr.Warning(security.public_text(self.cfg, str(err)))
                            return self.shown(tab, self.r_all(tab))
                    return self.shown(tab, draw(tab))
            except SemlayerError as err:
                # A message, and the page as it was: gr.Error would also mark every output as failed.
                gr.Warning(security.public_text(self.cfg, str(err)))
                return gr.skip()

        # Gradio injects the request and event data by the annotations of leading positional parameters.
        if select:

            def on_select(request: gr.Request, evt: gr.SelectData, *args: Any) -> dict:
                return run(request, (evt, *args))

            return on_select

        def on_event(request: gr.Request, *args: Any) -> dict:
            return run(request, args)

        return on_event

    @staticmethod
    def on(listener: Callable, callback: Callable, inputs: list | None, outputs: list) -> Any:
        # UI events stay out of the script API: the gr.api endpoints are the stable interface.
        return listener(callback, inputs, outputs, api_visibility="private")

    # ----- wiring ------------------------------------------------------------------------------

    def wire(self, demo: gr.Blocks) -> None:
        self._wire_loading(demo)
        self._wire_looking()
        self._wire_editing()
        assist_layout.wire(self.assist, self.cfg, self.event, self.on, self.r_all, self.everything, self.editor,
                           self.name_tb, self.cat_num)  # fmt: skip
        assist_layout.wire_help(self.help, self.event, self.on, self.r_view, self.r_all, self.everything)
        self._wire_export()
        self._wire_layers()
        self._wire_review()

    def r_gallery(self, tab: Tab) -> dict:
        return {self.gallery: _gallery(tab)}

    def _wire_loading(self, demo: gr.Blocks) -> None:
        on, event, cfg, everything = self.on, self.event, self.cfg, self.everything
        # A reloaded page picks up a fine-tune still running for its dataset.
        on(demo.load, event(lambda t: {**self.r_all(t), **self.r_tune(t)}), None,
           [*everything, self.tune_md, self.timer, self.use_new_btn, self.rollback_btn]).then(
            event(self.r_gallery), None, [self.gallery], api_visibility="private")  # fmt: skip
        demo.unload(self.tabs.drop)
        demo.load(None, None, None, js=SHORTCUTS_JS)

        def on_upload(tab: Tab, path: str | None) -> None:
            if path:
                h.predict_upload(tab, security.uploaded_file(path))

        def r_uploaded(tab: Tab) -> dict:
            # The file box is emptied, so the next image can be dropped straight in.
            return {**self.r_all(tab), self.upload: None}

        def on_example(tab: Tab, evt: gr.SelectData) -> None:
            if not isinstance(evt.index, int) or not 0 <= evt.index < len(cfg.examples):
                raise UserError("choose one of the examples")
            h.predict_upload(tab, cfg.examples[evt.index])

        on(self.upload.upload, event(r_uploaded, on_upload), [self.upload], [*everything, self.upload])
        on(self.examples.select, event(self.r_all, on_example, select=True), None, everything)
        on(self.open_btn.click, event(self.r_all, h.switch_dataset), [self.data_tb, self.images_tb], everything).then(
            event(self.r_gallery), None, [self.gallery], api_visibility="private"
        )
        on(self.gallery.select, event(self.r_all, lambda tab, evt: h.go_to(tab, evt.index), select=True), None,
           everything)  # fmt: skip
        on(self.prev_btn.click, event(self.r_all, lambda tab: h.step(tab, -1)), None, everything)
        on(self.next_btn.click, event(self.r_all, lambda tab: h.step(tab, +1)), None, everything)

    def _wire_looking(self) -> None:
        on, event, everything = self.on, self.event, self.everything

        def on_click(tab: Tab, evt: gr.SelectData) -> None:
            # The page shows small images enlarged and large ones reduced; clicks come in displayed pixels.
            x, y = render.click_to_pixel(tab, evt.index[0], evt.index[1])
            if not assists.main_image_click(tab, x, y):  # a box corner when boxes are drawn on the image
                h.select_at(tab, x, y)

        def on_row(tab: Tab, evt: gr.SelectData) -> None:
            if evt.row_value:
                h.select_instance(tab, int(evt.row_value[render.TABLE_ID_COLUMN]), tab.listed)

        def setting(name: str) -> Callable[[Tab, Any], None]:
            return lambda tab, value: h.set_view_setting(tab, name, value)

        def open_pane(pane: str) -> Callable[[Tab], None]:
            return lambda tab: setattr(tab, "pane", pane)

        on(self.main_img.select, event(self.r_selection, on_click, select=True), None, everything)
        on(self.table.select, event(self.r_selection, on_row, select=True), None, everything)
        # `input`, not `change`: only the user's own changes; the page sets `show` itself after an upload.
        on(self.view.input, event(self.r_view, setting("view")), [self.view], [self.main_img])
        on(self.opacity.release, event(self.r_view, setting("opacity")), [self.opacity], [self.main_img])
        on(self.show.input, event(self.r_all, setting("show")), [self.show], everything)
        for pane_tab, pane in zip((self.overlay_tab, self.levels_tab, self.global_tab), render.PANES):
            on(pane_tab.select, event(self.r_panes, open_pane(pane)), None, [self.levels_img, self.global_img])
        # The 3-D surface is the slowest figure: drawn only while its tab is open.
        on(self.surf_tab.select, event(self.r_inspector, lambda tab: setattr(tab, "surface", True)), None, everything)
        on(self.heat_tab.select, event(lambda t: {self.surf_img: None}, lambda tab: setattr(tab, "surface", False)),
           None, [self.surf_img])  # fmt: skip

    def _wire_editing(self) -> None:
        on, event, everything, r_all = self.on, self.event, self.everything, self.r_all
        for btn, where in zip(self.move_btns, MOVES):
            on(btn.click, event(r_all, functools.partial(h.reorder, where=where)), None, everything)
        on(self.infront_btn.click, event(r_all, h.put_in_front), [self.behind_dd], everything)
        on(self.cycle_btn.click, event(self.r_selection, h.select_next), None, everything)
        on(self.undo_btn.click, event(r_all, h.undo), None, everything)
        on(self.redo_btn.click, event(r_all, h.redo), None, everything)
        on(
            self.attrs_btn.click,
            event(r_all, h.set_attributes),
            [self.name_tb, self.cat_num, self.stuff_cb],
            everything,
        )
        on(self.delete_btn.click, event(r_all, h.delete_selected), None, everything)
        on(self.load_mask_btn.click, event(lambda tab: {self.editor: self.editor_value(tab)}), None, [self.editor])

        def r_edited(tab: Tab) -> dict:
            tab.editor_shows = None  # the strokes are used: the editor gets its picture again, without them
            return r_all(tab)

        on(self.apply_mask_btn.click, event(r_edited, h.apply_editor_mask), [self.editor, self.brush_mode], everything)
        on(self.add_btn.click, event(r_edited, h.add_from_editor),
           [self.editor, self.name_tb, self.cat_num, self.stuff_cb], everything)  # fmt: skip

    def _wire_layers(self) -> None:
        # Each row action arrives as one click event whose data says what (see layers.LAYERS_JS).
        act = self.event(self.r_all, lambda tab, evt: layers.act(
            tab, getattr(evt, "action", None), getattr(evt, "id", None), getattr(evt, "order", None)))  # fmt: skip

        def on_layer(request: gr.Request, evt: gr.EventData) -> dict:
            return act(request, evt)

        self.on(self.layer_list.click, on_layer, None, self.everything)

    def r_tune(self, tab: Tab) -> dict:
        progress = h.finetune_status(tab)
        use_new, back = h.model_choices(tab)
        out = {self.use_new_btn: gr.Button(visible=use_new), self.rollback_btn: gr.Button(visible=back)}
        if progress is None:
            return {**out, self.tune_md: "", self.timer: gr.Timer(active=False)}
        text = f"**{progress.state}** · step {progress.step}"
        text += f" / {progress.total} {progress_bar(progress.fraction)}" if progress.total else ""
        text += f" · loss {progress.loss:.4f}" if progress.loss is not None else ""
        text += f" · {eta_text(progress.eta_s)}" if progress.state == "running" and progress.eta_s is not None else ""
        text += f" · {progress.message}" if progress.message else ""
        text += f" · training {tab.job.note}" if tab.job is not None and tab.job.note else ""
        if progress.state == "done":
            text += f" · now using `{tab.checkpoint}`  \n" + h.comparison_text(h.finetune_comparison(tab))
            out.update(self.r_all(tab))
        out.update({self.tune_md: security.public_text(self.cfg, text),
                    self.timer: gr.Timer(active=progress.state == "running")})  # fmt: skip
        return out

    def _wire_export(self) -> None:
        on, event = self.on, self.event

        def exporter(fmt: str) -> Callable[[Tab], None]:
            def run(tab: Tab) -> None:
                tab.last_export = h.export(tab, fmt)

            return run

        def r_export(tab: Tab) -> dict:
            if tab.last_export is None:
                return {self.export_file: None, self.export_md: ""}
            return {self.export_file: str(tab.last_export), self.export_md: h.export_notice(tab.last_export)}

        for fmt, btn in self.export_btns.items():
            on(btn.click, event(r_export, exporter(fmt)), None, [self.export_file, self.export_md])
        tune_outputs = [self.tune_md, self.timer, self.use_new_btn, self.rollback_btn, *self.everything]
        on(self.tune_btn.click, event(self.r_tune, h.start_finetune), None, tune_outputs)
        on(self.cancel_btn.click, event(self.r_tune, h.cancel_finetune), None, tune_outputs)
        on(self.timer.tick, event(self.r_tune), None, tune_outputs)

        def r_model(tab: Tab) -> dict:
            return {**self.r_tune(tab), **self.r_all(tab)}

        on(self.use_new_btn.click, event(r_model, h.use_finetuned), None, tune_outputs)
        on(self.rollback_btn.click, event(r_model, h.rollback_model), None, tune_outputs)

    def r_review(self, tab: Tab) -> dict:
        return {self.review_md: review.review_text(tab)}

    def _wire_review(self) -> None:
        if self.cfg.checkpoint is None:
            return  # no model, no queue: the panel is hidden
        on, event = self.on, self.event

        def r_reviewed(tab: Tab) -> dict:
            return {**self.r_review(tab), **self.r_gallery(tab)}

        on(self.review_next_btn.click, event(lambda t: {**self.r_all(t), **self.r_review(t)}, review.review_next),
           None, [*self.everything, self.review_md])  # fmt: skip
        on(self.review_mark_btn.click, event(r_reviewed, review.review_mark), None, [self.review_md, self.gallery])
        # Another image, or an edit of this one: its place in the queue and its reasons change.
        for shown in (self.position, self.status_md):
            on(shown.change, event(self.r_review), None, [self.review_md])


def table_value(rows: list[list[Any]]) -> dict[str, Any]:
    """The instance table with each rank cell in its instance's colour (as the image's labels and the layer
    list show it), as Gradio's styled-table value."""
    styling = []
    for color, row in zip(render.row_colors(rows), rows):
        text = viz.text_color_on(viz.instance_color(row[render.TABLE_ID_COLUMN]))
        styling.append([f"background-color: {color}; color: rgb{text}"] + [""] * (len(row) - 1))
    display = [[str(v) for v in row] for row in rows]
    return {"headers": render.TABLE_HEADERS, "data": rows, "metadata": {"styling": styling, "display_value": display}}


def _gallery(tab: Tab) -> list[tuple[str, str | None]]:
    """Thumbnails of the dataset (image files straight from the dataset or workspace folder), reviewed ones
    captioned with a ✓; an image whose name would leave its folder is left out (the page says why when it is
    opened)."""
    reviewed = review.reviewed_marks(tab)
    paths = []
    for i in range(len(tab.session)):
        try:
            paths.append((str(tab.session.image_path(i)), f"✓ {i + 1}" if i in reviewed else None))
        except SemlayerError:
            continue
    return paths


def progress_bar(fraction: float, width: int = 10) -> str:
    """A text progress bar with its percentage: "▰▰▰▱▱▱▱▱▱▱ 30%"."""
    filled = round(fraction * width)
    return "▰" * filled + "▱" * (width - filled) + f" {fraction:.0%}"


def eta_text(seconds: float) -> str:
    """Time left in words: "about 2 min 5 s left"."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"about {minutes} min {secs} s left" if minutes else f"about {secs} s left"


def _api(tabs: Tabs, cfg: AppConfig) -> None:
    """Script access with the same handlers: each client gets its own tab."""

    def predict(image: gr.FileData, request: gr.Request) -> dict:
        """Predict an uploaded image file (gradio_client's handle_file) and make it the current scene; returns
        the scene summary."""
        path = security.uploaded_file(image)
        with tabs.use(request) as tab:
            return h.predict_upload(tab, path)

    def select(x: int, y: int, request: gr.Request) -> dict | None:
        """Select the front-most instance at pixel (x, y) of the scene being edited (the one /scene
        summarises); the same pixel again cycles behind it."""
        with tabs.use(request) as tab:
            return h.select_at(tab, x, y, which="annotation")

    def export(fmt: str, request: gr.Request) -> gr.FileData:
        """Export the corrected dataset as 'cocoa' (merged into the original file), 'coco' or 'kins' JSON."""
        with tabs.use(request) as tab:
            return gr.FileData(path=str(h.export(tab, fmt)), mime_type="application/json")

    def move(instance_id: int, where: str, request: gr.Request) -> dict:
        """Move an instance forward, backward, to the front or to the back; returns the scene summary."""
        with tabs.use(request) as tab:
            return h.reorder(tab, where, instance_id)

    def undo(request: gr.Request) -> dict:
        """Undo the last edit of the current scene; returns the scene summary."""
        with tabs.use(request) as tab:
            h.undo(tab)
            return tab.summary()

    def redo(request: gr.Request) -> dict:
        """Redo the last undone edit; returns the scene summary."""
        with tabs.use(request) as tab:
            h.redo(tab)
            return tab.summary()

    def scene(request: gr.Request) -> dict:
        """The current scene's summary."""
        with tabs.use(request) as tab:
            return tab.summary()

    for fn in (predict, select, export, move, undo, redo, scene):
        gr.api(user_errors(fn, cfg), api_name=fn.__name__)

    def review_next(request: gr.Request) -> dict:
        """Go to the next unreviewed image of the review queue; returns its place in the queue (index, reasons,
        done of total, queue order)."""
        with tabs.use(request) as tab:
            return review.review_next(tab)

    def review_mark(reviewed: bool, request: gr.Request) -> dict:
        """Mark the current image reviewed (false: not reviewed); returns its place in the queue."""
        with tabs.use(request) as tab:
            return review.review_mark(tab, reviewed)

    for fn in (review_next, review_mark):
        gr.api(user_errors(fn, cfg), api_name=fn.__name__)
    assist_layout.api(tabs, cfg, user_errors)
