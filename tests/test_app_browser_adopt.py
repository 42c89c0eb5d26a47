"""The model helps, in a real browser (issue 19): select a predicted object and adopt it; draw a box on the
main image, see the model's proposal over it and accept it. Screenshot of the box proposal with
UPDATE_SCREENSHOT=1: docs/app_adopt.png."""

import os
import shutil

import numpy as np
import pytest
from playwright.sync_api import expect

from app import assists
from app.main import ROOT
from app.model import Model, register_model
from app.tab import AppConfig
from semlayer import formats, synth
from tests.test_app_browser import (  # noqa: F401
    browser,
    click_pixel,
    launch,
    open_page,
    shown,
    visible_pixel,
    wait_text,
)
from tests.test_app_handlers import FakePredictor

pytestmark = [pytest.mark.browser]


class BoxCompleter:
    """The RoI heads' answer for a box drawn on the page: the box itself, all of it visible."""

    predictor = FakePredictor()

    def object_in(self, image, box):
        x0, y0, x1, y1 = (int(v) for v in box)
        mask = np.zeros(image.shape[:2], bool)
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
        return mask, mask, 17


@pytest.fixture
def app(tmp_path):
    data = synth.write_dataset(tmp_path / "data", 1, seed=3, size=128, max_instances=3, min_instances=2,
                               progress=False)  # fmt: skip
    ckpt = tmp_path / "fake.pt"
    ckpt.write_bytes(b"fake")
    predictor = FakePredictor()
    predictor.model = None  # a network, as far as the app's check goes: the completer below stands in
    register_model(str(ckpt), Model(predictor, str(ckpt)))
    assists._COMPLETERS[str(ckpt)] = BoxCompleter()
    cfg = AppConfig(workspace=tmp_path / "ws", data=data, images=tmp_path / "data" / "images", checkpoint=ckpt)
    demo, url = launch(cfg)
    yield url, formats.load(data).scenes[0]
    demo.close()
    assists._COMPLETERS.pop(str(ckpt), None)


def test_adopt_a_prediction_then_accept_an_object_from_a_box(browser, app, tmp_path):  # noqa: F811
    url, annotation = app
    context, page = open_page(browser, url, viewport=(1400, 1000))
    try:
        before = len(annotation)
        page.locator("#show").get_by_text("prediction").click()
        wait_text(page, "instance-table", "prediction:")
        predictor = FakePredictor()
        predictor.set_image(np.zeros((*annotation.shape, 3), np.uint8))
        predicted = predictor.scene()
        click_pixel(page, predicted, *visible_pixel(predicted, 1))
        page.locator("#inspector").get_by_text("(#1)").wait_for(timeout=20_000)
        page.locator("#adopt").click()
        wait_text(page, "status", "last edit: adopt predicted")
        # The model's "object" is no category of the shapes dataset: its first one, and the page says so.
        wait_text(page, "help-status", "this dataset has no category 'object'")
        wait_text(page, "instance-table", "annotation:")  # shown beside the prediction, the adopted one selected
        rows = page.locator("#instance-table").get_by_role("row")  # a header, then one per object
        expect(rows).to_have_count(1 + before + 1)

        page.locator("#box-on-image input").check()
        wait_text(page, "help-status", "click two opposite corners")
        shown(page, "main-image")
        click_pixel(page, annotation, 4, 100)
        wait_text(page, "help-status", "first corner at (4, 100)")
        shown(page, "main-image")  # the view with the corner marked has loaded
        click_pixel(page, annotation, 40, 124)
        wait_text(page, "help-status", "proposal:")
        assert "depth rank" in page.locator("#help-status").inner_text()
        page.wait_for_timeout(300)  # let the view with the proposal paint
        shot = tmp_path / "app_adopt.png"
        page.screenshot(path=str(shot))
        if os.environ.get("UPDATE_SCREENSHOT"):
            shutil.copyfile(shot, ROOT / "docs" / "app_adopt.png")
        page.locator("#object-accept").click()
        wait_text(page, "status", "last edit: model object in box [4, 100, 40, 124]")
        expect(rows).to_have_count(1 + before + 2)
        page.locator("#key-undo").click()
        wait_text(page, "status", "last edit: adopt predicted")
        expect(rows).to_have_count(1 + before + 1)
    finally:
        context.close()
