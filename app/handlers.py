"""What the user does on the page, as small functions over a `Tab` (one browser tab's or API client's state):
open data, select, edit, export, fine-tune. What the page then shows is app.render's.

No Gradio here: layout.py wires these to components, and tests call them directly. Errors meant for the
user are `UserError` (or `SemlayerError` from the library); layout.py shows them in the page.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from PIL import Image

from semlayer.errors import SemlayerError
from semlayer.finetune import (
    HELD_OUT_EVERY,
    Comparison,
    FineTuneJob,
    FineTuneRefused,
    ModelHistory,
    Progress,
    compare,
    prepare_finetune,
)
from semlayer.finetune import start_finetune as run_plan
from semlayer.images import encode_png, read_image
from semlayer.io_utils import atomic_write_json
from semlayer.scene import AmodalScene
from semlayer.workspace import ConflictError, EditSession, op_rename, op_set_category, op_set_stuff

from . import render
from .model import load_model
from .tab import JOBS, JOBS_LOCK, SHOWS, VIEWS, AppConfig, LayerState, Source, Tab, UserError, source

# Uploads larger than this are refused with a message (CPU inference on them would take minutes).
MAX_UPLOAD_PIXELS = 4096 * 4096
BRUSH_MODES = ("add", "remove")


def category_id(value: float | None) -> int | None:
    """A category id from the page's number box (empty: None)."""
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else int(value)


# ----- opening data ----------------------------------------------------------------------------


VIEW_SETTINGS = "view.json"  # the workspace folder's last show / view / opacity


