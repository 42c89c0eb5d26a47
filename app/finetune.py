"""Fine-tuning from the app: train.py in a background process, live progress from its log.jsonl.

The job runs in its own process group so Cancel stops train.py and anything it spawned (data loader
workers) at once; `stop_all` ends every job's group when the app exits (see `end_jobs_on_exit`).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import signal
import subprocess
import sys
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from semlayer.config import load_config, validate_model_config
from semlayer.io_utils import atomic_write_text
from semlayer.model.checkpoint import read_checkpoint, save_checkpoint
from semlayer.resources import ROOT  # where train.py is: the checkout, or its copy in an installed wheel

LOG_NAME = "log.jsonl"
CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass
class Progress:
    """What the page shows about a fine-tune job."""

    state: str  # running | done | failed | cancelled
    step: int = 0
    total: int | None = None
    loss: float | None = None
    checkpoint: Path | None = None
    message: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0


def next_run_dir(workspace: Path) -> Path:
    """``workspace/finetune-N`` with the first N not taken."""
    n = 1
    while (workspace / f"finetune-{n}").exists():
        n += 1
    return workspace / f"finetune-{n}"


def finetune_config(
    train_config: Path, checkpoint_model: dict[str, Any] | None, out: Path, class_agnostic: bool | None = None
) -> Path:
    """The config a fine-tune runs with, written as ``out/finetune_config.yaml``: ``train_config``'s data
    and schedule with the ``model`` section of the checkpoint being fine-tuned (when it has one). Under
    another architecture ``--init`` would load only the weights that fit and silently start the rest
    from scratch. ``class_agnostic`` (when given) sets ``data.class_agnostic``, and one class for it."""
    config = load_config(train_config)
    if checkpoint_model is not None:
        source = f"the model section of the checkpoint being fine-tuned (with {train_config})"
        config["model"] = {**validate_model_config(dict(checkpoint_model), source), "init": None}
    if class_agnostic is not None:
        config["data"]["class_agnostic"] = bool(class_agnostic)
        if class_agnostic:
            config["model"]["num_classes"] = 1
    return atomic_write_text(Path(out) / "finetune_config.yaml", yaml.safe_dump(config, sort_keys=False))


# Weights with one block of rows per class (background first): the box classifier and regressor, the
# SLN's class-specific layering maps, the Mask R-CNN baselines' mask logits.
PER_CLASS_WEIGHTS = (
    "roi_heads.box_predictor.cls_score.", "roi_heads.box_predictor.bbox_pred.",
    "roi_heads.mask_predictor.layer_logits.", "roi_heads.mask_predictor.mask_fcn_logits.",
)  # fmt: skip


def class_agnostic_checkpoint(checkpoint: Path, out: Path) -> Path:
    """A one-class ("object") copy of a per-class checkpoint, written as ``out/init_class_agnostic.pt``, to
    fine-tune on class-agnostic data (COCOA). Each per-class head keeps its background block and gets, as
    its one object block, the mean of the class blocks; the classifier's object bias gains log(C), so its
    object logit starts at a lower bound of the per-class model's log-probability of "any class"
    (log-sum-exp >= mean + log C). Every other weight is kept as trained."""
    ckpt = read_checkpoint(checkpoint)
    config = ckpt["config"]
    classes = int(config["model"]["num_classes"])
    if classes == 1:
        return Path(checkpoint)
    state = dict(ckpt["model"])
    for name, tensor in ckpt["model"].items():
        if not name.startswith(PER_CLASS_WEIGHTS) or tensor.shape[0] % (classes + 1):
            continue
        blocks = tensor.reshape(classes + 1, tensor.shape[0] // (classes + 1), *tensor.shape[1:])
        merged = torch.stack([blocks[0], blocks[1:].mean(0)])
        if name == "roi_heads.box_predictor.cls_score.bias":
            merged[1] += math.log(classes)
        state[name] = merged.reshape(-1, *tensor.shape[1:]).contiguous()
    model = {**config["model"], "num_classes": 1}
    return save_checkpoint(Path(out) / "init_class_agnostic.pt", {
        "model": state, "config": {**config, "model": model, "data": {**config.get("data", {}), "class_agnostic": True}},
        "class_names": ["object"], "categories": [{"id": 1, "name": "object"}],
    })  # fmt: skip


def train_command(config: Path, init: Path, data: Path, images: Path, out: Path, max_iters: int) -> list[str]:
    return [
        sys.executable, str(ROOT / "train.py"), "--config", str(config), "--init", str(init),
        "--data", str(data), "--images", str(images), "--out", str(out), "--max-iters", str(max_iters),
        "--no-progress",
    ]  # fmt: skip


_RUNNING: weakref.WeakSet[FineTuneJob] = weakref.WeakSet()
_RUNNING_LOCK = threading.Lock()


def stop_all(timeout: float = 10.0) -> None:
    """Cancel every job still running in this process (their whole process groups)."""
    with _RUNNING_LOCK:
        jobs = list(_RUNNING)
    for job in jobs:
        job.cancel(timeout)


def end_jobs_on_exit() -> None:
    """End fine-tune process groups with the app: on a normal exit, Ctrl-C (SIGINT) and SIGTERM. They run in
    their own groups (so Cancel reaches their workers), which is also why a terminal's Ctrl-C misses them."""
    atexit.register(stop_all)

    def on_signal(signum: int, frame: Any) -> None:
        stop_all()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt  # what the server's own shutdown expects
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)


