"""The annotation assists over a `Tab`, for the page and the script API (no Gradio here).

The library does the work and keeps the proposal (`semlayer.assist.AssistState`); this module gives each
tab its state for the current image, turns library errors into messages, and draws the assist canvas.
Accepting a proposal is one ordinary edit of the session (undo, redo, autosave).
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from semlayer import assist
from semlayer.assist import COMPLETIONS, DEFAULT_RADIUS, TOOLS, AssistState
from semlayer.scene import AmodalScene

from . import handlers as h
from . import render
from .tab import Picture, Source, Tab, UserError

__all__ = ["COMPLETIONS", "TOOLS", "AssistState"]

CLICKS = ("box", "positive", "negative")
# Superpixels of the images the app shows, shared by its tabs (a bounded cache, like the models').
SUPERPIXELS = assist.SuperpixelCache()
_COMPLETERS: dict[str, assist.BoxCompleter] = {}


def state(tab: Tab) -> AssistState:
    """The tab's assist state, started afresh when the image or its saved state changed."""
    key = tab.figure_key(Source.ANNOTATION)
    current = tab.assist
    if not isinstance(current, AssistState) or current.key != key:
        kept = AssistState() if not isinstance(current, AssistState) else current
        current = tab.assist = AssistState(key=key, tool=kept.tool, boxes_on_image=kept.boxes_on_image)
    return current


def clear(tab: Tab) -> None:
    st = state(tab)
    tab.assist = AssistState(key=st.key, tool=st.tool, boxes_on_image=st.boxes_on_image)


def _instance(tab: Tab, instance_id: int | None) -> int:
    """The annotation instance an amodal assist works on: the given id, else the selection."""
    if instance_id is None:
        return tab.editable_selection
    try:
        found = tab.session.scene.get(int(instance_id)).id
    except (KeyError, ValueError):
        raise UserError(f"this image has no instance {instance_id}") from None
    return tab.editable(found)  # a locked one refuses


