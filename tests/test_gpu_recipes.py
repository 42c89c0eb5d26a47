"""The GPU recipes: ImageNet backbone init, the ablation switches, and the shipped configs themselves (they
are only trained on GPUs, so here they are checked to validate, build and carry the standard settings)."""

from pathlib import Path

import pytest
import torch
import torchvision

from semlayer.data import AmodalDataset, Augment, SyntheticSource, collate
from semlayer.config import load_config
from semlayer.errors import ConfigError
from semlayer.model import build_model, load_init_weights
from tests.test_model import SMALL

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATASETS = ("cocoa", "cocoa_cls", "d2sa", "kins")


def test_imagenet_resnet50_weights_fill_the_whole_backbone(tmp_path):
    torch.manual_seed(0)
    classifier = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50_imagenet.pth"
    torch.save(classifier.state_dict(), path)
    model = build_model({"model": {**SMALL, "backbone": "resnet50_fpn"}})
    report = load_init_weights(model, path)
    body = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.body.")}
    source = classifier.state_dict()
    assert len(body) == 265  # 53 convolutions, 53 frozen batch norms of 4 tensors
    for key, value in body.items():
        assert torch.equal(value, source[key.removeprefix("backbone.body.")]), key
    assert not [k for k in report["missing"] if k.startswith("backbone.body.")]
    assert not any(k.startswith("backbone.body.fc") for k in model.state_dict())


def test_a_foreign_file_that_fills_less_than_the_backbone_is_an_error(tmp_path):
    model = build_model({"model": {**SMALL, "backbone": "resnet50_fpn"}})
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.conv1.weight": torch.zeros(64, 3, 7, 7), "head.weight": torch.zeros(3)}, foreign)
    with pytest.raises(
        ConfigError,
        match=r"foreign.pth fills 0 of the \d+ backbone tensors \(backbone.body\); "
        r"not loaded: backbone.body.conv1.weight, ",
    ):
        load_init_weights(model, foreign)
    # ResNet-18 weights: the right names, the wrong shapes from layer1 on.
    small = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), small)
    with pytest.raises(
        ConfigError,
        match=r"resnet18.pth fills [1-9]\d* of the \d+ backbone tensors.*"
        r"backbone.body.layer1.0.conv1.weight",
    ):
        load_init_weights(model, small)


@pytest.fixture(scope="module")
def batch():
    ds = AmodalDataset(SyntheticSource(2, seed=3, size=96, max_instances=3, min_instances=2), augment=Augment(96, 96))
    return collate([ds[0], ds[1]])


@pytest.mark.parametrize(
    "switches, absent",
    [
        ({"glm": False}, {"loss_global_layers"}),
        ({"semdist_head": False}, {"loss_semdist"}),
        ({"glm": False, "semdist_head": False}, {"loss_global_layers", "loss_semdist"}),
    ],
)
def test_ablations_build_train_a_step_and_predict(switches, absent, batch):
    torch.manual_seed(0)
    model = build_model({"model": {**SMALL, **switches}})
    assert (model.glm is None) == (not switches.get("glm", True))
    assert (model.roi_heads.mask_predictor.semdist is None) == (not switches.get("semdist_head", True))
    images, targets = batch
    model.train()
    losses = model(images, targets)
    full = {
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_classifier",
        "loss_box_reg",
        "loss_layers",
        "loss_semdist",
        "loss_global_layers",
    }
    assert set(losses) == full - absent
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.eval()
    with torch.no_grad():
        det = model([images[0]])[0]
    assert ("global_layers" in det) == switches.get("glm", True)
    assert ("semdist" in det) == switches.get("semdist_head", True)
    assert det["layer_logits"].shape[1:] == (4, 28, 28)


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("depth", ["r50", "r101"])
def test_gpu_configs_use_the_standard_recipe(dataset, depth):
    cfg = load_config(CONFIGS / f"{dataset}_{depth}.yaml")
    model, train = cfg["model"], cfg["train"]
    assert model["backbone"] == {"r50": "resnet50_fpn", "r101": "resnet101_fpn"}[depth]
    assert (model["rpn_pre_nms_top_n_train"], model["rpn_post_nms_top_n_train"]) == (2000, 1000)
    assert (model["rpn_pre_nms_top_n_test"], model["rpn_post_nms_top_n_test"]) == (1000, 1000)
    # ImageNet classification weights of the same depth (the paper's initialisation).
    assert model["init"] == {"r50": "weights/resnet50-0676ba61.pth", "r101": "weights/resnet101-63fe2227.pth"}[depth]
    assert train["amp"] and train["batch_size"] == 2 and train["schedule"] == "step"
    # COCOA and D2SA are class-agnostic in their official recipes.
    assert cfg["data"]["class_agnostic"] == (dataset in ("cocoa", "d2sa"))
    assert model["num_classes"] == {"cocoa": 1, "d2sa": 1, "cocoa_cls": 80, "kins": 8}[dataset]


@pytest.mark.parametrize(
    "name, switches", [("cocoa_r50_no_glm", {"glm": False}), ("cocoa_r50_no_semdist", {"semdist_head": False})]
)
def test_ablation_configs_differ_from_their_recipe_by_the_switch_alone(name, switches):
    cfg, base = load_config(CONFIGS / f"{name}.yaml"), load_config(CONFIGS / "cocoa_r50.yaml")
    assert {k: v for k, v in cfg["model"].items() if base["model"][k] != v} == switches
    assert cfg["data"] == base["data"] and cfg["train"] == base["train"]


def test_r101_recipe_builds_without_downloading():
    cfg = load_config(CONFIGS / "cocoa_r101.yaml")
    model = build_model({"model": {**cfg["model"], "init": None}})
    names = set(model.state_dict())
    assert "backbone.body.layer3.22.conv3.weight" in names  # ResNet-101: 23 blocks in stage 4
    assert model.rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}
    assert model.rpn._post_nms_top_n == {"training": 1000, "testing": 1000}


def test_an_ablated_model_trains_with_the_trainer_and_predicts_a_scene(tmp_path):
    from semlayer.config import validate_config
    from semlayer.engine import train
    from semlayer.model.checkpoint import load_checkpoint
    from semlayer.predict import Predictor
    from semlayer.synth import generate

    cfg = validate_config(
        {
            "model": {**SMALL, "min_size": 64, "max_size": 64, "glm": False, "semdist_head": False},
            "data": {
                "workers": 0,
                "synthetic": {"num_images": 4, "size": 64, "max_instances": 3},
                "val_synthetic": {"num_images": 2, "size": 64, "max_instances": 3},
            },
            "train": {
                "batch_size": 2,
                "max_iters": 2,
                "warmup_iters": 1,
                "log_every": 1,
                "val_every": 2,
                "checkpoint_every": 100,
            },
        }
    )
    train(cfg, tmp_path, device="cpu", progress=False)
    model, config, _ = load_checkpoint(tmp_path / "last.pt", "cpu")
    assert model.glm is None and model.roi_heads.mask_predictor.semdist is None
    assert config["model"]["glm"] is False and config["model"]["semdist_head"] is False
    predictor = Predictor(tmp_path / "last.pt")
    image, _ = next(iter(generate(1, 5, 64, 3, 1)))
    predictor.set_image(image)
    scene = predictor.scene(0.0)
    assert scene.shape == (64, 64) and scene.instances  # every score kept: an untrained model still detects
    # Without the sem-dist head an instance's map holds its layers alone (each level's top), no distances.
    assert all(inst.semdist is not None and not inst.semdist.has_distances for inst in scene.instances)