def load_view_settings(tab: Tab) -> None:
    """Show, view and opacity as last chosen on this workspace (kept as they are when none was saved or the
    file holds something else); the layer list's state is that of this workspace, none when it has none."""
    tab.layers = {}
    try:
        saved = json.loads((tab.session.folder / VIEW_SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(saved, dict):
        return
    if saved.get("show") in SHOWS and (saved["show"] == Source.ANNOTATION or tab.checkpoint is not None):
        tab.show = Source(saved["show"])
    if saved.get("view") in VIEWS:
        tab.view = saved["view"]
    if isinstance(saved.get("opacity"), (int, float)) and 0 <= saved["opacity"] <= 1:
        tab.opacity = float(saved["opacity"])
    layers = saved.get("layers")
    if isinstance(layers, dict):
        states = {str(k): LayerState.from_saved(v) for k, v in layers.items()}
        tab.layers = {k: v for k, v in states.items() if v is not None}


def save_view_settings(tab: Tab) -> None:
    """Remember show / view / opacity and the layer list's hide / solo / lock for this workspace, so a reload or
    a new tab keeps them."""
    layers = {k: v.saved() for k, v in tab.layers.items() if v.hidden or v.locked or v.solo is not None}
    atomic_write_json(
        tab.session.folder / VIEW_SETTINGS,
        {"show": tab.show, "view": tab.view, "opacity": tab.opacity, "layers": layers},
    )


def set_view_setting(tab: Tab, name: str, value: Any) -> None:
    """Set ``show``, ``view`` or ``opacity`` from the page (checked: it is client input) and remember it."""
    if name == "show":
        value = source(value)
    elif name == "view" and value not in VIEWS:
        raise UserError(f"view must be one of {', '.join(VIEWS)}, got {value!r}")
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
    predicted = cfg.checkpoint is not None and session.source is not None and unannotated
    checkpoint = None if cfg.checkpoint is None else str(cfg.checkpoint)
    tab = Tab(session, cfg, checkpoint, show=Source.PREDICTION if predicted else Source.ANNOTATION)
    load_view_settings(tab)
    return tab


def open_uploads(cfg: AppConfig, checkpoint: str | os.PathLike | None) -> EditSession:
    """The uploads session. It has no annotation file to take categories from, so it takes the model's:
    exports then name the training data's category ids."""
    session = EditSession.open_uploads(cfg.workspace)
    if checkpoint is not None and not session.annset.categories:
        session.annset.categories = load_model(str(checkpoint)).categories
    return session


def switch_dataset(tab: Tab, data: str | None, images: str | None) -> None:
    """Open another dataset: ``data`` and ``images`` are names among those listed under ``--data-root``
    (`app.security.dataset_choices`), never paths a client made up."""
    from .security import chosen, dataset_choices, image_folder_choices

    if not data or not images:
        raise UserError("choose both the annotation file and its image folder")
    cfg = tab.cfg
    data_file = chosen(cfg, data, dataset_choices(cfg), "annotation file")
    folder = chosen(cfg, images, image_folder_choices(cfg), "image folder")
    tab.session = EditSession.open(cfg.workspace, data_file, folder)
    tab.clear_selection()
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
    tab.clear_selection()


def predict_upload(tab: Tab, path: str | os.PathLike) -> dict[str, Any]:
    """Predict an uploaded image and open it, as a new editable scene of the uploads, in this tab."""
    model = tab.model
    if model is None:
        raise UserError("no model is loaded: start the app with --checkpoint CKPT to predict uploaded images")
    image = read_image(path, max_pixels=MAX_UPLOAD_PIXELS)
    uploads = open_uploads(tab.cfg, tab.checkpoint)
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
    scene = model.predict(image, record, tab.cfg.score_thr).copy()
    uploads.add_scene(scene, encode_png(image))
    tab.session = uploads
    tab.clear_selection()
    tab.show = Source.ANNOTATION
    return tab.summary()


def select_at(tab: Tab, x: int, y: int, which: Source | str | None = None) -> dict[str, Any] | None:
    """Select the front-most instance at pixel (x, y) of the shown image (or, with ``which``, of that
    scene: ``annotation`` or ``prediction``); the same pixel again cycles to the instances behind it.
    Returns the selected instance's summary (None on background)."""
    x, y = int(x), int(y)
    if which is None:
        which = tab.listed
        if tab.show == Source.BOTH and x >= tab.session.scene.width:
            which, x = Source.PREDICTION, x - tab.session.scene.width
    elif which in (Source.ANNOTATION, Source.PREDICTION):
        which = Source(which)
    else:
        raise UserError(f"select in 'annotation' or 'prediction', got {which!r}")
    scene = tab.scene_for(which)
    shown = tab.shown_ids(which)  # objects hidden in the layer list are clicked through
    stack = [i for i in scene.instances_at(x, y) if shown is None or i in shown]
    click = (which, x, y)
    tab.cycle = tab.cycle + 1 if click == tab.last_click and stack else 0
    tab.last_click = click
    if not stack:
        tab.selected = None
        return None
    tab.selected, tab.selected_in = stack[tab.cycle % len(stack)], which
    return {**scene.instance_summary(tab.selected, tab.occlude_rates(which, scene)), "stack": stack}


def select_instance(tab: Tab, instance_id: int, which: Source | str = Source.ANNOTATION) -> dict[str, Any]:
    """Select an instance by id (a row of the instance table) in the ``which`` scene."""
    scene = tab.scene_for(which)
    try:
        scene.get(int(instance_id))
    except (KeyError, ValueError):
        raise UserError(f"this {which} has no instance {instance_id}") from None
    tab.selected, tab.selected_in, tab.last_click, tab.cycle = int(instance_id), which, None, 0
    return scene.instance_summary(int(instance_id), tab.occlude_rates(which, scene))


def select_next(tab: Tab) -> dict[str, Any] | None:
    """Select the next instance, front to back, of the shown scene (the first one when none of it is
    selected; after the last, the first again). Returns its summary, None when the scene is empty."""
    which = tab.listed
    scene = tab.scene_for(which)
    order = [scene.instances[i].id for i in scene.front_to_back()]
    if not order:
        return None
    at = order.index(tab.selected) if tab.selected_in == which and tab.selected in order else -1
    return select_instance(tab, order[(at + 1) % len(order)], which)


# ----- editing ---------------------------------------------------------------------------------


@contextlib.contextmanager
def editing(tab: Tab) -> Iterator[EditSession]:
    """The tab's session, for edits: on a save conflict the tab reloads the saved state and the error goes on
    up; a bad argument (from the page or an API call) becomes a UserError."""
    try:
        yield tab.session
    except ConflictError:
        tab.session.reload()
        tab.clear_selection()
        raise
    except ValueError as err:
        raise UserError(str(err)) from None


def reorder(tab: Tab, where: str, instance_id: int | None = None) -> dict[str, Any]:
    """Move an instance (default: the selected one) forward or backward past the nearest instance it overlaps
    (`AmodalScene.step_past`; a message when none overlaps it that way), to the front or back."""
    target = tab.editable_selection if instance_id is None else tab.editable(int(instance_id))
    scene = tab.session.scene
    order = scene.order_ids()
    if where in ("forward", "backward") and target in order and scene.step_past(target, where) is None:
        end = "front" if where == "forward" else "back"
        if order[0 if where == "forward" else -1] == target:
            raise UserError(f"#{target} is already at the {end}")
        side = "in front of" if where == "forward" else "behind"
        raise UserError(
            f"nothing {side} #{target} overlaps it, so a step {where} would change nothing you can see "
            f"(use 'to {end}' to move it anyway)"
        )
    with editing(tab) as session:
        session.move(target, where)  # the session checks ``where``
    return tab.summary()


def put_in_front(tab: Tab, behind_id: int | None) -> dict[str, Any]:
    front = tab.editable_selection
    if behind_id is None:
        raise UserError("choose the instance to put the selected one in front of")
    with editing(tab) as session:
        session.put_in_front(front, int(behind_id))
    return tab.summary()


def undo(tab: Tab) -> str | None:
    """Undo the current scene's last edit; returns its label (None: nothing to undo)."""
    with editing(tab) as session:
        label = session.undo()
    _forget_removed_selection(tab)
    return label


def redo(tab: Tab) -> str | None:
    with editing(tab) as session:
        label = session.redo()
    _forget_removed_selection(tab)
    return label


def _forget_removed_selection(tab: Tab) -> None:
    """After an undo or redo: an annotation object selected that the step removed (an added one) is no
    longer selected."""
    if tab.selected_in == Source.ANNOTATION and tab.selected is not None:
        if all(inst.id != tab.selected for inst in tab.session.scene.instances):
            tab.clear_selection()


def delete_selected(tab: Tab) -> None:
    with editing(tab) as session:
        session.delete_instance(tab.editable_selection)
    tab.clear_selection()


def _set_attributes(scene: AmodalScene, instance_id: int, name: str, category: int | None, is_stuff: bool) -> None:
    op_rename(scene, instance_id, name)
    op_set_category(scene, instance_id, category)
    op_set_stuff(scene, instance_id, is_stuff)


def set_attributes(tab: Tab, name: str, category: float | None, is_stuff: bool) -> None:
    """Rename / set category / stuff flag of the selected instance: one edit (one undo step), labelled by
    what changed."""
    inst = tab.session.scene.get(tab.editable_selection)
    cat = category_id(category)
    changed = [what for what, differs in (("name", name != inst.name), ("category", cat != inst.category),
                                          ("stuff", bool(is_stuff) != inst.is_stuff)) if differs]  # fmt: skip
    if changed:
        label = f"set {' / '.join(changed)} of {inst.id}"
        with editing(tab) as session:
            session.apply(label, _set_attributes, inst.id, name, cat, bool(is_stuff))


def mask_from_editor(value: Any, shape: tuple[int, int]) -> np.ndarray:
    """Amodal mask painted in the ImageEditor: any layer pixel with alpha > 0, at the image's size."""
    layers = value.get("layers") if isinstance(value, dict) else None
    if not layers:
        raise UserError("nothing painted in the editor: paint with the brush first")
    mask = np.zeros(shape, bool)
    display = render.display_for(shape)
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
    target = tab.editable_selection
    if tab.editor_shows is not None and tab.editor_shows[:3] != render.editor_key(tab)[:3]:
        shown = tab.editor_shows[2]
        raise UserError(
            f"the editor shows {'no object' if shown is None else f'#{shown}'} but #{target} is selected: "
            "paint again on the selected object (the editor now shows it)"
        )
    if mode not in BRUSH_MODES:
        raise UserError(f"brush mode must be one of {', '.join(BRUSH_MODES)}, got {mode!r}")
    current = tab.session.scene.get(target).amodal
    strokes = mask_from_editor(value, current.shape)
    with editing(tab) as session:
        session.set_amodal(target, current | strokes if mode == "add" else current & ~strokes)


def add_from_editor(tab: Tab, value: Any, name: str, category: float | None, is_stuff: bool) -> int:
    """A new instance, at the front, whose amodal mask is the brush strokes."""
    mask = mask_from_editor(value, tab.session.scene.shape)
    cat = category_id(category)
    with editing(tab) as session:
        new_id = session.add_instance(mask, name or "object", cat, bool(is_stuff))
    tab.selected, tab.selected_in = new_id, Source.ANNOTATION
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


def start_finetune(tab: Tab, command: list[str] | None = None) -> FineTuneJob:
    """Fine-tune the tab's model on the corrected images (`semlayer.finetune.prepare_finetune`: a new
    ``runs/finetune-N`` with the held-out split) in the background; ``command`` stands in for train.py's
    command line (tests). One fine-tune at a time on the whole server: each takes the machine's cores (and
    any number of crafted datasets would otherwise start as many processes)."""
    with JOBS_LOCK:
        return _start_finetune(tab, command)


def _start_finetune(tab: Tab, command: list[str] | None) -> FineTuneJob:
    cfg = tab.cfg
    if tab.job is not None and tab.job.progress().state == "running":
        raise UserError("a fine-tune is already running in this tab; cancel it first")
    busy = [folder for folder, job in JOBS.items() if job.progress().state == "running"]
    if busy:
        raise UserError(
            f"a fine-tune of another dataset ({busy[0].name}) is running on this server; one runs at a time: "
            "start this one when it has finished (or cancel it from its page)"
        )
    if tab.checkpoint is None:
        raise UserError("no model is loaded: start the app with --checkpoint CKPT to fine-tune it")
    if cfg.train_config is None:
        raise UserError("no training config: start the app with --train-config CONFIG")
    try:
        plan = prepare_finetune(tab.session, tab.checkpoint, cfg.train_config, cfg.finetune_iters)
    except FineTuneRefused as err:
        raise UserError(str(err)) from None
    if command is not None:
        plan.command = list(command)
    JOBS[tab.session.folder] = run_plan(plan)
    return JOBS[tab.session.folder]


def use_model(tab: Tab, checkpoint: str | os.PathLike) -> None:
    """Make ``checkpoint`` the tab's model (loaded once per process)."""
    load_model(checkpoint)
    tab.checkpoint = str(checkpoint)


def finetune_status(tab: Tab) -> Progress | None:
    """Progress of the tab's job. Once it is done, its checkpoint goes into the workspace's model history
    (`ModelHistory.record`), the models are compared (`finetune_comparison`), and the tab follows the
    history's current model: the new one, until "back to previous model" (`rollback_model`)."""
    if tab.job is None:
        return None
    progress = tab.job.progress()
    if progress.state == "done" and progress.checkpoint is not None:
        history = ModelHistory(tab.session.folder)
        if history.run_of(progress.checkpoint) is None:
            history.record(tab.job)
            finetune_comparison(tab)
        if history.current is not None and tab.checkpoint != history.current:
            use_model(tab, history.current)
    return progress


def cancel_finetune(tab: Tab) -> None:
    if tab.job is None:
        raise UserError("no fine-tune is running")
    tab.job.cancel()


# The comparison of each fine-tuned checkpoint with the model it started from, or why there is none
# (process-wide, like the jobs: computed once, when its job is first seen done).
COMPARISONS: dict[str, Comparison | str] = {}
COMPARISONS_LOCK = threading.Lock()


def finetune_comparison(tab: Tab) -> Comparison | str | None:
    """Old against new model (amodal AP, `semlayer.finetune.compare`) on the held-out corrected images of
    the tab's finished fine-tune, or why there is no comparison; None while no fine-tune has finished."""
    job = tab.job
    progress = None if job is None else job.progress()
    if job is None or job.plan is None or progress is None or progress.state != "done" or not progress.checkpoint:
        return None
    key = str(progress.checkpoint)
    with COMPARISONS_LOCK:
        if key not in COMPARISONS:
            plan = job.plan
            if plan.held_out_data is None:
                corrected = len(tab.session.edited_indices())
                COMPARISONS[key] = (
                    f"no comparison: with {corrected} corrected image(s) none was held out from training (every "
                    f"{HELD_OUT_EVERY}th corrected image is, once two are corrected); correct more images and "
                    "fine-tune again to see how the new model does on images it did not learn from"
                )
            else:
                try:
                    COMPARISONS[key] = compare(plan.base, progress.checkpoint, plan.held_out_data, plan.images)
                except SemlayerError as err:  # e.g. a held-out image gone since: the fine-tune itself stands
                    COMPARISONS[key] = f"no comparison: {err}"
        return COMPARISONS[key]


def comparison_text(result: Comparison | str | None) -> str:
    """The comparison in words for the page."""
    if result is None or isinstance(result, str):
        return result or ""
    if result.old_ap < 0:
        return f"no comparison: the {result.images} held-out image(s) hold no object"
    change = "better" if result.new_ap > result.old_ap else "worse" if result.new_ap < result.old_ap else "the same"
    return (
        f"amodal AP on the {result.images} held-out corrected image(s): previous model {result.old_ap:.3f}, "
        f"new model {result.new_ap:.3f} ({change})"
    )


def rollback_model(tab: Tab) -> Path:
    """Go back to the model the current one was fine-tuned from (`ModelHistory.rollback`); returns it."""
    try:
        previous = ModelHistory(tab.session.folder).rollback()
    except FineTuneRefused as err:
        raise UserError(str(err)) from None
    use_model(tab, previous)
    return previous


def use_finetuned(tab: Tab) -> Path:
    """Use the tab's finished fine-tune again (after "back to previous model"); returns its checkpoint."""
    job = tab.job
    checkpoint = None if job is None else ModelHistory(tab.session.folder).record(job)
    if checkpoint is None:
        raise UserError("no finished fine-tune of this dataset to use: fine-tune on the corrected data first")
    use_model(tab, checkpoint)
    return checkpoint


def model_choices(tab: Tab) -> tuple[bool, bool]:
    """Whether the page offers ("use new model", "back to previous model"): a finished fine-tune the tab
    does not use, and a fine-tuned current model to go back from."""
    history = ModelHistory(tab.session.folder)
    progress = None if tab.job is None else tab.job.progress()
    finished = progress.checkpoint if progress is not None and progress.state == "done" else None
    use_new = finished is not None and tab.checkpoint != str(finished)
    back = history.previous_model() is not None and tab.checkpoint == history.current
    return use_new, back
