"""A real browser (Playwright + Debian's Chromium) drives the app: click to inspect, reorder, paint, export;
the demo as a new user sees it (its screenshot is docs/app_inspect.png); issue 6's whole story, from opening
a COCOA file to a fine-tune.

Regenerate the README's screenshot (with the shipped model, or SEMLAYER_APP_CHECKPOINT=CKPT):

    UPDATE_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_app_browser.py -k demo
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from app.render import display_scale
from app.tab import AppConfig
from app.main import ROOT, launch as serve
from app.model import Model, load_model, register_model
from semlayer import formats, synth
from semlayer.boxes import box_xywh, mask_box
from semlayer.figures import DEMO_ANNOTATIONS, DEMO_IMAGES
from semlayer.images import read_image
from semlayer.order import overlapping_pairs
from semlayer.predict import DEFAULT_CHECKPOINT
from tests.test_app_handlers import FakePredictor

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make browser)"),
]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]


def launch(cfg):
    """Start the app of ``cfg`` on a free port; returns the Blocks (close it) and the URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # As `python -m app` serves it: only the allowed paths, behind the file guard.
    return serve(cfg, port=port, prevent_thread_lock=True, quiet=True)


@pytest.fixture
def app(tmp_path):
    """A fresh app (and workspace) per test, so each test starts from the file's state."""
    root = tmp_path
    data = synth.write_dataset(root / "data", 2, seed=1, size=128, max_instances=4, min_instances=3, progress=False)
    cfg = AppConfig(workspace=root / "ws", data=data, images=root / "data" / "images")
    demo, url = launch(cfg)
    yield url, cfg, formats.load(data).scenes[0]
    demo.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def open_page(browser, url, viewport=(1500, 1100)):
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True)
    page = context.new_page()
    page.goto(url)
    page.locator("#main-image img").first.wait_for(timeout=30_000)
    return context, page


def wait_text(page, elem_id, text, timeout=20_000):
    """Wait until element #elem_id shows ``text``; on time-out fail saying what it and the page's messages
    show instead (a bare time-out says nothing about why)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator(f"#{elem_id}").get_by_text(text).wait_for(timeout=timeout)
    except PlaywrightTimeout:
        shown = page.locator(f"#{elem_id}").inner_text(timeout=2_000)
        messages = page.locator(".toast-body").all_inner_texts()
        pytest.fail(f"#{elem_id} did not show {text!r} within {timeout / 1000:g} s; it shows {shown!r}; "
                    f"the page's messages: {messages}")  # fmt: skip


def choose(page, label, option):
    """Pick ``option`` in the dropdown labelled ``label``."""
    page.get_by_label(label).click()
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_timeout(250)


@pytest.fixture
def page(browser, app):
    context, page = open_page(browser, app[0])
    yield page
    context.close()


def click_pixel(page, scene, x, y, elem_id="main-image"):
    """Click image pixel (x, y): the page shows the image enlarged and centred in its box."""
    img = page.locator(f"#{elem_id} img").first
    img.scroll_into_view_if_needed()
    natural_w, natural_h = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    box = img.bounding_box()
    r = min(box["width"] / natural_w, box["height"] / natural_h, 1)
    ox, oy = (box["width"] - natural_w * r) / 2, (box["height"] - natural_h * r) / 2
    s = display_scale(scene.shape) * r
    page.mouse.click(box["x"] + ox + (x + 0.5) * s, box["y"] + oy + (y + 0.5) * s)


def visible_pixel(scene, instance_id):
    """A pixel deep inside the instance's visible region (far from its edges)."""
    vis = scene.visible(instance_id).astype(np.uint8)
    dist = cv2.distanceTransform(vis, cv2.DIST_L2, 3)
    y, x = np.unravel_index(np.argmax(dist), dist.shape)
    return int(x), int(y)


def shown(page, elem_id):
    """Wait until the image of the component ``elem_id`` is loaded; returns its natural (width, height)."""
    img = page.locator(f"#{elem_id} img").first
    img.wait_for(timeout=20_000)
    page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=img.element_handle(), timeout=20_000)
    return tuple(img.evaluate("e => [e.naturalWidth, e.naturalHeight]"))