def _proposing(tab: Tab, make: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run one of the state's proposal makers; returns the proposal's summary."""
    st = state(tab)
    try:
        make(st, *args, **kwargs)
    except ValueError as err:
        raise UserError(str(err)) from None
    return st.summary()


def proposal_summary(tab: Tab) -> dict[str, Any]:
    return state(tab).summary()


def open_image(tab: Tab, image_id: int | None = None, index: int | None = None) -> dict[str, Any]:
    """Make an image of the tab's own dataset the current one, by its image id or its index (exactly one):
    a script moves through the dataset without ever naming a file. Returns the scene summary."""
    if (image_id is None) == (index is None):
        raise UserError("give exactly one of image_id and index")
    try:
        where = tab.session.index_of_image(int(image_id)) if image_id is not None else int(index or 0)
    except ValueError as err:
        raise UserError(str(err)) from None
    h.go_to(tab, where)
    return tab.summary()


def run_grabcut(tab: Tab, box: Sequence[float], positive: Sequence = (), negative: Sequence = (),
                foreground: np.ndarray | None = None, background: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """GrabCut from ``box`` [x0, y0, x1, y1] and positive / negative clicks (and strokes): the proposal."""
    return _proposing(tab, AssistState.grabcut, tab.current_image(), box, positive, negative, foreground, background)


def run_superpixels(tab: Tab, positive: Sequence = (), negative: Sequence = (), stroke: np.ndarray | None = None,
                    mode: str = "add") -> dict[str, Any]:  # fmt: skip
    """The superpixel brush on the pending visible proposal."""
    labels = SUPERPIXELS.labels(tab.current_image())
    return _proposing(tab, AssistState.superpixels, labels, positive, negative, stroke, mode)


def hidden_brush(tab: Tab, points: Sequence[Sequence[float]], radius: float = DEFAULT_RADIUS, mode: str = "add",
                 instance_id: int | None = None) -> dict[str, Any]:  # fmt: skip
    """A brush stroke through ``points``, clipped to the objects in front of the instance."""
    target = _instance(tab, instance_id)
    return _proposing(tab, AssistState.hidden_brush, tab.session.scene, target, points, radius, mode)


def hidden_polygon(tab: Tab, points: Sequence[Sequence[float]], mode: str = "add",
                   instance_id: int | None = None) -> dict[str, Any]:  # fmt: skip
    """A filled polygon clipped to the objects in front of the instance."""
    target = _instance(tab, instance_id)
    return _proposing(tab, AssistState.hidden_polygon, tab.session.scene, target, points, mode)


def hidden_stroke(tab: Tab, stroke: np.ndarray, mode: str = "add") -> dict[str, Any]:
    """Editor strokes clipped to the objects in front of the selected instance."""
    return _proposing(tab, AssistState.paint_hidden, tab.session.scene, _instance(tab, None), stroke, mode)


def complete(
    tab: Tab, method: str, instance_id: int | None = None, box: Sequence[float] | None = None
) -> dict[str, Any]:
    """A completion proposal of the instance's amodal mask: ``hull``, ``mirror`` or ``model`` (the loaded
    model's RoI heads on ``box``, default the box drawn on the canvas, else the instance's amodal box)."""
    if method not in COMPLETIONS:
        raise UserError(f"completion must be one of {', '.join(COMPLETIONS)}, got {method!r}")
    target = _instance(tab, instance_id)
    image, completer = (tab.current_image(), _completer(tab)) if method == "model" else (None, None)
    return _proposing(tab, AssistState.complete, tab.session.scene, target, method, image, completer, box)


def _completer(tab: Tab) -> assist.BoxCompleter:
    predictor = getattr(tab.model, "predictor", None)
    if predictor is None or not hasattr(predictor, "model"):
        raise UserError("no model is loaded: start the app with --checkpoint CKPT for the model's completion")
    key = str(tab.checkpoint)
    if key not in _COMPLETERS:
        try:
            _COMPLETERS[key] = assist.BoxCompleter(predictor)
        except ValueError as err:
            raise UserError(str(err)) from None
    return _COMPLETERS[key]


def accept(tab: Tab, as_: str | None = None, name: str = "object", category: float | None = None) -> dict[str, Any]:
    """Apply the pending proposal as one undoable edit: a visible proposal as the selected instance's
    visible part (``visible``) or as a new instance (``new``); an amodal one as its instance's amodal mask;
    a new object (``object``, from `propose_object`) at its proposed rank. Returns the scene summary."""
    st = state(tab)
    if st.proposal is None:
        raise UserError("there is no proposal to accept: click on the assist image or ask for a completion first")
    as_ = as_ or st.natural_use(tab.selected)
    selected = tab.editable_selection if as_ == "visible" and st.kind == "visible" else None
    note = st.new_object.note if st.new_object is not None else ""
    with h.editing(tab) as session:
        new_id = st.accept(session, as_, selected, name, h.category_id(category))
    if new_id is not None:
        tab.selected, tab.selected_in = new_id, Source.ANNOTATION
    clear(tab)
    state(tab).note = note
    return tab.summary()


# ----- the canvas ------------------------------------------------------------------------------

PROPOSAL_COLOR = np.array((0, 220, 255))
OCCLUDER_COLOR = np.array((255, 170, 0))


def canvas(tab: Tab, tool: str = "grabcut") -> np.ndarray:
    """The assist image: the photograph, enlarged as the main view is, with the proposal tinted, the
    objects in front of the selected instance hatched for the hidden-part tools, the box and the clicks."""
    image = np.array(tab.current_image())
    st = state(tab)
    scene = tab.session.scene
    if tool.startswith("hidden") and tab.selected is not None and tab.selected_in == Source.ANNOTATION:
        occ = assist.occluders(scene, tab.selected)
        stripes = (np.add.outer(np.arange(scene.height), np.arange(scene.width)) // 3) % 3 == 0
        image[occ & stripes] = (0.4 * image[occ & stripes] + 0.6 * OCCLUDER_COLOR).astype(np.uint8)
    if st.proposal is not None:
        image[st.proposal] = (0.45 * image[st.proposal] + 0.55 * PROPOSAL_COLOR).astype(np.uint8)
    scale = render.display_scale(scene.shape)
    out = np.ascontiguousarray(render.enlarge(image, scale))
    if st.proposal is not None:
        contours, _ = cv2.findContours(
            render.enlarge(st.proposal.astype(np.uint8), scale), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)

    def at(p: tuple[int, int]) -> tuple[int, int]:
        return int(p[0] * scale + scale // 2), int(p[1] * scale + scale // 2)

    if st.box is not None:
        x0, y0, x1, y1 = st.box
        cv2.rectangle(out, at((x0, y0)), at((x1, y1)), (255, 255, 0), 2)
    if st.corner is not None:
        cv2.drawMarker(out, at(st.corner), (255, 255, 0), cv2.MARKER_CROSS, 14, 2)
    if len(st.polygon) > 1:
        cv2.polylines(out, [np.array([at(p) for p in st.polygon], np.int32)], False, (255, 120, 0), 2)
    for points, color in ((st.positive, (0, 200, 0)), (st.negative, (230, 0, 0)), (st.polygon, (255, 120, 0))):
        for p in points:
            cv2.circle(out, at(p), 5, (255, 255, 255), -1)
            cv2.circle(out, at(p), 4, color, -1)
    return out


def click(tab: Tab, x: int, y: int, tool: str, does: str, radius: float = DEFAULT_RADIUS) -> None:
    """A click on the assist canvas at image pixel (x, y): a box corner, or a positive / negative click of
    the chosen tool (GrabCut reruns, a superpixel is added or removed, the hidden-part brush dabs, the
    polygon gets a vertex)."""
    if tool not in TOOLS:
        raise UserError(f"tool must be one of {', '.join(TOOLS)}, got {tool!r}")
    if does not in CLICKS:
        raise UserError(f"a click is one of {', '.join(CLICKS)}, got {does!r}")
    st = state(tab)
    try:
        p = assist.image_point(tab.session.scene.shape, (x, y), "click")
    except ValueError as err:
        raise UserError(str(err)) from None
    if does == "box":
        if st.corner is None:
            st.corner = p
            return
        (ax, ay), st.corner = st.corner, None
        box = [min(ax, p[0]), min(ay, p[1]), max(ax, p[0]), max(ay, p[1])]
        if tool == "grabcut":
            run_grabcut(tab, box, st.positive, st.negative)
        else:
            st.box = box
        return
    positive = does == "positive"
    if tool == "grabcut":
        if st.box is None:
            raise UserError("draw a box around the object first: 'box corner' clicks at two opposite corners")
        pos, neg = list(st.positive), list(st.negative)
        (pos if positive else neg).append(p)
        run_grabcut(tab, st.box, pos, neg)
    elif tool == "superpixel":
        run_superpixels(tab, [p] if positive else [], [] if positive else [p])
    elif tool == "hidden_brush":
        hidden_brush(tab, [p], radius, "add" if positive else "remove")
    else:
        st.polygon.append(p)


def close_polygon(tab: Tab, mode: str = "add") -> None:
    """Fill the polygon clicked on the canvas, clipped to the objects in front of the selected instance."""
    st = state(tab)
    points, st.polygon = list(st.polygon), []
    hidden_polygon(tab, points, mode)


# ----- the model's objects into the annotation: adopt, and a new object from a box on the main image -----


def _prediction(tab: Tab) -> AmodalScene:
    prediction = tab.prediction()
    if prediction is None:
        raise UserError("no model is loaded: start the app with --checkpoint CKPT to adopt its objects")
    return prediction


def _added(tab: Tab, new_ids: list[int], notes: list[str]) -> dict[str, Any]:
    """After objects were added: select the last in the annotation (shown beside the prediction when only
    the prediction was shown), say what there is to say; returns the scene summary with ``added``."""
    tab.selected, tab.selected_in, tab.last_click, tab.cycle = new_ids[-1], Source.ANNOTATION, None, 0
    if tab.show == Source.PREDICTION:
        tab.show = Source.BOTH
    clear(tab)
    state(tab).note = " · ".join(dict.fromkeys(n for n in notes if n))
    return {**tab.summary(), "added": new_ids, "notes": [n for n in notes if n]}


def adopt(tab: Tab, instance_id: int | None = None) -> dict[str, Any]:
    """Adopt a predicted object (default: the one selected in the prediction) into the annotation as one
    undoable edit: its amodal mask, name and category, at the depth `semlayer.assist.adoption` gives it.
    Returns the scene summary with ``added`` (the new id) and ``notes``."""
    prediction = _prediction(tab)
    if instance_id is None:
        if tab.selected is None or tab.selected_in != Source.PREDICTION:
            raise UserError("select an object of the prediction first (show: prediction or both), then adopt it")
        instance_id = tab.selected
    categories = tab.session.annset.categories
    try:
        proposal = assist.adoption(tab.session.scene, prediction, int(instance_id), categories)
    except ValueError as err:
        raise UserError(str(err)) from None
    with h.editing(tab) as session:
        new_id = session.apply(f"adopt predicted {proposal.name!r} (#{instance_id})", assist.add_object, proposal)
    return _added(tab, [new_id], [proposal.note])


def adopt_missing(tab: Tab) -> dict[str, Any]:
    """Adopt every predicted object that matches no annotated object (`semlayer.assist.missing_predictions`),
    likeliest first, as one undoable edit. Returns the scene summary with ``added`` and ``notes``."""
    prediction = _prediction(tab)
    missing = assist.missing_predictions(tab.session.scene, prediction)
    if not missing:
        raise UserError("every predicted object matches an annotated one: there is nothing missing to adopt")
    categories = tab.session.annset.categories
    notes = [assist.dataset_category(prediction.get(i).name, categories)[2] for i in missing]
    with h.editing(tab) as session:
        new_ids = session.apply(
            f"adopt {len(missing)} missing predicted object(s)", assist.adopt_predictions, prediction, missing,
            categories,
        )  # fmt: skip
    return _added(tab, new_ids, notes)


def propose_object(tab: Tab, box: Sequence[float]) -> dict[str, Any]:
    """The model's RoI heads on ``box`` [x0, y0, x1, y1]: a new object (amodal mask, name, category, depth
    rank) pending as the proposal; `accept` adds it. Returns the proposal's summary (``object``: its name,
    rank and the annotated objects it goes in front of and behind)."""
    image, completer = tab.current_image(), _completer(tab)
    scene, categories = tab.session.scene, tab.session.annset.categories
    return _proposing(tab, AssistState.propose_object, completer, image, scene, list(box), categories)


def draw_boxes_on_image(tab: Tab, on: bool) -> None:
    """Whether clicks on the main image draw a box for a new object (two corners) instead of selecting."""
    st = state(tab)
    st.boxes_on_image, st.corner = bool(on), None


def main_image_click(tab: Tab, x: int, y: int) -> bool:
    """A click on the main image at image pixel (x, y; in "both", on the right half x is offset by the
    width): a box corner when boxes are drawn there (the second corner asks the model for the object in
    the box), and True; False when the click selects as usual."""
    st = state(tab)
    if not st.boxes_on_image:
        return False
    scene = tab.session.scene
    x = x - scene.width if x >= scene.width else x
    try:
        p = assist.image_point(scene.shape, (x, y), "click")
    except ValueError as err:
        raise UserError(str(err)) from None
    if st.corner is None:
        st.corner = p
        return True
    (ax, ay), st.corner = st.corner, None
    propose_object(tab, [min(ax, p[0]), min(ay, p[1]), max(ax, p[0]), max(ay, p[1])])
    return True


def view_with_proposal(tab: Tab, view: Picture) -> Picture:
    """The main view with the pending new object on its annotation: the amodal mask tinted, the visible
    part it gets at its proposed rank bright and outlined, its box, and "#rank name"; while a box is
    drawn, its first corner. The view itself when there is neither."""
    st = state(tab)
    corner = st.corner if st.boxes_on_image else None
    if st.new_object is None and corner is None:
        return view
    # Held by the tab's figure cache, one at a time: the page's PNG file lives as long as its picture.
    key = (id(view), id(st.new_object), corner, None if st.box is None else tuple(st.box))
    return tab.figures.only("view with proposal", key, lambda: _draw_proposal(tab, view.pixels, corner))


def _draw_proposal(tab: Tab, pixels: np.ndarray, corner: tuple[int, int] | None) -> np.ndarray:
    st = state(tab)
    display = render.display_for(tab.session.scene.shape)
    out = pixels.copy()
    part = out[:, : display.reduced[1] * display.up]

    def shown(mask: np.ndarray) -> np.ndarray:
        return render.enlarge(display.sample(mask).astype(np.uint8), display.up).astype(bool)

    def at(p: Sequence[int]) -> tuple[int, int]:  # image pixel -> the centre of its display pixel(s)
        return int(p[0] // display.down * display.up + display.up // 2), int(
            p[1] // display.down * display.up + display.up // 2
        )

    if st.new_object is not None:
        obj = st.new_object
        amodal, visible = shown(obj.amodal), shown(obj.visible)
        hidden = amodal & ~visible
        part[hidden] = (0.6 * part[hidden] + 0.4 * PROPOSAL_COLOR).astype(np.uint8)
        part[visible] = (0.3 * part[visible] + 0.7 * PROPOSAL_COLOR).astype(np.uint8)
        for mask, color in ((amodal, (255, 255, 255)), (visible, (255, 255, 0))):
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(part, contours, -1, color, 1)
        if st.box is not None:
            x0, y0, x1, y1 = st.box
            cv2.rectangle(part, at((x0, y0)), at((x1, y1)), (255, 255, 0), 1)
            label_at = at((x0, y0))
            cv2.putText(part, f"#{obj.rank} {obj.name}", (label_at[0] + 2, label_at[1] + 14),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)  # fmt: skip
    if corner is not None:
        cv2.drawMarker(part, at(corner), (255, 255, 0), cv2.MARKER_CROSS, 14, 2)
    return out
