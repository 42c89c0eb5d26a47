"""`build_model(config)`: the SLN or a Mask R-CNN baseline from one configuration, on the same backbone,
RPN and box head, so a comparison between them is fair. The builder never downloads weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from ..errors import ConfigError
from .backbones import build_backbone
from .sln import (
    GlobalLayeringModule,
    LayeringPredictor,
    MaskRCNNBaseline,
    RoIMapTransform,
    SemanticLayeringNetwork,
    SLNRoIHeads,
)

log = logging.getLogger(__name__)

IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]
FPN_LEVELS = ["0", "1", "2", "3"]


def build_model(config: dict[str, Any]) -> nn.Module:
    """The network a configuration describes (``config['model']``; missing keys take the defaults).

    ``model.kind``: ``sln``, ``maskrcnn_amodal`` or ``maskrcnn_visible``. ``model.init`` (a local file)
    initialises the weights; see `load_init_weights`."""
    from ..engine.config import validate_model_config  # late: the engine package imports this module

    cfg = validate_model_config(dict(config.get("model", {})))
    K = int(cfg["K"])
    backbone = build_backbone(cfg)
    channels = backbone.out_channels

    anchor_generator = AnchorGenerator(
        sizes=tuple((int(s),) for s in cfg["anchor_sizes"]),
        aspect_ratios=(tuple(float(a) for a in cfg["aspect_ratios"]),) * len(cfg["anchor_sizes"]),
    )
    rpn = RegionProposalNetwork(
        anchor_generator,
        RPNHead(channels, anchor_generator.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=cfg["rpn_batch_size_per_image"],
        positive_fraction=0.5,
        pre_nms_top_n={"training": cfg["rpn_pre_nms_top_n_train"], "testing": cfg["rpn_pre_nms_top_n_test"]},
        post_nms_top_n={"training": cfg["rpn_post_nms_top_n_train"], "testing": cfg["rpn_post_nms_top_n_test"]},
        nms_thresh=0.7,
    )
    num_classes = int(cfg["num_classes"]) + 1  # + background
    box_pool = MultiScaleRoIAlign(FPN_LEVELS, 7, 2)
    mask_pool = MultiScaleRoIAlign(FPN_LEVELS, 14, 2)
    rep = int(cfg["representation_size"])
    head_kwargs = dict(
        box_roi_pool=box_pool,
        box_head=TwoMLPHead(channels * 7 * 7, rep),
        box_predictor=FastRCNNPredictor(rep, num_classes),
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=cfg["box_batch_size_per_image"],
        positive_fraction=0.25,
        bbox_reg_weights=None,
        score_thresh=float(cfg["box_score_thresh"]),
        nms_thresh=float(cfg["box_nms_thresh"]),
        detections_per_img=cfg["box_detections_per_img"],
        mask_roi_pool=mask_pool,
    )
    mask_layers = [int(cfg["mask_head_channels"])] * int(cfg["mask_head_convs"])
    transform = RoIMapTransform(cfg["min_size"], cfg["max_size"], IMAGE_MEAN, IMAGE_STD)

    model: nn.Module
    if cfg["kind"] == "sln":
        roi_heads = SLNRoIHeads(
            **head_kwargs,
            mask_head=MaskRCNNHeads(channels + K + 1, mask_layers, 1),
            mask_predictor=LayeringPredictor(mask_layers[-1], K, semdist_kernel=int(cfg["semdist_kernel"]),
                                             num_classes=num_classes if cfg["class_specific_layers"] else 1,
                                             semdist_resolution=int(cfg["semdist_resolution"])),
            K=K,
            glm_scale=0.25,  # FPN level "0" is at stride 4
            semdist_beta=float(cfg["semdist_beta"]),
        )
        glm = GlobalLayeringModule(channels, K + 1, int(cfg["glm_channels"]), int(cfg["glm_convs"]))
        model = SemanticLayeringNetwork(backbone, rpn, roi_heads, transform, glm, K)
    else:
        roi_heads = RoIHeads(
            **head_kwargs,
            mask_head=MaskRCNNHeads(channels, mask_layers, 1),
            mask_predictor=MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], num_classes),
        )
        model = MaskRCNNBaseline(backbone, rpn, roi_heads, transform,
                                 target="amodal" if cfg["kind"] == "maskrcnn_amodal" else "visible")
    if cfg["init"]:
        load_init_weights(model, cfg["init"])
    return model


def load_init_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load weights from a local file into ``model``, keeping whatever does not fit.

    Accepts a plain ``state_dict`` (e.g. torchvision's COCO Mask R-CNN weights) or one of our checkpoints
    (its ``model`` entry). Tensors whose name is unknown or whose shape differs (a different class count,
    the SLN's wider mask-head input) are skipped. Returns and logs ``missing``, ``unexpected`` and
    ``mismatched`` key lists."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.init: weights file {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise ConfigError(f"model.init: {path} is not a readable PyTorch weights file ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"model.init: {path} holds no state_dict (a mapping of names to tensors)")
    own = model.state_dict()
    mismatched = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    fitting = {k: v for k, v in state.items() if k not in mismatched}
    result = model.load_state_dict(fitting, strict=False)
    report = {
        "missing": sorted(set(result.missing_keys) | set(mismatched)),
        "unexpected": sorted(result.unexpected_keys),
        "mismatched": mismatched,
    }
    log.info("init weights from %s: %d tensors loaded, %d missing, %d unexpected, %d shape-mismatched",
             path, len(fitting) - len(report["unexpected"]), len(report["missing"]), len(report["unexpected"]),
             len(mismatched))
    for kind in ("missing", "unexpected", "mismatched"):
        if report[kind]:
            log.info("  %s: %s", kind, ", ".join(report[kind]))
    return report