def test_click_inspects_the_instance(page, app, tmp_path):
    _, _, scene = app
    # Started without a model: annotation mode, and the page says so.
    wait_text(page, "model-status", "No model loaded")
    assert not page.locator("#show").is_visible()
    target = scene.get(scene.order_ids()[-1])  # the back-most instance: its visible part
    click_pixel(page, scene, *visible_pixel(scene, target.id))
    inspector = page.locator("#inspector")
    inspector.get_by_text(f"{target.name} (#{target.id})").wait_for(timeout=20_000)
    assert f"rank {target.rank} of {len(scene)}" in inspector.inner_text()
    # The visible/occluded panel and the layer map side by side, the heat map below.
    panel, layers = shown(page, "panel-image"), shown(page, "layers-image")
    assert panel[0] == layers[0] and shown(page, "heat-image")[0] > 0
    page.screenshot(path=str(tmp_path / "inspect.png"), full_page=True)


def test_a_table_row_selects_its_instance_and_leads_with_the_rank_the_image_shows(page, app):
    _, _, scene = app
    table = page.locator("#instance-table")
    table.get_by_text("annotation:").wait_for(timeout=20_000)
    headers = [t.strip() for t in table.locator("thead th").all_inner_texts() if t.strip()]
    assert headers[:3] == ["rank", "id", "name"]
    # The generator numbers instances front to back, so first move the front one backward: then row 1
    # (rank 1) holds id 2, and selecting by the wrong column would show the wrong instance.
    first, second = scene.order_ids()[:2]
    assert scene.get(first).rank == first == 1
    click_pixel(page, scene, *visible_pixel(scene, first))
    wait_text(page, "inspector", f"(#{first})")
    page.get_by_role("button", name="backward").click()
    wait_text(page, "status", f"last edit: move {first} backward")
    target = scene.get(second)
    # Its name cell (row 0 is the header row; Gradio's table is a grid of rows and gridcells).
    table.get_by_role("row").nth(1).get_by_role("gridcell").nth(2).click()
    inspector = page.locator("#inspector")
    # The heading line (the previous selection's "occluded by" line names the target too).
    inspector.get_by_text(f"{target.name} (#{target.id}) · annotation").wait_for(timeout=20_000)
    assert f"rank 1 of {len(scene)}" in inspector.inner_text()


def test_reorder_two_instances_and_export(page, app):
    _, cfg, scene = app
    first, second = scene.order_ids()[:2]
    page.get_by_role("button", name="backward").click()  # nothing selected yet: a message, the page stays
    page.get_by_text("select an instance first").first.wait_for(timeout=20_000)
    assert page.locator("#main-image img").first.is_visible() and page.get_by_text("Error", exact=True).count() == 0
    click_pixel(page, scene, *visible_pixel(scene, first))
    wait_text(page, "inspector", f"(#{first})")
    page.get_by_role("button", name="backward").click()
    wait_text(page, "status", f"last edit: move {first} backward")
    page.get_by_text("Export and fine-tune").click()
    with page.expect_download(timeout=30_000) as download:
        page.get_by_role("button", name="export COCOA JSON").click()
        page.locator('a[download$=".cocoa.json"]').first.click()
    exported = json.loads(Path(download.value.path()).read_text())
    wait_text(
        page, "export-status", "exported annotations.corrected.cocoa.json · every mask is exactly its COCOA polygon"
    )
    regions = exported["annotations"][0]["regions"]
    by_order = {r["order"]: r for r in regions}
    assert by_order[1]["name"] == scene.get(second).name and by_order[2]["name"] == scene.get(first).name
    assert formats.validate(exported) == []
    with page.expect_download(timeout=30_000) as download:
        page.get_by_role("button", name="export KINS JSON").click()
        page.locator('a[download$=".kins.json"]').first.click()
    kins = formats.from_dict(json.loads(Path(download.value.path()).read_text()))
    assert kins.format == "kins2020"

    def overlap_order(s):  # (front box, back box) of every overlapping pair: what KINS keeps of the order
        return sorted(
            (tuple(s.instances[f].bbox()), tuple(s.instances[b].bbox()))
            for f, b in overlapping_pairs(s.ranks(), [i.amodal for i in s.instances])
        )

    assert overlap_order(kins.scenes[0]) == overlap_order(formats.from_dict(exported).scenes[0])
    assert overlap_order(kins.scenes[0])  # the scene has overlaps, the reordered pair among them


