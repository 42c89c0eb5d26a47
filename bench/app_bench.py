"""The app's interactive speed, each as a ratio to ONE model inference on the same image, same run.

    .venv/bin/python bench/app_bench.py [--checkpoint CKPT] [--image-id 3] [--repeats 7] [--threads 1]

Opens the demo dataset (assets/demo) the way the page does (`app.handlers` over an `EditSession` in a
temporary workspace, figures written as the PNG files the page gets) with the model of CKPT (default:
`semlayer.predict.DEFAULT_CHECKPOINT`), on one demo image, and times:

  inference     one model inference: `Predictor.set_image` + `Predictor.scene` (what the app runs once per image)
  click         select the instance under a pixel + the view (the selection outlined) and the inspector
                (text, panel, layer map, heat map), rendered and written as PNG: the first click on each
                instance of the image shown, once the page's background prefetch has drawn its figures
  click, no prefetch   the same before the prefetch drew anything: everything drawn in the click
  click again   clicks on instances inspected before
  prefetch (background)  drawing every instance's inspector figures after the image is shown
  view switch   visible -> occluded -> amodal -> ...: the view rendered and written
  reorder       the selected instance one step back or forward: the edit and its autosave (two files
                written and fsync'ed), then the masks by the painter's rule, the view, the inspector (its
                layers change) and the table, rendered and written; the level sets / G tabs are closed as
                on opening. Its two parts are listed below it: the autosave's fsyncs cost what the disk says
  open level sets / open G   the matplotlib panes, drawn when their tab is opened (for information)

Clicks and reorders run on the annotation (the scene one edits); when the prediction has instances, clicks
on it are timed too. Each row is a median over repeats (and over the instances for clicks). Targets:
click <= 0.1 and reorder <= 0.25 of an inference. Both sides run on ``--threads`` torch threads (default 1:
steadier on a shared machine, and the click path is single-threaded Python anyway).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app import handlers as h  # noqa: E402
from app import render as r  # noqa: E402
from app.layout import png_file  # noqa: E402
from app.model import Model, load_model  # noqa: E402
from semlayer.figures import DEMO_ANNOTATIONS, DEMO_IMAGES, README_IMAGE_ID  # noqa: E402
from semlayer.predict import DEFAULT_CHECKPOINT  # noqa: E402

TARGETS = {"click": 0.1, "reorder": 0.25}


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def write(values: dict) -> None:
    """What the page does with a render: every picture to its PNG file."""
    for value in values.values():
        if isinstance(value, h.Picture):
            png_file(value)


def inner_pixel(scene, instance_id: int) -> tuple[int, int]:
    """A visible pixel of the instance far from its edges (where a person clicks)."""
    import cv2

    vis = scene.visible(instance_id).astype(np.uint8)
    dist = cv2.distanceTransform(vis, cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def inference(model: Model, image: np.ndarray, score_thr: float) -> float:
    """The network on the image, then its scene: what the app's model cache runs once per image."""
    return timed(lambda: (model.predictor.set_image(np.array(image)), model.predictor.scene(score_thr=score_thr)))


def clicks(cfg: h.AppConfig, tab: h.Tab, which: str, fresh: str = "") -> list[float]:
    """One click per instance with a visible pixel: select, then the view and the inspector, written.
    ``fresh``: each click is the first on its instance of the image the page just showed, either after
    the page's background prefetch (``prefetched``) or before it drew anything (``cold``)."""
    scene = tab.scene_for(which)
    times = []
    for inst in scene.instances:
        if not scene.visible(inst.id).any():
            continue
        x, y = inner_pixel(scene, inst.id)
        tab.clear_selection()
        if fresh:  # what the page did before the click (not timed)
            tab.figures.clear()
            write(r.render(tab, ("view",)))
            thread = r.prefetch(tab) if fresh == "prefetched" else None
            if thread is not None:
                thread.join()

        def click() -> None:
            assert h.select_at(tab, x, y, which=which)["id"] == inst.id
            write(r.render(tab, ("view", "inspector")))

        times.append(timed(click))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="model (default: the shipped one)")
    parser.add_argument(
        "--image-id", type=int, default=README_IMAGE_ID, help="demo image to use (default: the README's)"
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        sys.exit(f"error: checkpoint {args.checkpoint} does not exist (pass --checkpoint CKPT)")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="app_bench_") as tmp:
        # The workspace and the figures' files (Gradio's cache folder) are thrown away afterwards.
        os.environ["GRADIO_TEMP_DIR"] = str(Path(tmp) / "gradio")
        run(args, Path(tmp) / "ws")


