"""Training: configuration, the training loop (DDP-ready), checkpoints."""

from .checkpoint import (
    categories_from_names,
    checkpoint_categories,
    export_for_inference,
    load_checkpoint,
    load_for_inference,
    read_checkpoint,
    save_checkpoint,
)
from .config import defaults, load_config, validate_config
from .trainer import TrainingError, TrainResult, lr_factor, train, validation_losses

__all__ = [
    "categories_from_names",
    "checkpoint_categories",
    "export_for_inference",
    "TrainResult",
    "TrainingError",
    "defaults",
    "load_checkpoint",
    "load_config",
    "load_for_inference",
    "lr_factor",
    "read_checkpoint",
    "save_checkpoint",
    "train",
    "validate_config",
    "validation_losses",
]
