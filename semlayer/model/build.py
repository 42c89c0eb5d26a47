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

from ..config import validate_model_config
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
    cfg = validate_model_config(dict(config.get("model", {})))
    backbone = build_backbone(cfg)
    channels = backbone.out_channels
    rpn = _rpn(cfg, channels)
    # Modules are made in this order (backbone, RPN, RoI heads, GLM) so a seed gives the same initial weights.
    model: nn.Module
    if cfg["kind"] == "sln":
        K = int(cfg["K"])
        roi_heads = _sln_roi_heads(cfg, channels)
        glm = (
            GlobalLayeringModule(channels, K + 1, int(cfg["glm_channels"]), int(cfg["glm_convs"]))
            if cfg["glm"]
            else None
        )
        model = SemanticLayeringNetwork(backbone, rpn, roi_heads, _transform(cfg), glm, K)
    else:
        target = "amodal" if cfg["kind"] == "maskrcnn_amodal" else "visible"
        model = MaskRCNNBaseline(backbone, rpn, _baseline_roi_heads(cfg, channels), _transform(cfg), target=target)
    if cfg["init"]:
        load_init_weights(model, cfg["init"])
    return model


def _transform(cfg: dict[str, Any]) -> RoIMapTransform:
    return RoIMapTransform(cfg["min_size"], cfg["max_size"], IMAGE_MEAN, IMAGE_STD)


def _rpn(cfg: dict[str, Any], channels: int) -> RegionProposalNetwork:
    anchor_generator = AnchorGenerator(
        sizes=tuple((int(s),) for s in cfg["anchor_sizes"]),
        aspect_ratios=(tuple(float(a) for a in cfg["aspect_ratios"]),) * len(cfg["anchor_sizes"]),
    )
    return RegionProposalNetwork(
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


def _num_classes(cfg: dict[str, Any]) -> int:
    return int(cfg["num_classes"]) + 1  # + background


def _mask_layers(cfg: dict[str, Any]) -> list[int]:
    return [int(cfg["mask_head_channels"])] * int(cfg["mask_head_convs"])


def _roi_head_kwargs(cfg: dict[str, Any], channels: int) -> dict[str, Any]:
    """What the SLN's RoI heads and the baselines' share: box pooling, head and predictor, and mask pooling."""
    rep = int(cfg["representation_size"])
    return dict(
        box_roi_pool=MultiScaleRoIAlign(FPN_LEVELS, 7, 2),
        box_head=TwoMLPHead(channels * 7 * 7, rep),
        box_predictor=FastRCNNPredictor(rep, _num_classes(cfg)),
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=cfg["box_batch_size_per_image"],
        positive_fraction=0.25,
        bbox_reg_weights=None,
        score_thresh=float(cfg["box_score_thresh"]),
        nms_thresh=float(cfg["box_nms_thresh"]),
        detections_per_img=cfg["box_detections_per_img"],
        mask_roi_pool=MultiScaleRoIAlign(FPN_LEVELS, 14, 2),
    )


def _sln_roi_heads(cfg: dict[str, Any], channels: int) -> SLNRoIHeads:
    K = int(cfg["K"])
    mask_layers = _mask_layers(cfg)
    return SLNRoIHeads(
        **_roi_head_kwargs(cfg, channels),
        mask_head=MaskRCNNHeads(channels + (K + 1 if cfg["glm"] else 0), mask_layers, 1),
        mask_predictor=LayeringPredictor(
            mask_layers[-1],
            K,
            semdist_kernel=int(cfg["semdist_kernel"]),
            num_classes=_num_classes(cfg) if cfg["class_specific_layers"] else 1,
            semdist_resolution=int(cfg["semdist_resolution"]),
            semdist=bool(cfg["semdist_head"]),
        ),
        K=K,
        glm_scale=0.25,  # FPN level "0" is at stride 4
        semdist_beta=float(cfg["semdist_beta"]),
    )


def _baseline_roi_heads(cfg: dict[str, Any], channels: int) -> RoIHeads:
    mask_layers = _mask_layers(cfg)
    return RoIHeads(
        **_roi_head_kwargs(cfg, channels),
        mask_head=MaskRCNNHeads(channels, mask_layers, 1),
        mask_predictor=MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], _num_classes(cfg)),
    )


def classification_to_detection_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """torchvision ImageNet classification weights under the detection backbone's names, or None when
    ``state`` is not one: a ResNet's ``conv1.weight``, ``layer1.0...`` become ``backbone.body.conv1.weight``,
    ...; a MobileNet's ``features.N...`` become ``backbone.body.N...``; the classifier (``fc.*``,
    ``classifier.*``) has no place in a detector and is left out."""
    if any(k.startswith("backbone.") for k in state):
        return None
    if "conv1.weight" in state:
        return {f"backbone.body.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    if any(k.startswith("features.") for k in state):
        return {
            f"backbone.body.{k.removeprefix('features.')}": v for k, v in state.items() if k.startswith("features.")
        }
    return None


def load_init_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load weights from a local file into ``model``, keeping whatever does not fit.

    Accepts a plain ``state_dict`` (torchvision's COCO Mask R-CNN weights, or its ImageNet classification
    weights, renamed by `classification_to_detection_keys`) or one of our checkpoints (its ``model``
    entry). Tensors whose name is unknown or whose shape differs (a different class count, the SLN's wider
    mask-head input) are skipped; but a file that does not fill the whole backbone trunk
    (``backbone.body``) is a ConfigError naming what did not load: a wrong file would otherwise train from
    scratch unnoticed. Returns and logs ``missing``, ``unexpected`` and ``mismatched`` key lists."""
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
    renamed = classification_to_detection_keys(state)
    if renamed is not None:
        log.info("init weights from %s: classification weights, %d backbone tensors", path, len(renamed))
        state = renamed
    own = model.state_dict()
    mismatched = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    fitting = {k: v for k, v in state.items() if k not in mismatched}
    result = model.load_state_dict(fitting, strict=False)
    report = {
        "missing": sorted(set(result.missing_keys) | set(mismatched)),
        "unexpected": sorted(result.unexpected_keys),
        "mismatched": mismatched,
    }
    log.info(
        "init weights from %s: %d tensors loaded, %d missing, %d unexpected, %d shape-mismatched",
        path,
        len(fitting) - len(report["unexpected"]),
        len(report["missing"]),
        len(report["unexpected"]),
        len(mismatched),
    )
    for kind in ("missing", "unexpected", "mismatched"):
        if report[kind]:
            log.info("  %s: %s", kind, ", ".join(report[kind]))
    trunk = [k for k in own if k.startswith("backbone.body.")]
    missing = set(report["missing"])
    not_loaded = [k for k in trunk if k in missing]
    if not_loaded:
        shown = ", ".join(not_loaded[:12]) + (f", ... ({len(not_loaded) - 12} more)" if len(not_loaded) > 12 else "")
        raise ConfigError(
            f"model.init: {path} fills {len(trunk) - len(not_loaded)} of the {len(trunk)} backbone "
            f"tensors (backbone.body); not loaded: {shown}"
        )
    return report
