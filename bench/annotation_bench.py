"""Clicks to annotate an object, by assist, with the standard simulated annotator (NoC@85 / NoC@90).

    .venv/bin/python bench/annotation_bench.py --data ANN.json --images DIR --json OUT.json \
        [--checkpoint CKPT | --no-model] [--brush-radius 4 8 16] [--max-objects N] [--api [--url URL]]

Any annotation file semlayer reads (COCOA, COCOA-cls, D2SA, KINS). For every object the simulated annotator
(`semlayer.assist.simulated_click`: first click at the object's interior point farthest from its boundary,
each next one at the centre of the largest false-positive or false-negative region, at most 20 clicks)
annotates

* its **visible** mask from nothing, with: ``brush`` (the baseline: a round brush of a fixed radius, one
  stamp per click, adding on a positive click and erasing on a negative one), ``grabcut`` (a box around the
  object, counted as 2 clicks, then positive / negative clicks as GrabCut's hard labels), ``superpixel``
  (each click adds or removes the SLIC superpixel under it);
* its **amodal** mask starting from its visible mask (objects with a hidden part only), with: ``brush`` (the
  same plain brush), ``clipped_brush`` (the brush clipped to the objects in front), ``auto_brush`` (clipped,
  each dab sized by its click: `semlayer.assist.auto_radius`), and each completion proposal then clipped
  clicks of the fixed brush (``hull``, ``mirror``, ``model``) or of the auto-sized one (``hull+auto``, ...):
  asking for ``hull`` or ``mirror`` counts as 1 click, ``model`` (the checkpoint's RoI heads on a box around
  the whole object) as 2.

NoC@t: clicks until IoU >= t, 20 when never reached; seconds: computing time per object (median). Every method
that uses a brush runs at each ``--brush-radius`` and is reported at its best one (lowest NoC@85 + NoC@90),
the baseline included, so no method wins by a radius that suits it. Writes
``{"METHOD": {"visible": {"noc85", "noc90", "seconds", "objects", "radius"}, "amodal": {...}}}`` (a task a
method does not do is absent) and prints the table with each method's ratio to ``brush``.

``--api``: every assisted method except ``model`` goes through the app's script API (gradio_client: the
``/open_image``, ``/assist_*`` endpoints the page's assists use), on an app started here on the same files
(or the one at ``--url``, serving the same dataset unedited); ``brush`` (the page's plain brush is its image
editor, not an endpoint) stays the library's. There an amodal start is the visible part the app makes, the
amodal mask less the objects in front (the same as the library's unless the object also has an external
occlusion mask); seconds include the HTTP round trips.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semlayer import assist, formats  # noqa: E402
from semlayer.boxes import box_xywh, mask_box  # noqa: E402
from semlayer.errors import SemlayerError  # noqa: E402
from semlayer.images import read_image  # noqa: E402
from semlayer.io_utils import atomic_write_json  # noqa: E402
from semlayer.scene import AmodalScene  # noqa: E402

MAX_CLICKS = 20
THRESHOLDS = (0.85, 0.90)
# Visible methods whose clicks are brush stamps (GrabCut's clicks are hard labels, superpixels whole pieces).
BRUSHED = ("brush",)
# Amodal methods whose clicks do not depend on the brush radius.
UNSIZED = ("auto_brush", "hull+auto", "mirror+auto", "model+auto")

# A method: (start mask, clicks it cost, how one click changes the mask) for one object.
Step = Callable[[np.ndarray, assist.Click], np.ndarray]


def noc(target: np.ndarray, start: np.ndarray, cost: int, step: Step) -> tuple[int, int]:
    """(NoC@85, NoC@90) of one object: clicks (``cost`` already spent on ``start``) until each IoU."""
    reached = {t: None for t in THRESHOLDS}
    mask, clicks = start, cost
    while True:
        score = assist.iou(mask, target)
        for t in THRESHOLDS:
            if reached[t] is None and score >= t:
                reached[t] = clicks
        if reached[THRESHOLDS[-1]] is not None or clicks >= MAX_CLICKS:
            break
        click = assist.simulated_click(target, mask)
        if click is None:
            break
        mask = step(mask, click)
        clicks += 1
    return tuple(MAX_CLICKS if v is None or v > MAX_CLICKS else v for v in (reached[t] for t in THRESHOLDS))


def brush(radius: float, clip: np.ndarray | None = None) -> Step:
    """A round brush stamp per click, clipped to ``clip`` (the occluders) when given."""

    def step(mask: np.ndarray, click: assist.Click) -> np.ndarray:
        stamp = assist.disk(mask.shape, click.x, click.y, radius)
        if clip is not None:
            stamp &= clip
        return mask | stamp if click.positive else mask & ~stamp

    return step


def auto_brush(clip: np.ndarray, keep: np.ndarray) -> Step:
    """The hidden-part brush sized by each click (`semlayer.assist.auto_radius`), clipped to ``clip``."""

    def step(mask: np.ndarray, click: assist.Click) -> np.ndarray:
        radius = assist.auto_radius(mask, click.x, click.y, click.positive, keep)
        stamp = assist.disk(mask.shape, click.x, click.y, radius) & clip
        return mask | stamp if click.positive else mask & ~stamp

    return step


def visible_methods(image: np.ndarray, target: np.ndarray, radius: float, sp_cache: assist.SuperpixelCache):
    """(start, cost, step) of each visible-mask method for one object."""
    empty = np.zeros(target.shape, bool)
    x, y, w, h = (int(v) for v in box_xywh(mask_box(target)))
    box = [x, y, x + w - 1, y + h - 1]
    clicks: dict[bool, list[tuple[int, int]]] = {True: [], False: []}

    def grabcut_step(mask: np.ndarray, click: assist.Click) -> np.ndarray:
        clicks[click.positive].append((click.x, click.y))
        return assist.grabcut(
            image, box, assist.clicks_mask(target.shape, clicks[True]), assist.clicks_mask(target.shape, clicks[False])
        )

    labels = sp_cache.labels(image)

    def superpixel_step(mask: np.ndarray, click: assist.Click) -> np.ndarray:
        piece = labels == labels[click.y, click.x]
        return mask | piece if click.positive else mask & ~piece

    return {
        "brush": lambda: (empty, 0, brush(radius)),
        "grabcut": lambda: (assist.grabcut(image, box), 2, grabcut_step),
        "superpixel": lambda: (empty, 0, superpixel_step),
    }


def amodal_methods(
    image: np.ndarray,
    scene: AmodalScene,
    instance_id: int,
    target: np.ndarray,
    radius: float,
    completer: assist.BoxCompleter | None,
):
    """(start, cost, step) of each amodal method for one object; ``scene`` has its amodal mask set to its
    visible part."""
    visible = scene.get(instance_id).amodal
    clip = assist.occluders(scene, instance_id)
    clipped, auto = brush(radius, clip), auto_brush(clip, visible)

    def mirror() -> np.ndarray:
        try:
            return assist.mirror_proposal(scene, instance_id)[0]
        except ValueError:  # no axis reaches under the occluders: the annotator goes on from the visible part
            return visible

    def model() -> np.ndarray:
        x, y, w, h = (int(v) for v in box_xywh(mask_box(target)))
        return assist.model_proposal(completer, image, scene, instance_id, [x, y, x + w - 1, y + h - 1])

    proposals = {"hull": (lambda: assist.hull_proposal(scene, instance_id), 1), "mirror": (mirror, 1)}
    if completer is not None:
        proposals["model"] = (model, 2)
    methods = {
        "brush": lambda: (visible, 0, brush(radius)),
        "clipped_brush": lambda: (visible, 0, clipped),
        "auto_brush": lambda: (visible, 0, auto),
    }
    for name, (propose, cost) in proposals.items():
        methods[name] = lambda propose=propose, cost=cost: (propose(), cost, clipped)
        methods[f"{name}+auto"] = lambda propose=propose, cost=cost: (propose(), cost, auto)
    return methods


class AppAnnotator:
    """The app's script API as the simulated annotator uses it: each call returns the pending proposal."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def call(self, api_name: str, *args: Any) -> Any:
        return self.client.predict(*args, api_name=api_name)

    def proposal(self, api_name: str, *args: Any) -> np.ndarray:
        from semlayer.formats.masks import decode_rle

        return decode_rle(self.call(api_name, *args)["mask"])