def run(args: argparse.Namespace, workspace: Path) -> None:
    """Time everything on the chosen demo image and print the table."""
    cfg = h.AppConfig(workspace=workspace, data=DEMO_ANNOTATIONS, images=DEMO_IMAGES, checkpoint=args.checkpoint)
    tab = h.new_tab(cfg)
    index = next((i for i in range(len(tab.session)) if tab.session.scene_at(i).image_id == args.image_id), None)
    if index is None:
        sys.exit(f"error: the demo data has no image {args.image_id}")
    h.go_to(tab, index)
    image = tab.current_image()
    model = load_model(args.checkpoint)
    scene = tab.session.scene
    predicted = tab.prediction()
    r.render(tab)  # warm up: first matplotlib and OpenCV calls, imports

    rows: dict[str, list[float]] = {}

    def add(name: str, values: list[float]) -> None:
        rows.setdefault(name, []).extend(values)

    views = [v for v in h.VIEWS if v != tab.view] + [tab.view]
    order = scene.order_ids()
    for _ in range(args.repeats):
        add("inference", [inference(model, image, cfg.score_thr)])
        tab.show = "annotation"
        add("click", clicks(cfg, tab, "annotation", fresh="prefetched"))
        add("click, no prefetch", clicks(cfg, tab, "annotation", fresh="cold"))
        clicks(cfg, tab, "annotation")  # every instance inspected once
        add("click again", clicks(cfg, tab, "annotation"))
        if len(predicted):
            tab.show = "prediction"
            add("click (prediction)", clicks(cfg, tab, "prediction", fresh="prefetched"))
            tab.show = "annotation"
        tab.figures.clear()
        write(r.render(tab, ("view",)))
        add("prefetch (background)", [timed(lambda: r.prefetch(tab).join())])
        for view in views:
            tab.view = view
            add("view switch", [timed(lambda: write(r.render(tab, ("view",))))])
        # Reorder the selected instance back and forth, so every repeat sees the same scene.
        h.select_instance(tab, order[0])
        for where in ("backward", "forward"):
            edit = timed(lambda: h.reorder(tab, where))
            show = timed(lambda: write(r.render(tab)))
            add("reorder", [edit + show])
            add("  edit + autosave", [edit])
            add("  masks, maps, views", [show])
        for pane in ("levels", "global"):
            tab.figures.clear()
            tab.pane = pane
            add(
                f"open {'level sets' if pane == 'levels' else 'G'}",
                [timed(lambda: write(r.render(tab, ("panes",))))],
            )
        tab.pane = "overlay"

    base = statistics.median(rows["inference"])
    print(
        f"app on demo image {args.image_id} ({scene.width}x{scene.height}, {len(scene)} annotated instances, "
        f"{len(predicted)} predicted at score >= {cfg.score_thr}); model {args.checkpoint}"
    )
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} repeats, medians")
    print(f"{'operation':<20} {'ms':>8} {'ratio':>7} {'target':>7}  n")
    for name, values in rows.items():
        ms = statistics.median(values) * 1000
        target = TARGETS.get(name)
        ratio = ms / (base * 1000)
        verdict = "" if target is None else f"<= {target:.2f}" + ("  ok" if ratio <= target else "  SLOW")
        print(f"{name:<20} {ms:8.1f} {ratio:7.3f} {verdict:>7}  {len(values)}")


if __name__ == "__main__":
    main()
