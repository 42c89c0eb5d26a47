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

from semlayer.errors import SemlayerError
from semlayer.scene import MOVES

from semlayer.workspace import ConflictError, SaveError

from . import assist_layout, render, security
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
    tabs = Tabs(cfg)

    # Figures arrive as PNG files (see png_file); nobody uploads into them.
    figure = functools.partial(gr.Image, type="filepath", format="png", interactive=False,
                               buttons=["download", "fullscreen"])  # fmt: skip

    with gr.Blocks(title="semlayer: amodal annotation") as demo:
        gr.Markdown(
            "## semlayer · amodal instances, depth order and semantics-aware distance maps\n"
            "Click an object to inspect it (click again to reach the ones behind). Reorder, correct masks, "
            "undo/redo: every edit is saved to the workspace at once."
        )
        model_md = gr.Markdown(elem_id="model-status")
        with gr.Row(equal_height=False):
            # ----- left: the image and its layers -----
            with gr.Column(scale=3):
                # Level sets and G are matplotlib figures (slow): drawn only while their tab is open.
                with gr.Tabs():
                    with gr.Tab("Depth overlay") as overlay_tab:
                        main_img = figure(
                            label="instances coloured by depth rank (click to select)", elem_id="main-image"
                        )
                    with gr.Tab("Level sets") as levels_tab:
                        levels_img = figure(label="sem-dist level sets", elem_id="levels-image")
                    with gr.Tab("Global layering") as global_tab:
                        global_img = figure(label="global layering map", elem_id="global-image")
                with gr.Row():
                    view = gr.Radio(list(VIEWS), value="amodal", label="view")
                    # Prediction views need a model; without one the page shows annotations only.
                    show = gr.Radio(list(SHOWS), value="annotation", label="show", visible=cfg.checkpoint is not None,
                                    elem_id="show")  # fmt: skip
                    opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="opacity")
                with gr.Row():
                    prev_btn = gr.Button("◀ previous image", size="sm", elem_id="key-prev")
                    position = gr.Markdown(elem_id="position")
                    next_btn = gr.Button("next image ▶", size="sm", elem_id="key-next")
                with gr.Accordion("Load: upload, examples, dataset", open=False):
                    with gr.Row():
                        upload = gr.File(
                            label="upload an image (it is predicted)",
                            file_types=["image"],
                            type="filepath",
                            elem_id="upload",
                        )
                        examples = gr.Gallery(
                            value=[str(p) for p in cfg.examples], label="examples (click one)", columns=4, height=160,
                            allow_preview=False, format="png", visible=bool(cfg.examples),
                        )  # fmt: skip
                    # Datasets by name among the files under --data-root (no root: no choice, only --data).
                    datasets, folders = security.dataset_choices(cfg), security.image_folder_choices(cfg)
                    data_name, images_name = (
                        security.relative_name(cfg, cfg.data),
                        security.relative_name(cfg, cfg.images),
                    )
                    with gr.Row(visible=cfg.data_root is not None):
                        data_tb = gr.Dropdown(
                            datasets,
                            label="annotation file (COCOA, COCO-style amodal, KINS)",
                            value=data_name if data_name in datasets else None,
                        )
                        images_tb = gr.Dropdown(
                            folders, label="image folder", value=images_name if images_name in folders else None
                        )
                        open_btn = gr.Button("Open dataset")
                    gallery = gr.Gallery(label="dataset", columns=8, height=180, allow_preview=False, format="png")
            # ----- right: inspector, table, edits -----
            with gr.Column(scale=2):
                insp_md = gr.Markdown("Click an instance in the image.", elem_id="inspector")
                with gr.Row():
                    panel_img = figure(label="visible + occluded", elem_id="panel-image")
                    layers_img = figure(label="layer map", elem_id="layers-image")
                with gr.Tabs():
                    with gr.Tab("sem-dist heat map") as heat_tab:
                        heat_img = figure(show_label=False, elem_id="heat-image")
                    with gr.Tab("3-D surface") as surf_tab:
                        surf_img = figure(show_label=False, elem_id="surface-image")
                table = gr.Dataframe(
                    headers=render.TABLE_HEADERS, datatype=["number", "number", "str", "str", "str"], interactive=False,
                    label="instances (front first; click a row to select)", elem_id="instance-table", max_height=260,
                )  # fmt: skip
                with gr.Row():
                    fwd_btn = gr.Button("forward", size="sm", elem_id="key-forward")
                    back_btn = gr.Button("backward", size="sm", elem_id="key-backward")
                    front_btn = gr.Button("to front", size="sm", elem_id="key-front")
                    bottom_btn = gr.Button("to back", size="sm", elem_id="key-back")
                with gr.Row():
                    behind_dd = gr.Dropdown(label="put the selected one in front of", choices=[], scale=3)
                    infront_btn = gr.Button("put in front", size="sm", scale=1)
                with gr.Row():
                    cycle_btn = gr.Button("next object", size="sm", elem_id="key-cycle")
                    undo_btn = gr.Button("↶ undo", size="sm", elem_id="key-undo")
                    redo_btn = gr.Button("↷ redo", size="sm", elem_id="key-redo")
                status_md = gr.Markdown(elem_id="status")
                with gr.Accordion("Keyboard shortcuts", open=False, elem_id="shortcuts-help"):
                    gr.Markdown(SHORTCUTS_HELP)
                with gr.Accordion("Edit the selected instance", open=False):
                    with gr.Row():
                        name_tb = gr.Textbox(label="name")
                        cat_num = gr.Number(label="category id", precision=0)
                        stuff_cb = gr.Checkbox(label="stuff")
                    with gr.Row():
                        attrs_btn = gr.Button("save name / category / stuff", size="sm")
                        delete_btn = gr.Button("delete instance", size="sm", variant="stop")
                    editor = gr.ImageEditor(
                        label="amodal mask editor (selected mask tinted; the eraser undoes strokes)", type="numpy", format="png",
                        brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=8),
                        eraser=gr.Eraser(default_size=8), transforms=(), sources=(),
                        layers=False, elem_id="mask-editor",
                    )  # fmt: skip
                    with gr.Row():
                        load_mask_btn = gr.Button("clear strokes", size="sm")
                        brush_mode = gr.Radio(
                            [("strokes add to the mask", "add"), ("strokes remove from the mask", "remove")],
                            value="add", show_label=False,
                        )  # fmt: skip
                    with gr.Row():
                        apply_mask_btn = gr.Button("apply strokes to selected", size="sm", variant="primary")
                        add_btn = gr.Button("strokes as new instance", size="sm")
                assist_controls = assist_layout.controls(cfg)
                with gr.Accordion("Export and fine-tune", open=False):
                    with gr.Row():
                        cocoa_btn = gr.Button("export COCOA JSON", size="sm")
                        coco_btn = gr.Button("export COCO-style JSON", size="sm")
                        kins_btn = gr.Button("export KINS JSON", size="sm")
                    export_file = gr.File(label="download", interactive=False, height=90)
                    export_md = gr.Markdown("", elem_id="export-status")
                    with gr.Row():
                        tune_btn = gr.Button("fine-tune on corrected data", size="sm", variant="primary")
                        cancel_btn = gr.Button("cancel fine-tune", size="sm", variant="stop")
                    tune_md = gr.Markdown("")
                    timer = gr.Timer(1.0, active=False)

        everything = [main_img, levels_img, global_img, insp_md, panel_img, layers_img, heat_img, surf_img, table,
                      behind_dd, status_md, name_tb, cat_num, stuff_cb, position, model_md, show, view, opacity,
                      editor]  # fmt: skip

        # ----- renderers: what the handlers render, by part, as component -> value -----
        components = {
            "view": main_img, "levels": levels_img, "global": global_img, "inspector": insp_md, "panel": panel_img,
            "layers": layers_img, "heat": heat_img, "surface": surf_img, "others": behind_dd,
            "status": status_md, "name": name_tb, "category": cat_num, "stuff": stuff_cb, "position": position,
            "model": model_md, "show": show, "view_choice": view, "opacity": opacity,
        }  # fmt: skip

        def page_value(name: str, value: Any) -> Any:
            if isinstance(value, Picture):
                return png_file(value)
            if name == "others":  # the choices change with the scene; nothing chosen yet
                return gr.Dropdown(choices=value, value=None)
            if name in ("show", "view_choice"):
                return gr.Radio(value=str(value))
            return value

        def editor_page_value(tab: Tab) -> gr.ImageEditor:
            """The editor showing the selected object, named in its label."""
            value = render.editor_value(tab)
            return gr.ImageEditor(value={**value, "background": Image.fromarray(value["background"])},
                                  label=render.editor_label(tab))  # fmt: skip

        def renderer(*parts: str) -> Callable[[Tab], dict]:
            """Only the parts an event changes are drawn and sent (figures come from the tab's cache)."""

            def draw(tab: Tab) -> dict:
                values = render.render(tab, parts)
                out = {components[k]: page_value(k, v) for k, v in values.items() if k not in ("rows", "table_title")}
                if "rows" in values:
                    out[table] = gr.Dataframe(value=values["rows"], label=values["table_title"])
                if "inspector" in parts and render.editor_key(tab) != tab.editor_shows:
                    # The editor always shows (and names) the selected object; strokes go to what it shows.
                    out[editor] = editor_page_value(tab)
                if "panes" in parts:  # say whose: with show "both" they are the annotation's
                    which = tab.listed
                    out[levels_img] = gr.Image(value=out[levels_img], label=f"sem-dist level sets: {which}")
                    out[global_img] = gr.Image(value=out[global_img], label=f"global layering map: {which}")
                return out

            return draw

        r_view, r_layers, r_inspector = renderer("view"), renderer("panes"), renderer("inspector")
        r_selection, r_all = renderer("view", "inspector"), renderer(*render.PARTS)

        def shown(tab: Tab, out: dict) -> dict:
            if main_img in out:  # a new image or state on screen: ready its instances for the first click
                render.prefetch(tab)
            return out

        def event(render: Callable[[Tab], dict], action: Callable[..., Any] | None = None, select: bool = False):
            """A Gradio callback: run ``action(tab, [evt,] *inputs)``, then ``render(tab)``.

            Library and user errors become a message in the page, which stays as it was. After a save
            conflict (another tab saved first) the page shows the saved state with a warning.
            """

            def run(request: gr.Request, args: tuple) -> dict:
                try:
                    with tabs.use(request) as tab:
                        if action is not None:
                            try:
                                action(tab, *args)
                            except (ConflictError, SaveError) as err:
                                # Reloaded after a conflict, or the edit kept unsaved: show the tab's state.
                                gr.Warning(security.public_text(cfg, str(err)))
                                return shown(tab, r_all(tab))
                        return shown(tab, render(tab))
                except SemlayerError as err:
                    # A message, and the page as it was: gr.Error would also mark every output as failed.
                    gr.Warning(security.public_text(cfg, str(err)))
                    return gr.skip()

            # Gradio injects the request and event data by the annotations of leading positional parameters.
            if select:

                def on_select(request: gr.Request, evt: gr.SelectData, *args: Any) -> dict:
                    return run(request, (evt, *args))

                return on_select

            def on_event(request: gr.Request, *args: Any) -> dict:
                return run(request, args)

            return on_event

        def wire(listener: Callable, callback: Callable, inputs: list | None, outputs: list) -> Any:
            # UI events stay out of the script API: the gr.api endpoints below are the stable interface.
            return listener(callback, inputs, outputs, api_visibility="private")

        def r_gallery(tab: Tab) -> dict:
            return {gallery: _gallery(tab)}

        # ----- loading -----
        # A reloaded page picks up a fine-tune still running for its dataset (r_tune is defined below).
        wire(demo.load, event(lambda t: {**r_all(t), **r_tune(t)}), None, [*everything, tune_md, timer]).then(
            event(r_gallery), None, [gallery], api_visibility="private"
        )
        demo.unload(tabs.drop)
        demo.load(None, None, None, js=SHORTCUTS_JS)

        def on_upload(tab: Tab, path: str | None) -> None:
            if path:
                h.predict_upload(tab, security.uploaded_file(path))

        def r_uploaded(tab: Tab) -> dict:
            # The file box is emptied, so the next image can be dropped straight in.
            return {**r_all(tab), upload: None}

        def on_example(tab: Tab, evt: gr.SelectData) -> None:
            if not isinstance(evt.index, int) or not 0 <= evt.index < len(cfg.examples):
                raise UserError("choose one of the examples")
            h.predict_upload(tab, cfg.examples[evt.index])

        def on_open(tab: Tab, data: str, images: str) -> None:
            h.switch_dataset(tab, data, images)

        def step(delta: int) -> Callable[[Tab], None]:
            return lambda tab: h.step(tab, delta)

        wire(upload.upload, event(r_uploaded, on_upload), [upload], [*everything, upload])
        wire(examples.select, event(r_all, on_example, select=True), None, everything)
        wire(open_btn.click, event(r_all, on_open), [data_tb, images_tb], everything).then(
            event(r_gallery), None, [gallery], api_visibility="private"
        )
        wire(gallery.select, event(r_all, lambda tab, evt: h.go_to(tab, evt.index), select=True), None, everything)
        wire(prev_btn.click, event(r_all, step(-1)), None, everything)
        wire(next_btn.click, event(r_all, step(+1)), None, everything)

        # ----- looking -----
        def on_click(tab: Tab, evt: gr.SelectData) -> None:
            # The page shows small images enlarged and large ones reduced; clicks come in displayed pixels.
            h.select_at(tab, *render.click_to_pixel(tab, evt.index[0], evt.index[1]))

        def on_row(tab: Tab, evt: gr.SelectData) -> None:
            if evt.row_value:
                h.select_instance(tab, int(evt.row_value[render.TABLE_ID_COLUMN]), tab.listed)

        def set_field(name: str) -> Callable[[Tab, Any], None]:
            return lambda tab, value: setattr(tab, name, value)

        def set_setting(name: str) -> Callable[[Tab, Any], None]:
            return lambda tab, value: h.set_view_setting(tab, name, value)

        wire(main_img.select, event(r_selection, on_click, select=True), None, everything)
        wire(table.select, event(r_selection, on_row, select=True), None, everything)
        # `input`, not `change`: only the user's own changes; the page sets `show` itself after an upload.
        wire(view.input, event(r_view, set_setting("view")), [view], [main_img])
        wire(opacity.release, event(r_view, set_setting("opacity")), [opacity], [main_img])
        wire(show.input, event(r_all, set_setting("show")), [show], everything)
        for pane_tab, pane in zip((overlay_tab, levels_tab, global_tab), render.PANES):
            wire(pane_tab.select, event(r_layers, functools.partial(set_field("pane"), value=pane)), None,
                 [levels_img, global_img])  # fmt: skip
        # The 3-D surface is the slowest figure: drawn only while its tab is open.
        wire(surf_tab.select, event(r_inspector, lambda tab: setattr(tab, "surface", True)), None, everything)
        wire(
            heat_tab.select,
            event(lambda t: {surf_img: None}, lambda tab: setattr(tab, "surface", False)),
            None,
            [surf_img],
        )

        # ----- editing -----
        for btn, where in zip((fwd_btn, back_btn, front_btn, bottom_btn), MOVES):
            wire(btn.click, event(r_all, functools.partial(h.reorder, where=where)), None, everything)
        wire(infront_btn.click, event(r_all, h.put_in_front), [behind_dd], everything)
        wire(cycle_btn.click, event(r_selection, lambda tab: h.select_next(tab)), None, everything)
        wire(undo_btn.click, event(r_all, h.undo), None, everything)
        wire(redo_btn.click, event(r_all, h.redo), None, everything)
        wire(attrs_btn.click, event(r_all, h.set_attributes), [name_tb, cat_num, stuff_cb], everything)
        wire(delete_btn.click, event(r_all, h.delete_selected), None, everything)

        def r_editor(tab: Tab) -> dict:
            return {editor: editor_page_value(tab)}

        wire(load_mask_btn.click, event(r_editor), None, [editor])

        def r_edited(tab: Tab) -> dict:
            tab.editor_shows = None  # the strokes are used: the editor gets its picture again, without them
            return r_all(tab)

        wire(apply_mask_btn.click, event(r_edited, h.apply_editor_mask), [editor, brush_mode], everything)
        wire(add_btn.click, event(r_edited, h.add_from_editor), [editor, name_tb, cat_num, stuff_cb], everything)
        assist_layout.wire(assist_controls, cfg, event, wire, r_all, everything, editor, name_tb, cat_num)

        # ----- export and fine-tune -----
        def exporter(fmt: str) -> Callable[[Tab], None]:
            def run(tab: Tab) -> None:
                tab.last_export = h.export(tab, fmt)

            return run

        def r_export(tab: Tab) -> dict:
            if tab.last_export is None:
                return {export_file: None, export_md: ""}
            return {export_file: str(tab.last_export), export_md: h.export_notice(tab.last_export)}

        for btn, fmt in ((cocoa_btn, "cocoa"), (coco_btn, "coco"), (kins_btn, "kins")):
            wire(btn.click, event(r_export, exporter(fmt)), None, [export_file, export_md])

        def r_tune(tab: Tab) -> dict:
            progress = h.finetune_status(tab)
            if progress is None:
                return {tune_md: "", timer: gr.Timer(active=False)}
            text = f"**{progress.state}** · step {progress.step}"
            text += f" / {progress.total}" if progress.total else ""
            text += f" · loss {progress.loss:.4f}" if progress.loss is not None else ""
            text += f" · {progress.message}" if progress.message else ""
            text += f" · training {tab.job.note}" if tab.job is not None and tab.job.note else ""
            out = {tune_md: security.public_text(cfg, text), timer: gr.Timer(active=progress.state == "running")}
            if progress.state == "done":
                out[tune_md] = security.public_text(cfg, text + f" · now using `{progress.checkpoint}`")
                out.update(r_all(tab))
            return out

        tune_outputs = [tune_md, timer, *everything]
        wire(tune_btn.click, event(r_tune, lambda tab: h.start_finetune(tab)), None, tune_outputs)
        wire(cancel_btn.click, event(r_tune, h.cancel_finetune), None, tune_outputs)
        wire(timer.tick, event(r_tune), None, tune_outputs)

        # ----- API endpoints (gradio_client, scripts) -----
        _api(tabs, cfg)

    return demo


def _gallery(tab: Tab) -> list[str]:
    """Thumbnails of the dataset (image files straight from the dataset or workspace folder); an image whose
    name would leave its folder is left out (the page says why when it is opened)."""
    paths = []
    for i in range(len(tab.session)):
        try:
            paths.append(str(tab.session.image_path(i)))
        except SemlayerError:
            continue
    return paths


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
    assist_layout.api(tabs, cfg, user_errors)
