"""The layer list: one row per object of the shown scene, front first, each in its own colour with its depth
rank, name and id; per row show / hide, solo and lock; a row dragged to another place reorders the depth.

Hide, solo and lock are view state of the tab (`Tab.layers`, kept in the workspace's view.json), not part of
the annotation. Locks are checked where every edit of one object is (`Tab.editable`). No Gradio here: the
page (app.layout) sends each row action to `act` and shows `list_html`.
"""

from __future__ import annotations

import html
import json
from typing import Any

from semlayer import viz
from semlayer.scene import AmodalScene

from . import handlers as h
from .tab import LayerState, Source, Tab, UserError

ACTIONS = ("select", "hide", "solo", "lock", "order")


def _listed(tab: Tab) -> tuple[Source, AmodalScene, LayerState]:
    which = tab.listed
    return which, tab.scene_for(which), tab.layer_state(which)


def _instance(scene: AmodalScene, instance_id: Any, which: Source) -> int:
    try:
        return scene.get(int(instance_id)).id
    except (KeyError, TypeError, ValueError):
        raise UserError(f"this {which} has no instance {instance_id!r}") from None


def toggle_hidden(tab: Tab, instance_id: int) -> bool:
    """Hide the object in the view, or show it again; returns whether it is hidden now."""
    which, scene, state = _listed(tab)
    target = _instance(scene, instance_id, which)
    state.hidden ^= {target}
    h.save_view_settings(tab)
    return target in state.hidden


def toggle_solo(tab: Tab, instance_id: int) -> bool:
    """Draw only this object (solo), or all the shown ones again; returns whether it is solo now."""
    which, scene, state = _listed(tab)
    target = _instance(scene, instance_id, which)
    state.solo = None if state.solo == target else target
    h.save_view_settings(tab)
    return state.solo == target


def toggle_lock(tab: Tab, instance_id: int) -> bool:
    """Lock the annotation object against edits (masks, name, depth, deletion), or unlock it; returns whether
    it is locked now."""
    which, scene, state = _listed(tab)
    if which != Source.ANNOTATION:
        raise UserError("the prediction is not edited, so there is nothing to lock: show the annotation")
    target = _instance(scene, instance_id, which)
    state.locked ^= {target}
    h.save_view_settings(tab)
    return target in state.locked


def _moved(old: list[int], new: list[int]) -> list[int]:
    """The ids whose move alone turns ``old`` into ``new`` (two for neighbours swapped, none when more moved)."""
    return [i for i in old if [j for j in old if j != i] == [j for j in new if j != i]]


def reorder_to(tab: Tab, order: list[int], dragged: int | None = None) -> str | None:
    """Give the annotation the depth order ``order`` (ids, front first), as the layer list shows it after a
    drag: one edit, one undo step. One object moved: labelled "put A in front of B" / "put A behind B"; a
    locked one is not moved. Two neighbours swapped: either moved; the ``dragged`` one (the row the page
    dragged), else the unlocked one, else the first. Returns the edit's label, None when the order is the
    same."""
    which, scene, state = _listed(tab)
    if which != Source.ANNOTATION:
        raise UserError("the prediction is not edited: show the annotation to reorder it")
    if not isinstance(order, list) or not all(isinstance(i, int) for i in order):
        raise UserError(f"an order is a list of instance ids, got {order!r}")
    old = scene.order_ids()
    if sorted(order) != sorted(old):
        raise UserError("the layer list was out of date (the objects changed): drag again")
    if order == old:
        return None
    candidates = _moved(old, order)
    candidates.sort(key=lambda i: i != dragged)
    free = [i for i in candidates if i not in state.locked]
    if candidates and not free:
        tab.editable(candidates[0])  # says which one is locked
    if not candidates and state.locked & set(old):
        raise UserError("move one object at a time while objects are locked")
    label = "reorder"
    if free:
        moved = free[0]
        at = order.index(moved)
        forward = at < old.index(moved)
        label = f"put {moved} in front of {order[at + 1]}" if forward else f"put {moved} behind {order[at - 1]}"
    with h.editing(tab) as session:
        session.set_order(order, label)
    return label


