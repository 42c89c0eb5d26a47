import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from semlayer.data import AmodalDataset, Augment, SyntheticSource, collate
from semlayer.errors import ConfigError
from semlayer.model import (
    LayeringPredictor,
    MaskRCNNBaseline,
    SemanticLayeringNetwork,
    build_model,
    load_init_weights,
    paste_roi_maps,
)


# A very small network on 96 x 96 images: the shapes and the learning, not the accuracy, are under test.
SMALL = {
    "representation_size": 64,
    "mask_head_channels": 16,
    "mask_head_convs": 1,
    "glm_channels": 8,
    "glm_convs": 1,
    "fpn_channels": 16,
    "min_size": 96,
    "max_size": 96,
    "box_batch_size_per_image": 64,
    "rpn_batch_size_per_image": 64,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_detections_per_img": 10,
    "box_score_thresh": 0.0,
}


def small_config(**model):
    return {"model": {**SMALL, **model}}


@pytest.fixture(scope="module")
def batch():
    ds = AmodalDataset(SyntheticSource(2, seed=3, size=96, max_instances=3, min_instances=2), augment=Augment(96, 96))
    return collate([ds[0], ds[1]])


@pytest.mark.parametrize("kind", ["sln", "maskrcnn_amodal", "maskrcnn_visible"])
def test_forward_backward_and_inference_shapes(kind, batch):
    torch.manual_seed(0)
    model = build_model(small_config(kind=kind, K=3))
    assert isinstance(model, SemanticLayeringNetwork if kind == "sln" else MaskRCNNBaseline)
    model.train()
    images, targets = batch
    losses = model(images, targets)
    expected = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    expected |= {"loss_layers", "loss_semdist", "loss_global_layers"} if kind == "sln" else {"loss_mask"}
    assert set(losses) == expected
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    if kind == "sln":
        assert model.glm.logits.weight.grad.abs().sum() > 0
        assert model.roi_heads.mask_predictor.semdist[-1].weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        out = model([images[0], torch.rand(3, 50, 70)])
    for det, (h, w) in zip(out, [(96, 96), (50, 70)]):
        r = len(det["boxes"])
        assert det["boxes"].shape == (r, 4) and det["scores"].shape == (r,) and det["labels"].shape == (r,)
        assert det["masks"].shape == (r, 1, 28, 28)
        assert ((det["masks"] >= 0) & (det["masks"] <= 1)).all()
        if r:
            assert float(det["boxes"][:, 2].max()) <= w and float(det["boxes"][:, 3].max()) <= h
        if kind == "sln":
            assert det["semdist"].shape == (r, 1, 28, 28)
            assert det["layer_logits"].shape == (r, 4, 28, 28)
            assert det["global_layers"].shape == (4, h, w)
            np.testing.assert_allclose(det["masks"][:, 0], 1 - det["layer_logits"].softmax(1)[:, 0], atol=1e-6)
        else:
            assert set(det) == {"boxes", "scores", "labels", "masks"}


def test_K_sets_the_number_of_layer_classes_and_classes_the_box_head(batch):
    model = build_model(small_config(K=5, num_classes=7))
    assert model.glm.logits.out_channels == 6
    assert model.roi_heads.mask_predictor.layer_logits.out_channels == 6
    assert model.roi_heads.box_predictor.cls_score.out_features == 8
    model.eval()
    with torch.no_grad():
        det = model([batch[0][0]])[0]
    assert det["layer_logits"].shape[1:] == (6, 28, 28) and det["global_layers"].shape == (6, 96, 96)


