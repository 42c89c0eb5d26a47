"""Fine-tuning a workspace from the library: COCOA-cls, D2SA, KINS and COCOA exports of the demo data, a
held-out split of the corrected images, old-against-new AP on it, model history and rollback."""

import json
import sys
import time

import pytest
import torch

from semlayer import formats
from semlayer.model.checkpoint import load_checkpoint, read_checkpoint
from semlayer.finetune import (
    FineTuneJob,
    FineTuneRefused,
    ModelHistory,
    compare,
    held_out_indices,
    mapped_class_checkpoint,
    prepare_finetune,
    start_finetune,
)
from semlayer.predict import DEFAULT_CHECKPOINT
from semlayer.resources import ROOT
from semlayer.workspace import EditSession

DEMO = ROOT / "assets" / "demo"
CONFIG = ROOT / "configs" / "tiny_synth.yaml"
# D2SA-like: other category names; two of them the shipped model knows ("disc", "box").
D2SA_NAMES = {1: "disc", 2: "box", 3: "apple", 4: "banana", 5: "cereal", 6: "tea", 7: "soap", 8: "pasta"}


def export(kind, folder):
    """The demo dataset as a ``kind`` file."""
    annset = formats.load(DEMO / "annotations.json")
    if kind == "cocoa":
        obj = json.loads((DEMO / "annotations.json").read_text())
        obj.pop("categories")
        for ann in obj["annotations"]:
            for region in ann["regions"]:
                region.pop("category_id")
    elif kind == "kins":
        obj = formats.to_kins(annset)
    else:
        obj = formats.to_coco(annset)
        if kind == "d2sa":
            for category in obj["categories"]:
                category["name"] = D2SA_NAMES[int(category["id"])]
    path = folder / f"{kind}.json"
    path.write_text(json.dumps(obj))
    return path


def wait(job, timeout=300):
    deadline = time.time() + timeout
    while (progress := job.progress()).state == "running" and time.time() < deadline:
        time.sleep(0.2)
    return progress


def test_held_out_split_is_every_fifth_corrected_image_and_none_of_one():
    assert held_out_indices([]) == [] and held_out_indices([7]) == []
    assert held_out_indices([9, 3]) == [3]
    assert held_out_indices([0, 1, 2, 3, 4, 5, 6]) == [0, 5]
    assert held_out_indices(range(11)) == [0, 5, 10]


def test_nothing_corrected_is_refused_with_a_reason(tmp_path):
    session = EditSession.open(tmp_path / "ws", DEMO / "annotations.json", DEMO / "images")
    with pytest.raises(FineTuneRefused, match="nothing to fine-tune on: no image of this dataset is corrected yet"):
        prepare_finetune(session, DEFAULT_CHECKPOINT, CONFIG, 1)
    assert not (session.folder / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, mode, classes",
    [
        ("cocoa_cls", "per category (8 categories, the model's own)", 8),
        ("d2sa", "per category (8 categories; 2 of them the model knows by name", 8),
        ("kins", "per category (8 categories, the model's own)", 8),
        ("cocoa", "class-agnostic (the data has no categories): the model's 8 class heads merged into one", 1),
    ],
)
def test_fine_tune_an_export_compare_on_the_held_out_images_and_roll_back(tmp_path, kind, mode, classes):
    session = EditSession.open(tmp_path / "ws", export(kind, tmp_path), DEMO / "images")
    for index in range(7):
        session.go_to(index)
        session.rename(session.scene.instances[0].id, "corrected")
    assert session.edited_indices() == list(range(7))
    plan = prepare_finetune(session, DEFAULT_CHECKPOINT, CONFIG, 1)
    assert plan.out == session.folder / "runs" / "finetune-1" and plan.held_out == [0, 5]
    assert plan.note.startswith(mode) and plan.note.endswith(
        "; 2 of 7 corrected images held out to compare the models on"
    )
    held_ids = {session.scene_at(i).image_id for i in (0, 5)}
    trained = json.loads(plan.train_data.read_text())
    assert len(trained["images"]) == 10 and not {a["image_id"] for a in trained["annotations"]} & held_ids
    held = formats.load(plan.held_out_data)
    assert {s.image_id for s in held} == held_ids and all(s.instances[0].name == "corrected" for s in held)

    job = start_finetune(plan)
    progress = wait(job)
    assert progress.state == "done", (progress, (job.out / "stderr.txt").read_text()[-2000:])
    assert (progress.step, progress.total) == (1, 1) and progress.loss > 0
    _, config, names = load_checkpoint(progress.checkpoint)
    assert config["model"]["num_classes"] == classes == len(names)
    assert "0 missing, 0 unexpected, 0 shape-mismatched" in (job.out / "stderr.txt").read_text()

    result = compare(DEFAULT_CHECKPOINT, progress.checkpoint, plan.held_out_data, plan.images)
    assert result.images == 2 and all(isinstance(ap, float) and -1 <= ap <= 1 for ap in (result.old_ap, result.new_ap))

    history = ModelHistory(session.folder)
    assert history.record(job) == progress.checkpoint and history.previous_model() == DEFAULT_CHECKPOINT
    assert ModelHistory(session.folder).current == str(progress.checkpoint)  # persisted
    assert history.rollback() == DEFAULT_CHECKPOINT
    assert ModelHistory(session.folder).current == str(DEFAULT_CHECKPOINT) and history.previous_model() is None
    with pytest.raises(FineTuneRefused, match="no earlier model to go back to"):
        history.rollback()


