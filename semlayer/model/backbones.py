"""Backbones with FPN: a narrow CPU network and torchvision's ResNet-FPN for GPUs. No weights downloaded."""

from __future__ import annotations

from functools import partial

import torch.nn as nn
from torchvision.models import mobilenet_v3_small
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..errors import ConfigError

BACKBONES = ("tiny", "resnet50_fpn", "resnet101_fpn")
NORMS = {
    "frozen_bn": misc_nn_ops.FrozenBatchNorm2d,
    "bn": nn.BatchNorm2d,
    "gn": partial(nn.GroupNorm, 8),
}


def tiny_backbone(fpn_channels: int = 64, width_mult: float = 1.0) -> BackboneWithFPN:
    """MobileNetV3-small features at strides 4, 8, 16, 32 under an FPN of ``fpn_channels`` channels.

    Trainable BatchNorm: the tiny model trains from scratch, so frozen statistics would be meaningless."""
    net = mobilenet_v3_small(weights=None, width_mult=width_mult)
    # Last block of each stride: features[1] (stride 4), [3] (8), [8] (16), [11] (32); [12] (the 576-wide
    # classifier projection) is left out to keep the network small.
    return_layers = {"1": "0", "3": "1", "8": "2", "11": "3"}
    in_channels = [net.features[int(k)].out_channels for k in return_layers]
    return BackboneWithFPN(net.features, return_layers, in_channels, fpn_channels, extra_blocks=LastLevelMaxPool())


def resnet_backbone(name: str, trainable_layers: int = 3, norm: str = "frozen_bn") -> BackboneWithFPN:
    """torchvision's ResNet-FPN (256 channels), the same modules and parameter names as its Mask R-CNN,
    so torchvision's COCO Mask R-CNN state_dict loads into it."""
    return resnet_fpn_backbone(
        backbone_name=name.removesuffix("_fpn"), weights=None, norm_layer=NORMS[norm], trainable_layers=trainable_layers
    )


def build_backbone(model_cfg: dict) -> BackboneWithFPN:
    name = model_cfg["backbone"]
    if name == "tiny":
        return tiny_backbone(int(model_cfg["fpn_channels"]), float(model_cfg["width_mult"]))
    if name in ("resnet50_fpn", "resnet101_fpn"):
        return resnet_backbone(name, int(model_cfg["trainable_layers"]), model_cfg["norm"])
    raise ConfigError(f"model.backbone: expected one of {BACKBONES}, got {name!r}")
