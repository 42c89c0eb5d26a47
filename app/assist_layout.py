"""The assists' controls on the page and their script API endpoints (the work is in app.assists)."""

from __future__ import annotations

from typing import Any, Callable

import gradio as gr

from . import assists as a
from . import handlers as h
from . import render
from .tab import AppConfig, Picture, Tab, UserError


def controls(cfg: AppConfig) -> dict[str, Any]:
    """The assist panel (an accordion of the editing column); returns its components by name."""
    c: dict[str, Any] = {}
    with gr.Accordion("Assists: GrabCut, superpixels, hidden part", open=False, elem_id="assists"):
        gr.Markdown(
            "Click the image below: **GrabCut** (two box corners, then object / background clicks) or the "
            "**superpixel brush** propose a visible part; the **hidden-part brush** and **polygon** paint only "
            "where objects in front of the selected instance cover it (hatched), so its visible outline never "
            "moves; **completions** propose its hidden part. *Accept* makes the proposal one undoable edit."
        )
        c["canvas"] = gr.Image(
            type="filepath",
            format="png",
            interactive=False,
            elem_id="assist-image",
            label="assist image (proposal in cyan; click to add box corners and clicks)",
        )
        with gr.Row():
            c["tool"] = gr.Radio(
                [
                    ("GrabCut", "grabcut"),
                    ("superpixel brush", "superpixel"),
                    ("hidden-part brush", "hidden_brush"),
                    ("hidden-part polygon", "hidden_polygon"),
                ],
                value="grabcut",
                label="assist",
                elem_id="assist-tool",
            )
            c["does"] = gr.Radio(
                [("box corner", "box"), ("object / add (+)", "positive"), ("background / remove (−)", "negative")],
                value="box",
                label="a click is",
                elem_id="assist-click",
            )
        c["radius"] = gr.Slider(
            0, 64, value=0, step=1, label="hidden-part brush radius (pixels; 0: each dab sized by where you click)"
        )
        with gr.Row():
            c["hull"] = gr.Button("hull completion", size="sm")
            c["mirror"] = gr.Button("mirror completion", size="sm")
            c["model"] = gr.Button("model completion (box)", size="sm", visible=cfg.checkpoint is not None)
            c["close"] = gr.Button("fill polygon", size="sm")
        with gr.Row():
            c["fg_strokes"] = gr.Button("editor strokes: GrabCut object", size="sm")
            c["bg_strokes"] = gr.Button("editor strokes: GrabCut background", size="sm")
            c["sp_strokes"] = gr.Button("editor strokes: superpixels", size="sm")
            c["hidden_strokes"] = gr.Button("editor strokes: hidden part", size="sm")
        with gr.Row():
            c["accept"] = gr.Button("accept proposal", size="sm", variant="primary", elem_id="assist-accept")
            c["accept_new"] = gr.Button("accept as new instance", size="sm")
            c["clear"] = gr.Button("clear", size="sm")
            c["refresh"] = gr.Button("↻ current image", size="sm")
        c["status"] = gr.Markdown("", elem_id="assist-status")
    return c


def model_help(cfg: AppConfig) -> dict[str, Any]:
    """The model-help panel (with a model only): adopt predicted objects, and a box drawn on the main image
    for the model to propose the object in it; returns its components by name."""
    c: dict[str, Any] = {}
    with gr.Group(visible=cfg.checkpoint is not None, elem_id="model-help"):
        with gr.Row():
            c["adopt"] = gr.Button("adopt selected prediction", size="sm", elem_id="adopt")
            c["adopt_missing"] = gr.Button("adopt all missing", size="sm", elem_id="adopt-missing")
            c["boxes"] = gr.Checkbox(
                False, label="box on the image: the model proposes the object", elem_id="box-on-image"
            )
        with gr.Row():
            c["accept"] = gr.Button("accept object", size="sm", variant="primary", elem_id="object-accept")
            c["reject"] = gr.Button("reject", size="sm", elem_id="object-reject")
        c["status"] = gr.Markdown("", elem_id="help-status")
    return c


