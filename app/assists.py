"""The annotation assists of the page and the script API, as small functions over a `Tab` (no Gradio here).

An assist builds a *proposal* (a mask held by the tab, shown on the assist canvas); accepting it is one
ordinary edit of the session, so undo, redo and autosave treat it like a brush stroke. A proposal is either a
visible part (GrabCut, superpixels: accepted as the selected instance's visible part, or as a new instance)
or an amodal mask of one instance (hidden-part brush and polygon, completion proposals). The library does
the work (`semlayer.assist`); this module keeps each tab's clicks and proposal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

from semlayer import assist

from . import handlers as h
from semlayer.formats.masks import encode_rle

TOOLS = ("grabcut", "superpixel", "hidden_brush", "hidden_polygon")
CLICKS = ("box", "positive", "negative")
COMPLETIONS = ("hull", "mirror", "model")
ACCEPT_AS = ("visible", "new", "amodal")
DEFAULT_RADIUS = 8
# Superpixels of the images the app shows, shared by its tabs (a bounded cache, like the models').
SUPERPIXELS = assist.SuperpixelCache()
_COMPLETERS: dict[str, assist.BoxCompleter] = {}


@dataclass
class AssistState:
    """One tab's assist work on the current image: its clicks and the proposal they made."""

    key: tuple = ()
    box: list[int] | None = None
    corner: tuple[int, int] | None = None  # first corner of a box being drawn
    positive: list[tuple[int, int]] = field(default_factory=list)
    negative: list[tuple[int, int]] = field(default_factory=list)
    polygon: list[tuple[int, int]] = field(default_factory=list)
    proposal: np.ndarray | None = None
    kind: str = "visible"  # what the proposal is: a visible part, or an instance's amodal mask
    instance: int | None = None  # the instance an amodal proposal belongs to
    label: str = ""  # what made it, for the undo history
    tool: str = "grabcut"  # the page's chosen assist (kept across images)
    picture: Any = None  # the canvas last sent to the page: its PNG file lives as long as it does


def state(tab: h.Tab) -> AssistState:
    """The tab's assist state, started afresh when the image or its saved state changed."""
    key = h.annotation_key(tab)
    current = getattr(tab, "assist", None)
    if not isinstance(current, AssistState) or current.key != key:
        tool = current.tool if isinstance(current, AssistState) else "grabcut"
        current = tab.assist = AssistState(key=key, tool=tool)
    return current


def clear(tab: h.Tab) -> None:
    tab.assist = AssistState(key=h.annotation_key(tab), tool=state(tab).tool)


def _point(scene_shape: tuple[int, int], point: Sequence[float], what: str) -> tuple[int, int]:
    if len(point) != 2:
        raise h.UserError(f"{what}: a point is [x, y], got {list(point)}")
    x, y = int(round(float(point[0]))), int(round(float(point[1])))
    H, W = scene_shape
    if not (0 <= x < W and 0 <= y < H):
        raise h.UserError(f"{what}: point ({x}, {y}) is outside the {W}x{H} image")
    return x, y


def _points(tab: h.Tab, points: Sequence[Sequence[float]] | None, what: str) -> list[tuple[int, int]]:
    return [_point(tab.session.scene.shape, p, f"{what}[{i}]") for i, p in enumerate(points or [])]


def _instance(tab: h.Tab, instance_id: int | None) -> int:
    """The annotation instance an amodal assist works on: the given id, else the selection."""
    if instance_id is None:
        return h._editable_selection(tab)
    try:
        return tab.session.scene.get(int(instance_id)).id
    except (KeyError, ValueError):
        raise h.UserError(f"this image has no instance {instance_id}") from None


def _set(st: AssistState, proposal: np.ndarray, kind: str, label: str, instance: int | None = None) -> None:
    st.proposal, st.kind, st.label, st.instance = proposal, kind, label, instance


def proposal_summary(tab: h.Tab) -> dict[str, Any]:
    """``{"kind", "instance", "label", "area", "mask"}``: the pending proposal, its mask as COCO RLE
    (``counts`` a string); ``mask`` None when there is none."""
    st = state(tab)
    if st.proposal is None:
        return {"kind": None, "instance": None, "label": "", "area": 0, "mask": None}
    return {
        "kind": st.kind,
        "instance": st.instance,
        "label": st.label,
        "area": int(st.proposal.sum()),
        "mask": encode_rle(st.proposal),
    }