def test_class_specific_layering_keeps_each_rois_label_maps(batch):
    torch.manual_seed(0)
    K, C = 2, 8
    model = build_model(small_config(K=K, num_classes=C, class_specific_layers=True))
    head = model.roi_heads.mask_predictor
    assert head.layer_logits.out_channels == (C + 1) * (K + 1)  # background included, as in Mask R-CNN
    images, targets = batch
    model.train()
    losses = model(images, targets)
    losses["loss_layers"].backward()
    # Training reads only the ground-truth labels' maps: the other classes' output weights get no gradient.
    grad = head.layer_logits.weight.grad.reshape(C + 1, K + 1, -1).abs().sum(dim=(1, 2))
    present = sorted({int(v) for t in targets for v in t["labels"]})
    assert [c for c in range(C + 1) if grad[c] > 0] == present

    # At inference each RoI gets its predicted label's maps: those of the 1x1 layer applied to every class
    # (the head computes only the kept class's, with the same weights).
    model.eval()
    head_inputs = []
    hook = head.register_forward_pre_hook(lambda m, args: head_inputs.append(args[0].clone()))
    with torch.no_grad():
        det = model([images[0]])[0]
        hook.remove()
        r = len(det["labels"])
        full = head.layer_logits(torch.relu(head.upsample(head_inputs[0])))
    assert r > 0 and full.shape == (r, (C + 1) * (K + 1), 28, 28)
    kept = full.reshape(r, C + 1, K + 1, 28, 28)[torch.arange(r), det["labels"]]
    torch.testing.assert_close(det["layer_logits"], kept, rtol=0, atol=1e-5)
    assert not torch.equal(kept, full.reshape(r, C + 1, K + 1, 28, 28)[torch.arange(r), (det["labels"] + 1) % (C + 1)])
    with pytest.raises(ValueError, match="one label per RoI"):
        head(torch.zeros(2, 16, 14, 14))


@pytest.mark.parametrize(
    "num_classes,kernel,rois,resolution", [(1, 3, 5, 28), (4, 3, 5, 28), (4, 1, 3, 28), (4, 3, 0, 28), (4, 3, 5, 14)]
)
def test_layering_head_computes_its_layers_as_written(num_classes, kernel, rois, resolution):
    """The head's fast paths (channels-last, only each RoI's own class's logits, the first sem-dist layer
    applied to features and probabilities separately) give what its modules give applied plainly; at
    ``semdist_resolution`` 14 the sem-dist layers read the 14 x 14 features and pooled probabilities."""
    torch.manual_seed(0)
    K = 3
    head = LayeringPredictor(
        16, K, semdist_kernel=kernel, num_classes=num_classes, semdist_resolution=resolution
    ).eval()
    for m in head.modules():  # weights away from their near-zero start, so a mix-up would show
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.normal_(m.weight)
            torch.nn.init.normal_(m.bias)
    features = torch.randn(rois, 16, 14, 14)
    labels = torch.randint(0, num_classes, (rois,))
    with torch.no_grad():
        logits, semdist = head(features, labels)
        x = torch.relu(head.upsample(features))
        every = head.layer_logits(x).reshape(rois, num_classes, K + 1, 28, 28)
        expected = every[torch.arange(rois), labels]
        if resolution == 28:
            expected_semdist = head.semdist(torch.cat([x, expected.softmax(dim=1)], dim=1))
        else:
            pooled = torch.nn.functional.avg_pool2d(expected.softmax(dim=1), 2)
            expected_semdist = head.semdist(torch.cat([features, pooled], dim=1))
    assert logits.shape == (rois, K + 1, 28, 28) and semdist.shape == (rois, 1, 28, 28)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(semdist, expected_semdist, rtol=1e-5, atol=1e-4)


def test_empty_images_train(batch):
    torch.manual_seed(0)
    model = build_model(small_config())
    model.train()
    empty = {k: v[:0] if v.ndim and k != "global_layers" else v for k, v in batch[1][0].items()}
    empty["global_layers"] = torch.zeros_like(batch[1][0]["global_layers"])
    losses = model([batch[0][0]], [empty])
    assert losses["loss_layers"].item() == 0 and losses["loss_semdist"].item() == 0
    assert losses["loss_box_reg"].item() == 0
    sum(losses.values()).backward()


def test_visible_baseline_trains_on_visible_boxes_and_drops_hidden_instances():
    from semlayer.model.sln import _visible_targets

    masks = torch.zeros(2, 6, 6, dtype=torch.uint8)
    masks[0, 1:3, 1:4] = 1
    t = {
        "boxes": torch.tensor([[0.0, 0, 6, 6], [1, 1, 5, 5]]),
        "labels": torch.tensor([1, 2]),
        "visible_boxes": torch.tensor([[1.0, 1, 4, 3], [0, 0, 0, 0]]),
        "visible_masks": masks,
    }
    v = _visible_targets(t)
    assert v["boxes"].tolist() == [[1, 1, 4, 3]] and v["labels"].tolist() == [1]
    assert torch.equal(v["masks"], masks[:1])