class FineTuneJob:
    """One background training process writing ``out/log.jsonl``."""

    def __init__(self, command: list[str], out: Path, total: int | None = None, note: str = "") -> None:
        self.command = list(command)
        self.note = note  # how it trains (e.g. class-agnostic, and why), for the page
        self.total = total
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self.out / "stderr.txt", "wb")
        self.proc = subprocess.Popen(
            self.command,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: cancel reaches every child
        )
        self.cancelled = False
        with _RUNNING_LOCK:
            _RUNNING.add(self)

    def cancel(self, timeout: float = 10.0) -> None:
        """Terminate the process group; kill it if it does not stop within ``timeout`` seconds."""
        if self.proc.poll() is not None:
            return
        self.cancelled = True
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:  # ended meanwhile
            self.proc.wait()

    def records(self) -> list[dict]:
        """The complete JSON lines of the log so far (a line being written is skipped)."""
        path = self.out / LOG_NAME
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def checkpoint(self) -> Path | None:
        """The checkpoint the run reports last (``checkpoint`` in the log), else ``out/last.pt`` (what
        train.py writes), else the newest checkpoint file in ``out``."""
        for rec in reversed(self.records()):
            if isinstance(rec.get("checkpoint"), str):
                path = Path(rec["checkpoint"])
                path = path if path.is_absolute() else self.out / path
                if path.is_file():
                    return path
        if (self.out / "last.pt").is_file():
            return self.out / "last.pt"
        found = [p for p in self.out.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES and p.is_file()]
        return max(found, key=lambda p: p.stat().st_mtime) if found else None

    def progress(self) -> Progress:
        code = self.proc.poll()
        step, total, loss = 0, self.total, None
        for rec in self.records():
            if rec.get("split", "train") != "train":
                continue  # validation records carry metrics, not training progress
            step = int(rec.get("iteration", rec.get("step", step)))
            total = rec.get("total", total)
            if isinstance(rec.get("loss"), (int, float)):
                loss = float(rec["loss"])
        total = int(total) if isinstance(total, (int, float)) else None
        if code is None:
            return Progress("running", step, total, loss)
        self._stderr.close()
        if self.cancelled:
            return Progress("cancelled", step, total, loss, message="cancelled")
        if code != 0:
            tail = (self.out / "stderr.txt").read_text(encoding="utf-8", errors="replace").strip().splitlines()
            return Progress("failed", step, total, loss, message=tail[-1] if tail else f"exit status {code}")
        ckpt = self.checkpoint()
        if ckpt is None:
            return Progress("failed", step, total, loss, message=f"train.py wrote no checkpoint into {self.out}")
        return Progress("done", step, total, loss, checkpoint=ckpt)