def help_status(tab: Tab) -> str:
    """What the model-help panel says: the pending object (name, rank, who it goes in front of and behind),
    or what to do next; and the last note (a guessed category)."""
    st = a.state(tab)
    obj = st.new_object
    if obj is not None:
        names = {inst.id: inst.name for inst in tab.session.scene.instances}

        def listed(ids: list[int]) -> str:
            return ", ".join(f"{names.get(i, '')} (#{i})" for i in ids)

        summary = obj.summary()
        text = (
            f"proposal: **{obj.name}** at depth rank **{obj.rank}** of {len(names) + 1} · "
            f"{summary['area']} px, {summary['visible_area']} visible"
        )
        if summary["in_front_of"]:
            text += f" · in front of {listed(summary['in_front_of'])}"
        if summary["behind"]:
            text += f" · behind {listed(summary['behind'])}"
        text += " · accept or reject it" + (f" · {obj.note}" if obj.note else "")
        return text
    if st.boxes_on_image:
        hint = (
            f"first corner at ({st.corner[0]}, {st.corner[1]}): click the opposite one"
            if st.corner is not None
            else "click two opposite corners of a box around an object on the image"
        )
    else:
        hint = "select an object of the prediction to adopt it, or draw a box on the image"
    return hint + (f" · {st.note}" if st.note else "")


def wire_help(c: dict[str, Any], event: Callable, wire_: Callable, r_view: Callable, r_all: Callable,
              everything: list) -> None:  # fmt: skip
    """Connect the model-help panel (its status is one of ``everything``: each drawn view updates it)."""
    wire_(c["boxes"].input, event(r_view, a.draw_boxes_on_image), [c["boxes"]], everything)
    wire_(c["adopt"].click, event(r_all, lambda tab: a.adopt(tab)), None, everything)
    wire_(c["adopt_missing"].click, event(r_all, a.adopt_missing), None, everything)
    wire_(c["accept"].click, event(r_all, lambda tab: a.accept(tab, "object")), None, everything)
    wire_(c["reject"].click, event(r_view, a.clear), None, everything)


def status(tab: Tab) -> str:
    st = a.state(tab)
    if st.proposal is None:
        hint = {
            "grabcut": "draw a box: two 'box corner' clicks",
            "superpixel": "click superpixels to add or remove",
            "hidden_brush": "select an occluded instance, then paint its hidden part",
            "hidden_polygon": "click vertices, then 'fill polygon'",
        }[st.tool]
        return f"no proposal · {hint}"
    what = f"amodal mask of #{st.instance}" if st.kind == "amodal" else "visible part"
    return f"proposal: **{what}** from {st.label} · {int(st.proposal.sum())} pixels · accept or correct it"