def test_paste_roi_maps_matches_torchvision_per_channel():
    torch.manual_seed(0)
    maps = torch.rand(3, 2, 28, 28)
    boxes = torch.tensor([[2.0, 3.0, 20.0, 15.0], [0.0, 0.0, 40.0, 30.0], [35.0, 25.0, 60.0, 50.0]])
    pasted = paste_roi_maps(maps, boxes, 32, 48)
    assert pasted.shape == (3, 2, 32, 48)
    for c in range(2):
        ref = paste_masks_in_image(maps[:, c : c + 1], boxes, (32, 48))
        assert torch.equal(pasted[:, c : c + 1], ref)
    ones = paste_roi_maps(torch.ones(1, 1, 28, 28), boxes[:1], 32, 48)[0, 0]
    assert ones[9, 11] == 1.0 and ones[25, 30] == 0.0  # inside / outside the first box
    assert paste_roi_maps(torch.zeros(0, 4, 28, 28), torch.zeros(0, 4), 5, 6).shape == (0, 4, 5, 6)


def test_init_weights_skips_what_does_not_fit(tmp_path):
    source = build_model(small_config(kind="maskrcnn_amodal"))
    state = source.state_dict()
    state["some.unknown.weight"] = torch.zeros(2)
    path = tmp_path / "coco_like.pth"
    torch.save(state, path)
    target = build_model(small_config(kind="sln"))
    report = load_init_weights(target, path)
    assert report["unexpected"] == [
        "roi_heads.mask_predictor.conv5_mask.bias",
        "roi_heads.mask_predictor.conv5_mask.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.bias",
        "roi_heads.mask_predictor.mask_fcn_logits.weight",
        "some.unknown.weight",
    ]
    # The SLN mask head sees K + 1 more input channels than Mask R-CNN's.
    assert report["mismatched"] == ["roi_heads.mask_head.0.0.weight"]
    assert "glm.logits.weight" in report["missing"] and "roi_heads.mask_head.0.0.weight" in report["missing"]
    assert torch.equal(target.backbone.fpn.layer_blocks[0][0].weight, source.backbone.fpn.layer_blocks[0][0].weight)

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="bad.pth is not a readable PyTorch weights file"):
        load_init_weights(target, bad)
    with pytest.raises(ConfigError, match="not found"):
        load_init_weights(target, tmp_path / "none.pth")


def test_builder_rejects_bad_model_config():
    with pytest.raises(ConfigError, match="model.kind: expected one of"):
        build_model({"model": {"kind": "detr"}})
    with pytest.raises(ConfigError, match="model.K: expected an integer"):
        build_model({"model": {"K": "three"}})
    with pytest.raises(ConfigError, match="model.anchor_sizes"):
        build_model({"model": {"anchor_sizes": [32, 64]}})


def test_resnet_configs_build_without_downloading():
    model = build_model({"model": {"backbone": "resnet50_fpn", "num_classes": 80}})
    names = set(model.state_dict())
    # torchvision's Mask R-CNN parameter names, so its COCO weights load by name.
    assert {
        "backbone.body.layer4.2.conv3.weight",
        "backbone.fpn.inner_blocks.0.0.weight",
        "rpn.head.conv.0.0.weight",
        "roi_heads.box_head.fc6.weight",
    } <= names
    assert model.roi_heads.box_predictor.cls_score.out_features == 81


def test_overfitting_one_image_drives_the_losses_down():
    torch.manual_seed(0)
    ds = AmodalDataset(SyntheticSource(1, seed=3, size=96, max_instances=3, min_instances=2), augment=Augment(96, 96))
    images, targets = collate([ds[0]])
    model = build_model(small_config(representation_size=128, mask_head_channels=32, glm_channels=16, fpn_channels=32))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    first = None
    for _ in range(80):
        losses = model(images, targets)
        first = first or {k: float(v.detach()) for k, v in losses.items()}
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    last = {k: float(v.detach()) for k, v in losses.items()}
    # Starting points: ln 2 for objectness, ln(K+1) = 1.39 for the layer classes, ~1.2 for sem-dist.
    assert first["loss_objectness"] > 0.6 and first["loss_layers"] > 1.3 and first["loss_global_layers"] > 1.3
    assert last["loss_objectness"] < 0.02 and last["loss_rpn_box_reg"] < 0.02
    assert last["loss_global_layers"] < 0.1
    assert last["loss_layers"] < 0.4 and last["loss_semdist"] < 0.4
    assert last["loss_classifier"] < 0.3
    assert sum(last.values()) < 0.3 * sum(first.values())