def test_keyboard_shortcuts_do_what_their_buttons_do(page, app):
    """Issue 19: keys for the frequent actions, listed in a help panel, ignored while typing in a box."""
    _, _, scene = app
    page.get_by_text("Keyboard shortcuts").click()
    wait_text(page, "shortcuts-help", "Ctrl+Z")  # the accordion's content is mounted when it opens
    assert "next object" in page.locator("#shortcuts-help").inner_text()
    first, second = scene.order_ids()[:2]
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("n")  # the front-most object
    wait_text(page, "inspector", f"(#{first}) · annotation")
    page.keyboard.press("n")
    wait_text(page, "inspector", f"(#{second}) · annotation")
    page.keyboard.press("b")
    wait_text(page, "status", f"last edit: move {second} backward")
    page.keyboard.press("Shift+F")
    wait_text(page, "status", f"last edit: move {second} front")
    page.keyboard.press("Control+z")
    wait_text(page, "status", f"last edit: move {second} backward · 1 undo / 1 redo")
    page.keyboard.press("Control+Shift+Z")
    wait_text(page, "status", f"last edit: move {second} front · 2 undo / 0 redo")
    page.get_by_text("Edit the selected instance").click()
    name_box = page.get_by_label("name").first
    name = scene.get(second).name
    # A just-mounted accordion box can be reset to its value once: type only after it shows the name.
    page.wait_for_function("([e, v]) => e.value === v", arg=[name_box.element_handle(), name], timeout=20_000)
    name_box.click()
    name_box.press("End")
    name_box.press_sequentially("nnn")  # real key presses into a box: text, not shortcuts
    assert name_box.input_value() == name + "nnn"
    wait_text(page, "inspector", f"(#{second}) · annotation")  # "n" did not select the next object
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("ArrowRight")
    wait_text(page, "position", "image 2 of 2")
    page.keyboard.press("ArrowLeft")
    wait_text(page, "position", "image 1 of 2")


def editor_shows(page, scene, instance_id, timeout=30_000):
    """Wait until the mask editor names the instance; returns its canvas."""
    inst = scene.get(instance_id)
    wait_text(page, "mask-editor", f"{inst.name} (#{inst.id})", timeout)
    return page.locator("#mask-editor canvas").first


def paint(page, canvas, y):
    """One brush stroke across the editor's canvas at height fraction ``y``."""
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * y, steps=10)
    page.mouse.up()


def test_the_editor_follows_and_names_the_selection(page, app):
    """Issue 19, bug 1: the editor names the selected object, follows a new selection without a button, and
    strokes painted while #B is selected go to #B, whatever the editor showed before."""
    _, cfg, scene = app
    first, target = scene.order_ids()[:2]
    click_pixel(page, scene, *visible_pixel(scene, first))
    wait_text(page, "inspector", f"(#{first})")
    page.get_by_text("Edit the selected instance").click()
    editor_shows(page, scene, first)
    page.locator("#instance-table").get_by_role("row").nth(2).get_by_role("gridcell").nth(2).click()  # rank 2
    wait_text(page, "inspector", f"(#{target}) · annotation")
    canvas = editor_shows(page, scene, target)
    page.wait_for_timeout(1500)
    paint(page, canvas, 0.1)
    page.get_by_role("button", name="apply strokes to selected").click()
    wait_text(page, "status", f"last edit: edit mask of {target}")
    folder = next(cfg.workspace.glob("annotations-*"))
    saved = json.loads((folder / "scenes" / "00000.json").read_text())
    from semlayer.formats.masks import decode_rle

    masks = {int(k): decode_rle(v["amodal"]) for k, v in saved["state"]["instances"].items()}
    assert np.array_equal(masks[first], scene.get(first).amodal)  # untouched
    added = masks[target] & ~scene.get(target).amodal
    rows = np.flatnonzero(added.any(axis=1))
    assert rows.min() < scene.height * 0.2  # the stroke (drawn above the objects), on the target


