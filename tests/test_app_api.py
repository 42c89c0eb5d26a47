"""Launch the app on a free port and drive it with gradio_client: /predict /select /move /undo /redo /export."""

import gc
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app.tab import AppConfig, Picture
from app.layout import build, png_file
from app.main import allowed_paths
from app.model import Model, register_model
from semlayer.formats.masks import decode_rle
from semlayer import assist, formats, synth
from semlayer.images import read_image
from tests.test_app_handlers import FakePredictor

USER, PASSWORD = "annotator", "s3cret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    data = synth.write_dataset(root / "data", 2, seed=5, size=64, max_instances=3, min_instances=2, progress=False)
    ckpt = root / "fake.pt"
    ckpt.write_bytes(b"fake")
    register_model(str(ckpt), Model(FakePredictor(), str(ckpt)))
    cfg = AppConfig(workspace=root / "ws", data=data, images=root / "data" / "images", checkpoint=ckpt)
    demo = build(cfg)
    demo.queue()
    _, url, _ = demo.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
        auth=(USER, PASSWORD), allowed_paths=allowed_paths(cfg),
    )  # fmt: skip
    yield url, root, data
    demo.close()


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url[0], auth=(USER, PASSWORD), verbose=False)


def test_endpoints_are_exactly_the_script_api(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {
        "/predict",
        "/select",
        "/export",
        "/move",
        "/undo",
        "/redo",
        "/scene",
        "/open_image",
        "/select_instance",
        "/assist_grabcut",
        "/assist_superpixels",
        "/assist_hidden_brush",
        "/assist_hidden_polygon",
        "/assist_complete",
        "/assist_accept",
        "/assist_clear",
        "/adopt",
        "/adopt_missing",
        "/assist_propose_object",
        "/review_next",
        "/review_mark",
    }


def test_select_move_undo_redo(client, app_url):
    _, _, data = app_url
    scene = formats.load(data).scenes[0]
    summary = client.predict(api_name="/scene")
    assert summary["image"]["file_name"] == scene.file_name
    assert [d["id"] for d in summary["instances"]] == scene.order_ids()
    front = scene.get(scene.order_ids()[0])
    ys, xs = np.nonzero(front.amodal)
    picked = client.predict(int(xs[0]), int(ys[0]), api_name="/select")
    assert (picked["id"], picked["rank"]) == (front.id, 1)
    covered = np.any([inst.amodal for inst in scene.instances], axis=0)
    by, bx = np.argwhere(~covered)[0]
    assert client.predict(int(bx), int(by), api_name="/select") is None  # background
    moved = client.predict(front.id, "back", api_name="/move")
    assert [d["id"] for d in moved["instances"]] == scene.order_ids()[1:] + [front.id]
    assert [d["id"] for d in client.predict(api_name="/undo")["instances"]] == scene.order_ids()
    assert [d["id"] for d in client.predict(api_name="/redo")["instances"]] == scene.order_ids()[1:] + [front.id]
    with pytest.raises(AppError, match="move must be one of forward, backward, front, back"):
        client.predict(front.id, "up", api_name="/move")
    with pytest.raises(AppError, match="has no instance 99"):
        client.predict(99, "back", api_name="/move")


def _rle_mask(rle):
    return decode_rle(rle).astype(bool)


def test_assists_through_the_api_are_the_library_and_accepting_is_an_undoable_edit(tmp_path):
    # An app of its own: the module's app has edits saved by the other tests.
    data = synth.write_dataset(tmp_path / "data", 1, seed=11, size=64, max_instances=3, min_instances=2, progress=False)
    cfg = AppConfig(workspace=tmp_path / "ws", data=data, images=tmp_path / "data" / "images")
    demo = build(cfg)
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            allowed_paths=allowed_paths(cfg))  # fmt: skip
    try:
        _drive_assists(Client(url, verbose=False), formats.load(data).scenes[0], tmp_path / "data" / "images")
    finally:
        demo.close()


