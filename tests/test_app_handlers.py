"""App handlers without a browser: selection cycling, views, inspector, figure caching and prefetch,
edits from the editor, uploads, fine-tune process control."""

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from app import handlers as h
from app import render as r
from semlayer.finetune import FineTuneJob, FineTunePlan, next_run_dir, prepare_finetune, runs_dir
from semlayer.finetune import start_finetune as run_plan
from app.model import Model, register_model
from app.tab import FigureCache
from semlayer.workspace import ConflictError, EditSession
from semlayer import formats, semdist, viz
from semlayer.images import ImageReadError
from semlayer.scene import AmodalScene, AnnotationSet, Instance

H, W = 40, 60


def rect(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def scenes():
    """Scene 1: a (front) over b over c, all covering pixel (20, 20); scene 2: one instance."""
    s1 = AmodalScene(
        {"id": 1, "file_name": "one.png", "height": H, "width": W},
        [
            Instance(1, rect(10, 10, 30, 30), rank=2, name="b"),
            Instance(2, rect(15, 15, 25, 25), rank=1, name="a"),
            Instance(3, rect(5, 5, 50, 35), rank=3, name="c"),
        ],
        annotation={"id": 11},
    )
    s2 = AmodalScene(
        {"id": 2, "file_name": "two.png", "height": H, "width": W}, [Instance(1, rect(0, 0, 5, 5), name="d")]
    )
    return AnnotationSet(scenes=[s1, s2])


class FakePredictor:
    """Stands in for semlayer.predict.Predictor: two overlapping boxes, with scores and a dense map."""

    class_names = ["object"]
    categories = [{"id": 17, "name": "object"}]

    def __init__(self):
        self.calls = 0

    def set_image(self, image):
        self.calls += 1
        self.shape = image.shape[:2]

    def scene(self, score_thr=0.5):
        h, w = self.shape
        m1 = np.zeros((h, w), bool)
        m1[: h // 2, : w // 2] = True
        m2 = np.zeros((h, w), bool)
        m2[h // 4 :, w // 4 :] = True
        first = Instance(1, m1, rank=1, name="object", category=17, score=0.9)
        first.semdist = semdist.SemDistMap(np.full((h // 2, w // 2), 2.5, np.float32), (0, 0, w // 2, h // 2), (h, w))
        second = Instance(2, m2, rank=2, name="object", category=17, score=0.7)
        return AmodalScene({"id": 0, "height": h, "width": w}, [first, second])


class LayeredFakePredictor(FakePredictor):
    """The fake with a global layering map, as the SLN has: one that misses the two boxes' overlap."""

    has_layers, K = True, 3

    def global_layers(self):
        scene = self.scene()
        return np.maximum(scene.instances[0].amodal, scene.instances[1].amodal).astype(np.uint8)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("one.png", "two.png"):
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    return folder


@pytest.fixture
def cfg(tmp_path):
    return h.AppConfig(workspace=tmp_path / "ws")


@pytest.fixture
def tab(tmp_path, images, cfg):
    return h.Tab(session=EditSession(tmp_path / "ws" / "set", scenes(), images), cfg=cfg)


@pytest.fixture
def model_tab(tmp_path, tab):
    ckpt = tmp_path / "fake.pt"
    ckpt.write_bytes(b"fake")
    model = Model(FakePredictor(), str(ckpt))
    register_model(str(ckpt), model)
    tab.checkpoint = str(ckpt)
    return tab


def test_click_selects_front_most_then_cycles_behind(cfg, tab):
    assert h.select_at(tab, 20, 20)["name"] == "a"
    assert h.select_at(tab, 20, 20)["name"] == "b"
    info = h.select_at(tab, 20, 20)
    assert info["name"] == "c"
    assert info == {
        "id": 3, "name": "c", "category": None, "rank": 3, "occlude_rate": round(400 / 1350, 6), "score": None,
        "bbox": [5.0, 5.0, 45.0, 30.0], "is_stuff": False, "occluders": [1, 2], "occludees": [], "stack": [2, 1, 3],
    }  # fmt: skip
    assert h.select_at(tab, 20, 20)["name"] == "a"  # wraps around
    assert h.select_at(tab, 12, 12)["name"] == "b"  # another pixel starts at the front again
    assert h.select_at(tab, 59, 39) is None and tab.selected is None


def test_table_selection_and_summary(cfg, tab):
    assert r.instance_rows(tab.session.scene) == [
        [1, 2, "a", "0.000", ""], [2, 1, "b", "0.250", ""], [3, 3, "c", "0.296", ""],
    ]  # fmt: skip
    assert h.select_instance(tab, 1)["occluders"] == [2]
    with pytest.raises(h.UserError, match="this annotation has no instance 9"):
        h.select_instance(tab, 9)
    summary = tab.summary()
    assert summary["image"] == {"id": 1, "file_name": "one.png", "height": H, "width": W, "index": 0, "count": 2}
    assert [d["id"] for d in summary["instances"]] == [2, 1, 3]
    assert set(summary["instances"][0]) == {"id", "name", "category", "rank", "occlude_rate", "score", "bbox"}


def test_views_and_inspector_render(cfg, tab):
    for view in h.VIEWS:
        tab.view = view
        out = r.render_view(tab)
        assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert r.inspect(tab) is None
    h.select_at(tab, 12, 12)
    insp = r.inspect(tab, surface=False)
    assert insp.text == (
        '### <span style="color:#1f77b4">■</span> b (#1) · annotation\n'
        "rank **2** of 3 · occlude rate **0.250** · score — · category —\n\n"
        "occluded by: a (#2)  \noccludes: c (#3)"
    )
    assert insp.surface is None and r.inspect(tab, surface=True).surface.pixels.ndim == 3
    # The layer map of b (box x 10..29, y 10..29, hidden by a at x 15..24, y 15..24), drawn without the
    # image behind it, equals the map of its layers given as an array: the figure follows the order.
    layers = semdist.instance_layer_maps(tab.session.scene)[0]
    assert (layers == 1).sum() == 100 and (layers == 0).sum() == 300
    assert np.array_equal(
        insp.layers.pixels[:200], viz.layer_map_figure(layers, image=tab.current_image(), out_size=r.PANEL_SIZE)[:200]
    )
    for picture in (insp.panel, insp.layers, insp.heatmap):
        decoded = cv2.imdecode(np.frombuffer(picture.png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        assert np.array_equal(decoded, picture.pixels)  # PNG, lossless
    assert r.render_level_sets(tab).ndim == 3 and r.render_global(tab).ndim == 3
    # The sem-dist map shown follows the current order: after a reorder b's layer map changes.
    before = r.semdist_of(cfg, tab.session.scene, 1).layers()
    assert before[20, 20] == 1 and before[12, 12] == 0
    h.reorder(tab, "front")
    after = r.semdist_of(cfg, tab.session.scene, 1).layers()
    assert after[20, 20] == 0


def test_reorder_handlers_and_their_errors(cfg, tab):
    with pytest.raises(h.UserError, match="select an instance first"):
        h.reorder(tab, "front")
    h.select_at(tab, 12, 12)  # b
    summary = h.reorder(tab, "front")
    assert [d["name"] for d in summary["instances"]] == ["b", "a", "c"]
    assert h.put_in_front(tab, 2)["instances"][0]["name"] == "b"  # already in front of a: unchanged
    with pytest.raises(h.UserError, match="in front of itself"):
        h.put_in_front(tab, 1)
    h.select_instance(tab, 3)
    assert [d["name"] for d in h.put_in_front(tab, 2)["instances"]] == ["b", "c", "a"]
    with pytest.raises(h.UserError, match="move must be one of"):
        h.reorder(tab, "sideways")
    with pytest.raises(h.UserError, match="has no instance 7"):
        h.reorder(tab, "back", 7)
    assert h.undo(tab) == "put 3 in front of 2"
    assert h.redo(tab) == "put 3 in front of 2"


def test_mask_from_editor_reads_alpha_and_resizes():
    layer = np.zeros((H // 2, W // 2, 4), np.uint8)
    layer[5:10, 5:10, 3] = 255
    other = np.zeros((H, W, 4), np.uint8)
    other[0, 0] = (255, 0, 255, 30)
    mask = h.mask_from_editor({"background": None, "layers": [layer, other], "composite": None}, (H, W))
    assert np.array_equal(mask, rect(10, 10, 20, 20) | rect(0, 0, 1, 1))
    with pytest.raises(h.UserError, match="nothing painted in the editor"):
        h.mask_from_editor({"background": None, "layers": [], "composite": None}, (H, W))
    with pytest.raises(h.UserError, match="not an RGBA image"):
        h.mask_from_editor({"layers": [np.zeros((H, W))]}, (H, W))


def strokes(*boxes):
    layer = np.zeros((H, W, 4), np.uint8)
    for x0, y0, x1, y1 in boxes:
        layer[y0:y1, x0:x1] = (255, 0, 255, 255)
    return {"background": None, "layers": [layer], "composite": None}


def test_editor_edits_masks_exactly(cfg, tab):
    h.select_at(tab, 12, 12)  # b
    value = r.editor_value(tab)
    assert value["layers"] == [] and value["background"].shape == (H, W, 3)
    tinted = np.any(value["background"] != tab.current_image(), axis=2)
    assert np.array_equal(tinted, rect(10, 10, 30, 30))
    h.apply_editor_mask(tab, strokes((25, 10, 30, 30)), "remove")
    assert np.array_equal(tab.session.scene.get(1).amodal, rect(10, 10, 25, 30))
    h.apply_editor_mask(tab, strokes((0, 0, 12, 12)), "add")
    assert np.array_equal(tab.session.scene.get(1).amodal, rect(10, 10, 25, 30) | rect(0, 0, 12, 12))
    edits = len(tab.session.history()[0])
    h.apply_editor_mask(tab, strokes((0, 0, 5, 5)), "add")  # inside the mask already: not an edit
    assert len(tab.session.history()[0]) == edits
    with pytest.raises(h.UserError, match="brush mode must be one of add, remove"):
        h.apply_editor_mask(tab, strokes((0, 0, 5, 5)), "paint")
    with pytest.raises(h.UserError, match="the mask is empty"):
        h.apply_editor_mask(tab, strokes((0, 0, 60, 40)), "remove")
    new_id = h.add_from_editor(tab, strokes((50, 0, 58, 5)), "lid", 4.0, False)
    inst = tab.session.scene.get(new_id)
    assert (new_id, inst.name, inst.category, inst.rank, tab.selected) == (4, "lid", 4, 1, 4)
    assert np.array_equal(inst.amodal, rect(50, 0, 58, 5))
    h.set_attributes(tab, "cap", float("nan"), True)
    assert (inst.name, inst.category, inst.is_stuff) == ("cap", None, True)
    assert tab.session.history()[0][-1] == "set name / category / stuff of 4"
    h.delete_selected(tab)
    assert [i.id for i in tab.session.scene.instances] == [1, 2, 3] and tab.selected is None


def test_a_predicted_global_map_is_titled_with_its_agreement_with_the_instances(cfg, tab, tmp_path, monkeypatch):
    ckpt = tmp_path / "layered.pt"
    ckpt.write_bytes(b"fake")
    register_model(str(ckpt), Model(LayeredFakePredictor(), str(ckpt)))
    tab.checkpoint, tab.show = str(ckpt), "prediction"
    notes = []
    drawn = viz.global_layering_figure
    monkeypatch.setattr(viz, "global_layering_figure", lambda *a, **k: notes.append(k.get("note")) or drawn(*a, **k))
    assert r.render_global(tab).ndim == 3
    # Boxes of (H/2 x W/2) and (3H/4 x 3W/4) overlapping on (H/4 x W/4): the map is right off the overlap only.
    union = (H // 2) * (W // 2) + (H - H // 4) * (W - W // 4) - (H // 2 - H // 4) * (W // 2 - W // 4)
    share = 1 - (H // 2 - H // 4) * (W // 2 - W // 4) / union
    assert notes == [
        "the network's own (global layering module)\n"
        f"its instances' overlap count agrees on {share:.0%} of object pixels"
    ]
    tab.show = "annotation"  # an annotation's G is its instances' own: nothing to compare
    r.render_global(tab)
    assert notes[1:] == [None]


def test_navigation_and_missing_image(cfg, tab, images):
    h.select_at(tab, 20, 20)
    h.go_to(tab, 1)
    assert tab.selected is None and tab.summary()["image"]["file_name"] == "two.png"
    with pytest.raises(h.UserError, match="outside 0..1"):
        h.go_to(tab, 5)
    (images / "two.png").unlink()
    with pytest.raises(h.UserError, match="two.png does not exist"):
        r.render_view(tab)


def test_prediction_views_and_uploads(cfg, model_tab, tmp_path):
    tab = model_tab
    tab.show = "both"
    assert r.render_view(tab).shape == (H, 2 * W, 3)
    # A click on the right half selects in the prediction; editing it is refused.
    info = h.select_at(tab, W + 2, 2)
    assert (info["id"], info["score"], tab.selected_in) == (1, 0.9, "prediction")
    assert r.semdist_of(cfg, tab.scene_for("prediction"), 1).values.max() == np.float32(2.5)
    with pytest.raises(h.UserError, match="part of the prediction"):
        h.reorder(tab, "back")
    calls = tab.model.predictor.calls
    r.render_view(tab)
    assert tab.model.predictor.calls == calls  # cached per image
    # Upload: predicted once, becomes an editable scene of the uploads session.
    up = tmp_path / "up.png"
    cv2.imwrite(str(up), np.zeros((30, 50, 3), np.uint8))
    summary = h.predict_upload(tab, up)
    assert summary["image"] == {
        "id": 1,
        "file_name": "upload_00001.png",
        "height": 30,
        "width": 50,
        "index": 0,
        "count": 1,
    }
    assert [(d["id"], d["score"], d["rank"]) for d in summary["instances"]] == [(1, 0.9, 1), (2, 0.7, 2)]
    assert tab.session.folder == cfg.workspace.resolve() / "uploads"
    assert (tab.session.folder / "images" / "upload_00001.png").is_file()
    # Uploads have no annotation file: their exports list the model's categories (training-data ids).
    assert tab.session.export_dict("coco")["categories"] == [{"id": 17, "name": "object"}]
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ImageReadError, match="not a readable image"):
        h.predict_upload(tab, bad)


def test_a_failed_prediction_leaves_the_tab_on_its_dataset(cfg, model_tab, tmp_path, monkeypatch):
    tab = model_tab
    before = (tab.session, tab.session.current, tab.show)

    def broken(image):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tab.model.predictor, "set_image", broken)
    up = tmp_path / "up.png"
    cv2.imwrite(str(up), np.zeros((30, 50, 3), np.uint8))
    with pytest.raises(RuntimeError, match="out of memory"):
        h.predict_upload(tab, up)
    assert (tab.session, tab.session.current, tab.show) == before
    assert tab.summary()["image"]["count"] == 2  # still the dataset's two images, not an empty uploads session
    assert not (cfg.workspace.resolve() / "uploads" / "images").exists()


def test_upload_without_model_is_refused(cfg, tab, tmp_path):
    with pytest.raises(h.UserError, match="no model is loaded"):
        h.predict_upload(tab, tmp_path / "x.png")


FAKE_TRAIN = r"""
import json, sys, time, pathlib
out = pathlib.Path(sys.argv[sys.argv.index("--out") + 1])
steps, delay = int(sys.argv[1]), float(sys.argv[2])
with open(out / "log.jsonl", "a") as f:
    for step in range(1, steps + 1):
        time.sleep(delay)
        f.write(json.dumps({"split": "train", "iteration": step, "loss": 1.0 / step}) + "\n")
        f.write(json.dumps({"split": "val", "iteration": step, "loss": 9.0}) + "\n")
        f.flush()
(out / "best.pt").write_bytes(b"ckpt")
(out / "last.pt").write_bytes(b"ckpt")
"""


def wait_for(job, states, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        progress = job.progress()
        if progress.state in states:
            return progress
        time.sleep(0.05)
    raise AssertionError(f"job still {job.progress()}")


def test_finetune_job_reports_progress_and_checkpoint(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(FAKE_TRAIN)
    out = tmp_path / "run"
    job = FineTuneJob([sys.executable, str(script), "3", "0.01", "--out", str(out)], out, total=3)
    progress = wait_for(job, {"done", "failed"})
    assert (progress.state, progress.step, progress.total, progress.loss) == ("done", 3, 3, pytest.approx(1 / 3))
    assert progress.checkpoint == out / "last.pt" and progress.fraction == 1.0


def fake_plans(monkeypatch, command=()):
    """``h.prepare_finetune`` standing in for the library's on the fake model (no checkpoint to read): it
    refuses as the library does, else plans a run of ``command`` in ``runs/finetune-N`` with nothing held out."""
    prepared = []

    def prepare(session, checkpoint, train_config, iterations):
        if not session.edited_indices():
            return prepare_finetune(session, checkpoint, train_config, iterations)  # refuses, with its reason
        out = next_run_dir(runs_dir(session.folder))
        out.mkdir(parents=True)
        prepared.append(out)
        return FineTunePlan(out, list(command), Path(checkpoint), out / "train.cocoa.json", [], None, session.image_dir,
                            iterations, "class-agnostic (the model is)")  # fmt: skip

    monkeypatch.setattr(h, "prepare_finetune", prepare)
    return prepared


def test_finetune_from_the_app_cancel_and_failure(cfg, model_tab, tmp_path, monkeypatch):
    tab = model_tab
    script = tmp_path / "train.py"
    script.write_text(FAKE_TRAIN)
    with pytest.raises(h.UserError, match="no training config"):
        h.start_finetune(tab)
    cfg.train_config = tmp_path / "tiny.yaml"
    prepared = fake_plans(monkeypatch)
    with pytest.raises(h.UserError, match="nothing to fine-tune on: no image of this dataset is corrected yet"):
        h.start_finetune(tab)
    assert prepared == [] and tab.job is None
    tab.session.move(2, "back")
    runs = tab.session.folder / "runs"
    job = h.start_finetune(tab, [sys.executable, str(script), "1000", "0.05", "--out", str(runs / "finetune-1")])
    assert prepared == [runs / "finetune-1"] and job.out == runs / "finetune-1"
    with pytest.raises(h.UserError, match="already running"):
        h.start_finetune(tab)
    h.cancel_finetune(tab)
    assert h.finetune_status(tab).state == "cancelled"
    # A finished run's checkpoint becomes the tab's model (already in the cache here: a fake).
    ckpt = runs / "finetune-2" / "last.pt"
    register_model(str(ckpt), tab.model)
    h.start_finetune(tab, [sys.executable, str(script), "2", "0", "--out", str(runs / "finetune-2")])
    assert wait_for(tab.job, {"done"}).checkpoint == ckpt
    assert h.finetune_status(tab).state == "done" and tab.checkpoint == str(ckpt)
    # One corrected image: all of it trained, so there is nothing to compare the models on, and the page says so.
    assert h.comparison_text(h.finetune_comparison(tab)) == (
        "no comparison: with 1 corrected image(s) none was held out from training (every 5th corrected image "
        "is, once two are corrected); correct more images and fine-tune again to see how the new model does on "
        "images it did not learn from"
    )
    fake = tmp_path / "fake.pt"
    assert h.model_choices(tab) == (False, True)
    assert h.rollback_model(tab) == fake and tab.checkpoint == str(fake)
    assert h.finetune_status(tab).state == "done" and tab.checkpoint == str(fake)  # the tab stays on it
    assert h.model_choices(tab) == (True, False)
    assert h.use_finetuned(tab) == ckpt and tab.checkpoint == str(ckpt)
    assert h.rollback_model(tab) == fake
    with pytest.raises(h.UserError, match="no earlier model to go back to"):
        h.rollback_model(tab)
    bad = [sys.executable, "-c", "import sys; sys.exit('config tiny.yaml: no such file')"]
    h.start_finetune(tab, bad)
    failed = wait_for(tab.job, {"failed"})
    assert failed.message == "config tiny.yaml: no such file"


def test_conflict_reloads_the_tab_and_tells_why(cfg, tab, images):
    other = h.Tab(session=EditSession(tab.session.folder, scenes(), images), cfg=tab.cfg)
    h.select_at(other, 12, 12)
    h.reorder(other, "back")  # b to the back, saved by the other tab
    h.select_at(tab, 20, 20)
    with pytest.raises(ConflictError, match="another tab or process"):
        h.reorder(tab, "back")
    assert tab.selected is None and tab.session.scene.order_ids() == [2, 3, 1]  # now shows the saved state
    h.select_instance(tab, 2)
    assert [d["id"] for d in h.reorder(tab, "back")["instances"]] == [3, 1, 2]
    with pytest.raises(ConflictError):
        h.undo(other)
    assert other.session.history() == (["move 1 back", "move 2 back"], [])


def counting(monkeypatch, module, name):
    """Wrap ``module.name`` so its calls are counted; returns the list of calls."""
    calls, original = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_figures_are_drawn_once_per_scene_state(cfg, tab, monkeypatch):
    overlays = counting(monkeypatch, viz, "overlay_by_rank")
    panels = counting(monkeypatch, viz, "instance_panel")
    first = r.render(tab, ("view",))["view"]
    h.select_at(tab, 12, 12)  # b
    selected = r.render(tab, ("view", "inspector"))
    assert len(overlays) == 1 and len(panels) == 1  # the click outlined b on the view drawn before
    h.select_at(tab, 40, 32)  # c
    r.render(tab, ("view", "inspector"))
    h.select_at(tab, 12, 12)  # b again: the inspector from the cache, the very same pictures
    again = r.render(tab, ("view", "inspector"))
    assert all(again[k] is selected[k] for k in ("panel", "layers", "heat"))
    # The tab keeps one outlined view (each would be a whole view): b's outline is drawn again on the cached view.
    assert again["view"] is not selected["view"] and np.array_equal(again["view"].pixels, selected["view"].pixels)
    assert sum(key[0] == "outlined view" for key in tab.figures.keys()) == 1
    assert len(overlays) == 1 and len(panels) == 2
    tab.view = "visible"
    r.render(tab, ("view",))
    assert len(overlays) == 2
    h.reorder(tab, "front")  # a new state: b's figures change (it is not hidden any more)
    moved = r.render(tab, ("view", "inspector"))
    assert len(overlays) == 3 and len(panels) == 3 and moved["layers"] is not selected["layers"]
    assert "rank **1** of 3" in moved["inspector"]
    h.undo(tab)  # back to the first order, but as a new saved revision: drawn again, equal pixels
    tab.view = "amodal"
    clear = r.render(tab, ("view",))["view"]
    tab.clear_selection()
    assert np.array_equal(r.render(tab, ("view",))["view"].pixels, first.pixels)
    assert clear is not first
    with pytest.raises(ValueError, match="unknown page parts"):
        r.render(tab, ("view", "sidebar"))


def test_the_view_is_enlarged_and_outlines_only_the_selection(cfg, tab):
    plain = r.render(tab, ("view",))["view"].pixels
    assert plain.shape == (H * r.display_scale((H, W)), W * r.display_scale((H, W)), 3)
    assert np.array_equal(plain, r.enlarge(r.render_view(tab), r.display_scale((H, W))))
    h.select_at(tab, 12, 12)  # b: x 10..29, y 10..29
    outlined = r.render(tab, ("view",))["view"].pixels
    s = r.display_scale((H, W))
    changed = np.argwhere(np.any(outlined != plain, axis=2))
    (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
    margin = 4  # line half-widths around the outline
    assert 10 * s - margin <= x0 and x1 < 30 * s + margin and 10 * s - margin <= y0 and y1 < 30 * s + margin
    assert x1 - x0 > 18 * s and y1 - y0 > 18 * s  # all around b


def test_level_sets_and_G_are_drawn_only_while_their_tab_is_open(cfg, tab, monkeypatch):
    levels = counting(monkeypatch, viz, "level_set_figure")
    assert r.render(tab, ("panes",)) == {"levels": None, "global": None}
    tab.pane = "levels"
    out = r.render(tab, ("panes",))
    assert out["global"] is None and out["levels"].pixels.ndim == 3 and len(levels) == 1
    assert r.render(tab, ("panes",))["levels"] is out["levels"] and len(levels) == 1
    h.select_at(tab, 12, 12)
    h.reorder(tab, "front")
    assert r.render(tab, ("panes",))["levels"] is not out["levels"] and len(levels) == 2
    tab.pane = "global"
    out = r.render(tab, ("panes",))
    assert out["levels"] is None and out["global"].pixels.ndim == 3


def test_prefetch_draws_every_shown_instance_for_the_first_click(cfg, tab, monkeypatch):
    r.render(tab, ("view",))
    r.prefetch(tab).join()
    panels = counting(monkeypatch, viz, "instance_panel")
    for x, y in ((12, 12), (20, 20), (40, 32)):
        h.select_at(tab, x, y)
        r.render(tab, ("inspector",))
    assert panels == [] and r.prefetch(tab) is None  # all drawn already
    # A prefetch stops when the scene changes under it (here: an edit while it draws the first instance).
    h.select_at(tab, 12, 12)
    h.reorder(tab, "back")
    heat_maps = counting(monkeypatch, viz, "semdist_heat_panel")
    monkeypatch.setattr(
        viz, "instance_panel", lambda *a, **k: (tab.session.move(2, "back"), np.zeros((4, 4, 3), np.uint8))[1]
    )
    thread = r.prefetch(tab)
    thread.join()
    assert len(heat_maps) == 1  # the first instance's figures were finished, then it stopped


def test_a_dataset_opens_on_its_annotation_or_on_the_prediction_where_it_has_none(tmp_path, images, model_tab):
    data = tmp_path / "set.json"
    data.write_text(json.dumps(formats.to_cocoa(scenes())))
    no_model = h.AppConfig(workspace=tmp_path / "ws2", data=data, images=images)
    tab = h.new_tab(no_model)
    assert tab.show == "annotation" and r.model_notice(tab).startswith("**No model loaded**")
    cfg = h.AppConfig(workspace=tmp_path / "ws2", data=data, images=images, checkpoint=Path(model_tab.checkpoint))
    annotated = h.new_tab(cfg)
    assert annotated.show == "annotation"  # the file annotates its first image: that is what opens
    unannotated = scenes()
    unannotated.scenes[0] = AmodalScene(unannotated.scenes[0].image, [], annotation={"id": 11})
    data = tmp_path / "unannotated.json"
    data.write_text(json.dumps(formats.to_cocoa(unannotated)))
    cfg = h.AppConfig(workspace=tmp_path / "ws3", data=data, images=images, checkpoint=Path(model_tab.checkpoint))
    tab = h.new_tab(cfg)
    assert tab.show == "prediction" and tab.listed == "prediction"
    assert r.model_notice(tab) == "model `fake.pt` · its prediction of this image: 2 instance(s) with score ≥ 0.5"
    table = r.render(tab, ("table",))
    assert table["rows"] == [
        [1, 1, "object", "0.000", "0.90"],
        [2, 2, "object", "0.111", "0.70"],
    ]  # 150 of 1350 px hidden
    assert table["table_title"].startswith("prediction: ") and table["show"] == "prediction"
    assert h.select_instance(tab, 2, "prediction")["score"] == 0.7 and tab.selected_in == "prediction"
    # The script API selects in the edited scene whatever the page shows.
    annotated.show = "prediction"
    assert h.select_at(annotated, 20, 20, which="annotation")["name"] == "a"
    with pytest.raises(h.UserError, match="select in 'annotation' or 'prediction'"):
        h.select_at(annotated, 20, 20, which="both")


def test_the_editor_names_the_selected_object_and_strokes_go_only_to_what_it_shows(cfg, tab):
    h.select_at(tab, 12, 12)  # b (#1)
    assert r.editor_label(tab) == "mask editor · b (#1), its amodal mask tinted"
    r.editor_value(tab)
    h.select_instance(tab, 2)  # a (#2), while the editor still shows b
    assert r.editor_key(tab) != tab.editor_shows  # the page sends the editor again on this
    assert r.editor_label(tab) == "mask editor · a (#2), its amodal mask tinted"
    with pytest.raises(h.UserError, match=r"the editor shows #1 but #2 is selected"):
        h.apply_editor_mask(tab, strokes((0, 0, 12, 12)), "add")
    assert np.array_equal(tab.session.scene.get(2).amodal, rect(15, 15, 25, 25))
    assert np.array_equal(tab.session.scene.get(1).amodal, rect(10, 10, 30, 30))
    value = r.editor_value(tab)  # now showing a: its mask tinted, and the strokes go to it
    assert np.array_equal(np.any(value["background"] != tab.current_image(), axis=2), rect(15, 15, 25, 25))
    h.apply_editor_mask(tab, strokes((0, 0, 12, 12)), "add")
    assert np.array_equal(tab.session.scene.get(2).amodal, rect(15, 15, 25, 25) | rect(0, 0, 12, 12))
    tab.clear_selection()
    assert r.editor_label(tab) == "mask editor · nothing selected: strokes can become a new instance"


def test_a_name_category_and_stuff_save_is_one_undo_step(cfg, tab):
    h.select_instance(tab, 1)
    h.set_attributes(tab, "bottle", 7.0, True)
    inst = tab.session.scene.get(1)
    assert (inst.name, inst.category, inst.is_stuff) == ("bottle", 7, True)
    assert tab.session.history() == (["set name / category / stuff of 1"], [])
    h.set_attributes(tab, "bottle", 7.0, True)  # nothing changed: no edit
    assert len(tab.session.history()[0]) == 1
    assert h.undo(tab) == "set name / category / stuff of 1"
    inst = tab.session.scene.get(1)
    assert (inst.name, inst.category, inst.is_stuff) == ("b", None, False)
    h.set_attributes(tab, "b", 3.0, False)
    assert tab.session.history()[0] == ["set category of 1"]


def test_next_on_the_last_image_and_previous_on_the_first_say_so(tab):
    with pytest.raises(h.UserError, match=r"this is the first image \(1 of 2\)"):
        h.step(tab, -1)
    h.step(tab, 1)
    assert tab.session.current == 1
    with pytest.raises(h.UserError, match=r"this is the last image \(2 of 2\)"):
        h.step(tab, 1)
    assert tab.session.current == 1


def test_put_in_front_lists_every_object_but_the_selected_one(cfg, tab):
    assert [v for _, v in r.render(tab, ["inspector"])["others"]] == [2, 1, 3]
    h.select_instance(tab, 1)
    others = r.render(tab, ["inspector"])["others"]
    assert others == [("a (#2)", 2), ("c (#3)", 3)]


def test_show_view_and_opacity_are_remembered_per_workspace(cfg, model_tab, tmp_path):
    tab = model_tab
    h.set_view_setting(tab, "show", "prediction")
    h.set_view_setting(tab, "view", "occluded")
    h.set_view_setting(tab, "opacity", 0.8)
    with pytest.raises(h.UserError, match="show must be one of annotation, prediction, both, got 'x'"):
        h.set_view_setting(tab, "show", "x")
    with pytest.raises(h.UserError, match="opacity must be between 0 and 1, got 2.0"):
        h.set_view_setting(tab, "opacity", 2)
    # A reload (a new tab on the same workspace) comes back to them.
    again = h.Tab(
        session=EditSession(tab.session.folder, scenes(), tab.session.image_dir), checkpoint=tab.checkpoint, cfg=tab.cfg
    )
    h.load_view_settings(again)
    assert (again.show, again.view, again.opacity) == ("prediction", "occluded", 0.8)
    table = r.render(again, ["table"])
    assert (table["show"], table["view_choice"], table["opacity"]) == ("prediction", "occluded", 0.8)
    # Without a model there is no prediction to come back to; another workspace keeps its own.
    bare = h.Tab(session=EditSession(tab.session.folder, scenes(), tab.session.image_dir), cfg=tab.cfg)
    h.load_view_settings(bare)
    assert (bare.show, bare.view) == ("annotation", "occluded")
    other = h.Tab(session=EditSession(tmp_path / "ws" / "other", scenes(), tab.session.image_dir), cfg=tab.cfg)
    h.load_view_settings(other)
    assert (other.show, other.view, other.opacity) == ("annotation", "amodal", 0.5)


def test_the_status_line_speaks_to_annotators(cfg, tab):
    h.select_instance(tab, 1)
    h.reorder(tab, "back")
    status = r.render(tab, ["table"])["status"]
    assert status == "last edit: move 1 back · 1 undo / 0 redo · 1 edited image(s) · every edit is saved"


def test_next_object_cycles_front_to_back(cfg, tab):
    assert [h.select_next(tab)["id"] for _ in range(4)] == [2, 1, 3, 2]  # a, b, c (ranks 1, 2, 3), a again
    h.step(tab, 1)
    assert h.select_next(tab)["id"] == 1


# ----- large photos, and what the caches hold ----------------------------------------------------------
def test_a_large_photo_is_shown_reduced_and_clicks_and_edits_map_to_full_resolution(tmp_path):
    BH, BW = 2000, 3300  # reduced 3 times to 667 x 1100
    folder = tmp_path / "big"
    folder.mkdir()
    cv2.imwrite(str(folder / "big.png"), np.full((BH, BW, 3), 90, np.uint8))
    small = np.zeros((BH, BW), bool)
    small[1000:1002, 1999:2000] = True  # 1 x 2 px: only the display pixels whose block centre it holds
    large = np.zeros((BH, BW), bool)
    large[100:1500, 200:3000] = True
    scene = AmodalScene(
        {"id": 1, "file_name": "big.png", "height": BH, "width": BW},
        [Instance(1, small, rank=1, name="speck"), Instance(2, large, rank=2, name="wall")],
    )
    cfg = h.AppConfig(workspace=tmp_path / "ws")
    tab = h.Tab(session=EditSession(tmp_path / "ws" / "big", AnnotationSet([scene]), folder), cfg=cfg)
    display = r.display_for((BH, BW))
    assert (display.down, display.up, display.reduced) == (3, 1, (667, 1100))
    assert r.render(tab, ("view",))["view"].pixels.shape == (667, 1100, 3)
    # Display pixel (dx, dy) is the block [3 dx, 3 dx + 3) x [3 dy, 3 dy + 3) and means its centre pixel.
    assert r.click_to_pixel(tab, 666, 333) == (1999, 1000) and r.click_to_pixel(tab, 1099, 666) == (3298, 1999)
    assert h.select_at(tab, *r.click_to_pixel(tab, 666, 333))["name"] == "speck"
    assert h.select_at(tab, *r.click_to_pixel(tab, 666, 334))["name"] == "wall"  # centre (1999, 1003)
    assert h.select_at(tab, *r.click_to_pixel(tab, 1050, 333)) is None  # centre (3151, 1000): background
    tab.show = "both"
    assert r.click_to_pixel(tab, 1100 + 666, 333) == (BW + 1999, 1000)
    tab.show = "annotation"
    # The view's sampled masks are exactly the full-resolution masks at the clicked pixels.
    reduced = r.display_scene(tab, "annotation", display)
    assert reduced.shape == (667, 1100) and np.argwhere(reduced.get(1).amodal).tolist() == [[333, 666]]
    # The editor gets the reduced photo; a stroke on display pixel (10, 20) fills its 3 x 3 block.
    h.select_instance(tab, 2)
    assert r.editor_value(tab)["background"].shape == (667, 1100, 3)
    stroke = np.zeros((667, 1100, 4), np.uint8)
    stroke[20, 10, 3] = 255
    h.apply_editor_mask(tab, {"layers": [stroke]}, "add")
    added = tab.session.scene.get(2).amodal & ~large
    assert np.argwhere(added).min(axis=0).tolist() == [60, 30] and int(added.sum()) == 9


def test_a_large_photo_costs_memory_by_its_display_not_its_pixels(tmp_path):
    """Drawing the view of a 6000 x 4000 photo with 30 instances, selecting one and inspecting it allocate a
    small multiple of one full-resolution mask, not of the image (72 MB) or of the instances (30 x 24 MB)."""
    import tracemalloc

    BH, BW = 4000, 6000
    folder = tmp_path / "photo"
    folder.mkdir()
    cv2.imwrite(str(folder / "photo.jpg"), np.full((BH, BW, 3), 120, np.uint8))
    rng = np.random.default_rng(3)
    instances = []
    for k in range(30):
        x, y = int(rng.integers(0, BW - 600)), int(rng.integers(0, BH - 400))
        mask = np.zeros((BH, BW), bool)
        mask[y : y + 400, x : x + 600] = True
        instances.append(Instance(k + 1, mask, rank=k + 1, name=f"o{k}"))
    scene = AmodalScene({"id": 1, "file_name": "photo.jpg", "height": BH, "width": BW}, instances)
    cfg = h.AppConfig(workspace=tmp_path / "ws")
    tab = h.Tab(session=EditSession(tmp_path / "ws" / "photo", AnnotationSet([scene]), folder), cfg=cfg)
    tab.current_image()  # the photo itself (72 MB) is read once and cached by the app, as any image is
    live = tab.session.scene  # so is its editable scene
    tracemalloc.start()
    view = r.render(tab, ("view",))["view"]
    x, y = (int(v) for v in live.get(30).bbox()[:2])
    h.select_at(tab, x + 300, y + 200)
    r.render(tab, ("view", "inspector", "table"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert view.pixels.shape == (1000, 1500, 3)  # reduced 4 times
    assert peak < 8 * BH * BW, f"{peak / 1e6:.0f} MB"  # 8 full-resolution masks; the image is 72 MB
    # What the tab keeps is display-sized: the reduced photo, its scene (30 masks of 1.5 MB), the view twice.
    assert tab.figures.nbytes < 4 * BH * BW


def test_the_model_cache_holds_references_and_evicts_by_bytes(model_tab, cfg):
    tab = model_tab
    model = tab.model
    first, again = tab.prediction(), tab.prediction()
    assert all(a is b and a.amodal_crop is b.amodal_crop for a, b in zip(first.instances, again.instances))  # no copies
    assert model.predictor.calls == 1
    entry_bytes = model.cached_bytes
    assert entry_bytes == sum(i.amodal.nbytes for i in first.instances) + first.instances[0].semdist.nbytes
    model.cache_bytes = 2 * entry_bytes  # room for two predictions
    images = [np.full((H, W, 3), v, np.uint8) for v in (1, 2, 3)]
    for image in images:
        model.predict(image, {"id": 9})
    assert model.predictor.calls == 4 and model.cached_bytes == 2 * entry_bytes  # the oldest two went
    model.predict(images[2], {"id": 9})
    assert model.predictor.calls == 4  # still cached
    model.predict(images[0], {"id": 9})
    assert model.predictor.calls == 5  # evicted, predicted again
    model.cache_bytes = 0
    model.predict(images[1], {"id": 9})
    assert len(model._cache) == 1  # the newest always stays


def test_the_figure_cache_evicts_by_bytes():
    cache = FigureCache(max_bytes=3 * 300)
    pictures = [cache.picture((k,), lambda: np.zeros((10, 5, 3), np.uint8)) for k in range(3)]  # 2 x 150 bytes each
    assert cache.nbytes == 900 and all((k,) in cache for k in range(3))
    assert cache.picture((0,), lambda: None) is pictures[0]  # a hit: the same picture, now the most recent
    cache.picture((3,), lambda: np.zeros((10, 5, 3), np.uint8))
    assert (1,) not in cache and all((k,) in cache for k in (0, 2, 3)) and cache.nbytes == 900
    big = cache.picture((4,), lambda: np.zeros((100, 100, 3), np.uint8))
    assert [k for k in (0, 2, 3, 4) if (k,) in cache] == [4] and cache.nbytes == big.pixels.nbytes * 2


def test_the_comparison_in_words_and_when_it_cannot_run(model_tab, tmp_path, monkeypatch):
    tab = model_tab
    monkeypatch.setattr(h, "COMPARISONS", {})
    out = tmp_path / "run"
    write = [sys.executable, "-c", f"open({str(out / 'last.pt')!r}, 'wb').write(b'x')"]
    plan = FineTunePlan(out, write, Path(tab.checkpoint), out / "train.json", [0], out / "held_out.cocoa.json",
                        tab.session.image_dir, 1, "")  # fmt: skip
    monkeypatch.setitem(h.JOBS, tab.session.folder, run_plan(plan))
    assert wait_for(tab.job, {"done"}).checkpoint == out / "last.pt"
    compared = []

    def compare(old, new, held_out, images):
        compared.append((old, new, held_out, images))
        return h.Comparison(0.25, 0.5, 1)

    monkeypatch.setattr(h, "compare", compare)
    assert h.comparison_text(h.finetune_comparison(tab)) == (
        "amodal AP on the 1 held-out corrected image(s): previous model 0.250, new model 0.500 (better)"
    )
    assert compared == [(plan.base, out / "last.pt", plan.held_out_data, plan.images)]
    assert h.finetune_comparison(tab) == h.Comparison(0.25, 0.5, 1) and len(compared) == 1  # computed once

    def broken(*args):
        raise ImageReadError("held/one.png", "a readable image")

    h.COMPARISONS.clear()
    monkeypatch.setattr(h, "compare", broken)
    assert h.comparison_text(h.finetune_comparison(tab)) == "no comparison: held/one.png: a readable image"
    assert h.comparison_text(h.Comparison(-1.0, -1.0, 2)) == "no comparison: the 2 held-out image(s) hold no object"