def act(tab: Tab, action: str, instance_id: Any = None, order: Any = None) -> None:
    """One action of the layer list: ``select`` a row's object, ``hide``, ``solo`` or ``lock`` it, or set the
    ``order`` (a JSON list of ids, front first, as the list shows it after a drag)."""
    if action not in ACTIONS:
        raise UserError(f"a layer action is one of {', '.join(ACTIONS)}, got {action!r}")
    if action == "order":
        try:
            ids = json.loads(order) if isinstance(order, str) else order
        except ValueError:
            raise UserError("the new order could not be read: drag again") from None
        reorder_to(tab, ids, instance_id if isinstance(instance_id, int) else None)
    elif action == "select":
        h.select_instance(tab, _instance(tab.scene_for(tab.listed), instance_id, tab.listed), tab.listed)
    else:
        {"hide": toggle_hidden, "solo": toggle_solo, "lock": toggle_lock}[action](tab, instance_id)


def rows(tab: Tab) -> list[dict[str, Any]]:
    """The list's rows, front first: ``id``, ``rank``, ``name``, ``color`` (CSS), ``hidden`` (not drawn, by
    hide or by another's solo), ``solo``, ``locked``, ``selected``."""
    if not len(tab.session):
        return []
    which, scene, state = _listed(tab)
    shown = state.shown(scene.order_ids())
    selected = tab.selected if tab.selected_in == which else None
    return [
        {
            "id": inst.id,
            "rank": inst.rank,
            "name": inst.name,
            "color": viz.instance_hex(inst.id),
            "hidden": inst.id not in shown,
            "solo": state.solo == inst.id,
            "locked": inst.id in state.locked,
            "selected": inst.id == selected,
        }
        for inst in (scene.instances[i] for i in scene.front_to_back())
    ]


def _icon(body: str) -> str:
    return (
        '<svg width="15" height="15" viewBox="0 0 16 16" fill="none" stroke="currentColor" stroke-width="1.6" '
        f'stroke-linecap="round" aria-hidden="true">{body}</svg>'
    )


# Drawn inline (no icon font or emoji font needed): an eye, a crossed eye, a closed and an open lock.
_EYE = '<path d="M1 8s2.5-5 7-5 7 5 7 5-2.5 5-7 5-7-5-7-5z"/><circle cx="8" cy="8" r="2"/>'
ICONS = {
    "shown": _icon(_EYE),
    "hidden": _icon(_EYE + '<path d="M2 14L14 2"/>'),
    "locked": _icon('<rect x="3" y="7" width="10" height="7" rx="1"/><path d="M5 7V5a3 3 0 0 1 6 0v2"/>'),
    "unlocked": _icon('<rect x="3" y="7" width="10" height="7" rx="1"/><path d="M5 7V5a3 3 0 0 1 6 0"/>'),
}


def list_html(tab: Tab) -> str:
    """The layer list as HTML (names escaped: they come from data files). Rows of the annotation can be
    dragged; the page's script (`LAYERS_JS` in app.layout) sends each action back."""
    listed = rows(tab)
    if not listed:
        return '<div class="layers-empty">no objects in this image</div>'
    draggable = "true" if tab.listed == Source.ANNOTATION else "false"
    out = []
    for r in listed:
        classes = " ".join(c for c in ("layer-row", r["hidden"] and "hidden", r["selected"] and "selected") if c)
        text = viz.text_color_on(viz.instance_color(r["id"]))
        name = html.escape(r["name"] or "unnamed")
        out.append(
            f'<div class="{classes}" draggable="{draggable}" data-id="{r["id"]}" title="drag to change its depth">'
            f'<span class="layer-grip">⋮⋮</span>'
            f'<span class="layer-rank" style="background:{r["color"]};color:rgb{text}">{r["rank"]}</span>'
            f'<span class="layer-name">{name} <small>#{r["id"]}</small></span>'
            f'<button class="layer-btn" data-action="hide" aria-pressed="{str(r["hidden"]).lower()}" '
            f'title="show / hide">{ICONS["hidden" if r["hidden"] else "shown"]}</button>'
            f'<button class="layer-btn" data-action="solo" aria-pressed="{str(r["solo"]).lower()}" '
            f'title="show only this one">S</button>'
            f'<button class="layer-btn" data-action="lock" aria-pressed="{str(r["locked"]).lower()}" '
            f'title="lock against edits">{ICONS["locked" if r["locked"] else "unlocked"]}</button>'
            "</div>"
        )
    return f'<div class="layer-list" data-which="{tab.listed}">' + "".join(out) + "</div>"


