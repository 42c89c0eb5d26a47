"""The findings of issue 20, replayed through the HTTP interface a browser or a script uses: the queue with a
page event's ``fn_index`` (hidden from the API docs, run all the same), ``/gradio_api/file=``,
``/gradio_api/upload`` and gradio_client. Each attack must fail; each race and fault must lose no edit."""

import errno
import gc
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import uuid
import weakref
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app import handlers as h
from semlayer import workspace as session_mod
from app.tab import JOBS, AppConfig
from app.main import launch
from app.model import Model, register_model
from semlayer.workspace import EditSession
from semlayer import synth
from semlayer.images import MAX_PIXELS
from tests.test_app_handlers import FakePredictor, fake_plans

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "annotator", "pa:ss word"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Page:
    """One browser tab: it speaks the queue protocol the page's JavaScript speaks, with its own session."""

    def __init__(self, url, auth=None):
        self.http = httpx.Client(base_url=url, timeout=120)
        if auth:
            assert self.http.post("login", data={"username": auth[0], "password": auth[1]}).status_code == 200
        self.session_hash = uuid.uuid4().hex[:11]
        self.config = self.http.get("config").json()
        self.warnings: list[str] = []

    def fn_index(self, label=None, trigger="click", api_name=None, elem_id=None):
        """The event of the component with this label / elem_id (or the endpoint named ``api_name``)."""
        if api_name is not None:
            return next(d["id"] for d in self.config["dependencies"] if d.get("api_name") == api_name)
        ids = {
            c["id"]
            for c in self.config["components"]
            if c.get("props", {}).get("value") == label
            or c.get("props", {}).get("label") == label
            or (elem_id and c.get("props", {}).get("elem_id") == elem_id)
        }
        return next(
            d["id"] for d in self.config["dependencies"] if any(t[0] in ids and t[1] == trigger for t in d["targets"])
        )

    def load(self):
        """The page's load event (what a browser runs on opening or reloading the page)."""
        return self.call(
            next(d["id"] for d in self.config["dependencies"] if any(t[1] == "load" for t in d["targets"])), []
        )

    def call(self, fn_index, data, event_data=None):
        """Run an event as the page does; returns the output data (None when it failed)."""
        body = {
            "data": data,
            "fn_index": fn_index,
            "session_hash": self.session_hash,
            "event_data": event_data,
            "trigger_id": None,
        }
        joined = self.http.post("gradio_api/queue/join", json=body)
        assert joined.status_code == 200, joined.text
        with self.http.stream("GET", "gradio_api/queue/data", params={"session_hash": self.session_hash}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "log":
                    self.warnings.append(msg.get("log", ""))
                if msg.get("msg") == "process_completed":
                    out = msg.get("output", {})
                    if not msg.get("success", False):
                        self.warnings.append(out.get("error") or "")
                        return None
                    return out.get("data")
        raise AssertionError("the queue closed without completing the event")


def png(path, value, size=(24, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)
    return path


def cocoa(path, file_name, height=24, width=32):
    """A one-image COCOA file naming ``file_name`` (one region)."""
    obj = {
        "images": [{"id": 1, "file_name": file_name, "height": height, "width": width}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "depth_constraint": "",
                "regions": [{"order": 1, "name": "a", "isStuff": 0, "segmentation": [2, 2, 10, 2, 10, 10, 2, 10]}],
            }
        ],
    }
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app as `python -m app --data HOME/ann.json --images HOME/images --data-root HOME` serves it, with a
    home folder holding what an attacker wants: a key under a dotfolder, a dotfile among the images, a secret
    image outside, crafted annotation files under the root."""
    root = tmp_path_factory.mktemp("security")
    home = root / "home"
    synth.write_dataset(home, 3, seed=5, size=64, max_instances=3, min_instances=2, progress=False)
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    (home / "images" / ".env").write_text("TOKEN=1")
    secret = png(root / "secret" / "secret.png", 200)
    cocoa(home / "absolute.json", str(secret))
    cocoa(home / "escape.json", "../../secret/secret.png")
    cocoa(home / "repo.json", str(ROOT / ".git" / "config"))
    cocoa(home / "big.json", "a.png", height=int(MAX_PIXELS**0.5) + 1, width=int(MAX_PIXELS**0.5) + 1)
    shutil.copy(home / "annotations.json", home / "second.json")
    ckpt = root / "fake.pt"
    ckpt.write_bytes(b"fake")
    register_model(str(ckpt), Model(FakePredictor(), str(ckpt)))
    cfg = AppConfig(
        workspace=root / "ws",
        data=home / "annotations.json",
        images=home / "images",
        checkpoint=ckpt,
        data_root=home,
        train_config=ROOT / "configs" / "tiny_synth.yaml",
    )
    demo, url = launch(cfg, port=free_port(), prevent_thread_lock=True, quiet=True)
    yield {"url": url, "root": root, "home": home, "secret": secret, "cfg": cfg}
    demo.close()


def fetch(url, path):
    return httpx.get(url + "gradio_api/file=" + str(path), timeout=60)


# ----- 1. Open dataset reads anything ---------------------------------------------------------------------


def test_1_open_dataset_takes_no_client_path(served):
    page = Page(served["url"])
    open_fn = page.fn_index("Open dataset")
    crafted = served["root"] / "crafted.json"  # e.g. uploaded: outside the data root
    cocoa(crafted, str(served["secret"]))
    assert page.call(open_fn, [str(crafted), "/"]) is None  # not among the choices: refused
    assert page.call(open_fn, ["../crafted.json", "."]) is None
    summary = Client(served["url"], verbose=False).predict(api_name="/scene")
    assert summary["image"]["file_name"] == "synth_000001.png"


@pytest.mark.parametrize("name", ["absolute.json", "escape.json", "repo.json"])
def test_1_image_names_never_leave_their_folder(served, name):
    """A crafted file under the data root opens, but its image name is refused: nothing of the secret image
    or the repository's .git/config reaches the page, the gallery or the file route."""
    page = Page(served["url"])
    out = page.call(page.fn_index("Open dataset"), [name, "images"])
    assert out is not None and page.warnings[-1].startswith("image ")
    assert "a file name" in page.warnings[-1] and str(served["root"]) not in page.warnings[-1]
    # The gallery event that follows the open (as the page chains it) lists nothing for the refused image.
    gallery_fn = next(
        d["id"] for d in page.config["dependencies"] if d.get("trigger_after") == page.fn_index("Open dataset")
    )
    assert not page.call(gallery_fn, [])[0]
    for leaked in (served["secret"], ROOT / ".git" / "config"):
        assert fetch(served["url"], leaked).status_code == 403


def test_1_open_dataset_is_off_without_a_data_root(served, tmp_path):
    cfg = AppConfig(
        workspace=tmp_path / "ws", data=served["home"] / "annotations.json", images=served["home"] / "images"
    )
    demo, url = launch(cfg, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        page = Page(url)
        assert page.call(page.fn_index("Open dataset"), ["absolute.json", "images"]) is None
        assert page.warnings[-1] == "Value: absolute.json is not in the list of choices: []"  # nothing to choose
        assert Client(url, verbose=False).predict(api_name="/scene")["image"]["file_name"] == "synth_000001.png"
    finally:
        demo.close()
    with pytest.raises(h.UserError, match="opening other datasets is off: start the app with --data-root FOLDER"):
        h.switch_dataset(h.new_tab(cfg), "absolute.json", "images")


# ----- 2. /predict takes server paths --------------------------------------------------------------------


def test_2_predict_accepts_only_uploads(served, tmp_path):
    page = Page(served["url"])
    predict = page.fn_index(api_name="predict")
    before = sorted((served["root"] / "ws").rglob("upload_*.png"))
    answers = []
    for value in (
        {"path": str(served["secret"])},
        str(served["secret"]),
        {"path": "/no/such/file.png"},
        {"path": str(served["secret"]), "meta": {"_type": "gradio.FileData"}},
    ):
        assert page.call(predict, [value]) is None
        answers.append(page.warnings[-1])
    # Whether the path exists is not told, and nothing was copied into the workspace. (With Gradio's upload
    # marker, Gradio itself refuses a file it did not receive; its message stays on the server.)
    only = "only an uploaded image file is accepted (upload it, e.g. gradio_client's handle_file)"
    assert answers == [only, only, only, ""]
    assert sorted((served["root"] / "ws").rglob("upload_*.png")) == before
    # A real upload works.
    summary = Client(served["url"], verbose=False).predict(
        handle_file(str(png(tmp_path / "p.png", 90))), api_name="/predict"
    )
    assert (summary["image"]["height"], summary["image"]["width"]) == (24, 32)


# ----- 3. allowed_paths holds the parent folder of --data; dotfiles served -----------------------------


def test_3_only_the_image_folder_assets_and_app_output_are_served(served):
    url, home = served["url"], served["home"]
    client = Client(url, verbose=False)
    first = client.predict(api_name="/scene")["instances"][0]["id"]
    client.predict(first, "back", api_name="/move")
    client.predict(api_name="/undo")  # the workspace now holds session state, undo stacks and its lock file
    exported = Path(client.predict("cocoa", api_name="/export"))
    assert exported.is_file()
    ws_files = sorted(p for p in (served["root"] / "ws").rglob("*") if p.is_file())
    served_ok = [
        home / "images" / "synth_000001.png",
        ROOT / "assets" / "demo" / "annotations.json",
        next(p for p in ws_files if p.parent.name == "exports"),
    ]
    refused = [
        home / ".ssh" / "id_rsa",
        home / "annotations.json",
        home / "images" / ".env",
        next(p for p in ws_files if p.name == "session.json"),
        next(p for p in ws_files if p.name == ".lock"),
        ROOT / ".git" / "config",
        ROOT / "README.md",
    ]
    assert [fetch(url, p).status_code for p in served_ok] == [200] * len(served_ok)
    assert [fetch(url, p).status_code for p in refused] == [403] * len(refused)
    assert (
        fetch(url, home / "images" / "synth_000001.png").content == (home / "images" / "synth_000001.png").read_bytes()
    )


# ----- 4. a non-loopback host without a login; the password in ps ----------------------------------------


def test_4_a_wide_host_needs_a_login(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--workspace",
            str(tmp_path / "ws"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SEMLAYER_AUTH": ""},
    )
    assert proc.returncode == 2 and "Running on" not in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --host 0.0.0.0 makes the app reachable from other machines: give --auth-file FILE (or --auth, or "
        "$SEMLAYER_AUTH), or --insecure to serve without a login"
    )


def test_4_logins_from_a_file_and_the_environment(served, tmp_path):
    from app.security import credentials

    auth_file = tmp_path / "logins"
    auth_file.write_text(f"# team\n{USER}:{PASSWORD}\n\nsecond:pw2\n")
    logins = credentials(None, auth_file, env={"SEMLAYER_AUTH": "third:pw3"})
    assert logins == [("third", "pw3"), (USER, PASSWORD), ("second", "pw2")]
    cfg = AppConfig(
        workspace=tmp_path / "ws", data=served["home"] / "annotations.json", images=served["home"] / "images"
    )
    demo, url = launch(cfg, port=free_port(), logins=logins, prevent_thread_lock=True, quiet=True)
    try:
        assert httpx.get(url + "config").status_code == 401
        assert fetch(url, served["home"] / "images" / "synth_000001.png").status_code == 401
        for user, password in logins:
            assert Client(url, auth=(user, password), verbose=False).predict(api_name="/scene")["image"]["index"] == 0
    finally:
        demo.close()


# ----- 5. upload race -------------------------------------------------------------------------------------


def test_5_a_stale_tabs_upload_never_overwrites_another_tabs_image(served, tmp_path):
    a, b = Client(served["url"], verbose=False), Client(served["url"], verbose=False)
    images = [png(tmp_path / f"{k}.png", 40 * (k + 1)) for k in range(3)]
    first = a.predict(handle_file(str(images[0])), api_name="/predict")["image"]
    second = b.predict(handle_file(str(images[1])), api_name="/predict")["image"]  # a's uploads are stale now
    third = a.predict(handle_file(str(images[2])), api_name="/predict")["image"]
    names = [first["file_name"], second["file_name"], third["file_name"]]
    assert len(set(names)) == 3 and third["index"] == second["index"] + 1
    uploads = EditSession.open_uploads(served["root"] / "ws")
    for image, summary in zip(images, (first, second, third)):
        saved = np.asarray(Image.open(uploads.image_path(summary["index"])))
        assert np.array_equal(saved, np.asarray(Image.open(image).convert("RGB")))


# ----- 6. declared sizes --------------------------------------------------------------------------------


def test_6_a_huge_declared_size_is_refused_and_the_server_stays_up(served):
    page = Page(served["url"])
    page.call(page.fn_index("Open dataset"), ["big.json", "images"])  # a message; the page stays as it was
    assert "the image reader's limit" in page.warnings[-1] and str(served["home"]) not in page.warnings[-1]
    assert Client(served["url"], verbose=False).predict(api_name="/scene")["image"]["index"] == 0


# ----- 7. unbounded work per client ----------------------------------------------------------------------


def test_7_one_fine_tune_at_a_time_on_the_server(served, monkeypatch):
    fake_plans(monkeypatch, [sys.executable, "-c", "import time; time.sleep(60)"])  # the model is a fake
    first, second = Page(served["url"]), Page(served["url"])
    tune = first.fn_index("fine-tune on corrected data")
    assert second.call(second.fn_index("Open dataset"), ["second.json", "images"]) is not None
    move = first.fn_index(api_name="move")  # a fine-tune needs a correction to learn from
    assert first.call(move, [1, "back"]) is not None and second.call(move, [1, "back"]) is not None
    try:
        assert first.call(tune, []) is not None and not first.warnings
        assert second.call(tune, []) is not None
        assert second.warnings[-1].startswith("a fine-tune of another dataset (annotations-")
        running = [job for job in JOBS.values() if job.progress().state == "running"]
        assert len(running) == 1
    finally:
        for job in list(JOBS.values()):
            job.cancel()
        JOBS.clear()


CHILD = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from semlayer.finetune import FineTuneJob, end_jobs_on_exit
    end_jobs_on_exit()
    job = FineTuneJob([sys.executable, "-c", "import time; time.sleep(120)"], sys.argv[2])
    print(job.proc.pid, flush=True)
    if sys.argv[3] == "exit":
        sys.exit(0)
    time.sleep(120)
""")


@pytest.mark.parametrize("how", ["exit", signal.SIGINT, signal.SIGTERM])
def test_7_fine_tunes_end_with_the_app(tmp_path, how):
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ROOT), str(tmp_path / "run"), str(how)], stdout=subprocess.PIPE, text=True
    )
    pid = int(proc.stdout.readline())
    if how != "exit":
        proc.send_signal(how)
    proc.wait(60)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
        raise AssertionError(f"the fine-tune process {pid} outlived the app ({how})")


def test_7_idle_api_clients_are_forgotten(served, monkeypatch):
    made = []
    original = h.new_tab
    monkeypatch.setattr(h, "new_tab", lambda cfg: made.append(weakref.ref(t := original(cfg))) or t)
    monkeypatch.setattr(served["cfg"], "tab_idle_s", 1.0)
    for _ in range(12):
        Client(served["url"], verbose=False).predict(api_name="/scene")
    time.sleep(1.5)
    Client(served["url"], verbose=False).predict(api_name="/scene")  # any request sweeps the idle ones
    gc.collect()
    assert len(made) == 13 and sum(ref() is not None for ref in made) == 1


# ----- 8. disk full during save --------------------------------------------------------------------------


def test_8_a_save_on_a_full_disk_keeps_the_edit_and_the_next_save_writes_it(served, monkeypatch, tmp_path):
    cfg = AppConfig(
        workspace=tmp_path / "ws", data=served["home"] / "annotations.json", images=served["home"] / "images"
    )
    demo, url = launch(cfg, port=free_port(), prevent_thread_lock=True, quiet=True)
    real = session_mod.atomic_write_json
    full = {"on": True}

    def write(path, obj, *args):
        if full["on"] and Path(path).parent.name == "scenes":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, obj, *args)

    monkeypatch.setattr(session_mod, "atomic_write_json", write)
    try:
        client = Client(url, verbose=False)
        order = [d["id"] for d in client.predict(api_name="/scene")["instances"]]
        with pytest.raises(
            AppError,
            match=r"could not save image 1 to the workspace \(No space left on device\); the "
            "change is kept in this page and is saved with your next edit",
        ):
            client.predict(order[0], "back", api_name="/move")
        assert [d["id"] for d in client.predict(api_name="/scene")["instances"]] == order[1:] + order[:1]  # kept
        full["on"] = False  # space freed
        moved = client.predict(order[1], "back", api_name="/move")  # no false "saved by another tab"
        expected = order[2:] + order[:1] + order[1:2] if len(order) > 2 else order[:1] + order[1:2]
        assert [d["id"] for d in moved["instances"]] == expected
        on_disk = EditSession.open(cfg.workspace, cfg.data, cfg.images)
        assert on_disk.scene.order_ids() == expected and len(on_disk.history()[0]) == 2
    finally:
        demo.close()


# ----- 9. the source changed on disk ---------------------------------------------------------------------


def test_9_export_refuses_a_changed_source_and_reopening_names_the_earlier_edits(served, tmp_path):
    shutil.copytree(served["home"] / "images", tmp_path / "images")
    source = tmp_path / "annotations.json"
    shutil.copy(served["home"] / "annotations.json", source)
    cfg = AppConfig(workspace=tmp_path / "ws", data=source, images=tmp_path / "images")
    demo, url = launch(cfg, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        first = client.predict(api_name="/scene")["instances"][0]["id"]
        client.predict(first, "back", api_name="/move")
        old_mask = os.umask(0o022)
        os.umask(old_mask)
        exported = Path(client.predict("cocoa", api_name="/export"))
        assert stat.S_IMODE(exported.stat().st_mode) == 0o666 & ~old_mask  # finding 10: the umask's mode
        changed = json.loads(source.read_text())
        changed["info"] = {"description": "edited elsewhere"}
        source.write_text(json.dumps(changed))
        with pytest.raises(AppError, match="annotations.json changed on disk since it was opened, so these edits"):
            client.predict("cocoa", api_name="/export")
        assert json.loads(source.read_text()) == changed
    finally:
        demo.close()
    reopened = EditSession.open(cfg.workspace, source, cfg.images)
    assert reopened.edited_indices() == []
    earlier = next(p.name for p in cfg.workspace.iterdir() if p != reopened.folder)
    assert reopened.notices == [
        f"annotations.json has changed since it was last edited here: the edits of its earlier version are in the "
        f"workspace folder {earlier} (not applied to this version; export them from that version of the file, or "
        "redo them here)"
    ]


# ----- 11. two tabs: different images never conflict; the same image loses no update ---------------------


def test_11_concurrent_tabs_on_different_and_same_images(served, tmp_path):
    cfg = AppConfig(
        workspace=tmp_path / "ws", data=served["home"] / "annotations.json", images=served["home"] / "images"
    )
    demo, url = launch(cfg, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        a, b, c = Page(url), Page(url), Page(url)
        nxt = a.fn_index("next image ▶")
        move = a.fn_index(api_name="move")
        for page in (a, b, c):
            page.load()
        assert b.call(nxt, []) is not None and c.call(nxt, []) is not None  # b and c on image 2, a on image 1
        file = EditSession.open(cfg.workspace, cfg.data, cfg.images).annset.scenes
        ids = [s.order_ids() for s in file]
        # Different images, edited in turn by stale tabs: no conflict.
        assert a.call(move, [ids[0][0], "back"]) is not None
        assert b.call(move, [ids[1][0], "back"]) is not None and not (a.warnings or b.warnings)
        a.load()  # a reloads its page (position saved: image 1)
        # The same image: c is stale; its move is refused, it stays on image 2, and retried it keeps both.
        assert c.call(move, [ids[1][1], "front"]) is None
        assert "image 2 (synth_000002.png) was saved by another tab or process" in c.warnings[-1]
        summary = c.call(move, [ids[1][1], "front"])
        assert summary is not None and summary[0]["image"]["index"] == 1
        on_disk = EditSession.open(cfg.workspace, cfg.data, cfg.images)
        assert on_disk.scene_at(0).order_ids() == ids[0][1:] + ids[0][:1]
        both = [i for i in ids[1] if i != ids[1][0]] + [ids[1][0]]
        both.remove(ids[1][1])
        assert on_disk.scene_at(1).order_ids() == [ids[1][1]] + both
    finally:
        demo.close()


# ----- 13. absolute server paths reach clients -----------------------------------------------------------


def test_13_no_absolute_server_path_in_config_status_or_errors(served, tmp_path):
    page = Page(served["url"])
    text = json.dumps(page.config)
    for folder in (served["home"], served["root"] / "ws", ROOT):
        assert str(folder) not in text
    loaded = json.dumps(page.load())  # status, position, model notice
    assert "every edit is saved" in loaded  # the status line names no folder at all
    for folder in (served["home"], served["root"] / "ws", ROOT, Path.cwd()):
        assert str(folder) + "/" not in loaded
    # A message naming server files names them relative to the data root or by their last part.
    assert page.call(page.fn_index("Open dataset"), ["escape.json", "images"]) is not None
    assert page.warnings[-1] == (
        "image '../../secret/secret.png': a file name inside the images folder without "
        "'..' or hidden (dot) parts, got '../../secret/secret.png'"
    )
    from app.security import public_text

    cfg = served["cfg"]
    assert public_text(cfg, f"{cfg.images}/a.png and {cfg.workspace}/x-1/session.json, /srv/other/b.json") == (
        "images/a.png and workspace/x-1/session.json, b.json"
    )