@contextlib.contextmanager
def app_annotator(args: argparse.Namespace) -> Iterator[AppAnnotator]:
    """The app at ``--url``, else one started here on a free port with a scratch workspace."""
    from gradio_client import Client

    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    if args.url:
        yield AppAnnotator(Client(args.url, auth=auth, verbose=False))
        return
    from app.tab import AppConfig
    from app.main import launch

    with tempfile.TemporaryDirectory() as workspace, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        cfg = AppConfig(workspace=Path(workspace), data=Path(args.data), images=Path(args.images))
        demo, url = launch(cfg, port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield AppAnnotator(Client(url, verbose=False))
        finally:
            demo.close()


def api_visible_methods(api: AppAnnotator, target: np.ndarray):
    """`visible_methods` through the app: GrabCut and the superpixel brush."""
    x, y, w, h = (int(v) for v in box_xywh(mask_box(target)))
    box = [x, y, x + w - 1, y + h - 1]
    clicks: dict[bool, list[list[int]]] = {True: [], False: []}

    def grabcut_step(mask: np.ndarray, click: assist.Click) -> np.ndarray:
        clicks[click.positive].append([int(click.x), int(click.y)])
        return api.proposal("/assist_grabcut", box, clicks[True], clicks[False])

    def superpixel_start() -> np.ndarray:
        api.call("/assist_clear")
        return np.zeros(target.shape, bool)

    def superpixel_step(mask: np.ndarray, click: assist.Click) -> np.ndarray:
        p = [[int(click.x), int(click.y)]]
        return api.proposal("/assist_superpixels", p if click.positive else [], [] if click.positive else p)

    return {
        "grabcut": lambda: (api.proposal("/assist_grabcut", box, [], []), 2, grabcut_step),
        "superpixel": lambda: (superpixel_start(), 0, superpixel_step),
    }


def api_amodal_methods(api: AppAnnotator, shape: tuple[int, int], instance_id: int, radius: float):
    """`amodal_methods` (but the plain brush and the model) through the app: hidden-part brush, completions."""
    H, W = shape

    def visible() -> np.ndarray:
        # The whole image removed, clipped to the objects in front: the visible part, as a pending proposal.
        api.call("/assist_clear")
        return api.proposal(
            "/assist_hidden_polygon", instance_id, [[0, 0], [W - 1, 0], [W - 1, H - 1], [0, H - 1]], "remove"
        )

    def dab(size: float) -> Step:
        def step(mask: np.ndarray, click: assist.Click) -> np.ndarray:
            return api.proposal(
                "/assist_hidden_brush",
                instance_id,
                [[int(click.x), int(click.y)]],
                size,
                "add" if click.positive else "remove",
            )

        return step

    def propose(method: str) -> np.ndarray:
        from gradio_client.exceptions import AppError

        api.call("/assist_clear")
        try:
            return api.proposal("/assist_complete", instance_id, method, None)
        except AppError as err:  # as the library run: no symmetry axis, go on from the visible part
            if method != "mirror" or "symmetry axis" not in str(err):
                raise
            return visible()

    methods = {"clipped_brush": lambda: (visible(), 0, dab(radius)), "auto_brush": lambda: (visible(), 0, dab(0))}
    for name in ("hull", "mirror"):
        methods[name] = lambda name=name: (propose(name), 1, dab(radius))
        methods[f"{name}+auto"] = lambda name=name: (propose(name), 1, dab(0))
    return methods


def run(args: argparse.Namespace) -> dict:
    if not args.api:
        return _run(args, None)
    if args.superpixel_area != assist.SUPERPIXEL_AREA:
        raise SemlayerError(
            f"--api: the app's superpixels are of {assist.SUPERPIXEL_AREA} pixels, "
            f"not --superpixel-area {args.superpixel_area}"
        )
    with app_annotator(args) as api:
        return _run(args, api)


def _run(args: argparse.Namespace, api: AppAnnotator | None) -> dict:
    annset = formats.load(args.data, compact=True)
    completer = None
    if not args.no_model and api is None:
        from semlayer.predict import Predictor

        completer = assist.BoxCompleter(Predictor(args.checkpoint, device="cpu"))
    sp_cache = assist.SuperpixelCache(area=args.superpixel_area)
    results: dict[tuple[str, str, float], list[tuple[int, int, float]]] = {}
    objects = 0
    for scene in annset.scenes:
        if args.max_objects and objects >= args.max_objects:
            break
        image = read_image(Path(args.images) / scene.file_name, expected_hw=scene.shape)
        if api is not None:
            api.call("/open_image", scene.image_id, None)
        visible_masks = scene.visible_masks()
        for inst, visible in zip(scene.instances, visible_masks):
            if args.max_objects and objects >= args.max_objects:
                break
            if not visible.any():
                continue
            objects += 1
            for radius in args.brush_radius:
                methods = visible_methods(image, visible, radius, sp_cache)
                if api is not None:
                    methods = {"brush": methods["brush"], **api_visible_methods(api, visible)}
                for name, make in methods.items():
                    if name not in BRUSHED and radius != args.brush_radius[0]:
                        continue
                    t = time.perf_counter()
                    start, cost, step = make()
                    n85, n90 = noc(visible, start, cost, step)
                    results.setdefault((name, "visible", radius), []).append((n85, n90, time.perf_counter() - t))
            if not (inst.amodal & ~visible).any():
                continue
            work = scene.copy()
            work.get(inst.id).set_amodal(visible)
            work.get(inst.id).external = None
            for radius in args.brush_radius:
                methods = amodal_methods(image, work, inst.id, inst.amodal, radius, completer)
                if api is not None:
                    methods = {"brush": methods["brush"], **api_amodal_methods(api, scene.shape, inst.id, radius)}
                for name, make in methods.items():
                    if name in UNSIZED and radius != args.brush_radius[0]:
                        continue
                    t = time.perf_counter()
                    start, cost, step = make()
                    n85, n90 = noc(inst.amodal, start, cost, step)
                    results.setdefault((name, "amodal", radius), []).append((n85, n90, time.perf_counter() - t))
    out: dict[str, dict] = {}
    for (name, task, radius), rows in results.items():
        row = {
            "noc85": round(float(np.mean([r[0] for r in rows])), 3),
            "noc90": round(float(np.mean([r[1] for r in rows])), 3),
            "seconds": round(statistics.median(r[2] for r in rows), 4),
            "objects": len(rows),
            "radius": radius if name in BRUSHED or (task == "amodal" and name not in UNSIZED) else None,
        }
        best = out.get(name, {}).get(task)
        if best is None or row["noc85"] + row["noc90"] < best["noc85"] + best["noc90"]:
            out.setdefault(name, {})[task] = row
    return out


def table(out: dict) -> str:
    lines = [
        "| method | task | objects | brush radius | NoC@85 | NoC@90 | NoC@85 / brush | NoC@90 / brush | "
        "seconds per object (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task in ("visible", "amodal"):
        base = out.get("brush", {}).get(task)
        for name, tasks in out.items():
            r = tasks.get(task)
            if r is None:
                continue
            ratio = (
                ["—", "—"] if not base else [f"{r[k] / base[k]:.2f}" if base[k] else "—" for k in ("noc85", "noc90")]
            )
            radius = "—" if r["radius"] is None else f"{r['radius']:g}"
            lines.append(
                f"| {name} | {task} | {r['objects']} | {radius} | {r['noc85']:.2f} | {r['noc90']:.2f} | {ratio[0]} | "
                f"{ratio[1]} | {r['seconds']:.4f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="annotation file (COCOA, COCOA-cls, D2SA, KINS)")
    p.add_argument("--images", required=True, help="its image folder")
    p.add_argument("--json", required=True, help="where to write the results")
    p.add_argument("--checkpoint", default=None, help="model for the 'model' proposal (default: the shipped one)")
    p.add_argument("--no-model", action="store_true", help="leave the 'model' proposal out")
    p.add_argument(
        "--brush-radius",
        type=float,
        nargs="+",
        default=[4.0, 8.0, 16.0],
        help="brush radii to try, pixels (default 4 8 16); each method is reported at its best",
    )
    p.add_argument(
        "--superpixel-area",
        type=int,
        default=assist.SUPERPIXEL_AREA,
        help=f"pixels per superpixel (default {assist.SUPERPIXEL_AREA})",
    )
    p.add_argument("--max-objects", type=int, default=0, help="stop after this many objects (0: all)")
    p.add_argument(
        "--api",
        action="store_true",
        help="the assists through the app's script API (gradio_client), model proposal left out",
    )
    p.add_argument("--url", default=None, help="with --api: the running app serving --data (default: start one)")
    p.add_argument("--auth", default=None, help="with --url: USER:PASSWORD of the app's login")
    args = p.parse_args(argv)
    try:
        out = run(args)
    except SemlayerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    atomic_write_json(args.json, out)
    print(table(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
