"""A short real fine-tune launched from the app on CPU: train.py --init on the exported corrections, then
the new checkpoint becomes the tab's model (through the real Predictor)."""

import json
import subprocess
import sys
import time

import pytest
import yaml

from app import handlers as h
from app.main import ROOT
from semlayer.workspace import EditSession
from semlayer import synth
from semlayer.config import load_config
from semlayer.model.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
CONFIG = ROOT / "configs" / "tiny_synth.yaml"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny synthetic dataset and a 1-iteration checkpoint to start from, of another architecture than
    the app's training config (the other kind of layering maps)."""
    root = tmp_path_factory.mktemp("finetune")
    data = synth.write_dataset(root / "data", 2, seed=2, size=96, max_instances=3, min_instances=2, progress=False)
    variant = load_config(CONFIG)
    variant["model"]["class_specific_layers"] = not variant["model"]["class_specific_layers"]
    (root / "variant.yaml").write_text(yaml.safe_dump(variant))
    subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", str(root / "variant.yaml"), "--data", str(data),
         "--images", str(root / "data" / "images"), "--out", str(root / "base"), "--max-iters", "1", "--no-progress"],
        check=True, cwd=ROOT, capture_output=True, timeout=300,
    )  # fmt: skip
    return root, data


def test_finetune_from_the_app_loads_the_new_checkpoint(base):
    root, data = base
    cfg = h.AppConfig(
        workspace=root / "ws", data=data, images=root / "data" / "images", checkpoint=root / "base" / "last.pt",
        train_config=CONFIG, finetune_iters=1,
    )  # fmt: skip
    tab = h.Tab(session=EditSession.open(cfg.workspace, data, cfg.images), checkpoint=str(cfg.checkpoint), cfg=cfg)
    tab.session.move(tab.session.scene.order_ids()[0], "back")
    job = h.start_finetune(tab)
    # Issue 19: a fine-tune is planned in runs/finetune-N, on the corrected images less the held-out ones.
    assert job.out == tab.session.folder / "runs" / "finetune-1"
    assert job.command[job.command.index("--data") + 1] == str(job.out / "train.cocoa.json")
    deadline = time.time() + 300
    while (progress := h.finetune_status(tab)).state == "running" and time.time() < deadline:
        time.sleep(0.5)
    assert progress.state == "done", (progress, (job.out / "stderr.txt").read_text()[-2000:])
    assert (progress.step, progress.total) == (1, 1) and progress.loss > 0
    assert tab.checkpoint == str(job.out / "last.pt") == str(progress.checkpoint)
    assert tab.model.checkpoint == str(job.out / "last.pt")
    # It fine-tuned the model it was given: the checkpoint's architecture, every weight loaded, not the config's.
    _, tuned, _ = load_checkpoint(job.out / "last.pt")
    _, started, _ = load_checkpoint(root / "base" / "last.pt")
    assert tuned["model"] == started["model"] != load_config(CONFIG)["model"]
    assert load_config(job.out / "finetune_config.yaml")["train"] == load_config(CONFIG)["train"]
    assert "0 missing, 0 unexpected, 0 shape-mismatched" in (job.out / "stderr.txt").read_text()
    assert tab.prediction().shape == tab.session.scene.shape  # the new model predicts the current image


def cocoa_without_categories(root, data):
    """The synthetic file as COCOA proper: no categories, no category_id (class-agnostic data)."""
    obj = json.loads(data.read_text())
    obj.pop("categories")
    for ann in obj["annotations"]:
        for region in ann["regions"]:
            region.pop("category_id")
    path = root / "cocoa.json"
    path.write_text(json.dumps(obj))
    return path


