"""The Semantic Layering Network (SLN) and its Mask R-CNN baselines on torchvision's detection framework."""

from .build import build_model, load_init_weights
from .sln import (
    GlobalLayeringModule,
    LayeringPredictor,
    MaskRCNNBaseline,
    RoIMapTransform,
    SemanticLayeringNetwork,
    SLNRoIHeads,
    paste_roi_maps,
)

__all__ = [
    "GlobalLayeringModule",
    "LayeringPredictor",
    "MaskRCNNBaseline",
    "RoIMapTransform",
    "SLNRoIHeads",
    "SemanticLayeringNetwork",
    "build_model",
    "load_init_weights",
    "paste_roi_maps",
]