def open_image(tab: h.Tab, image_id: int | None = None, index: int | None = None) -> dict[str, Any]:
    """Make an image of the tab's own dataset the current one, by its image id or its index (exactly one):
    a script moves through the dataset without ever naming a file. Returns the scene summary."""
    if (image_id is None) == (index is None):
        raise h.UserError("give exactly one of image_id and index")
    try:
        where = tab.session.index_of_image(int(image_id)) if image_id is not None else int(index or 0)
    except ValueError as err:
        raise h.UserError(str(err)) from None
    h.go_to(tab, where)
    return h.scene_summary(tab)


# ----- visible part ----------------------------------------------------------------------------


def run_grabcut(
    tab: h.Tab,
    box: Sequence[float],
    positive=(),
    negative=(),
    foreground: np.ndarray | None = None,
    background: np.ndarray | None = None,
) -> dict[str, Any]:
    """GrabCut from ``box`` [x0, y0, x1, y1] and positive / negative clicks (and strokes): the proposal."""
    image = h.current_image(tab)
    st = state(tab)
    shape = tab.session.scene.shape
    pos, neg = _points(tab, positive, "positive"), _points(tab, negative, "negative")
    fg = assist.clicks_mask(shape, pos) | (np.zeros(shape, bool) if foreground is None else foreground)
    bg = assist.clicks_mask(shape, neg) | (np.zeros(shape, bool) if background is None else background)
    try:
        mask = assist.grabcut(image, list(box), fg, bg)
    except ValueError as err:
        raise h.UserError(str(err)) from None
    st.box, st.positive, st.negative = [int(round(float(v))) for v in box], pos, neg
    _set(st, mask, "visible", f"GrabCut ({len(pos)}+ / {len(neg)}- clicks)")
    return proposal_summary(tab)


def run_superpixels(
    tab: h.Tab, positive=(), negative=(), stroke: np.ndarray | None = None, mode: str = "add"
) -> dict[str, Any]:
    """The superpixel brush: the superpixels under the positive clicks (and a stroke) added to the pending
    visible proposal, those under the negative clicks removed."""
    image = h.current_image(tab)
    st = state(tab)
    labels = SUPERPIXELS.labels(image)
    shape = tab.session.scene.shape
    base = st.proposal if st.proposal is not None and st.kind == "visible" else np.zeros(shape, bool)
    add = assist.superpixel_stroke(labels, assist.clicks_mask(shape, _points(tab, positive, "positive"), 0))
    remove = assist.superpixel_stroke(labels, assist.clicks_mask(shape, _points(tab, negative, "negative"), 0))
    if stroke is not None:
        (add if mode == "add" else remove)[...] |= assist.superpixel_stroke(labels, stroke)
    _set(st, (base | add) & ~remove, "visible", "superpixel brush")
    return proposal_summary(tab)


# ----- hidden part -----------------------------------------------------------------------------


def _amodal_base(tab: h.Tab, instance_id: int) -> np.ndarray:
    """What an amodal assist starts from: the pending proposal of that instance, else its amodal mask."""
    st = state(tab)
    if st.proposal is not None and st.kind == "amodal" and st.instance == instance_id:
        return st.proposal
    return tab.session.scene.get(instance_id).amodal


def _paint_hidden(tab: h.Tab, instance_id: int, stroke: np.ndarray, mode: str, label: str) -> dict[str, Any]:
    if mode not in ("add", "remove"):
        raise h.UserError(f"mode must be 'add' or 'remove', got {mode!r}")
    scene = tab.session.scene
    clipped = stroke & assist.occluders(scene, instance_id)
    base = _amodal_base(tab, instance_id)
    _set(state(tab), base | clipped if mode == "add" else base & ~clipped, "amodal", label, instance_id)
    return proposal_summary(tab)


