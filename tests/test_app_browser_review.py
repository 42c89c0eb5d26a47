"""The review queue in Chromium: "N of M done", the current image's reasons, "next unreviewed" and "mark
reviewed" by button and by key, reviewed marks in the gallery (issue 19). A fake model keeps it fast."""

from app.model import Model, register_model
from app.review import review_mark, review_next
from app.tab import AppConfig, Tab
from semlayer import synth
from semlayer.workspace import EditSession
from tests.test_app_browser import browser, launch, open_page, pytestmark, wait_text  # noqa: F401  (browser: a fixture)
from tests.test_app_handlers import FakePredictor


def test_review_next_and_mark_in_the_page(browser, tmp_path):  # noqa: F811
    data = synth.write_dataset(tmp_path / "data", 3, seed=5, size=64, max_instances=3, progress=False)
    images = tmp_path / "data" / "images"
    ckpt = tmp_path / "fake.pt"
    ckpt.write_bytes(b"fake")
    register_model(str(ckpt), Model(FakePredictor(), str(ckpt)))
    # The queue the page should walk, from the same handlers on a workspace of its own.
    expected = Tab(EditSession.open(tmp_path / "expected", data, images), AppConfig(workspace=tmp_path), str(ckpt))
    first = review_next(expected)["index"]
    review_mark(expected)
    second = review_next(expected)["index"]
    assert first != second

    cfg = AppConfig(workspace=tmp_path / "ws", data=data, images=images, checkpoint=ckpt)
    demo, url = launch(cfg)
    context, page = open_page(browser, url, viewport=(1400, 1000))
    try:
        wait_text(page, "review-status", "0 of 3 done")
        wait_text(page, "review-status", "this image: not reviewed yet")
        page.get_by_role("button", name="next unreviewed").click()
        wait_text(page, "position", f"image {first + 1} of 3")
        page.get_by_role("button", name="mark reviewed").click()
        wait_text(page, "review-status", "1 of 3 done")
        wait_text(page, "review-status", "this image: ✓ reviewed")
        # The same by key: U goes to the top unreviewed image, M marks it.
        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("u")
        wait_text(page, "position", f"image {second + 1} of 3")
        wait_text(page, "review-status", "this image: not reviewed yet")
        page.keyboard.press("m")
        wait_text(page, "review-status", "2 of 3 done")
        page.get_by_text("Keyboard shortcuts").click()
        wait_text(page, "shortcuts-help", "next unreviewed image")
        # Reviewed images are marked in the gallery.
        page.get_by_text("Load: upload, examples, dataset").click()
        for index in (first, second):
            page.get_by_text(f"✓ {index + 1}", exact=True).wait_for(timeout=20_000)
        page.locator("#review-status").first.scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "review.png"))
    finally:
        context.close()
        demo.close()
