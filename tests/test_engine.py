import json
import math
import textwrap
from pathlib import Path

import pytest
import torch

from semlayer import formats, synth
from semlayer.config import load_config, validate_config
from semlayer.engine import TrainingError, lr_factor, train
from semlayer.errors import ConfigError, FormatError
from semlayer.model import build_model
from semlayer.model.checkpoint import (
    export_for_inference,
    load_checkpoint,
    load_for_inference,
    read_checkpoint,
    save_checkpoint,
)
from semlayer.predict import Predictor
from tests.helpers import TINY_MODEL, tiny_data, torchrun_2


ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "model": {
        **TINY_MODEL,
        "rpn_pre_nms_top_n_test": 50,
        "rpn_post_nms_top_n_test": 20,
        "box_detections_per_img": 5,
    },
    "data": tiny_data(6),
    "train": {
        "batch_size": 2,
        "max_iters": 4,
        "lr": 0.01,
        "warmup_iters": 2,
        "log_every": 1,
        "val_every": 3,
        "checkpoint_every": 100,
    },
}


def tiny_config(num_classes=None, **train_overrides):
    """The tiny configuration; per class with ``num_classes``, else class-agnostic."""
    cfg = json.loads(json.dumps(TINY))
    cfg["train"].update(train_overrides)
    if num_classes is not None:
        cfg["model"]["num_classes"] = num_classes
        cfg["data"]["class_agnostic"] = False
    return validate_config(cfg)