def _drive_assists(client, scene, images):
    image = read_image(images / scene.file_name)
    back = scene.get(scene.order_ids()[-1])
    x, y, w, h = (int(v) for v in back.bbox())
    box = [x, y, x + w - 1, y + h - 1]
    centre = [x + w // 2, y + h // 2]
    got = client.predict(box, [centre], [], api_name="/assist_grabcut")
    want = assist.grabcut(image, box, assist.clicks_mask(scene.shape, [centre]))
    assert got["kind"] == "visible" and np.array_equal(_rle_mask(got["mask"]), want)
    # Accepted as a new instance: one edit, placed in front of what it overlaps, undone in one step.
    summary = client.predict("new", "grabbed", api_name="/assist_accept")
    assert len(summary["instances"]) == len(scene) + 1
    assert "grabbed" in [d["name"] for d in summary["instances"]]
    assert len(client.predict(api_name="/undo")["instances"]) == len(scene)
    # Superpixels: the ones under the clicks, whole.
    sp = client.predict([centre], [], api_name="/assist_superpixels")
    labels = assist.SuperpixelCache().labels(image)
    assert np.array_equal(_rle_mask(sp["mask"]), labels == labels[centre[1], centre[0]])
    assert client.predict(api_name="/assist_clear")["mask"] is None
    # The hidden-part brush over the whole image changes only what the objects in front cover.
    everywhere = [[0, 0], [scene.width - 1, 0], [scene.width - 1, scene.height - 1], [0, scene.height - 1]]
    poly = client.predict(back.id, everywhere, "add", api_name="/assist_hidden_polygon")
    front = scene.front_union(back.id)
    assert poly["kind"] == "amodal" and poly["instance"] == back.id
    assert np.array_equal(_rle_mask(poly["mask"]), back.amodal | front)
    hull = client.predict(back.id, "hull", None, api_name="/assist_complete")
    assert np.array_equal(_rle_mask(hull["mask"]), assist.hull_proposal(scene, back.id))
    client.predict("amodal", "", api_name="/assist_accept")
    exported = formats.load(client.predict("cocoa", api_name="/export")).scenes[0]
    assert np.array_equal(exported.get(back.id).amodal, assist.hull_proposal(scene, back.id))
    client.predict(api_name="/undo")
    exported = formats.load(client.predict("cocoa", api_name="/export")).scenes[0]
    assert np.array_equal(exported.get(back.id).amodal, back.amodal)
    with pytest.raises(AppError, match="there is no proposal to accept"):
        client.predict("amodal", "", api_name="/assist_accept")
    with pytest.raises(AppError, match="no model is loaded"):
        client.predict(back.id, "model", box, api_name="/assist_complete")
    with pytest.raises(AppError, match="completion must be one of hull, mirror, model"):
        client.predict(back.id, "guess", None, api_name="/assist_complete")
    with pytest.raises(AppError, match="outside the"):
        client.predict(back.id, [[999, 0]], 4, "add", api_name="/assist_hidden_brush")


def test_open_image_by_id_or_index_and_select_instance_by_id(app_url):
    _, _, data = app_url
    scenes = formats.load(data).scenes
    client = Client(app_url[0], auth=(USER, PASSWORD), verbose=False)  # its own tab: the others stay on image 0
    opened = client.predict(None, 1, api_name="/open_image")
    assert (opened["image"]["index"], opened["image"]["id"]) == (1, scenes[1].image_id)
    assert [d["id"] for d in opened["instances"]] == scenes[1].order_ids()
    opened = client.predict(scenes[0].image_id, None, api_name="/open_image")
    assert (opened["image"]["index"], opened["image"]["file_name"]) == (0, scenes[0].file_name)
    for args, message in (
        ((999, None), "this dataset has no image with id 999"),
        ((None, 5), "scene index 5 is outside 0..1"),
        ((None, None), "give exactly one of image_id and index"),
        ((scenes[0].image_id, 0), "give exactly one of image_id and index"),
    ):
        with pytest.raises(AppError, match=message):
            client.predict(*args, api_name="/open_image")
    back = opened["instances"][-1]  # as edited by the tests before: the rank the app gives
    picked = client.predict(back["id"], api_name="/select_instance")
    assert (picked["id"], picked["rank"]) == (back["id"], back["rank"]) and back["rank"] == len(scenes[0].instances)
    with pytest.raises(AppError, match="this annotation has no instance 999"):
        client.predict(999, api_name="/select_instance")


def test_export_returns_a_valid_json_file(client):
    path = client.predict("cocoa", api_name="/export")
    assert path.endswith("annotations.corrected.cocoa.json")
    assert formats.validate(path) == []
    coco = client.predict("coco", api_name="/export")
    assert json.loads(open(coco).read())["categories"]
    kins = client.predict("kins", api_name="/export")
    assert formats.load(kins).format == "kins2020" and formats.validate(kins) == []
    with pytest.raises(AppError, match="export format must be one of cocoa, coco, kins"):
        client.predict("xml", api_name="/export")


def test_predict_uploads_and_bad_uploads(client, app_url, tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(image)
    summary = client.predict(handle_file(str(image)), api_name="/predict")
    assert (summary["image"]["height"], summary["image"]["width"]) == (48, 64)
    assert [(d["id"], d["rank"], d["score"]) for d in summary["instances"]] == [(1, 1, 0.9), (2, 2, 0.7)]
    assert client.predict(40, 40, api_name="/select")["id"] == 2
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    with pytest.raises(AppError, match="notes.png: not a readable image"):
        client.predict(handle_file(str(bad)), api_name="/predict")
    assert client.predict(api_name="/scene")["image"]["height"] == 48  # still running, state intact


class BlockingPredictor(FakePredictor):
    """The fake, held inside its network call until the test lets it go."""

    def __init__(self):
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def set_image(self, image):
        self.entered.set()
        assert self.release.wait(30), "the test never released the predictor"
        super().set_image(image)


def test_one_tabs_requests_run_one_at_a_time(tmp_path):
    """Gradio runs different endpoints (and page events) in parallel threads: a request of a tab waits until
    the tab's running one is done, so it sees the state that one leaves, never half of it."""
    data = synth.write_dataset(tmp_path / "data", 1, seed=5, size=64, max_instances=3, min_instances=2, progress=False)
    ckpt = tmp_path / "blocking.pt"
    ckpt.write_bytes(b"fake")
    predictor = BlockingPredictor()
    register_model(str(ckpt), Model(predictor, str(ckpt)))
    cfg = AppConfig(workspace=tmp_path / "ws", data=data, images=tmp_path / "data" / "images", checkpoint=ckpt)
    demo = build(cfg)
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            allowed_paths=allowed_paths(cfg))  # fmt: skip
    try:
        client, other = (Client(url, verbose=False) for _ in range(2))
        image = tmp_path / "photo.png"
        Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(image)
        predicting = client.submit(handle_file(str(image)), api_name="/predict")
        assert predictor.entered.wait(30)
        # Another tab is not held up: it answers with its own (dataset) scene at once.
        assert other.predict(api_name="/scene")["image"]["file_name"] == formats.load(data).scenes[0].file_name
        asked = client.submit(api_name="/scene")  # same client, so the same tab
        time.sleep(0.5)
        assert not asked.done()  # waiting for the prediction, not answering from the state before it
        predictor.release.set()
        assert predicting.result(timeout=30)["image"]["file_name"] == "upload_00001.png"
        assert asked.result(timeout=30)["image"]["file_name"] == "upload_00001.png"
    finally:
        predictor.release.set()
        demo.close()


def test_auth_and_served_files(app_url):
    url = app_url[0]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url + "gradio_api/info")
    assert err.value.code == 401
    with pytest.raises(ValueError):
        Client(url, auth=(USER, "wrong"), verbose=False)


def test_figures_reach_the_page_as_png_files_deleted_with_their_picture(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    pixels = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    picture = Picture(pixels, png_level=0)
    path = png_file(picture)
    assert png_file(picture) == path and path.startswith(str(tmp_path / "semlayer"))
    assert np.array_equal(cv2.imread(path, cv2.IMREAD_COLOR)[..., ::-1], pixels)  # lossless
    assert png_file(None) is None
    del picture
    gc.collect()
    assert not Path(path).exists()


def test_adopt_a_predicted_object_and_undo_it(client):
    before = client.predict(api_name="/scene")
    out = client.predict(2, api_name="/adopt")
    (new_id,) = out["added"]
    assert len(out["instances"]) == len(before["instances"]) + 1
    assert new_id in [d["id"] for d in out["instances"]] and new_id not in [d["id"] for d in before["instances"]]
    client.predict(api_name="/undo")
    assert client.predict(api_name="/scene")["instances"] == before["instances"]