def hidden_brush(
    tab: h.Tab,
    points: Sequence[Sequence[float]],
    radius: float = DEFAULT_RADIUS,
    mode: str = "add",
    instance_id: int | None = None,
) -> dict[str, Any]:
    """A brush stroke through ``points`` (one point: a dab), clipped to the objects in front of the instance.
    ``radius`` 0 sizes a dab by where it is (`semlayer.assist.auto_radius`)."""
    target = _instance(tab, instance_id)
    pts = _points(tab, points, "points")
    if not pts:
        raise h.UserError("a stroke needs at least one point")
    if not 0 <= float(radius) <= 512:
        raise h.UserError(f"radius must be in [0, 512] pixels (0: sized by the click), got {radius}")
    if float(radius) == 0:
        if len(pts) != 1:
            raise h.UserError("radius 0 (sized by the click) is for a single dab, not a stroke")
        radius = assist.auto_radius(
            _amodal_base(tab, target), *pts[0], mode == "add", keep=tab.session.scene.visible(target)
        )
    canvas = np.zeros(tab.session.scene.shape, np.uint8)
    r = int(round(float(radius)))
    for a, b in zip(pts, pts[1:]):
        cv2.line(canvas, a, b, 1, thickness=2 * r + 1)
    stroke = canvas.astype(bool) | assist.clicks_mask(canvas.shape, pts, r)
    return _paint_hidden(tab, target, stroke, mode, "hidden-part brush")


def hidden_polygon(
    tab: h.Tab, points: Sequence[Sequence[float]], mode: str = "add", instance_id: int | None = None
) -> dict[str, Any]:
    """A filled polygon clipped to the objects in front of the instance."""
    target = _instance(tab, instance_id)
    pts = _points(tab, points, "points")
    try:
        poly = assist.polygon_mask(tab.session.scene.shape, pts)
    except ValueError as err:
        raise h.UserError(str(err)) from None
    return _paint_hidden(tab, target, poly, mode, "hidden-part polygon")


def hidden_stroke(tab: h.Tab, stroke: np.ndarray, mode: str = "add") -> dict[str, Any]:
    """Editor strokes clipped to the objects in front of the selected instance."""
    return _paint_hidden(tab, _instance(tab, None), stroke, mode, "hidden-part brush")


def complete(
    cfg: h.AppConfig, tab: h.Tab, method: str, instance_id: int | None = None, box: Sequence[float] | None = None
) -> dict[str, Any]:
    """A completion proposal of the instance's amodal mask: ``hull``, ``mirror`` or ``model`` (the loaded
    model's RoI heads on ``box``, default the box drawn on the canvas, else the instance's amodal box)."""
    if method not in COMPLETIONS:
        raise h.UserError(f"completion must be one of {', '.join(COMPLETIONS)}, got {method!r}")
    target = _instance(tab, instance_id)
    scene = tab.session.scene
    st = state(tab)
    try:
        if method == "hull":
            mask, label = assist.hull_proposal(scene, target), "hull completion"
        elif method == "mirror":
            mask, axis = assist.mirror_proposal(scene, target)
            label = f"mirror completion (axis {axis.angle:g} deg)"
        else:
            completer = _completer(tab)
            if box is None:
                box = st.box
            if box is None:
                x, y, w, hh = scene.get(target).bbox()
                box = [x, y, x + w - 1, y + hh - 1]
            mask = assist.model_proposal(completer, h.current_image(tab), scene, target, list(box))
            label = "model completion"
    except ValueError as err:
        raise h.UserError(str(err)) from None
    _set(st, mask, "amodal", label, target)
    return proposal_summary(tab)


def _completer(tab: h.Tab) -> assist.BoxCompleter:
    model = h.model_for(tab)
    predictor = getattr(model, "predictor", None)
    if predictor is None or not hasattr(predictor, "model"):
        raise h.UserError("no model is loaded: start the app with --checkpoint CKPT for the model's completion")
    key = str(tab.checkpoint)
    if key not in _COMPLETERS:
        try:
            _COMPLETERS[key] = assist.BoxCompleter(predictor)
        except ValueError as err:
            raise h.UserError(str(err)) from None
    return _COMPLETERS[key]


# ----- accepting -------------------------------------------------------------------------------


