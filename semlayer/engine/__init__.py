"""Training: the training loop (DDP-ready), its data loading and the state that resuming needs. The
configuration is `semlayer.config`'s, checkpoint files are `semlayer.model.checkpoint`'s."""

from .trainer import TrainingError, TrainResult, lr_factor, train, validation_losses

__all__ = ["TrainResult", "TrainingError", "lr_factor", "train", "validation_losses"]
