"""The layer list in Chromium (issue 19): a row dragged to another place reorders the depth, hide and solo
change what the image draws, and each row wears its object's colour."""

from semlayer import viz
from tests import test_app_browser as browser_tests
from tests.test_app_browser import wait_text

# The browser tests' fixtures: a fresh app on a small synthetic dataset, Chromium, a page on it.
app, browser, page = browser_tests.app, browser_tests.browser, browser_tests.page

pytestmark = browser_tests.pytestmark  # marked browser; skipped without Chromium


def row_ids(page):
    return [int(i) for i in page.locator("#layer-list .layer-row").evaluate_all("rs => rs.map(r => r.dataset.id)")]


def row(page, instance_id):
    return page.locator(f'#layer-list .layer-row[data-id="{instance_id}"]')


def view_source(page):
    return page.locator("#main-image img").first.get_attribute("src")


def test_drag_a_row_to_reorder_then_hide_and_solo(page, app, tmp_path):
    _, _, scene = app
    order = scene.order_ids()
    page.locator("#layer-list .layer-row").first.wait_for(timeout=20_000)
    assert row_ids(page) == order
    back = order[-1]
    # Each rank chip wears its object's colour (by id).
    chip = row(page, back).locator(".layer-rank")
    r, g, b = viz.instance_color(back)
    assert chip.evaluate("e => getComputedStyle(e).backgroundColor") == f"rgb({r}, {g}, {b})"
    assert chip.inner_text() == str(len(order))
    # The back-most row dropped on the upper half of the front-most one: to the front, one undo step.
    row(page, back).drag_to(row(page, order[0]), target_position={"x": 30, "y": 3})
    wait_text(page, "status", f"last edit: put {back} in front of {order[0]} · 1 undo / 0 redo")
    page.wait_for_function(
        "ids => [...document.querySelectorAll('#layer-list .layer-row')].map(r => r.dataset.id).join() === ids",
        arg=",".join(str(i) for i in [back, *order[:-1]]),
        timeout=20_000,
    )
    assert row(page, back).locator(".layer-rank").inner_text() == "1"
    assert page.locator("#instance-table").get_by_role("row").nth(1).get_by_role("gridcell").nth(1).inner_text() == (
        str(back)
    )
    # Hide the front one: its row fades and the image is drawn again without it.
    before = view_source(page)
    row(page, back).locator('[data-action="hide"]').click()
    page.wait_for_function(
        "id => document.querySelector(`#layer-list .layer-row[data-id='${id}']`).classList.contains('hidden')",
        arg=back,
        timeout=20_000,
    )
    page.wait_for_function("s => document.querySelector('#main-image img').src !== s", arg=before, timeout=20_000)
    # Solo another: every other row is not drawn.
    solo = order[0]
    row(page, solo).locator('[data-action="solo"]').click()
    page.wait_for_function(
        "id => [...document.querySelectorAll('#layer-list .layer-row')].every("
        "r => r.classList.contains('hidden') === (r.dataset.id !== String(id)))",
        arg=solo,
        timeout=20_000,
    )
    assert row(page, solo).locator('[data-action="solo"]').get_attribute("aria-pressed") == "true"
    # A row click selects its object.
    row(page, solo).locator(".layer-name").click()
    wait_text(page, "inspector", f"(#{solo}) · annotation")
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.screenshot(path=str(tmp_path / "layers.png"))