def records(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_lr_schedule_warmup_cosine_and_steps():
    cfg = validate_config({"train": {"max_iters": 110, "warmup_iters": 10, "warmup_factor": 0.1}})["train"]
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(5, cfg) == pytest.approx(0.55)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.5)
    assert lr_factor(110, cfg) == pytest.approx(0.0, abs=1e-12)
    step = dict(cfg, schedule="step", steps=[0.5, 100], gamma=0.1)
    assert [lr_factor(i, step) for i in (54, 55, 99, 100)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
    floor = dict(cfg, min_lr_factor=0.2)
    assert lr_factor(110, floor) == pytest.approx(0.2)
    assert lr_factor(60, floor) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  lrr: 0.1\n", "train.lrr: unknown key"),
        ("train:\n  lr: fast\n", "train.lr: expected a number, got 'fast'"),
        ("train:\n  max_iters: true\n", "train.max_iters: expected an integer, got True"),
        ("train:\n  max_iters: 0\n", "train.max_iters: expected a value > 0"),
        ("model:\n  kind: yolo\n", "model.kind: expected one of"),
        ("data:\n  synthetic:\n    size: [1]\n", "data.synthetic.size: expected an integer"),
        ("data:\n  augment:\n    scale_range: [1.2, 0.8]\n", "data.augment.scale_range"),
        ("model:\n  num_classes: 80\n", "model.num_classes: expected 1 with data.class_agnostic"),
        ("train: [1, 2]\n", "train: expected a mapping"),
        ("model: {kind: sln\n", "not valid YAML"),
        ("- 1\n", "top level: expected a mapping"),
        ("train:\n  loss_weights: {loss_layers: -1}\n", "train.loss_weights.loss_layers"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_missing_config_and_shipped_configs(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg["model"]["K"] >= 1, path


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    return out, train(tiny_config(), out, progress=False)


def test_training_writes_outputs_and_checkpoint_loads(straight_run):
    out, result = straight_run
    assert result.iteration == 4
    for name in ("last.pt", "best.pt", "log.jsonl", "curves.png"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = records(out)
    train_log = [r for r in log if r["split"] == "train"]
    assert [r["iteration"] for r in train_log] == [1, 2, 3, 4]
    assert {"loss", "loss_layers", "loss_semdist", "loss_global_layers", "lr", "time"} <= set(train_log[0])
    assert [r["iteration"] for r in log if r["split"] == "val"] == [3, 4]
    ckpt = read_checkpoint(out / "last.pt")
    assert ckpt["iteration"] == 4 and ckpt["class_names"] == ["object"]
    assert ckpt["categories"] == [{"id": 1, "name": "object"}]
    assert set(ckpt["rng"][0]) >= {"python", "numpy", "torch"}

    model, config, names = load_checkpoint(out / "last.pt", "cpu")
    assert not model.training and names == ["object"] and config["model"]["fpn_channels"] == 16
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)
    with torch.no_grad():
        det = model([torch.rand(3, 64, 64)])[0]
    assert det["layer_logits"].shape[1:] == (4, 28, 28)


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(FormatError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(FormatError, match="bad.pt: a readable semlayer checkpoint"):
        load_checkpoint(bad)
    foreign = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    with pytest.raises(FormatError, match="weights.pt: format: a semlayer checkpoint"):
        load_checkpoint(foreign)


def test_resume_continues_exactly(tmp_path, straight_run):
    out_a, straight = straight_run
    first = train(tiny_config(), tmp_path / "b", progress=False, stop_at=2)
    assert first.iteration == 2
    resumed = train(tiny_config(), tmp_path / "b", resume=True, progress=False)
    assert resumed.iteration == 4
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    oa, ob = read_checkpoint(out_a / "last.pt"), read_checkpoint(tmp_path / "b" / "last.pt")
    assert oa["scheduler"] == ob["scheduler"]
    assert oa["categories"] == ob["categories"] == [{"id": 1, "name": "object"}]
    assert all(
        torch.equal(oa["optimizer"]["state"][k]["momentum_buffer"], ob["optimizer"]["state"][k]["momentum_buffer"])
        for k in oa["optimizer"]["state"]
    )
    # The resumed log continues the first one; the training losses are those of the uninterrupted run.
    la = [r for r in records(out_a) if r["split"] == "train"]
    lb = [r for r in records(tmp_path / "b") if r["split"] == "train"]
    assert [r["iteration"] for r in lb] == [1, 2, 3, 4]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


# The synthetic shapes under other ids and names, with gaps, as a COCO-style dataset (COCOA-cls-like).
RENUMBERED = {1: 3, 2: 5, 3: 17, 4: 20, 5: 41, 6: 64, 7: 77, 8: 90}


def renumbered_dataset(folder):
    """A small synthetic dataset whose category ids are `RENUMBERED` (names upper-cased): (file, images)."""
    path = synth.write_dataset(folder, 4, seed=2, size=64, max_instances=3, min_instances=2, progress=False)
    annset = formats.load(path)
    annset.categories = [{"id": RENUMBERED[c["id"]], "name": c["name"].upper()} for c in synth.CATEGORIES]
    for scene in annset.scenes:
        for inst in scene.instances:
            inst.category = RENUMBERED[inst.category]
    formats.save(annset, folder / "coco.json", format="coco")
    return str(folder / "coco.json"), str(folder / "images")


def test_fine_tuning_on_other_categories_stores_the_new_datasets(tmp_path, straight_run):
    out_a, _ = straight_run  # class-agnostic: category 1, "object"
    expected = [{"id": RENUMBERED[c["id"]], "name": c["name"].upper()} for c in synth.CATEGORIES]
    data = renumbered_dataset(tmp_path / "data")
    result = train(
        tiny_config(num_classes=8, max_iters=2, val_every=2),
        tmp_path / "ft",
        init=str(out_a / "last.pt"),
        train_data=data,
        progress=False,
    )
    assert result.iteration == 2
    ckpt = read_checkpoint(tmp_path / "ft" / "last.pt")
    assert ckpt["categories"] == expected and [c["id"] for c in expected] == [3, 5, 17, 20, 41, 64, 77, 90]
    assert ckpt["class_names"] == [c["name"].upper() for c in synth.CATEGORIES]  # kept for older readers
    assert read_checkpoint(tmp_path / "ft" / "best.pt")["categories"] == expected
    _, _, categories = load_for_inference(tmp_path / "ft" / "last.pt")
    assert categories == expected and load_checkpoint(tmp_path / "ft" / "last.pt")[2] == ckpt["class_names"]
    assert Predictor(tmp_path / "ft" / "last.pt").categories == expected
    # export-model keeps them.
    slim = export_for_inference(tmp_path / "ft" / "last.pt", tmp_path / "slim.pt")
    slim_ckpt = read_checkpoint(slim)
    assert "optimizer" not in slim_ckpt and slim_ckpt["categories"] == expected
    assert slim_ckpt["class_names"] == ckpt["class_names"]


def test_checkpoints_without_categories_load_with_ids_1_to_c(tmp_path, straight_run):
    """Checkpoints written before the categories entry (class names only) mean ids 1..C; exporting one
    writes that out."""
    out_a, _ = straight_run
    ckpt = read_checkpoint(out_a / "last.pt")
    old = {k: v for k, v in ckpt.items() if k not in ("categories", "format", "version")}
    save_checkpoint(tmp_path / "agnostic.pt", old)
    assert load_for_inference(tmp_path / "agnostic.pt")[2] == [{"id": 1, "name": "object"}]
    names = ["disc", "box", "triangle"]
    cfg = tiny_config(num_classes=3)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "old.pt", {"model": build_model(cfg).state_dict(), "config": cfg, "class_names": names})
    model, config, categories = load_for_inference(tmp_path / "old.pt")
    assert categories == [{"id": 1, "name": "disc"}, {"id": 2, "name": "box"}, {"id": 3, "name": "triangle"}]
    assert load_checkpoint(tmp_path / "old.pt")[2] == names
    slim = read_checkpoint(export_for_inference(tmp_path / "old.pt", tmp_path / "slim.pt"))
    assert slim["categories"] == categories and slim["class_names"] == names


def test_a_diverging_run_stops_with_a_clear_error(tmp_path):
    cfg = tiny_config(lr=1e12, warmup_iters=0, max_iters=6, clip_grad_norm=0.0)
    with pytest.raises(TrainingError, match=r"the loss is not finite at iteration 2 .*lower train.lr"):
        train(cfg, tmp_path / "nan", progress=False)


DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from semlayer.config import validate_config
    from semlayer.engine import train
    torch.set_num_threads(1)
    out = sys.argv[1]
    result = train(validate_config(json.loads(sys.argv[2])), out, progress=False)
    torch.save(result.model.state_dict(), os.path.join(out, f"rank{os.environ['RANK']}.pt"))
    """
)


def test_two_process_ddp_on_cpu_ends_with_identical_weights(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    out.mkdir()
    cfg = json.loads(json.dumps(TINY))
    cfg["train"].update(max_iters=3, val_every=3)
    proc = torchrun_2([str(script), str(out), json.dumps(cfg)], timeout=180, env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(out / "rank0.pt", weights_only=True)
    w1 = torch.load(out / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    init = torch.load(out / "last.pt", weights_only=True)
    assert init["iteration"] == 3 and len(init["rng"]) == 2  # every process's RNG state is kept
    # Only rank 0 wrote the outputs; the two shards of 3 images each made up the epoch.
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "curves.png",
        "last.pt",
        "log.jsonl",
        "rank0.pt",
        "rank1.pt",
    ]


def test_refitting_one_head_leaves_the_rest_of_the_network_bit_for_bit(tmp_path, straight_run):
    out_a, _ = straight_run
    cfg = tiny_config(max_iters=3, val_every=2, trainable=["roi_heads.mask_predictor.semdist"])
    cfg["model"]["semdist_kernel"] = 1  # a new 1x1 sem-dist layer on the 3x3 run's network
    result = train(cfg, tmp_path / "refit", init=str(out_a / "last.pt"), progress=False)
    before = read_checkpoint(out_a / "last.pt")["model"]
    after = result.model.state_dict()
    assert after["roi_heads.mask_predictor.semdist.0.weight"].shape[-2:] == (1, 1)
    changed = {k for k in after if k.startswith("roi_heads.mask_predictor.semdist.")}
    assert changed == {f"roi_heads.mask_predictor.semdist.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}
    # Everything else, BatchNorm running statistics included, is exactly as loaded.
    for k, v in after.items():
        if k not in changed:
            assert torch.equal(v, before[k]), k
    assert not torch.equal(
        after["roi_heads.mask_predictor.semdist.2.weight"], before["roi_heads.mask_predictor.semdist.2.weight"]
    )
    # So the detections, masks and layers of the two checkpoints agree; only the sem-dist maps differ.
    image = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(3))]
    old_model, new_model = (
        load_checkpoint(out_a / "last.pt", "cpu")[0],
        load_checkpoint(tmp_path / "refit" / "last.pt", "cpu")[0],
    )
    with torch.no_grad():
        old, new = old_model(image)[0], new_model(image)[0]
    assert old["boxes"].numel() > 0
    for key in ("boxes", "scores", "labels", "masks", "layer_logits", "global_layers"):
        assert torch.equal(old[key], new[key]), key
    assert not torch.equal(old["semdist"], new["semdist"])


def test_trainable_must_name_modules_of_the_model(tmp_path):
    with pytest.raises(ConfigError, match=r"train.trainable: 'roi_heads.nothing' names no module"):
        train(tiny_config(trainable=["roi_heads.nothing"]), tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="train.trainable"):
        tiny_config(trainable=[".semdist"])
    with pytest.raises(ConfigError, match="semdist_kernel"):
        validate_config({"model": {"semdist_kernel": 5}})
    with pytest.raises(ConfigError, match="semdist_resolution"):
        validate_config({"model": {"semdist_resolution": 7}})
