"""What several test files share: the tiny training setup, the metric keys every evaluation reports, and a
two-process torchrun launch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# The tiny network on 64 x 64 synthetic scenes: a few iterations take a fraction of a second.
TINY_MODEL = {
    "representation_size": 32,
    "mask_head_channels": 8,
    "mask_head_convs": 1,
    "glm_channels": 8,
    "glm_convs": 1,
    "fpn_channels": 16,
    "min_size": 64,
    "max_size": 64,
    "box_batch_size_per_image": 32,
    "rpn_batch_size_per_image": 32,
    "rpn_pre_nms_top_n_train": 100,
    "rpn_post_nms_top_n_train": 50,
}


def tiny_data(num_images: int) -> dict[str, Any]:
    """The ``data`` section: ``num_images`` synthetic training scenes, two validation scenes."""
    return {
        "workers": 0,
        "synthetic": {"num_images": num_images, "seed": 0, "size": 64, "max_instances": 3},
        "val_synthetic": {"num_images": 2, "seed": 1, "size": 64, "max_instances": 3},
    }


# Metrics every evaluation reports (docs/evaluation.md); a test adds the keys its case is about.
HEADLINE_METRICS = (
    "amodal_AP",
    "amodal_AP50",
    "amodal_AR100",
    "visible_AP",
    "AP_none",
    "AP_partial",
    "AP_heavy",
    "miou_amodal",
    "miou_occluded",
    "order_acc",
    "occlusion_f1",
)


def torchrun_2(args: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node 2 *args`` from the repository root, one
    torch thread a process (``env`` adds variables), output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