# The page's side of the list (gr.HTML's js_on_load: `element` is the list's root, `trigger` sends an event
# whose data the server reads as gr.EventData). Listeners sit on the root, so they outlive each re-render.
# A row dropped on another's upper half goes in front of it, on its lower half behind it.
LAYERS_JS = """
let dragged = null;
const send = (data) => trigger("click", data);
const clear = () => element.querySelectorAll(".drop-before, .drop-after")
  .forEach((r) => r.classList.remove("drop-before", "drop-after"));
const below = (row, e) => { const r = row.getBoundingClientRect(); return e.clientY > r.top + r.height / 2; };
element.addEventListener("click", (e) => {
  const row = e.target.closest(".layer-row");
  if (!row) return;
  const button = e.target.closest(".layer-btn");
  send({action: button ? button.dataset.action : "select", id: Number(row.dataset.id)});
});
element.addEventListener("dragstart", (e) => {
  const row = e.target.closest(".layer-row");
  if (!row || row.getAttribute("draggable") !== "true") return;
  dragged = row;
  row.classList.add("dragging");
  e.dataTransfer.effectAllowed = "move";
  e.dataTransfer.setData("text/plain", row.dataset.id);
});
element.addEventListener("dragover", (e) => {
  const row = e.target.closest(".layer-row");
  if (!dragged || !row) return;
  e.preventDefault();
  clear();
  if (row !== dragged) row.classList.add(below(row, e) ? "drop-after" : "drop-before");
});
element.addEventListener("drop", (e) => {
  const row = e.target.closest(".layer-row");
  if (!dragged || !row) return;
  e.preventDefault();
  const moved = dragged;
  dragged = null;
  clear();
  moved.classList.remove("dragging");
  if (row === moved) return;
  row.parentNode.insertBefore(moved, below(row, e) ? row.nextSibling : row);
  const order = [...element.querySelectorAll(".layer-row")].map((r) => Number(r.dataset.id));
  send({action: "order", id: Number(moved.dataset.id), order: JSON.stringify(order)});
});
element.addEventListener("dragend", () => {
  if (dragged) dragged.classList.remove("dragging");
  dragged = null;
  clear();
});
"""

LAYERS_CSS = """
.layer-list { display: flex; flex-direction: column; gap: 2px; font-size: 13px; }
.layer-row { display: flex; align-items: center; gap: 6px; padding: 3px 4px; border-radius: 4px;
  border: 1px solid var(--border-color-primary); cursor: pointer; user-select: none; }
.layer-row.selected { outline: 2px solid var(--color-accent); }
.layer-row.hidden .layer-name, .layer-row.hidden .layer-rank { opacity: 0.4; }
.layer-row.dragging { opacity: 0.5; }
.layer-row.drop-before { border-top: 3px solid var(--color-accent); }
.layer-row.drop-after { border-bottom: 3px solid var(--color-accent); }
.layer-grip { cursor: grab; color: var(--body-text-color-subdued); }
.layer-rank { min-width: 22px; text-align: center; font-weight: bold; border-radius: 3px; padding: 0 3px; }
.layer-name { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.layer-btn { border: none; background: none; cursor: pointer; padding: 0 3px; font-size: 13px; opacity: 0.45; }
.layer-btn[aria-pressed="true"] { opacity: 1; font-weight: bold; }
.layer-btn[data-action="hide"] { opacity: 0.9; }
"""
