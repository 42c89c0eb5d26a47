"""Fine-tuning from the app: the job runner lives in `semlayer.finetune` (UI-free); the page's names stay here."""

from semlayer.finetune import (
    CHECKPOINT_SUFFIXES,
    LOG_NAME,
    PER_CLASS_WEIGHTS,
    ROOT,
    FineTuneJob,
    Progress,
    class_agnostic_checkpoint,
    end_jobs_on_exit,
    finetune_config,
    next_run_dir,
    stop_all,
    train_command,
)

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "LOG_NAME",
    "PER_CLASS_WEIGHTS",
    "ROOT",
    "FineTuneJob",
    "Progress",
    "class_agnostic_checkpoint",
    "end_jobs_on_exit",
    "finetune_config",
    "next_run_dir",
    "stop_all",
    "train_command",
]