def accept(tab: h.Tab, as_: str | None = None, name: str = "object", category: float | None = None) -> dict[str, Any]:
    """Apply the pending proposal as one undoable edit: a visible proposal as the selected instance's
    visible part (``visible``) or as a new instance (``new``); an amodal one as its instance's amodal mask.
    Returns the scene summary."""
    st = state(tab)
    if st.proposal is None:
        raise h.UserError("there is no proposal to accept: click on the assist image or ask for a completion first")
    as_ = as_ or ("amodal" if st.kind == "amodal" else "visible" if tab.selected is not None else "new")
    if as_ not in ACCEPT_AS:
        raise h.UserError(f"accept as one of {', '.join(ACCEPT_AS)}, got {as_!r}")
    if (as_ == "amodal") != (st.kind == "amodal"):
        raise h.UserError(
            f"the proposal is {'an amodal mask' if st.kind == 'amodal' else 'a visible part'}: "
            f"it cannot be accepted as {as_!r}"
        )
    mask, label = st.proposal, st.label
    # Through the session's `apply`: one undoable, autosaved edit, as every other edit of the page.
    if as_ == "amodal":
        h._edit(tab, "set_amodal", st.instance, mask)
    elif as_ == "visible":
        target = h._editable_selection(tab)
        h._edit(tab, "apply", f"{label}: visible part of {target}", assist.set_visible_part, target, mask)
    else:
        cat = None if category is None or (isinstance(category, float) and np.isnan(category)) else int(category)
        new_id = h._edit(
            tab, "apply", f"{label}: new {name!r}", assist.add_visible_instance, mask, str(name or "object"), cat
        )
        tab.selected, tab.selected_in = new_id, "annotation"
    clear(tab)
    return h.scene_summary(tab)


# ----- the canvas ------------------------------------------------------------------------------

PROPOSAL_COLOR = np.array((0, 220, 255))
OCCLUDER_COLOR = np.array((255, 170, 0))


def canvas(tab: h.Tab, tool: str = "grabcut") -> np.ndarray:
    """The assist image: the photograph, enlarged as the main view is, with the proposal tinted, the
    objects in front of the selected instance hatched for the hidden-part tools, the box and the clicks."""
    image = np.array(h.current_image(tab))
    st = state(tab)
    scene = tab.session.scene
    if tool.startswith("hidden") and tab.selected is not None and tab.selected_in == "annotation":
        occ = assist.occluders(scene, tab.selected)
        stripes = (np.add.outer(np.arange(scene.height), np.arange(scene.width)) // 3) % 3 == 0
        image[occ & stripes] = (0.4 * image[occ & stripes] + 0.6 * OCCLUDER_COLOR).astype(np.uint8)
    if st.proposal is not None:
        image[st.proposal] = (0.45 * image[st.proposal] + 0.55 * PROPOSAL_COLOR).astype(np.uint8)
    scale = h.display_scale(scene.shape)
    out = np.ascontiguousarray(h.enlarge(image, scale))
    if st.proposal is not None:
        contours, _ = cv2.findContours(
            h.enlarge(st.proposal.astype(np.uint8), scale), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE
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


def click(tab: h.Tab, x: int, y: int, tool: str, does: str, radius: float = DEFAULT_RADIUS) -> None:
    """A click on the assist canvas at image pixel (x, y): a box corner, or a positive / negative click of
    the chosen tool (GrabCut reruns, a superpixel is added or removed, the hidden-part brush dabs, the
    polygon gets a vertex)."""
    if tool not in TOOLS:
        raise h.UserError(f"tool must be one of {', '.join(TOOLS)}, got {tool!r}")
    if does not in CLICKS:
        raise h.UserError(f"a click is one of {', '.join(CLICKS)}, got {does!r}")
    st = state(tab)
    p = _point(tab.session.scene.shape, (x, y), "click")
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
            raise h.UserError("draw a box around the object first: 'box corner' clicks at two opposite corners")
        pos, neg = list(st.positive), list(st.negative)
        (pos if positive else neg).append(p)
        run_grabcut(tab, st.box, pos, neg)
    elif tool == "superpixel":
        run_superpixels(tab, [p] if positive else [], [] if positive else [p])
    elif tool == "hidden_brush":
        hidden_brush(tab, [p], radius, "add" if positive else "remove")
    else:
        st.polygon.append(p)


def close_polygon(tab: h.Tab, mode: str = "add") -> None:
    """Fill the polygon clicked on the canvas, clipped to the objects in front of the selected instance."""
    st = state(tab)
    points, st.polygon = list(st.polygon), []
    hidden_polygon(tab, points, mode)