def test_history_of_two_fine_tunes_rolls_back_one_at_a_time(tmp_path):
    """A fine-tune of a fine-tune (train.py stood in for by a copy): rollback goes to the first, then the shipped model."""
    session = EditSession.open(tmp_path / "ws", DEMO / "annotations.json", DEMO / "images")
    session.go_to(2)
    session.move(session.scene.order_ids()[0], "back")
    history = ModelHistory(session.folder)
    base = DEFAULT_CHECKPOINT
    for n in (1, 2):
        plan = prepare_finetune(session, base, CONFIG, 1)
        assert plan.held_out == [] and plan.held_out_data is None  # one corrected image: all of it trains
        copy = f"import shutil; shutil.copy({str(DEFAULT_CHECKPOINT)!r}, {str(plan.out / 'last.pt')!r})"
        plan.command = [sys.executable, "-c", copy]
        job = start_finetune(plan)
        assert wait(job, 60).state == "done" and history.record(job) == plan.out / "last.pt"
        assert plan.out.name == f"finetune-{n}"
        base = plan.out / "last.pt"
    first, second = (session.folder / "runs" / f"finetune-{n}" / "last.pt" for n in (1, 2))
    assert history.current == str(second) and history.previous_model() == first
    assert history.rollback() == first and history.previous_model() == DEFAULT_CHECKPOINT
    assert history.rollback() == DEFAULT_CHECKPOINT and history.previous_model() is None


ETA_TRAIN = r"""
import json, pathlib, sys, time
out = pathlib.Path(sys.argv[1])
with open(out / "log.jsonl", "a") as f:
    f.write(json.dumps({"split": "train", "iteration": 2, "loss": 0.75, "time": 0.5}) + "\n")
    f.write(json.dumps({"split": "train", "iteration": 6, "loss": 0.5, "time": 2.0}) + "\n")
    f.flush()
while not (out / "stop").exists():
    time.sleep(0.05)
"""


def test_progress_has_the_latest_loss_and_an_eta_from_the_iteration_times(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(ETA_TRAIN)
    job = FineTuneJob([sys.executable, str(script), str(tmp_path)], tmp_path, total=10)
    deadline = time.time() + 30
    while (progress := job.progress()).step < 6 and time.time() < deadline:
        time.sleep(0.05)
    # 2 iterations at 0.5 s and 4 at 2 s: 1.5 s each on average, 4 to go.
    assert (progress.state, progress.step, progress.loss) == ("running", 6, 0.5)
    assert progress.eta_s == pytest.approx(6.0)
    (tmp_path / "stop").write_text("")
    assert wait(job, 30).state == "failed"  # it wrote no checkpoint


def test_mapped_heads_keep_the_classes_known_by_name_and_start_the_others_from_their_mean(tmp_path):
    # Data categories by id: 3 "box" (the model's class 2), 7 "apple" (unknown), 9 "disc" (class 1).
    categories = [{"id": 9, "name": "disc"}, {"id": 3, "name": "box"}, {"id": 7, "name": "apple"}]
    model = read_checkpoint(DEFAULT_CHECKPOINT)
    mapped = read_checkpoint(mapped_class_checkpoint(DEFAULT_CHECKPOINT, categories, tmp_path))
    assert mapped["class_names"] == ["box", "apple", "disc"]
    assert mapped["categories"] == [{"id": 3, "name": "box"}, {"id": 7, "name": "apple"}, {"id": 9, "name": "disc"}]
    assert mapped["config"]["model"]["num_classes"] == 3 and not mapped["config"]["data"]["class_agnostic"]
    for name in ("roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.cls_score.bias"):
        old, new = model["model"][name], mapped["model"][name]
        assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[2]) and torch.equal(new[3], old[1])
        assert torch.allclose(new[2], old[1:].mean(0))
    box = model["model"]["roi_heads.box_predictor.bbox_pred.weight"].view(9, 4, -1)
    new_box = mapped["model"]["roi_heads.box_predictor.bbox_pred.weight"].view(4, 4, -1)
    assert torch.equal(new_box[1], box[2]) and torch.allclose(new_box[2], box[1:].mean(0))