def test_grabcut_assist_from_a_box_becomes_a_new_instance_and_the_hidden_brush_paints_under_the_front(
    page, app, tmp_path
):
    _, cfg, scene = app
    target = scene.get(scene.order_ids()[-1])  # the back-most: something hides part of it
    page.get_by_text("Assists: GrabCut, superpixels, hidden part").click()
    page.get_by_role("button", name="↻ current image").click()
    page.locator("#assist-image").scroll_into_view_if_needed()
    shown(page, "assist-image")
    wait_text(page, "assist-status", "no proposal")
    vx, vy, vw, vh = (int(v) for v in box_xywh(mask_box(scene.visible(target.id))))
    click_pixel(page, scene, max(vx - 2, 0), max(vy - 2, 0), "assist-image")
    page.wait_for_timeout(500)
    click_pixel(page, scene, min(vx + vw + 1, scene.width - 1), min(vy + vh + 1, scene.height - 1), "assist-image")
    wait_text(page, "assist-status", "visible part")
    page.screenshot(path=str(tmp_path / "assist.png"), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOT"):
        page.locator("#assists").screenshot(path=str(ROOT / "docs" / "app_assists.png"))
    page.get_by_role("button", name="accept as new instance").click()
    wait_text(page, "status", "last edit: GrabCut")
    # The hidden-part brush on the back object: select it (the new instance is over it now: click again to
    # reach it), then a dab that removes hidden pixels under the objects in front.
    click_pixel(page, scene, *visible_pixel(scene, target.id))
    wait_text(page, "inspector", f"(#{scene.next_instance_id()})")
    click_pixel(page, scene, *visible_pixel(scene, target.id))
    wait_text(page, "inspector", f"(#{target.id})")
    page.locator("#assist-tool").get_by_text("hidden-part brush", exact=True).click()
    page.locator("#assist-click").get_by_text("background / remove (−)").click()
    hidden = scene.occluded(target.id)
    if hidden.any():
        ys, xs = np.nonzero(hidden)
        click_pixel(page, scene, int(xs[len(xs) // 2]), int(ys[len(ys) // 2]), "assist-image")
        wait_text(page, "assist-status", f"amodal mask of #{target.id}")
        page.get_by_role("button", name="accept proposal").click()
        wait_text(page, "status", "last edit: edit mask of")


def demo_checkpoint():
    """The model the demo runs: $SEMLAYER_APP_CHECKPOINT, else the shipped one when present, else none."""
    given = os.environ.get("SEMLAYER_APP_CHECKPOINT")
    if given:
        return Path(given)
    return DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None


def most_occluded(scene, minimum=0.0):
    """The instance with the highest occlude rate (above ``minimum``) that another instance hides (not only
    external occlusion) and whose visible part is wide enough to click on (a pixel 3 px from its edges),
    or None."""

    def clickable(instance_id):
        return cv2.distanceTransform(scene.visible(instance_id).astype(np.uint8), cv2.DIST_L2, 3).max() >= 3

    rates = scene.occlude_rates()
    candidates = [
        i
        for i, inst in enumerate(scene.instances)
        if rates[i] > minimum and scene.occluders(inst.id) and clickable(inst.id)
    ]
    return scene.instances[max(candidates, key=lambda i: rates[i])] if candidates else None


# The demo image of the README's app screenshot: the shipped model finds its 3 objects and completes the capsule
# the other two hide almost entirely (the level-set figures use semlayer.figures.README_IMAGE_ID, a busier scene).
SCREENSHOT_IMAGE_ID = 4


def test_demo_opens_on_the_prediction_and_inspects_an_occluded_object(browser, tmp_path):
    """What `python -m app` shows a new user; with UPDATE_SCREENSHOT=1 its screenshot is docs/app_inspect.png."""
    checkpoint = demo_checkpoint()
    cfg = AppConfig(workspace=tmp_path / "ws", data=DEMO_ANNOTATIONS, images=DEMO_IMAGES, checkpoint=checkpoint,
                    examples=sorted(DEMO_IMAGES.glob("*.png"))[:8] if checkpoint else [])  # fmt: skip
    demo, url = launch(cfg)
    context, page = open_page(browser, url, viewport=(1400, 1120))
    try:
        notice = page.locator("#model-status")
        annotation = formats.load(DEMO_ANNOTATIONS).scenes_for_image(SCREENSHOT_IMAGE_ID)[0]
        index = [s.image_id for s in formats.load(DEMO_ANNOTATIONS).scenes].index(SCREENSHOT_IMAGE_ID)
        wait_text(page, "position", "image 1 of")
        for n in range(2, index + 2):
            page.get_by_role("button", name="next image").click()
            wait_text(page, "position", f"image {n} of")
        scene, target = annotation, most_occluded(annotation)
        if checkpoint is None:  # (also checked, model or not, by test_click_inspects_the_instance)
            notice.get_by_text("No model loaded").wait_for(timeout=20_000)
        else:
            notice.get_by_text(checkpoint.name).wait_for(timeout=20_000)
            assert page.locator("#show input[value=annotation]").is_checked()  # the demo opens on its annotation
            page.locator("#show").get_by_text("prediction").click()
            wait_text(page, "instance-table", "prediction:")
            image = read_image(DEMO_IMAGES / annotation.file_name)
            predicted = load_model(checkpoint).predict(image, annotation.image, cfg.score_thr)
            if most_occluded(predicted, minimum=0.05) is not None:
                scene, target = predicted, most_occluded(predicted, minimum=0.05)
            else:  # an early model may complete nothing: show how an annotated occluded object looks
                page.locator("#show").get_by_text("annotation").click()
                wait_text(page, "instance-table", "annotation:")
        click_pixel(page, scene, *visible_pixel(scene, target.id))
        inspector = page.locator("#inspector")
        inspector.get_by_text(f"{target.name} (#{target.id})").wait_for(timeout=20_000)
        hiders = ", ".join(f"{scene.get(i).name} (#{i})" for i in scene.occluders(target.id))
        assert hiders and f"occluded by: {hiders}" in inspector.inner_text()
        for elem_id in ("panel-image", "layers-image", "heat-image"):
            shown(page, elem_id)
        page.wait_for_timeout(500)  # let the last image paint
        shot = tmp_path / "app_inspect.png"
        page.screenshot(path=str(shot))
        if os.environ.get("UPDATE_SCREENSHOT"):
            shutil.copyfile(shot, ROOT / "docs" / "app_inspect.png")
    finally:
        context.close()
        demo.close()


def test_show_survives_a_reload_and_uploads_follow_one_another(browser, tmp_path):
    """Issue 19, bug 5: a reload keeps "show"; a second upload needs no clearing; "next" on the last image
    says so."""
    data = synth.write_dataset(tmp_path / "data", 1, seed=4, size=64, max_instances=2, progress=False)
    ckpt = tmp_path / "fake.pt"
    ckpt.write_bytes(b"fake")
    register_model(str(ckpt), Model(FakePredictor(), str(ckpt)))
    cfg = AppConfig(workspace=tmp_path / "ws", data=data, images=tmp_path / "data" / "images", checkpoint=ckpt)
    demo, url = launch(cfg)
    context, page = open_page(browser, url)
    try:
        assert page.locator("#show input[value=annotation]").is_checked()  # the file annotates this image
        page.locator("#show").get_by_text("prediction").click()
        wait_text(page, "instance-table", "prediction:")
        page.reload()
        page.locator("#main-image img").first.wait_for(timeout=30_000)
        wait_text(page, "instance-table", "prediction:")
        assert page.locator("#show input[value=prediction]").is_checked()
        photo = tmp_path / "photo.png"
        Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(photo)
        page.get_by_text("Load: upload, examples, dataset").click()
        page.locator("#upload input[type=file]").set_input_files(str(photo))
        wait_text(page, "position", "upload_00001.png")
        page.locator("#upload input[type=file]").set_input_files(str(photo), timeout=20_000)
        wait_text(page, "position", "image 2 of 2: upload_00002.png")
        page.get_by_role("button", name="next image").click()
        page.get_by_text("this is the last image (2 of 2)").first.wait_for(timeout=20_000)
        # The upload is a new editable scene holding the model's prediction (two instances, scored).
        assert page.locator("#show input[value=annotation]").is_checked()
        table = page.locator("#instance-table")
        table.get_by_text("annotation:").wait_for(timeout=20_000)
        rows = table.inner_text()
        assert "0.90" in rows and "0.70" in rows
    finally:
        context.close()
        demo.close()


def polygon_area(region, height, width):
    return int(mask_utils.area(mask_utils.frPyObjects([region["segmentation"]], height, width))[0])


@pytest.mark.slow
def test_a_cocoa_file_is_fixed_exported_validated_and_fine_tuned(browser, tmp_path):
    """Issue 6, done when: a user opens a COCOA file of their own, fixes a depth order and an amodal mask,
    exports COCOA that `validate` and pycocotools accept with the fix in it, and starts a fine-tune."""
    import torch

    from semlayer.config import load_config
    from semlayer.model import build_model
    from semlayer.model.checkpoint import save_checkpoint

    # Their own file; and a real (random) checkpoint, as train.py --init gets it.
    data = synth.write_dataset(tmp_path / "mine", 2, seed=7, size=128, max_instances=4, min_instances=3, progress=False)
    config = load_config(ROOT / "configs" / "tiny_synth.yaml")
    config["model"]["init"] = None
    torch.manual_seed(0)
    names = [str(i) for i in range(1, config["model"]["num_classes"] + 1)]
    ckpt = save_checkpoint(tmp_path / "model.pt", {"model": build_model(config).state_dict(), "config": config,
                                                  "class_names": names})  # fmt: skip
    cfg = AppConfig(workspace=tmp_path / "ws", data=DEMO_ANNOTATIONS, images=DEMO_IMAGES, checkpoint=ckpt,
                    train_config=ROOT / "configs" / "tiny_synth.yaml", finetune_iters=50,
                    data_root=tmp_path / "mine")  # fmt: skip
    demo, url = launch(cfg)
    context, page = open_page(browser, url)
    try:
        page.get_by_text("Load: upload, examples, dataset").click()
        # Datasets are chosen by name among the files under --data-root (security.md).
        choose(page, "annotation file (COCOA, COCO-style amodal, KINS)", "annotations.json")
        choose(page, "image folder", "images")
        page.get_by_role("button", name="Open dataset").click()
        scene = formats.load(data).scenes[0]
        wait_text(page, "position", f"image 1 of 2: {scene.file_name}", timeout=30_000)
        assert page.locator("#show input[value=annotation]").is_checked()  # a file opens on its annotation
        wait_text(page, "instance-table", "annotation:")

        # The depth order: the back-most instance goes in front of the front-most one it overlaps.
        back = scene.get(scene.order_ids()[-1])
        front = scene.get(next(i for i in scene.order_ids() if i in scene.occluders(back.id)))
        click_pixel(page, scene, *visible_pixel(scene, back.id))
        wait_text(page, "inspector", f"(#{back.id})")
        page.get_by_label("put the selected one in front of").click()
        page.get_by_role("option", name=f"{front.name} (#{front.id})").click()
        page.get_by_role("button", name="put in front").click()
        wait_text(page, "status", f"last edit: put {back.id} in front of {front.id}")

        # The amodal mask: a brush stroke across the middle of the image is added to the selected instance.
        page.get_by_text("Edit the selected instance").click()
        canvas = editor_shows(page, scene, back.id)
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.5, steps=12)
        page.mouse.up()
        page.get_by_role("button", name="apply strokes to selected").click()
        wait_text(page, "status", f"last edit: edit mask of {back.id}")

        # Export COCOA from the page.
        page.get_by_text("Export and fine-tune").click()
        with page.expect_download(timeout=30_000) as download:
            page.get_by_role("button", name="export COCOA JSON").click()
            page.locator('a[download$=".cocoa.json"]').first.click()
        exported = tmp_path / "exported.cocoa.json"
        shutil.copyfile(download.value.path(), exported)
        check = subprocess.run([sys.executable, "-m", "semlayer", "validate", str(exported)], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        obj = json.loads(exported.read_text())
        record = next(a for a in obj["annotations"] if a["image_id"] == scene.image_id)
        regions = {r["name"]: r for r in record["regions"]}
        assert len(regions) == len(scene)  # synthetic names are unique per image
        fixed, other = regions[back.name], regions[front.name]
        assert fixed["order"] < other["order"]  # the depth fix is in the file
        assert polygon_area(fixed, scene.height, scene.width) > back.area  # and the mask fix
        # pycocotools reads every region as COCOA's loaders do: visible + invisible = the amodal polygon.
        for region in record["regions"]:
            amodal = mask_utils.decode(mask_utils.frPyObjects([region["segmentation"]], scene.height, scene.width))[
                ..., 0
            ]
            if "visible_mask" in region:
                visible, hidden = (mask_utils.decode(region[k]) for k in ("visible_mask", "invisible_mask"))
                assert np.array_equal(visible | hidden, amodal) and not (visible & hidden).any()
        assert obj["annotations"][1] == json.loads(data.read_text())["annotations"][1]  # the other image as it was

        # Fine-tune on it from the page; cancelled once it runs (the full run has its own test).
        page.get_by_role("button", name="fine-tune on corrected data").click()
        page.get_by_text("running · step").wait_for(timeout=30_000)
        page.get_by_role("button", name="cancel fine-tune").click()
        page.get_by_text("cancelled · step").wait_for(timeout=30_000)
    finally:
        context.close()
        demo.close()


def test_a_large_photo_is_shown_reduced_and_a_click_selects_at_full_resolution(browser, tmp_path):
    """A 3300 x 2000 photo reaches the page reduced 3 times; a click on a displayed pixel selects the
    instance at the full-resolution pixel it stands for (SEMLAYER_SHOT=PATH keeps a screenshot)."""
    from semlayer.scene import AmodalScene, AnnotationSet, Instance

    BH, BW = 2000, 3300
    folder = tmp_path / "photo"
    folder.mkdir()
    yy, xx = np.mgrid[0:BH, 0:BW]
    photo = np.stack([(xx * 255 // BW), (yy * 255 // BH), np.full_like(xx, 140)], axis=2).astype(np.uint8)
    Image.fromarray(photo).save(folder / "photo.jpg", quality=90)
    masks = [np.zeros((BH, BW), bool) for _ in range(3)]
    masks[0][300:1500, 400:2000] = True  # wall, behind
    masks[1][900:1800, 1500:2900] = True  # table, in front of the wall
    masks[2][996:1005, 2397:2406] = True  # a 9 x 9 px speck on the table, in front: 3 x 3 display pixels
    scene = AmodalScene(
        {"id": 1, "file_name": "photo.jpg", "height": BH, "width": BW},
        [
            Instance(1, masks[0], rank=3, name="wall"),
            Instance(2, masks[1], rank=2, name="table"),
            Instance(3, masks[2], rank=1, name="speck"),
        ],
    )
    data = folder / "photo.json"
    formats.save(AnnotationSet([scene]), data, format="cocoa")
    demo, url = launch(AppConfig(workspace=tmp_path / "ws", data=data, images=folder))
    context, page = open_page(browser, url)
    try:
        assert shown(page, "main-image") == (1100, 667)

        def click_display(x, y):
            # The view is redrawn after each click: wait for the new picture and read its box again.
            assert shown(page, "main-image") == (1100, 667)
            box = page.locator("#main-image img").first.bounding_box()
            r = min(box["width"] / 1100, box["height"] / 667, 1)
            ox, oy = (box["width"] - 1100 * r) / 2, (box["height"] - 667 * r) / 2
            page.mouse.click(box["x"] + ox + (x + 0.5) * r, box["y"] + oy + (y + 0.5) * r)

        # Display pixel (800, 333) stands for the block x 2400..2402, y 999..1001, centre (2401, 1000): the speck.
        click_display(800, 333)
        wait_text(page, "inspector", "speck (#1) · annotation")  # the file lists regions front first
        click_display(700, 333)  # centre (2101, 1000): the table
        wait_text(page, "inspector", "table (#2) · annotation")
        if os.environ.get("SEMLAYER_SHOT"):
            page.locator(".progress-text").first.wait_for(state="detached", timeout=30_000)
            shown(page, "main-image")
            page.screenshot(path=os.environ["SEMLAYER_SHOT"], full_page=True)
    finally:
        context.close()
        demo.close()