def test_a_per_class_model_fine_tunes_on_class_agnostic_cocoa_with_its_heads_merged(base):
    root, data = base
    data = cocoa_without_categories(root, data)
    cfg = h.AppConfig(
        workspace=root / "ws-cocoa", data=data, images=root / "data" / "images", checkpoint=root / "base" / "last.pt",
        train_config=CONFIG, finetune_iters=1,
    )  # fmt: skip
    tab = h.Tab(session=EditSession.open(cfg.workspace, data, cfg.images), checkpoint=str(cfg.checkpoint), cfg=cfg)
    with pytest.raises(h.UserError, match="nothing to fine-tune on"):
        h.start_finetune(tab)
    for index in (1, 0):  # both images corrected: the first is held out to compare the models on
        tab.session.go_to(index)
        tab.session.move(tab.session.scene.order_ids()[0], "back")
    job = h.start_finetune(tab)
    # Issue 19: the note also says how many corrected images are held out.
    assert job.note == (
        "class-agnostic (the data has no categories): the model's 8 class heads merged into one; "
        "1 of 2 corrected images held out to compare the models on"
    )
    assert job.command[job.command.index("--init") + 1] == str(job.out / "init_class_agnostic.pt")
    deadline = time.time() + 300
    while (progress := h.finetune_status(tab)).state == "running" and time.time() < deadline:
        time.sleep(0.5)
    assert progress.state == "done", (progress, (job.out / "stderr.txt").read_text()[-2000:])
    _, tuned, names = load_checkpoint(job.out / "last.pt")
    assert tuned["model"]["num_classes"] == 1 and tuned["data"]["class_agnostic"] and names == ["object"]
    # Every weight came from the given model (the class heads merged), none started afresh.
    assert "0 missing, 0 unexpected, 0 shape-mismatched" in (job.out / "stderr.txt").read_text()
    # The page compares both models on the held-out image, uses the new one, and can go back.
    assert tab.checkpoint == str(job.out / "last.pt") and h.model_choices(tab) == (False, True)
    result = h.finetune_comparison(tab)
    assert result.images == 1 and all(-1 <= ap <= 1 for ap in (result.old_ap, result.new_ap))
    assert h.comparison_text(result).startswith("amodal AP on the 1 held-out corrected image(s): previous model ")
    assert h.rollback_model(tab) == cfg.checkpoint and tab.checkpoint == str(cfg.checkpoint)
    assert tab.model.checkpoint == str(cfg.checkpoint.resolve()) and h.model_choices(tab) == (True, False)
    assert h.finetune_status(tab).state == "done" and tab.checkpoint == str(cfg.checkpoint)  # it stays there
    assert tab.prediction().shape == tab.session.scene.shape


def test_merged_class_heads_keep_the_background_and_average_the_classes(tmp_path):
    import math

    import torch

    from semlayer.finetune import class_agnostic_checkpoint
    from semlayer.model.checkpoint import read_checkpoint, save_checkpoint
    from semlayer.model import build_model
    from semlayer.model.build import load_init_weights

    config = load_config(CONFIG)  # 8 classes, class-specific layering maps
    torch.manual_seed(0)
    state = build_model(config).state_dict()
    ckpt = save_checkpoint(
        tmp_path / "per_class.pt", {"model": state, "config": config, "class_names": list("abcdefgh")}
    )
    merged = read_checkpoint(class_agnostic_checkpoint(ckpt, tmp_path))
    K = config["model"]["K"]
    w, b = state["roi_heads.box_predictor.cls_score.weight"], state["roi_heads.box_predictor.cls_score.bias"]
    new_w, new_b = (
        merged["model"]["roi_heads.box_predictor.cls_score.weight"],
        merged["model"]["roi_heads.box_predictor.cls_score.bias"],
    )
    assert torch.equal(new_w[0], w[0]) and torch.allclose(new_w[1], w[1:].mean(0))
    assert torch.allclose(new_b, torch.stack([b[0], b[1:].mean() + math.log(8)]))
    box = state["roi_heads.box_predictor.bbox_pred.weight"].view(9, 4, -1)
    assert torch.allclose(
        merged["model"]["roi_heads.box_predictor.bbox_pred.weight"], torch.cat([box[0], box[1:].mean(0)])
    )
    logits = state["roi_heads.mask_predictor.layer_logits.weight"]
    layers = logits.view(9, K + 1, *logits.shape[1:])
    assert torch.allclose(
        merged["model"]["roi_heads.mask_predictor.layer_logits.weight"], torch.cat([layers[0], layers[1:].mean(0)])
    )
    # It is exactly a one-class model's state: every tensor loads.
    one = {**config, "model": {**config["model"], "num_classes": 1}, "data": {**config["data"], "class_agnostic": True}}
    report = load_init_weights(build_model(one), tmp_path / "init_class_agnostic.pt")
    assert report == {"missing": [], "unexpected": [], "mismatched": []}
    assert merged["class_names"] == ["object"]