def wire(
    c: dict[str, Any],
    cfg: AppConfig,
    event: Callable,
    wire_: Callable,
    r_all: Callable,
    everything: list,
    editor: Any,
    name_tb: Any,
    cat_num: Any,
) -> None:
    """Connect the panel with the page's own `event` wrapper (tab lock, messages, conflicts)."""
    from .layout import png_file

    def r_canvas(tab: Tab) -> dict:
        st = a.state(tab)
        # Kept on the state: the page's PNG file is deleted with its picture (layout.png_file).
        st.picture = Picture(a.canvas(tab, st.tool), cfg.png_level)
        return {c["canvas"]: png_file(st.picture), c["status"]: status(tab)}

    def r_both(tab: Tab) -> dict:
        return {**r_all(tab), **r_canvas(tab)}

    mine = [c["canvas"], c["status"]]

    def on_click(tab: Tab, evt: gr.SelectData, does: str, radius: float) -> None:
        scale = render.display_scale(tab.session.scene.shape)
        a.click(tab, evt.index[0] // scale, evt.index[1] // scale, a.state(tab).tool, does, radius)

    def set_tool(tab: Tab, tool: str) -> None:
        a.state(tab).tool = tool

    def strokes(kind: str) -> Callable:
        def run(tab: Tab, value: Any) -> None:
            stroke = h.mask_from_editor(value, tab.session.scene.shape)
            st = a.state(tab)
            if kind == "superpixel":
                a.run_superpixels(tab, stroke=stroke)
            elif kind == "hidden":
                a.hidden_stroke(tab, stroke)
            else:
                if st.box is None:
                    raise UserError("draw a GrabCut box on the assist image first")
                fg = stroke if kind == "fg" else None
                bg = stroke if kind == "bg" else None
                a.run_grabcut(tab, st.box, st.positive, st.negative, fg, bg)

        return run

    wire_(c["canvas"].select, event(r_canvas, on_click, select=True), [c["does"], c["radius"]], mine)
    wire_(c["tool"].input, event(r_canvas, set_tool), [c["tool"]], mine)
    wire_(c["refresh"].click, event(r_canvas), None, mine)
    wire_(c["clear"].click, event(r_canvas, a.clear), None, mine)
    for name in a.COMPLETIONS:
        wire_(c[name].click, event(r_canvas, lambda tab, m=name: a.complete(tab, m)), None, mine)
    wire_(c["close"].click, event(r_canvas, a.close_polygon), None, mine)
    for button, kind in (
        ("fg_strokes", "fg"),
        ("bg_strokes", "bg"),
        ("sp_strokes", "superpixel"),
        ("hidden_strokes", "hidden"),
    ):
        wire_(c[button].click, event(r_canvas, strokes(kind)), [editor], mine)
    wire_(c["accept"].click, event(r_both, lambda tab: a.accept(tab)), None, [*everything, *mine])
    wire_(
        c["accept_new"].click,
        event(r_both, lambda tab, name, cat: a.accept(tab, "new", name, cat)),
        [name_tb, cat_num],
        [*everything, *mine],
    )


def api(tabs: Any, cfg: AppConfig, user_errors: Callable) -> None:
    """The assists for scripts: each returns the pending proposal (mask as COCO RLE) or, on accept, the
    scene summary. Each client has its own tab and proposal."""

    def assist_grabcut(
        box: list[float], positive: list[list[float]], negative: list[list[float]], request: gr.Request
    ) -> dict:
        """GrabCut from box [x0, y0, x1, y1] with positive / negative clicks [[x, y], ...]: a visible part."""
        with tabs.use(request) as tab:
            return a.run_grabcut(tab, box, positive, negative)

    def assist_superpixels(positive: list[list[float]], negative: list[list[float]], request: gr.Request) -> dict:
        """Superpixels under the positive clicks added to the pending visible proposal, under the negative removed."""
        with tabs.use(request) as tab:
            return a.run_superpixels(tab, positive, negative)

    def assist_hidden_brush(
        instance_id: int, points: list[list[float]], radius: float, mode: str, request: gr.Request
    ) -> dict:
        """A brush stroke through points, clipped to the objects in front of the instance ('add' or 'remove')."""
        with tabs.use(request) as tab:
            return a.hidden_brush(tab, points, radius, mode, instance_id)

    def assist_hidden_polygon(instance_id: int, points: list[list[float]], mode: str, request: gr.Request) -> dict:
        """A filled polygon clipped to the objects in front of the instance ('add' or 'remove')."""
        with tabs.use(request) as tab:
            return a.hidden_polygon(tab, points, mode, instance_id)

    def assist_complete(instance_id: int, method: str, box: list[float] | None, request: gr.Request) -> dict:
        """A completion proposal of the instance's amodal mask: 'hull', 'mirror' or 'model' (on box)."""
        with tabs.use(request) as tab:
            return a.complete(tab, method, instance_id, box or None)

    def assist_accept(accept_as: str, name: str, request: gr.Request) -> dict:
        """Apply the pending proposal as one undoable edit: 'visible' (the selected instance's visible part),
        'new' (a new instance named name), 'amodal' or 'object' (the proposed new object); returns the scene
        summary."""
        with tabs.use(request) as tab:
            return a.accept(tab, accept_as or None, name or "object")

    def adopt(instance_id: int | None, request: gr.Request) -> dict:
        """Adopt a predicted object (its id in the prediction; None: the one selected there) into the
        annotation as one undoable edit; returns the scene summary with 'added' and 'notes'."""
        with tabs.use(request) as tab:
            return a.adopt(tab, instance_id)

    def adopt_missing(request: gr.Request) -> dict:
        """Adopt every predicted object that matches no annotated object (one undoable edit)."""
        with tabs.use(request) as tab:
            return a.adopt_missing(tab)

    def assist_propose_object(box: list[float], request: gr.Request) -> dict:
        """The model's object in box [x0, y0, x1, y1]: a pending new object (amodal mask as RLE; 'object':
        name, category, depth rank); assist_accept with 'object' adds it."""
        with tabs.use(request) as tab:
            return a.propose_object(tab, box)

    def assist_clear(request: gr.Request) -> dict:
        """Drop the pending proposal and clicks."""
        with tabs.use(request) as tab:
            a.clear(tab)
            return a.proposal_summary(tab)

    def open_image(image_id: int | None, index: int | None, request: gr.Request) -> dict:
        """Make an image of the app's dataset the current one, by image id or by index (give one, the other
        None); returns its scene summary."""
        with tabs.use(request) as tab:
            return a.open_image(tab, image_id, index)

    def select_instance(instance_id: int, request: gr.Request) -> dict:
        """Select an instance of the scene being edited by its id (what 'visible' accepts apply to)."""
        with tabs.use(request) as tab:
            return h.select_instance(tab, instance_id, "annotation")

    for fn in (
        open_image,
        select_instance,
        assist_grabcut,
        assist_superpixels,
        assist_hidden_brush,
        assist_hidden_polygon,
        assist_complete,
        assist_accept,
        assist_clear,
        adopt,
        adopt_missing,
        assist_propose_object,
    ):
        gr.api(user_errors(fn, cfg), api_name=fn.__name__)
