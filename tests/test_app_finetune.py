"""A short real fine-tune launched from the app on CPU: train.py --init on the exported corrections, then
the new checkpoint becomes the tab's model (through the real Predictor)."""

import subprocess
import sys
import time

import pytest
import yaml

from app import handlers as h
from app.main import ROOT
from app.session import EditSession
from semlayer import synth
from semlayer.engine import load_checkpoint, load_config

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
    tab = h.Tab(session=EditSession.open(cfg.workspace, data, cfg.images), checkpoint=str(cfg.checkpoint))
    tab.session.move(tab.session.scene.order_ids()[0], "back")
    job = h.start_finetune(cfg, tab)
    assert job.out == tab.session.folder / "finetune-1"
    assert job.command[job.command.index("--data") + 1] == str(tab.session.folder / "exports" / "annotations.corrected.cocoa.json")
    deadline = time.time() + 300
    while (progress := h.finetune_status(tab)).state == "running" and time.time() < deadline:
        time.sleep(0.5)
    assert progress.state == "done", (progress, (job.out / "stderr.txt").read_text()[-2000:])
    assert (progress.step, progress.total) == (1, 1) and progress.loss > 0
    assert tab.checkpoint == str(job.out / "last.pt") == str(progress.checkpoint)
    assert h.model_for(tab).checkpoint == str(job.out / "last.pt")
    # It fine-tuned the model it was given: the checkpoint's architecture, every weight loaded, not the config's.
    _, tuned, _ = load_checkpoint(job.out / "last.pt")
    _, started, _ = load_checkpoint(root / "base" / "last.pt")
    assert tuned["model"] == started["model"] != load_config(CONFIG)["model"]
    assert load_config(job.out / "finetune_config.yaml")["train"] == load_config(CONFIG)["train"]
    assert "0 missing, 0 unexpected, 0 shape-mismatched" in (job.out / "stderr.txt").read_text()
    assert h.prediction(cfg, tab).shape == tab.session.scene.shape  # the new model predicts the current image
