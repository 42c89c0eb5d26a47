"""The Semantic Layering Network (SLN) and its Mask R-CNN baselines on torchvision's detection framework, and
the checkpoint files that hold them."""

from .build import build_model, load_init_weights
from .checkpoint import (
    categories_from_names,
    checkpoint_categories,
    export_for_inference,
    load_checkpoint,
    load_for_inference,
    read_checkpoint,
    save_checkpoint,
)
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
    "categories_from_names",
    "checkpoint_categories",
    "export_for_inference",
    "load_checkpoint",
    "load_for_inference",
    "load_init_weights",
    "paste_roi_maps",
    "read_checkpoint",
    "save_checkpoint",
]
